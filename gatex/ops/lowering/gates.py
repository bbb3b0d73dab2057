"""The gate catalogue: every named gate g(u) once, in every form a backend needs, and the one mix.

A `Gate` holds the gate's torch forms (``torch``: the safe fp32 form the custom ops run;
``reference``: as upstream writes it), its ONNX and MIL bodies (``onnx(b, u)``, ``mil(m, u)``,
written into a `gatex.ops.lowering.onnx.Body` / `gatex.ops.lowering.mil.Mil`), the Triton
kernel's gate (a member name of `gatex.ops.kernels.plans.Gate`, with its compile-time
constants), and its value range. Ops that own a gate (GoLU, the arctan gates) add it from their
op file with `register_gate`; paUnit's ``gate`` parameter takes any name registered here.

The mix ``y = value * (alpha g(u) + (1 - alpha))`` is written once per backend below
(`gated_torch`, `gated_onnx`, `gated_mil`; the Triton kernel's ``Mix.ALPHA``). A gate bounded
below by ``lo`` makes it cancel where ``alpha lo + 1 - alpha`` is 0: tanh and softsign (lo = -1)
at alpha = 0.5, paGTU's and paUnit's default, where fp32 gave 0 for 1.8e-5 (times |v| = 6e4).
Such a gate carries a *lifted* form ``g(u) - lo`` computed without cancellation (tanh + 1 =
2 / (1 + e^-2u), softsign + 1 = 2 (0.5 + relu(u)) / (1 + |u|)), and the mix becomes
``alpha (g - lo) + (1 - alpha (1 - lo))``: for ``alpha <= 1 / (1 - lo)`` every term is >= 0, so
nothing cancels. For larger alpha m crosses zero inside the gate's range (the cancellation is
the function's own) and the plain form is used, which keeps g's relative accuracy near g = 0.
The ONNX and MIL lifts of tanh use Exp, not Sigmoid: onnxruntime's Sigmoid (MLAS) is accurate
only in absolute terms in the left tail (measured, fp32: sigmoid(-18) = 0, sigmoid(-16) =
5.96e-8 for 1.13e-7), while its Exp keeps the relative accuracy there.
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from gatex.errors import DuplicateRegistrationError, UnknownOpError

TorchGate = Callable[[torch.Tensor], torch.Tensor]
INV_SQRT2 = 1.0 / math.sqrt(2.0)
# MIL has no mish: u * tanh(softplus(min(u, 11))). tanh(softplus(11)) = 1 - 5.6e-10 rounds to 1
# in fp32 and fp16, so the clamp is torch's softplus passthrough (threshold 20) value for value,
# and e^11 stays finite in fp16.
MISH_SOFTPLUS_CLAMP = 11.0
GELU_LEFT_CLAMP = -40.0


@dataclass(frozen=True)
class Gate:
    """One gate g(u) in every backend's form (see the module docstring)."""

    name: str
    torch: TorchGate
    onnx: Callable[[Any, str], str]
    mil: Callable[[Any, Any], Any]
    reference: TorchGate | None = None      # upstream's form; None: the same as ``torch``
    kernel: str | None = None               # gatex.ops.kernels.plans.Gate member; None: no kernel
    kernel_constants: tuple[float, float, bool] = (1.0, 1.0, False)  # c0, c1, clamp_z
    lo: float | None = None                 # inf of g over the reals; None: unbounded
    hi: float | None = None                 # sup of g over the reals; None: unbounded
    lift_torch: TorchGate | None = None     # g(u) - lo without cancellation
    lift_onnx: Callable[[Any, str], str] | None = None
    lift_mil: Callable[[Any, Any], Any] | None = None
    onnx_scaled: Callable[[Any, str, float], str] | None = None  # scale * g(u), fused (mish)
    doc: str = ""

    @property
    def lifted(self) -> bool:
        return self.lift_torch is not None

    def upstream(self, u: torch.Tensor) -> torch.Tensor:
        return (self.reference or self.torch)(u)

    def lift_threshold(self) -> float:
        """The largest alpha for which the lifted mix has no negative term: 1 / (1 - lo)."""
        return 1.0 / (1.0 - self.lo) if self.lifted else -math.inf


class GateCatalogue(Mapping[str, Gate]):
    """Gates by name; a second gate of one name is an error."""

    def __init__(self) -> None:
        self._gates: dict[str, Gate] = {}

    def register(self, gate: Gate) -> Gate:
        if gate.name in self._gates:
            raise DuplicateRegistrationError(f"gate {gate.name!r} is already registered")
        if gate.lifted and (gate.lo is None or gate.lift_onnx is None or gate.lift_mil is None):
            raise ValueError(f"gate {gate.name!r}: a lifted form needs lo and every backend's lift")
        self._gates[gate.name] = gate
        return gate

    def __getitem__(self, name: str) -> Gate:
        try:
            return self._gates[name]
        except KeyError:
            close = difflib.get_close_matches(str(name), list(self._gates), n=3, cutoff=0.5)
            hint = f"; did you mean {', '.join(close)}?" if close else ""
            raise UnknownOpError(f"unknown gate {name!r}{hint}; known: "
                                 f"{', '.join(self._gates)}") from None

    def __iter__(self) -> Iterator[str]:
        return iter(self._gates)

    def __len__(self) -> int:
        return len(self._gates)


CATALOGUE = GateCatalogue()
"""Every named gate; paUnit's ``gate`` parameter takes any of them."""


def register_gate(gate: Gate) -> Gate:
    return CATALOGUE.register(gate)


# -- the mix, once per backend ----------------------------------------------------------------

def _use_lift(gate: Gate, alpha: float) -> bool:
    return gate.lifted and alpha <= gate.lift_threshold()


def gated_torch(value: torch.Tensor, u: torch.Tensor, gate: Gate,
                alpha: torch.Tensor | float) -> torch.Tensor:
    """value * (alpha g(u) + (1 - alpha)) with the safe gate, lifted where it would cancel."""
    if not gate.lifted:
        return mix_torch(value, gate.torch(u), alpha)
    if not isinstance(alpha, torch.Tensor):
        return mix_torch(value, gate.lift_torch(u), alpha, lo=gate.lo) if _use_lift(gate, alpha) \
            else mix_torch(value, gate.torch(u), alpha)
    lifted = mix_torch(value, gate.lift_torch(u), alpha, lo=gate.lo)
    plain = mix_torch(value, gate.torch(u), alpha)
    return torch.where(alpha <= gate.lift_threshold(), lifted, plain)


def mix_torch(value: torch.Tensor, g: torch.Tensor, alpha: torch.Tensor | float, *,
              lo: float = 0.0) -> torch.Tensor:
    """value * (alpha g + (1 - alpha (1 - lo))): for ``g`` a gate lifted by ``lo`` (0: as is)."""
    return value * (alpha * g + (1 - alpha * (1 - lo)))


def gated_onnx(b: Any, value: str, u: str, gate: Gate, alpha: Any) -> str:
    """The ONNX form of `gated_torch`, alpha folded (a number) or read at run time (a Sym)."""
    if alpha == 0.0:
        return value
    numeric = isinstance(alpha, (int, float))
    if gate.onnx_scaled is not None and numeric and b.low_precision_max() is None \
            and 2.0 / alpha <= float(torch.finfo(torch.float32).max):
        return b.op("Mul", value, b.add(gate.onnx_scaled(b, u, alpha), 1.0 - alpha))
    if not gate.lifted or (numeric and not _use_lift(gate, alpha)):
        return mix_onnx(b, value, gate.onnx(b, u), alpha, g_range=(gate.lo, gate.hi))
    lifted_range = (0.0, None if gate.hi is None else gate.hi - gate.lo)
    lifted = mix_onnx(b, value, gate.lift_onnx(b, u), alpha, lo=gate.lo, g_range=lifted_range)
    if numeric:
        return lifted
    plain = mix_onnx(b, value, gate.onnx(b, u), alpha)  # alpha a run-time attribute: both forms
    use_lift = b.op("LessOrEqual", b.const(alpha), b.const(gate.lift_threshold()))
    return b.op("Where", use_lift, lifted, plain)


def mix_onnx(b: Any, value: str, g: str, alpha: Any, *, lo: float = 0.0,
             g_range: tuple[float | None, float | None] = (None, None)) -> str:
    """value * (alpha g + (1 - alpha (1 - lo))), alpha folded: 0 is ``value``, and where the
    factor provably lies in [0, 1] (``g_range`` known) it is one HardSigmoid pass instead of a
    Mul and an Add (onnxruntime runs one memory pass per op; benchmarks/onnx_ops.py)."""
    if alpha == 0.0:
        return value
    shift = 1.0 - alpha if lo == 0.0 else 1.0 - alpha * (1.0 - lo)
    g_lo, g_hi = g_range
    if isinstance(alpha, (int, float)) and alpha < 1.0 and g_lo is not None and g_hi is not None \
            and alpha * g_lo + shift >= 0.0 and alpha * g_hi + shift <= 1.0:
        return b.op("Mul", value, b.unit_affine(g, alpha, shift))
    return b.op("Mul", value, b.add(b.mul(g, alpha), shift))


def gated_mil(m: Any, value: Any, u: Any, gate: Gate, alpha: Any) -> Any:
    """The MIL form of `gated_torch`; alpha a number (folded), an array or a variable."""
    if m.is_number(alpha, 0.0):
        return value
    known = m.value(alpha)
    if not gate.lifted or (known is not None and bool(np.all(known > gate.lift_threshold()))):
        return mix_mil(m, value, gate.mil(m, u), alpha)
    lifted = mix_mil(m, value, gate.lift_mil(m, u), alpha, lo=gate.lo)
    if known is not None and bool(np.all(known <= gate.lift_threshold())):
        return lifted
    plain = mix_mil(m, value, gate.mil(m, u), alpha)
    threshold = gate.lift_threshold()
    use_lift = m.mb.less_equal(x=alpha, y=m.const(threshold, alpha)) if known is None \
        else m.mb.const(val=np.asarray(known <= threshold))
    return m.select(use_lift, lifted, plain)


def mix_mil(m: Any, value: Any, g: Any, alpha: Any, *, lo: float = 0.0) -> Any:
    """value * (alpha g + (1 - alpha (1 - lo))); alpha a number, an array or a variable."""
    if m.is_number(alpha, 0.0):
        return value
    shift = m.sub(1.0, alpha) if lo == 0.0 else m.sub(1.0, m.mul(alpha, 1.0 - lo))
    return m.mul(value, m.add(m.mul(g, alpha), shift))


# -- the gates every op file may use ------------------------------------------------------------

def gelu_erfc(u: torch.Tensor) -> torch.Tensor:
    """Exact GELU u Phi(u), as 0.5 u erfc(-u / sqrt 2).

    For u < 0, F.gelu's 1 + erf(u / sqrt 2) cancels (at u = -5.5 in fp32 it is 57 % off,
    visible once alpha = 1 and |v| is large). Clamping at -40 (u Phi(u) is 0 there even in fp64)
    keeps the backward from multiplying an overflowing grad * u by erfc' = 0. For u >= 0 the same
    form rather than F.gelu: torch 2.13's vectorised CPU kernel gives NaN for u = +inf (and inf
    for u = 3e38) on AVX-512 machines, while erfc(-inf) = 2 gives GELU(inf) = inf exactly.
    """
    left = torch.clamp(u, min=GELU_LEFT_CLAMP, max=0.0)
    return torch.where(u < 0, 0.5 * left * torch.erfc(-left * INV_SQRT2),
                       0.5 * u * torch.erfc(-u * INV_SQRT2))


def mish(u: torch.Tensor) -> torch.Tensor:
    # upstream: u * tanh(softplus(u)) with torch's softplus threshold 20
    return u * torch.tanh(F.softplus(u, beta=1.0, threshold=20.0))


def mish_onnx_scaled(b: Any, u: str, scale: float = 1.0) -> str:
    """scale * u tanh(softplus(u)) as u / (1/scale + (2/scale) / n), n = e^u (e^u + 2).

    tanh(log(1 + w)) = ((1 + w)^2 - 1) / ((1 + w)^2 + 1) = n / (n + 2), w = e^u. Six passes, one
    Exp; n = inf (e^u overflowing) gives u, as torch's softplus threshold does, n = 0 gives 0,
    and for u << 0 every step keeps its relative accuracy (no 1 - x cancellation). Mish (fp32)
    is not the ONNX Mish op: onnxruntime has no kernel for it and expands it into Softplus, Tanh,
    Mul, where Softplus is a slow scalar loop; this form took 0.29x the time of that expansion.
    """
    w = b.op("Exp", u)
    n = b.op("Mul", w, b.add(w, 2.0))
    return b.op("Div", u, b.add(b.op("Div", b.const(2.0 / scale), n), 1.0 / scale))


def _mish_onnx(b: Any, u: str) -> str:
    # 16-bit keeps the Mish op: the six-pass form rounds six times there
    return mish_onnx_scaled(b, u) if b.low_precision_max() is None else b.op("Mish", u)


def half_softsign_lift_torch(u: torch.Tensor) -> torch.Tensor:
    """(0.5 + relu(u)) / (1 + |u|) = (1 + softsign(u)) / 2, in [0, 1], no cancellation and no
    overflow (0.5 + relu(u) <= 1 + |u|)."""
    return (0.5 + torch.relu(u)) / (1.0 + torch.abs(u))


def half_softsign_lift_onnx(b: Any, u: str) -> str:
    return b.op("Div", b.add(b.op("Relu", u), 0.5), b.add(b.op("Abs", u), 1.0))


def half_softsign_lift_mil(m: Any, u: Any) -> Any:
    return m.div(m.add(m.relu(x=u), 0.5), m.add(m.abs(x=u), 1.0))


for _gate in (
    Gate("sigmoid", torch.sigmoid, lambda b, u: b.op("Sigmoid", u), lambda m, u: m.sigmoid(x=u),
         kernel="SIGMOID", lo=0.0, hi=1.0, doc="1 / (1 + e^-u)"),
    Gate("tanh", torch.tanh, lambda b, u: b.op("Tanh", u), lambda m, u: m.tanh(x=u),
         kernel="TANH", lo=-1.0, hi=1.0, doc="tanh(u); lifted: tanh(u) + 1 = 2 sigmoid(2u)",
         lift_torch=lambda u: 2.0 * torch.sigmoid(2.0 * u),
         lift_onnx=lambda b, u: b.op("Div", b.const(2.0),
                                     b.add(b.op("Exp", b.mul(u, -2.0)), 1.0)),
         lift_mil=lambda m, u: m.div(2.0, m.add(m.exp(x=m.mul(u, -2.0)), 1.0))),
    Gate("relu", torch.relu, lambda b, u: b.op("Relu", u), lambda m, u: m.relu(x=u),
         kernel="RELU", lo=0.0, doc="max(u, 0)"),
    Gate("gelu", gelu_erfc, lambda b, u: b.gelu(u), lambda m, u: m.gelu(x=u, mode="EXACT"),
         reference=lambda u: F.gelu(u), kernel="GELU", doc="u Phi(u) (erf)"),
    Gate("gelu_tanh", lambda u: F.gelu(u, approximate="tanh"), lambda b, u: b.gelu_tanh(u),
         lambda m, u: m.gelu(x=u, mode="TANH_APPROXIMATION"), kernel="GELU_TANH",
         doc="0.5 u (1 + tanh(sqrt(2/pi) (u + 0.044715 u^3)))"),
    Gate("mish", mish, _mish_onnx,
         lambda m, u: m.mul(u, m.tanh(x=m.softplus(x=m.minimum(u, MISH_SOFTPLUS_CLAMP)))),
         kernel="MISH", onnx_scaled=mish_onnx_scaled,
         doc="u tanh(softplus(u)), softplus threshold 20"),
    Gate("silu", lambda u: u * torch.sigmoid(u), lambda b, u: b.op("Mul", u, b.op("Sigmoid", u)),
         lambda m, u: m.silu(x=u), kernel="SWISH", doc="u sigmoid(u)"),
    Gate("softsign", F.softsign, lambda b, u: b.op("Softsign", u), lambda m, u: m.softsign(x=u),
         kernel="SOFTSIGN", lo=-1.0, hi=1.0,
         doc="u / (1 + |u|); lifted: softsign(u) + 1 = 2 (0.5 + relu(u)) / (1 + |u|)",
         lift_torch=lambda u: 2.0 * half_softsign_lift_torch(u),
         lift_onnx=lambda b, u: b.mul(half_softsign_lift_onnx(b, u), 2.0),
         lift_mil=lambda m, u: m.mul(half_softsign_lift_mil(m, u), 2.0)),
    Gate("identity", lambda u: u, lambda b, u: b.op("Identity", u), lambda m, u: m.identity(x=u),
         kernel="IDENTITY",
         doc="u itself: the gate was computed before the op (a GateNorm'd gate, a callable)"),
):
    register_gate(_gate)
