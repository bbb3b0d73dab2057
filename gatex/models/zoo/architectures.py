"""Small digit classifiers, one per gated op, that the reference zoo trains and ships.

Inputs are scikit-learn's 8x8 digits scaled to [0, 1]: an MLP reads the 64 pixels, the GRU reads
the 8 rows as a sequence, the CNNs read a 1x8x8 image. Every model returns 10 logits.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from gatex import models


class GateMLP(nn.Module):
    """64 -> unit -> unit -> 10, with a paGating unit (it owns its value and gate projections)."""

    input_shape = (64,)

    def __init__(self, unit: str, hidden: int = 64, alpha: float | str = 0.5, **unit_kwargs: Any):
        super().__init__()
        cls = getattr(models, unit)
        self.unit1 = cls(64, hidden, alpha=alpha, **unit_kwargs)
        self.unit2 = cls(hidden, hidden // 2, alpha=alpha, **unit_kwargs)
        self.head = nn.Linear(hidden // 2, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.unit2(self.unit1(x)))


class ActivationMLP(nn.Module):
    """64 -> Linear -> act -> Linear -> act -> 10, for activations and gates of one input."""

    input_shape = (64,)

    def __init__(self, activation: str, hidden: int = 64, **act_kwargs: Any):
        super().__init__()
        make: Callable[[], nn.Module] = lambda: getattr(models, activation)(**act_kwargs)  # noqa: E731
        self.fc1 = nn.Linear(64, hidden)
        self.act1 = make()
        self.fc2 = nn.Linear(hidden, hidden // 2)
        self.act2 = make()
        self.head = nn.Linear(hidden // 2, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.act2(self.fc2(self.act1(self.fc1(x)))))


class GRUClassifier(nn.Module):
    """Reads the 8 image rows as a sequence with one PaGRUCell; classifies the last state."""

    input_shape = (8, 8)

    def __init__(self, hidden: int = 48, alpha_mode: str | float = "learnable"):
        super().__init__()
        self.hidden = hidden
        self.cell = models.PaGRUCell(8, hidden, alpha_mode=alpha_mode)
        self.head = nn.Linear(hidden, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = x.new_zeros(x.shape[0], self.hidden)
        for t in range(x.shape[1]):
            h = self.cell(x[:, t], h)
        return self.head(h)


class GatedConvNet(nn.Module):
    """conv(1->16) BN ReLU, then a gated conv (16->32) BN ReLU, pool, gated conv, pool, head."""

    input_shape = (1, 8, 8)

    def __init__(self, gate: str, width: int = 32, **gate_kwargs: Any):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(1, 16, 3, padding=1, bias=False), nn.BatchNorm2d(16),
                                  nn.ReLU())
        if gate == "CGConv2d":
            make = lambda cin, cout: models.CGConv2d(cin, cout, 3, padding=1, **gate_kwargs)  # noqa: E731
            act: Callable[[], nn.Module] = nn.ReLU
        elif gate == "PGConv2d":
            make = lambda cin, cout: models.PGConv2d(cin, cout, 3, padding=1, **gate_kwargs)  # noqa: E731
            act = models.PactReLU
        else:
            raise ValueError(f"unknown gated conv {gate!r}")
        self.conv1 = make(16, width)
        self.bn1 = nn.BatchNorm2d(width)
        self.act1 = act()
        self.pool = nn.MaxPool2d(2)
        self.conv2 = make(width, width)
        self.bn2 = nn.BatchNorm2d(width)
        self.act2 = act()
        self.head = nn.Linear(width, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        x = self.pool(self.act1(self.bn1(self.conv1(x))))
        x = self.act2(self.bn2(self.conv2(x)))
        return self.head(x.mean(dim=(2, 3)))


class GatedDenseMLP(nn.Module):
    """64 -> GatedDense(relu) -> GatedDense(relu) -> GatedDense -> 10, gates from pruning."""

    input_shape = (64,)

    def __init__(self, hidden: int = 128):
        super().__init__()
        self.dense1 = models.GatedDense(64, hidden, activation="relu")
        self.dense2 = models.GatedDense(hidden, hidden // 2, activation="relu")
        self.head = models.GatedDense(hidden // 2, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.dense2(self.dense1(x)))


ARCHITECTURES: dict[str, type[nn.Module]] = {
    "GateMLP": GateMLP,
    "ActivationMLP": ActivationMLP,
    "GRUClassifier": GRUClassifier,
    "GatedConvNet": GatedConvNet,
    "GatedDenseMLP": GatedDenseMLP,
}
