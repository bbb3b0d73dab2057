"""A user's model built with the out-of-tree op (what ``--model softsign_model.py:build`` loads).

The op comes from its installed package (``import gatex_softsign_unit``, which its ``gatex.ops``
entry point has already imported), as a user's model imports any layer library.
"""

from __future__ import annotations

import torch
from torch import nn

from gatex_softsign_unit import PaSoftsignExt


def build() -> nn.Module:
    """Two softsign units around a linear layer, fixed weights."""
    torch.manual_seed(0)
    return nn.Sequential(PaSoftsignExt(16, 32), nn.Linear(32, 32), PaSoftsignExt(32, 4, alpha=0.8))
