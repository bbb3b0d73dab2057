"""GoLU, the Gompertz Linear Unit (upstream automl/GoLU, class ``GoLU`` / ``GoLUCUDA``)."""

from __future__ import annotations

import math

import torch

from gatex.ops._torch import compute_in_fp32, publish
from gatex.ops.kernels.plans import Gate as KernelGate, GatePlan, Mix, Value, log_beta
from gatex.ops.lowering.gates import Gate, register_gate
from gatex.ops.spec import OpSpec, Param, TensorrtLowering

# The gate is exp(-beta e^{-gamma x}) = exp(-e^t), t = log(beta) - gamma x. Clamping t keeps
# e^t finite (an inf there is NaN once multiplied by 0, also in the backward) for every beta;
# exp(80) = 5.5e34 already makes the gate exactly 0 in fp32 and fp64. (Clamping -gamma x alone
# is wrong for beta < 1e-30, and beta * inner overflows the backward for beta > 1 near x = max.)
INNER_EXP_CLAMP = 80.0
# -gamma x is clamped first so log(0) + inf cannot make a NaN; log(beta) >= -745 for every
# float beta > 0, so t still reaches INNER_EXP_CLAMP wherever the true gate is 0.
GAMMA_X_CLAMP = 1000.0


def golu_reference(x: torch.Tensor, *, alpha: float = 1.0, beta: float = 1.0,
                   gamma: float = 1.0) -> torch.Tensor:
    """alpha * x * exp(-beta * exp(-gamma * x)), as written (evaluate in float64 for truth)."""
    return alpha * x * torch.exp(-beta * torch.exp(-gamma * x))


@compute_in_fp32
def golu_impl(x: torch.Tensor, *, alpha: float = 1.0, beta: float = 1.0,
              gamma: float = 1.0) -> torch.Tensor:
    """GoLU as alpha x exp(-exp(log(beta) - gamma x)), the exponent clamped (no inf, no 0 * inf),
    low precision in fp32; beta = 0 gives log(beta) = -inf, gate 1."""
    log_beta = torch.log(beta) if isinstance(beta, torch.Tensor) else (
        math.log(beta) if beta > 0 else -math.inf)
    t = torch.clamp(torch.clamp(-gamma * x, max=GAMMA_X_CLAMP) + log_beta, max=INNER_EXP_CLAMP)
    return alpha * x * torch.exp(-torch.exp(t))


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
    hazards="exp(-gamma x) overflows fp16 for x < -11.09/gamma: impl computes in fp32 as "
            "exp(-exp(t)), t = log(beta) - gamma x clamped at "
            f"{INNER_EXP_CLAMP:g} (right for every beta >= 0, also in the backward).",
), "(Tensor x, float alpha=1.0, float beta=1.0, float gamma=1.0) -> Tensor")


@GOLU.lowering("onnx")
def _golu_onnx(b, x: str, *, alpha: float = 1.0, beta: float = 1.0, gamma: float = 1.0) -> str:
    # gate = exp(-exp(log(beta) - gamma x)): beta folded into the exponent, constants folded.
    # exp(t) overflowing to inf gives exp(-inf) = 0 and y = x * 0 = 0: no NaN for finite x.
    # beta = 0 folds to y = alpha x; read from attributes, log(0) = -inf gives the same gate 1
    if beta == 0.0 or alpha == 0.0:
        return b.mul(x, alpha) if alpha else b.op("Mul", x, b.const(0.0))
    t = b.add(b.mul(x, -gamma), b.log(beta))
    if b.low_precision_max() is None:
        # fp32/fp64: x / exp(exp(t)) is the same value in one pass fewer (no Neg), 4 passes for
        # the defaults, 5 before (onnxruntime, 16M fp32: 0.70x and 0.83x the time in two
        # runs of benchmarks/onnx_ops.py). exp(exp(t)) overflows where the gate is below
        # 1e-38 (fp32), so y = x / inf = 0 there.
        return b.mul(b.op("Div", x, b.op("Exp", b.op("Exp", t))), alpha)
    # fp16/bf16 keep exp(-exp(t)): its tiny gates (down to 6e-8 in fp16) survive, where
    # exp(exp(t)) would already overflow at gate 1.5e-5 and lose |x| * 1.5e-5 for large |x|
    gate = b.op("Exp", b.op("Neg", b.op("Exp", t)))
    return b.mul(b.op("Mul", x, gate), alpha)


# CoreML: the same gate, exp(-exp(t)), t = log(beta) - gamma x, with t clamped at 11: e^11 =
# 59874 stays below fp16's max 65504, and exp(-59874) is 0 in fp16, fp32 and fp64 alike, so the
# clamp changes no value in any precision while keeping e^t (and 0 * inf) out of an fp16 program.
COREML_INNER_EXP_CLAMP = 11.0


@GOLU.lowering("coreml")
def _golu_coreml(m, x, *, alpha: float = 1.0, beta: float = 1.0, gamma: float = 1.0):
    if alpha == 0.0 or beta == 0.0:   # gate 1 (beta = 0) or no output (alpha = 0): y = alpha x
        return m.mul(x, alpha)
    t = m.minimum(m.add(m.mul(x, -gamma), math.log(beta)), COREML_INNER_EXP_CLAMP)
    gate = m.exp(x=m.mul(m.exp(x=t), -1.0))
    return m.mul(m.mul(x, gate), alpha)


GOLU.lowering("tensorrt")(TensorrtLowering(lambda params: GatePlan(
    "GoLU", Value.ONE, KernelGate.GOLU, Mix.SCALE, two_inputs=False, p_param=None,
    sigma_from_p=False, clamp_z=False, c0=log_beta(float(params.get("beta", 1.0))),
    c1=float(params.get("gamma", 1.0)), c2=float(params.get("alpha", 1.0)))))

register_gate(Gate("golu", lambda u: golu_impl(u), lambda b, u: _golu_onnx(b, u),
                   lambda m, u: _golu_coreml(m, u), reference=lambda u: golu_reference(u),
                   kernel="GOLU", kernel_constants=(0.0, 1.0, False),
                   doc="u exp(-exp(-u)): GoLU with its defaults"))
