"""GatedDense (upstream royk1/gated-bert-pruning, a Keras layer) as a torch module.

    y = act(x @ (kernel * gates) + bias)

Upstream is TensorFlow/Keras, so there is no torch checkpoint layout to follow; this module
keeps Keras' names and layout so converted weights map one to one: parameter ``kernel`` of
shape (in, out) (y = x K, the transpose of ``nn.Linear.weight``), parameter ``bias`` (out), and
buffer ``gates`` (in, out), a frozen 0/1 float tensor that only a pruning method writes.
Initialisation is Keras Dense's: glorot-uniform kernel, zero bias; gates start all open.

For inference, `GatedDense.fold` gives the equivalent ``nn.Linear`` with W = (K * G).T (plus
the activation): a standard layer every runtime knows. Unstructured sparsity in G saves file
size only (sparse initializers); it gives no speed-up without 2:4 structure.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from gatex.errors import BadInputError
from gatex.models.scripting import NotScriptable
from gatex.ops._torch import call_op
from gatex.ops.gated_dense import GATED_DENSE

ACTIVATION_MODULES: dict[str, type[nn.Module]] = {
    "relu": nn.ReLU, "gelu": nn.GELU, "tanh": nn.Tanh, "sigmoid": nn.Sigmoid, "swish": nn.SiLU,
}


class GatedDense(NotScriptable, nn.Module):
    """Dense layer whose Keras-layout kernel is multiplied by frozen 0/1 pruning gates."""

    def __init__(self, in_features: int, out_features: int, activation: str = "linear",
                 bias: bool = True) -> None:
        super().__init__()
        for name, value in (("in_features", in_features), ("out_features", out_features)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise BadInputError(f"GatedDense {name} must be a positive integer; got {value!r}")
        self.activation = GATED_DENSE.param("activation").validate(activation, op="GatedDense")
        self.in_features = in_features
        self.out_features = out_features
        self.kernel = nn.Parameter(torch.empty(in_features, out_features))
        if bias:
            self.bias = nn.Parameter(torch.zeros(out_features))
        else:
            self.register_parameter("bias", None)
        self.register_buffer("gates", torch.ones(in_features, out_features))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Keras Dense: glorot_uniform kernel (limit sqrt(6 / (in + out))), zero bias."""
        limit = math.sqrt(6.0 / (self.in_features + self.out_features))
        nn.init.uniform_(self.kernel, -limit, limit)
        if self.bias is not None:
            nn.init.zeros_(self.bias)

    @property
    def sparsity(self) -> float:
        """Fraction of the kernel switched off by the gates."""
        return float((self.gates == 0).sum()) / self.gates.numel()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return call_op("gated_dense", x, self.kernel, self.gates, self.bias, self.activation)

    def fold(self) -> nn.Module:
        """An equivalent ``nn.Linear`` with weight (K * G).T (followed by the activation)."""
        linear = nn.Linear(self.in_features, self.out_features, bias=self.bias is not None,
                           device=self.kernel.device, dtype=self.kernel.dtype)
        with torch.no_grad():
            linear.weight.copy_((self.kernel * self.gates).T)
            if self.bias is not None:
                linear.bias.copy_(self.bias)
        if self.activation == "linear":
            return linear
        return nn.Sequential(linear, ACTIVATION_MODULES[self.activation]())

    @classmethod
    def from_keras(cls, weights: Mapping[str, Any], activation: str = "linear") -> GatedDense:
        """Build from Keras-layout arrays: ``kernel`` (in, out), optional ``bias``, ``gates``.

        Keys may carry Keras' scope and suffix (``"dense/kernel:0"``). Missing ``gates`` means
        all open; gates must be 0/1 and match the kernel's shape.
        """
        named = {str(k).rsplit("/", 1)[-1].split(":", 1)[0]: v for k, v in weights.items()}
        if "kernel" not in named:
            raise BadInputError(f"GatedDense.from_keras needs a 'kernel' array; got keys "
                                f"{', '.join(map(str, weights)) or 'none'}")
        kernel = torch.as_tensor(named["kernel"], dtype=torch.float32)
        if kernel.dim() != 2:
            raise BadInputError(f"GatedDense kernel must be 2-D (in, out); got shape "
                                f"{tuple(kernel.shape)}")
        layer = cls(kernel.shape[0], kernel.shape[1], activation=activation,
                    bias="bias" in named)
        gates = torch.as_tensor(named.get("gates", torch.ones_like(kernel)), dtype=torch.float32)
        if gates.shape != kernel.shape:
            raise BadInputError(f"GatedDense gates must have the kernel's shape "
                                f"{tuple(kernel.shape)}; got {tuple(gates.shape)}")
        if not bool(((gates == 0) | (gates == 1)).all()):
            raise BadInputError("GatedDense gates must be 0/1; binarise them (gates > 0) first")
        with torch.no_grad():
            layer.kernel.copy_(kernel)
            layer.gates.copy_(gates)
            if layer.bias is not None:
                bias = torch.as_tensor(named["bias"], dtype=torch.float32)
                if bias.shape != (kernel.shape[1],):
                    raise BadInputError(f"GatedDense bias must have shape ({kernel.shape[1]},); "
                                        f"got {tuple(bias.shape)}")
                layer.bias.copy_(bias)
        return layer

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, "
                f"activation={self.activation}, bias={self.bias is not None}")
