"""An op defined outside gatex, in one file: paSoftsignExt = v * (alpha softsign(u) + 1 - alpha).

What a user writes to add a gated op: the spec (inputs, parameters with ranges, tolerances),
the float64 reference and the safe torch impl, and its lowerings, here all from gatex's gate
catalogue and its one mix (the gate "softsign" brings its ONNX and MIL bodies, its lifted form
against the alpha = 0.5 cancellation and its Triton kernel gate). Registered by the ``gatex.ops``
entry point of the dist-info beside this file (or by importing it), it reaches every backend.
"""

from __future__ import annotations

import torch
from torch import nn

import gatex.ops as gatex_ops
from gatex.ops.kernels.plans import alpha_plan
from gatex.ops.lowering.gates import CATALOGUE, gated_mil, gated_onnx, gated_torch, mix_torch

GATE = CATALOGUE["softsign"]
ALPHA = gatex_ops.Param("alpha", 0.5, "mix between the gate (1) and no gate (0)", lo=0.0, hi=1.0,
                        learnable=True)


def reference(v: torch.Tensor, u: torch.Tensor, *, alpha: torch.Tensor | float = 0.5):
    return mix_torch(v, GATE.upstream(u), alpha)


@gatex_ops.compute_in_fp32
def impl(v: torch.Tensor, u: torch.Tensor, *, alpha: torch.Tensor | float = 0.5):
    return gated_torch(v, u, GATE, alpha)


SPEC = gatex_ops.register(
    gatex_ops.OpSpec(
        name="paSoftsignExt", torch_name="pasoftsignext", family="softsign_unit",
        summary="paGating unit with a softsign gate (an out-of-tree op).",
        formula="v * (alpha * softsign(u) + (1 - alpha))",
        source="tests/plugin_ops/gatex_softsign_unit.py", inputs=("v", "u"), params=(ALPHA,),
        reference=reference, impl=impl,
        tolerances={**gatex_ops.REGISTRY.get("paGLU").tolerances},
    ),
    lowerings={
        "onnx": lambda b, v, u, *, alpha=0.5: gated_onnx(b, v, u, GATE, alpha),
        "coreml": lambda m, v, u, *, alpha=0.5: gated_mil(m, v, u, GATE, alpha),
        "tensorrt": gatex_ops.TensorrtLowering(alpha_plan("paSoftsignExt", "softsign")),
    },
)


class PaSoftsignExt(nn.Module):
    """value_proj(x) * (alpha softsign(gate_proj(x)) + 1 - alpha), alpha a parameter."""

    def __init__(self, d_in: int = 16, d_out: int = 8, alpha: float = 0.5) -> None:
        super().__init__()
        self.value_proj = nn.Linear(d_in, d_out)
        self.gate_proj = nn.Linear(d_in, d_out)
        self.alpha = nn.Parameter(torch.tensor(float(alpha)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return SPEC.torch_op(self.value_proj(x), self.gate_proj(x), self.alpha)
