"""The paGating family (upstream guglxni/paGating): y = V(v) * (alpha * g(u) + (1 - alpha)).

``v = value_proj(x)`` and ``u = gate_proj(x)`` come from two linear projections in the module;
the op is the elementwise mix. ``alpha`` is a tensor input (scalar, or broadcastable per
channel) so learnable alphas train through the op and folded alphas export as constants.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from types import MappingProxyType

import torch
import torch.nn.functional as F

from gatex.ops._torch import compute_in_fp32, publish
from gatex.ops.golu import golu_impl, golu_reference
from gatex.ops.spec import ELEMENTWISE_TOLERANCES, OpSpec, Param, Tolerance
from gatex.ops.zilu import INV_SQRT2, arctan_approx_impl, arctan_impl

SOURCE = "https://github.com/guglxni/paGating paGating/"
ALPHA = Param("alpha", 0.5, "mix between the plain gate (1) and no gate (0)", lo=0.0, hi=1.0,
              learnable=True)

Gate = Callable[[torch.Tensor], torch.Tensor]

# y = v * m with m = alpha g(u) + (1 - alpha): where m crosses zero, fp32's rounding of m
# (about 1e-7 absolute) is multiplied by |v|, so the fp32 error is absolute in |v|, not relative
# in y. Measured over 8e5 elements with v ~ N(0, 30^2): atol up to 5.4e-6 needed (paSwishU,
# beta -0.4); 1e-5 covers activations of that size. Other dtypes as for every elementwise op.
PAGATING_TOLERANCES: Mapping[str, Tolerance] = MappingProxyType({
    **ELEMENTWISE_TOLERANCES, "float32": Tolerance(rtol=1e-5, atol=1e-5),
})


def _mish(u: torch.Tensor) -> torch.Tensor:
    # upstream: u * tanh(softplus(u)) with torch's softplus threshold 20
    return u * torch.tanh(F.softplus(u, beta=1.0, threshold=20.0))


def _gelu_erfc(u: torch.Tensor) -> torch.Tensor:
    # exact GELU u Phi(u). For u < 0 as 0.5 u erfc(-u / sqrt 2): F.gelu's 1 + erf(u / sqrt 2)
    # cancels there (at u = -5.5 in fp32 it is 57 % off, visible once alpha = 1 and |v| is
    # large). Clamping at -40 (u Phi(u) is 0 there even in fp64) keeps the backward from
    # multiplying an overflowing grad * u by erfc' = 0. For u >= 0 the same u erfc(-u / sqrt 2) / 2
    # rather than F.gelu: torch 2.13's vectorised CPU kernel gives NaN for u = +inf (and inf for
    # u = 3e38) on AVX-512 machines, while erfc(-inf) = 2 gives GELU(inf) = inf exactly.
    left = torch.clamp(u, min=-40.0, max=0.0)
    return torch.where(u < 0, 0.5 * left * torch.erfc(-left * INV_SQRT2),
                       0.5 * u * torch.erfc(-u * INV_SQRT2))


GATES: Mapping[str, Gate] = MappingProxyType({
    "sigmoid": torch.sigmoid,
    "tanh": torch.tanh,
    "relu": torch.relu,
    "gelu": _gelu_erfc,
    "gelu_tanh": lambda u: F.gelu(u, approximate="tanh"),
    "mish": _mish,
    "silu": lambda u: u * torch.sigmoid(u),
    "softsign": F.softsign,
    "golu": lambda u: golu_impl(u),
    "arctan": lambda u: arctan_impl(u),
    "arctan_approx": lambda u: arctan_approx_impl(u),
})
"""Gates a generic `paUnit` may name; each is elementwise and safe in fp32."""

GATE_REFERENCES: Mapping[str, Gate] = MappingProxyType({
    **GATES, "gelu": lambda u: F.gelu(u), "golu": lambda u: golu_reference(u),
})
"""The same gates as upstream code writes them (``reference``); `GATES` are the safe forms."""


def _mix(value: torch.Tensor, gate: torch.Tensor, alpha: torch.Tensor | float) -> torch.Tensor:
    return value * (alpha * gate + (1 - alpha))


def _unit(name: str, torch_name: str, value_fn: Gate, gate_fn: Gate, gate_text: str,
          value_text: str = "v", note: str = "", impl_gate_fn: Gate | None = None) -> OpSpec:
    def reference(v: torch.Tensor, u: torch.Tensor, *, alpha: torch.Tensor | float = 0.5):
        return _mix(value_fn(v), gate_fn(u), alpha)

    def safe(v: torch.Tensor, u: torch.Tensor, *, alpha: torch.Tensor | float = 0.5):
        return _mix(value_fn(v), (impl_gate_fn or gate_fn)(u), alpha)

    reference.__doc__ = safe.__doc__ = f"{value_text} * (alpha * {gate_text} + (1 - alpha))"
    impl = compute_in_fp32(safe)
    return publish(OpSpec(
        name=name, torch_name=torch_name, family="pagating",
        summary=f"paGating unit with gate {gate_text}." + (f" {note}" if note else ""),
        formula=f"{value_text} * (alpha * {gate_text} + (1 - alpha))",
        source=SOURCE + name + ".py", inputs=("v", "u"), params=(ALPHA,),
        reference=reference, impl=impl, tolerances=PAGATING_TOLERANCES,
    ), "(Tensor v, Tensor u, Tensor alpha) -> Tensor")


def _identity(v: torch.Tensor) -> torch.Tensor:
    return v


PAGLU = _unit("paGLU", "paglu", _identity, torch.sigmoid, "sigmoid(u)")
PAGTU = _unit("paGTU", "pagtu", torch.tanh, torch.tanh, "tanh(u)", value_text="tanh(v)",
              note="Upstream builds GateNorm for paGTU but never applies it.")
PAREGLU = _unit("paReGLU", "pareglu", _identity, torch.relu, "relu(u)")
PAGELU = _unit("paGELU", "pagelu", _identity, GATE_REFERENCES["gelu"], "gelu_erf(u)",
               note="Exact erf GELU; upstream's `approximate` flag has no effect.",
               impl_gate_fn=GATES["gelu"])
PAMISHU = _unit("paMishU", "pamishu", _identity, _mish, "u * tanh(softplus(u))",
                note="softplus threshold 20, as torch's default.")
PASILU = _unit("paSiLU", "pasilu", _identity, GATES["silu"], "u * sigmoid(u)")


def paswishu_reference(v: torch.Tensor, u: torch.Tensor, *, alpha: torch.Tensor | float = 0.5,
                       beta: float = 1.0) -> torch.Tensor:
    return _mix(v, u * torch.sigmoid(beta * u), alpha)


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
    return _mix(v, GATE_REFERENCES[gate](u), alpha)


@compute_in_fp32
def paunit_impl(v: torch.Tensor, u: torch.Tensor, *, alpha: torch.Tensor | float = 0.5,
                gate: str = "sigmoid") -> torch.Tensor:
    return _mix(v, GATES[gate](u), alpha)


PAUNIT = publish(OpSpec(
    name="paUnit", torch_name="paunit", family="pagating",
    summary="Generic paGating unit: the gate is named from gatex.ops.pagating.GATES (a module "
            "may also take any torch callable, which then runs as plain torch ops).",
    formula="v * (alpha * gate(u) + (1 - alpha))",
    source=SOURCE + "base.py (paGatingBase, activation_fn)", inputs=("v", "u"),
    params=(ALPHA, Param("gate", "sigmoid", "gate name", choices=tuple(GATES), kind=str)),
    reference=paunit_reference, impl=paunit_impl, tolerances=PAGATING_TOLERANCES,
), "(Tensor v, Tensor u, Tensor alpha, str gate='sigmoid') -> Tensor")


# ONNX: the gate with native ops (Sigmoid, Tanh, Relu, Erf-GELU, Softsign), then the mix
# v * (alpha g + (1 - alpha)) with alpha folded (alpha = 1: v * g; alpha = 0: v). onnxruntime
# runs one memory pass per op, so (measured with benchmarks/onnx_ops.py, 16M fp32 elements):
# - a gate with values in [0, 1] (sigmoid, the arctan gates), or in [-1, 1] (tanh, softsign)
#   with alpha <= 0.5, mixes in one HardSigmoid pass instead of a Mul and an Add;
# - Mish (fp32/fp64) is not the ONNX Mish op: onnxruntime has no kernel for it and expands it
#   into Softplus, Tanh, Mul, where Softplus is a slow scalar loop (about 6x an Exp pass);
#   this form took 0.29x the time of that expansion for paMishU.
_GATE_RANGES = {"sigmoid": (0.0, 1.0), "arctan": (0.0, 1.0), "arctan_approx": (0.0, 1.0),
                "tanh": (-1.0, 1.0), "softsign": (-1.0, 1.0)}


def _gate_onnx(b, u: str, gate: str) -> str:
    native = {"sigmoid": "Sigmoid", "tanh": "Tanh", "relu": "Relu", "softsign": "Softsign"}
    if gate in native:
        return b.op(native[gate], u)
    if gate == "gelu":
        return b.gelu(u)
    if gate == "gelu_tanh":
        return b.gelu_tanh(u)
    if gate == "silu":
        return b.op("Mul", u, b.op("Sigmoid", u))
    if gate == "mish":  # 16-bit keeps the Mish op: the six-pass form rounds six times there
        return _mish_onnx(b, u) if b.low_precision_max() is None else b.op("Mish", u)
    from gatex.ops.registry import REGISTRY

    return REGISTRY.get({"golu": "GoLU", "arctan": "ArcTan",
                         "arctan_approx": "ArcTan_Approx"}[gate]).lowerings["onnx"](b, u)


def _mish_onnx(b, u: str, scale: float = 1.0) -> str:
    """scale * u tanh(softplus(u)) as u / (1/scale + (2/scale) / n), n = e^u (e^u + 2).

    tanh(log(1 + w)) = ((1 + w)^2 - 1) / ((1 + w)^2 + 1) = n / (n + 2), w = e^u. Six passes, one
    Exp; n = inf (e^u overflowing) gives u, as torch's softplus threshold does, n = 0 gives 0,
    and for u << 0 every step keeps its relative accuracy (no 1 - x cancellation).
    """
    w = b.op("Exp", u)
    n = b.op("Mul", w, b.add(w, 2.0))
    return b.op("Div", u, b.add(b.op("Div", b.const(2.0 / scale), n), 1.0 / scale))


def _mix_onnx(b, value: str, gate: str, alpha: float,
              gate_range: tuple[float, float] | None = None) -> str:
    if alpha == 0.0:
        return value
    if gate_range is not None and isinstance(alpha, (int, float)) and alpha < 1.0 \
            and alpha * gate_range[0] + 1.0 - alpha >= 0.0:
        return b.op("Mul", value, b.unit_affine(gate, alpha, 1.0 - alpha))
    return b.op("Mul", value, b.add(b.mul(gate, alpha), 1.0 - alpha))


def _gated_onnx(b, value: str, u: str, gate: str, alpha: float) -> str:
    """value * (alpha gate(u) + (1 - alpha)): the gate and its mix, alpha folded."""
    if alpha == 0.0:
        return value
    if gate == "mish" and b.low_precision_max() is None and isinstance(alpha, (int, float)) \
            and 2.0 / alpha <= float(torch.finfo(torch.float32).max):
        return b.op("Mul", value, b.add(_mish_onnx(b, u, alpha), 1.0 - alpha))
    return _mix_onnx(b, value, _gate_onnx(b, u, gate), alpha, _GATE_RANGES.get(gate))


def _register_unit_onnx(spec: OpSpec, gate: str, value_op: str | None = None) -> None:
    @spec.lowering("onnx")
    def lower(b, v: str, u: str, *, alpha: float = 0.5) -> str:
        return _gated_onnx(b, b.op(value_op, v) if value_op else v, u, gate, alpha)


for _spec, _gate, _value in ((PAGLU, "sigmoid", None), (PAGTU, "tanh", "Tanh"),
                             (PAREGLU, "relu", None), (PAGELU, "gelu", None),
                             (PAMISHU, "mish", None), (PASILU, "silu", None)):
    _register_unit_onnx(_spec, _gate, _value)


@PASWISHU.lowering("onnx")
def _paswishu_onnx(b, v: str, u: str, *, alpha: float = 0.5, beta: float = 1.0) -> str:
    return _mix_onnx(b, v, b.op("Mul", u, b.op("Sigmoid", b.mul(u, beta))), alpha)


@PAUNIT.lowering("onnx")
def _paunit_onnx(b, v: str, u: str, *, alpha: float = 0.5, gate: str = "sigmoid") -> str:
    return _gated_onnx(b, v, u, gate, alpha)


# CoreML: the gate with native MIL ops (sigmoid, tanh, relu, gelu EXACT / TANH_APPROXIMATION,
# silu, softsign), then the same folded mix as ONNX. MIL has no mish: u * tanh(softplus(min(u,
# 11))). tanh(softplus(11)) = 1 - 5.6e-10 rounds to 1 in fp32 and fp16, so the clamp is torch's
# softplus passthrough (threshold 20) value for value, and e^11 stays finite in fp16.
MISH_SOFTPLUS_CLAMP = 11.0


def _gate_coreml(m, u, gate: str):
    if gate in ("sigmoid", "tanh", "relu", "softsign", "silu"):
        return getattr(m, gate)(x=u)
    if gate == "gelu":
        return m.gelu(x=u, mode="EXACT")
    if gate == "gelu_tanh":
        return m.gelu(x=u, mode="TANH_APPROXIMATION")
    if gate == "mish":
        return m.mul(u, m.tanh(x=m.softplus(x=m.minimum(u, MISH_SOFTPLUS_CLAMP))))
    from gatex.ops.registry import REGISTRY

    return REGISTRY.get({"golu": "GoLU", "arctan": "ArcTan",
                         "arctan_approx": "ArcTan_Approx"}[gate]).lowerings["coreml"](m, u)


def _mix_coreml(m, value, gate, alpha):
    """value * (alpha gate + (1 - alpha)); alpha a number (folded), an array or a variable."""
    if m.is_number(alpha, 0.0):
        return value
    return m.mul(value, m.add(m.mul(gate, alpha), m.sub(1.0, alpha)))


def _register_unit_coreml(spec: OpSpec, gate: str, value_op: str | None = None) -> None:
    @spec.lowering("coreml")
    def lower(m, v, u, *, alpha=0.5):
        value = getattr(m, value_op)(x=v) if value_op else v
        if m.is_number(alpha, 0.0):
            return value
        return _mix_coreml(m, value, _gate_coreml(m, u, gate), alpha)


for _spec, _gate, _value in ((PAGLU, "sigmoid", None), (PAGTU, "tanh", "tanh"),
                             (PAREGLU, "relu", None), (PAGELU, "gelu", None),
                             (PAMISHU, "mish", None), (PASILU, "silu", None)):
    _register_unit_coreml(_spec, _gate, _value)


@PASWISHU.lowering("coreml")
def _paswishu_coreml(m, v, u, *, alpha=0.5, beta: float = 1.0):
    if m.is_number(alpha, 0.0):
        return v
    swish = m.silu(x=u) if beta == 1.0 else m.mul(u, m.sigmoid(x=m.mul(u, beta)))
    return _mix_coreml(m, v, swish, alpha)


@PAUNIT.lowering("coreml")
def _paunit_coreml(m, v, u, *, alpha=0.5, gate: str = "sigmoid"):
    if m.is_number(alpha, 0.0):
        return v
    return _mix_coreml(m, v, _gate_coreml(m, u, gate), alpha)
