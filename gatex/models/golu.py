"""GoLU, the Gompertz Linear Unit (upstream automl/GoLU: ``GoLU``, formerly ``GoLUCUDA``).

    GoLU(x) = alpha * x * exp(-beta * exp(-gamma * x))

As upstream, ``alpha``, ``beta`` and ``gamma`` are plain float attributes: not trainable and not
in the state_dict (which is empty), so a checkpoint carries none of them; give them to the
constructor (or let `gatex.models.adapt` read them off an upstream module).

Differences from upstream:

- No CUDA extension to compile: forward is the ``gatex::golu`` op (on CPU and GPU), which
  computes fp16/bf16 in fp32 and rounds once as upstream's kernel does, with the inner
  exponent clamped so exp(-gamma x) cannot overflow to inf.
- The parameters are checked (each must be a finite number >= 0, as upstream's docstring asks);
  a bad one raises `ParameterRangeError` at construction.
- ``inplace`` is accepted and ignored, so ``timm.create_model(..., act_layer=GoLU)`` works.
- ``GoLUCUDA`` is an alias of `GoLU`, not a separate class.
"""

from __future__ import annotations

import torch
from torch import nn

from gatex.models.scripting import NotScriptable
from gatex.ops._torch import call_op
from gatex.ops.golu import GOLU


class GoLU(NotScriptable, nn.Module):
    """Gompertz-gated activation; parameters are constructor floats, out of the state_dict."""

    def __init__(self, alpha: float = 1.0, beta: float = 1.0, gamma: float = 1.0,
                 inplace: bool = False) -> None:
        super().__init__()
        self.inplace = inplace  # accepted as timm/torchvision pass it; the op never writes x
        params = GOLU.validate_params(alpha=alpha, beta=beta, gamma=gamma)
        self.alpha = float(params["alpha"])
        self.beta = float(params["beta"])
        self.gamma = float(params["gamma"])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return call_op("golu", x, self.alpha, self.beta, self.gamma)

    def extra_repr(self) -> str:
        return f"alpha={self.alpha:g}, beta={self.beta:g}, gamma={self.gamma:g}"


GoLUCUDA = GoLU
"""Upstream's former class name."""
