"""GoLU, the Gompertz Linear Unit (upstream automl/GoLU, class ``GoLU`` / ``GoLUCUDA``)."""

from __future__ import annotations

import torch

from gatex.ops._torch import compute_in_fp32, publish
from gatex.ops.spec import OpSpec, Param

# exp(80) = 5.5e34 is finite in fp32 and already makes the gate exactly 0 for beta >= 1e-30;
# clamping keeps exp(-gamma x) from overflowing to inf (which is NaN once multiplied by 0).
INNER_EXP_CLAMP = 80.0


def golu_reference(x: torch.Tensor, *, alpha: float = 1.0, beta: float = 1.0,
                   gamma: float = 1.0) -> torch.Tensor:
    """alpha * x * exp(-beta * exp(-gamma * x)), as written (evaluate in float64 for truth)."""
    return alpha * x * torch.exp(-beta * torch.exp(-gamma * x))


@compute_in_fp32
def golu_impl(x: torch.Tensor, *, alpha: float = 1.0, beta: float = 1.0,
              gamma: float = 1.0) -> torch.Tensor:
    """GoLU with the inner exponent clamped (no inf, no 0 * inf), low precision in fp32."""
    inner = torch.exp(torch.clamp(-gamma * x, max=INNER_EXP_CLAMP))
    return alpha * x * torch.exp(-beta * inner)


GOLU = publish(OpSpec(
    name="GoLU",
    torch_name="golu",
    family="golu",
    summary="Gompertz Linear Unit: x gated by the Gompertz function (CDF of the Gumbel law).",
    formula="alpha * x * exp(-beta * exp(-gamma * x))",
    source="https://github.com/automl/GoLU golu/golu_cuda_activation.py (GoLUCUDA)",
    inputs=("x",),
    params=(
        Param("alpha", 1.0, "scale of the gate's upper asymptote", lo=0.0),
        Param("beta", 1.0, "displacement of the gate along x", lo=0.0),
        Param("gamma", 1.0, "growth rate of the gate", lo=0.0),
    ),
    reference=golu_reference,
    impl=golu_impl,
    hazards="exp(-gamma x) overflows fp16 for x < -11.09/gamma: impl computes in fp32 with the "
            f"inner exponent clamped at {INNER_EXP_CLAMP:g}.",
), "(Tensor x, float alpha=1.0, float beta=1.0, float gamma=1.0) -> Tensor")
