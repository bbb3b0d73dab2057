"""The paGating family (upstream guglxni/paGating): y = V(v) * (alpha * g(u) + (1 - alpha)).

``v = value_proj(x)`` and ``u = gate_proj(x)`` come from two linear projections in the module;
the op is the elementwise mix. ``alpha`` is a tensor input (scalar, or broadcastable per
channel) so learnable alphas train through the op and folded alphas export as constants.
The gates and the mix come from the one catalogue, `gatex.ops.lowering.gates`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from types import MappingProxyType

import torch

from gatex.ops import golu as _golu, zilu as _zilu  # noqa: F401  (register their gates first)
from gatex.ops._torch import compute_in_fp32, publish
from gatex.ops.lowering.gates import CATALOGUE, gated_mil, gated_onnx, gated_torch, \
    mix_mil, mix_onnx, mix_torch
from gatex.ops.kernels.plans import Gate as KernelGate, GatePlan, Mix, Value, alpha_plan
from gatex.ops.spec import ELEMENTWISE_TOLERANCES, OpSpec, Param, TensorrtLowering, Tolerance

SOURCE = "https://github.com/guglxni/paGating paGating/"
ALPHA = Param("alpha", 0.5, "mix between the plain gate (1) and no gate (0)", lo=0.0, hi=1.0,
              learnable=True)

# y = v * m with m = alpha g(u) + (1 - alpha): where m crosses zero, fp32's rounding of m
# (about 1e-7 absolute) is multiplied by |v|, so the fp32 error is absolute in |v|, not relative
# in y. Measured over 8e5 elements with v ~ N(0, 30^2): atol up to 5.4e-6 needed (paSwishU,
# beta -0.4); 1e-5 covers activations of that size. Other dtypes as for every elementwise op.
PAGATING_TOLERANCES: Mapping[str, Tolerance] = MappingProxyType({
    **ELEMENTWISE_TOLERANCES, "float32": Tolerance(rtol=1e-5, atol=1e-5),
})

GATES: Mapping[str, Callable[[torch.Tensor], torch.Tensor]] = MappingProxyType(
    {name: gate.torch for name, gate in CATALOGUE.items()})
"""The safe torch form of every catalogued gate, by name (what a generic `paUnit` may name)."""


def _unit(name: str, torch_name: str, gate: str, value: str | None = None,
          note: str = "") -> OpSpec:
    """One paGating unit with catalogued ``gate``; ``value`` is "tanh" for tanh(v), else v.

    Registers the spec with its torch op and every lowering: ONNX and CoreML write the gate
    and the one mix (`gated_onnx`, `gated_mil`), TensorRT runs the Triton kernel's plan
    (`gatex.ops.kernels.plans.plan_for`)."""
    g = CATALOGUE[gate]
    value_fn: Callable[[torch.Tensor], torch.Tensor] = torch.tanh if value == "tanh" else (lambda v: v)
    value_text = "tanh(v)" if value == "tanh" else "v"
    gate_text = f"{gate}(u)"

    def reference(v: torch.Tensor, u: torch.Tensor, *, alpha: torch.Tensor | float = 0.5):
        return mix_torch(value_fn(v), g.upstream(u), alpha)

    def safe(v: torch.Tensor, u: torch.Tensor, *, alpha: torch.Tensor | float = 0.5):
        return gated_torch(value_fn(v), u, g, alpha)

    reference.__doc__ = safe.__doc__ = f"{value_text} * (alpha * {gate_text} + (1 - alpha))"
    spec = publish(OpSpec(
        name=name, torch_name=torch_name, family="pagating",
        summary=f"paGating unit with gate {gate_text}." + (f" {note}" if note else ""),
        formula=f"{value_text} * (alpha * {gate_text} + (1 - alpha))",
        source=SOURCE + name + ".py", inputs=("v", "u"), params=(ALPHA,),
        reference=reference, impl=compute_in_fp32(safe), tolerances=PAGATING_TOLERANCES,
    ), "(Tensor v, Tensor u, Tensor alpha) -> Tensor")
    spec.lowering("tensorrt")(TensorrtLowering(
        alpha_plan(name, gate, Value.TANH if value == "tanh" else Value.V)))

    @spec.lowering("onnx")
    def lower_onnx(b, v: str, u: str, *, alpha: float = 0.5) -> str:
        return gated_onnx(b, b.op("Tanh", v) if value == "tanh" else v, u, g, alpha)

    @spec.lowering("coreml")
    def lower_coreml(m, v, u, *, alpha=0.5):
        return gated_mil(m, m.tanh(x=v) if value == "tanh" else v, u, g, alpha)

    return spec


PAGLU = _unit("paGLU", "paglu", "sigmoid")
PAGTU = _unit("paGTU", "pagtu", "tanh", value="tanh",
              note="Upstream builds GateNorm for paGTU but never applies it.")
PAREGLU = _unit("paReGLU", "pareglu", "relu")
PAGELU = _unit("paGELU", "pagelu", "gelu",
               note="Exact erf GELU; upstream's `approximate` flag has no effect.")
PAMISHU = _unit("paMishU", "pamishu", "mish", note="softplus threshold 20, as torch's default.")
PASILU = _unit("paSiLU", "pasilu", "silu")


def paswishu_reference(v: torch.Tensor, u: torch.Tensor, *, alpha: torch.Tensor | float = 0.5,
                       beta: float = 1.0) -> torch.Tensor:
    return mix_torch(v, u * torch.sigmoid(beta * u), alpha)


PASWISHU = publish(OpSpec(
    name="paSwishU", torch_name="paswishu", family="pagating",
    summary="paGating unit with a Swish gate; beta is a constructor float, not in the state_dict.",
    formula="v * (alpha * u * sigmoid(beta * u) + (1 - alpha))",
    source=SOURCE + "paSwishU.py", inputs=("v", "u"),
    params=(ALPHA, Param("beta", 1.0, "Swish sharpness")),
    tolerances=PAGATING_TOLERANCES, reference=paswishu_reference, impl=compute_in_fp32(paswishu_reference),
), "(Tensor v, Tensor u, Tensor alpha, float beta=1.0) -> Tensor")


def paunit_reference(v: torch.Tensor, u: torch.Tensor, *, alpha: torch.Tensor | float = 0.5,
                     gate: str = "sigmoid") -> torch.Tensor:
    return mix_torch(v, CATALOGUE[gate].upstream(u), alpha)


@compute_in_fp32
def paunit_impl(v: torch.Tensor, u: torch.Tensor, *, alpha: torch.Tensor | float = 0.5,
                gate: str = "sigmoid") -> torch.Tensor:
    return gated_torch(v, u, CATALOGUE[gate], alpha)


PAUNIT = publish(OpSpec(
    name="paUnit", torch_name="paunit", family="pagating",
    summary="Generic paGating unit: the gate is named from the gate catalogue "
            "(gatex.ops.lowering.gates; a module may also take any torch callable, which then "
            "runs as plain torch ops).",
    formula="v * (alpha * gate(u) + (1 - alpha))",
    source=SOURCE + "base.py (paGatingBase, activation_fn)", inputs=("v", "u"),
    params=(ALPHA, Param("gate", "sigmoid", "gate name", choices=tuple(CATALOGUE), kind=str)),
    reference=paunit_reference, impl=paunit_impl, tolerances=PAGATING_TOLERANCES,
), "(Tensor v, Tensor u, Tensor alpha, str gate='sigmoid') -> Tensor")


PASWISHU.lowering("tensorrt")(TensorrtLowering(lambda params: GatePlan(
    "paSwishU", Value.V, KernelGate.SWISH, Mix.ALPHA, two_inputs=True, p_param="alpha",
    sigma_from_p=False, clamp_z=False, c0=float(params.get("beta", 1.0)))))
PAUNIT.lowering("tensorrt")(TensorrtLowering(alpha_plan("paUnit")))


@PASWISHU.lowering("onnx")
def _paswishu_onnx(b, v: str, u: str, *, alpha: float = 0.5, beta: float = 1.0) -> str:
    if alpha == 0.0:
        return v
    return mix_onnx(b, v, b.op("Mul", u, b.op("Sigmoid", b.mul(u, beta))), alpha)


@PAUNIT.lowering("onnx")
def _paunit_onnx(b, v: str, u: str, *, alpha: float = 0.5, gate: str = "sigmoid") -> str:
    return gated_onnx(b, v, u, CATALOGUE[gate], alpha)


@PASWISHU.lowering("coreml")
def _paswishu_coreml(m, v, u, *, alpha=0.5, beta: float = 1.0):
    if m.is_number(alpha, 0.0):
        return v
    swish = m.silu(x=u) if beta == 1.0 else m.mul(u, m.sigmoid(x=m.mul(u, beta)))
    return mix_mil(m, v, swish, alpha)


@PAUNIT.lowering("coreml")
def _paunit_coreml(m, v, u, *, alpha=0.5, gate: str = "sigmoid"):
    return gated_mil(m, v, u, CATALOGUE[gate], alpha)
