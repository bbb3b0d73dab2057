"""`OpSpec`: one gated op as data (inputs, parameters and ranges, dtypes, tolerances, references).

An op's spec is the single place its math lives. Backends hang their lowerings on it with
``@SPEC.lowering("onnx")``; a backend that cannot carry the op says why with
``SPEC.unsupported("coreml", reason)``. Registering either twice is an error.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

import torch

from gatex.errors import DuplicateRegistrationError, ParameterRangeError

BACKENDS = ("torch", "onnx", "coreml", "tensorrt")


@dataclass(frozen=True)
class Tolerance:
    """Closeness allowed between a backend's output and the float64 reference: |a - b| <= atol + rtol |b|."""

    rtol: float
    atol: float

    def allows(self, actual: torch.Tensor, expected: torch.Tensor) -> bool:
        return bool(torch.allclose(actual.double(), expected.double(), rtol=self.rtol, atol=self.atol,
                                   equal_nan=True))


# Elementwise gates computed in fp32 and rounded once stay within half an ulp of the output
# dtype (fp16: 4.9e-4, bf16: 3.9e-3 relative); backends that decompose a gate into several
# standard ops round after each, so the low-precision budgets leave room for a few ulps.
ELEMENTWISE_TOLERANCES: Mapping[str, Tolerance] = MappingProxyType({
    "float64": Tolerance(rtol=1e-10, atol=1e-12),
    "float32": Tolerance(rtol=1e-5, atol=1e-6),
    "float16": Tolerance(rtol=4e-3, atol=1e-3),
    "bfloat16": Tolerance(rtol=3.2e-2, atol=8e-3),
})

# Ops with a reduction inside (matmul, convolution, recurrent cell): accumulation order differs
# between backends, so fp32 allows more than an elementwise op.
REDUCTION_TOLERANCES: Mapping[str, Tolerance] = MappingProxyType({
    "float64": Tolerance(rtol=1e-9, atol=1e-10),
    "float32": Tolerance(rtol=1e-4, atol=1e-5),
    "float16": Tolerance(rtol=1e-2, atol=5e-3),
    "bfloat16": Tolerance(rtol=5e-2, atol=2e-2),
})

DTYPE_NAMES: Mapping[torch.dtype, str] = MappingProxyType({
    torch.float64: "float64",
    torch.float32: "float32",
    torch.float16: "float16",
    torch.bfloat16: "bfloat16",
})


@dataclass(frozen=True)
class Param:
    """A scalar attribute of an op: default, valid closed range, and whether a module may learn it."""

    name: str
    default: Any
    doc: str = ""
    lo: float | None = None
    hi: float | None = None
    choices: tuple[str, ...] = ()
    kind: type = float
    learnable: bool = False
    nonzero: bool = False

    def validate(self, value: Any, *, op: str = "") -> Any:
        """Return ``value`` if it is allowed, else raise `ParameterRangeError` naming op and range."""
        where = f"{op} parameter {self.name!r}" if op else f"parameter {self.name!r}"
        if value is None and self.default is None:
            return None
        if self.choices:
            if value not in self.choices:
                raise ParameterRangeError(
                    f"{where} must be one of {', '.join(self.choices)}; got {value!r}")
            return value
        if self.kind is tuple:
            if not (isinstance(value, (tuple, list)) and all(isinstance(v, int) for v in value)):
                raise ParameterRangeError(f"{where} must be a tuple of integers; got {value!r}")
            return tuple(value)
        if isinstance(value, torch.Tensor):
            if not torch.isfinite(value).all():
                raise ParameterRangeError(f"{where} must be finite; got {value.tolist()}")
            lo_ok = self.lo is None or bool((value >= self.lo).all())
            hi_ok = self.hi is None or bool((value <= self.hi).all())
            shown = value.tolist()
        else:
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise ParameterRangeError(f"{where} must be a number; got {value!r}")
            if self.kind is int and not isinstance(value, int):
                raise ParameterRangeError(f"{where} must be an integer; got {value!r}")
            if not math.isfinite(value):
                raise ParameterRangeError(f"{where} must be finite; got {value!r}")
            lo_ok = self.lo is None or value >= self.lo
            hi_ok = self.hi is None or value <= self.hi
            shown = value
            if self.nonzero and value == 0:
                raise ParameterRangeError(f"{where} must be non-zero")
        if not (lo_ok and hi_ok):
            raise ParameterRangeError(f"{where} must be in {self.range_text()}; got {shown}")
        return value

    def range_text(self) -> str:
        if self.kind is tuple:
            return "tuple of int"
        if self.choices:
            return "{" + ", ".join(self.choices) + "}"
        lo = "-inf" if self.lo is None else f"{self.lo:g}"
        hi = "inf" if self.hi is None else f"{self.hi:g}"
        return f"[{lo}, {hi}]"


@dataclass(frozen=True)
class TensorrtLowering:
    """How TensorRT carries an op (``SPEC.lowering("tensorrt")``).

    Every op reaches TensorRT through its ONNX decomposition (the ``onnx`` lowering, inlined
    into the bundle's graph; TensorRT fuses the pointwise chain). ``plan``, where given, maps
    the op's scalar parameters to the Triton kernel plan (`gatex.ops.kernels.plans.GatePlan`)
    that the op's TensorRT plugin runs, and which ``--plugins auto`` chooses where the
    decomposition is unsafe in the engine's precision (`gatex.ops.kernels.policy`)."""

    plan: Callable[[Mapping[str, Any]], Any] | None = None
    note: str = ""

    @property
    def plugin(self) -> bool:
        return self.plan is not None

    def describe(self) -> str:
        how = "plugin (Triton kernel) or decomposition" if self.plugin else "decomposition"
        return how + (f"; {self.note}" if self.note else "")


@dataclass(frozen=True)
class OpSpec:
    """One gated op.

    ``reference`` is the formula exactly as upstream code computes it, evaluated in the dtype it
    is given (call it in float64 for ground truth). ``impl`` is what the `gatex::` torch custom op
    runs on CPU: the same math made safe in low precision (fp16/bf16 computed in fp32, hazards
    clamped). Both take the op's tensor inputs positionally and its parameters by keyword.
    """

    name: str                       # ONNX op_type and TensorRT plugin name, e.g. "GoLU"
    torch_name: str                 # torch.library name in namespace gatex, e.g. "golu"
    family: str                     # the op file it lives in, e.g. "golu"
    summary: str
    formula: str
    source: str                     # upstream code it follows
    inputs: tuple[str, ...]
    params: tuple[Param, ...]
    reference: Callable[..., torch.Tensor]
    impl: Callable[..., torch.Tensor]
    elementwise: bool = True
    dtypes: tuple[str, ...] = ("float32", "float16", "bfloat16", "float64")
    tolerances: Mapping[str, Tolerance] = field(default_factory=lambda: ELEMENTWISE_TOLERANCES)
    optional_inputs: tuple[str, ...] = ()
    hazards: str = ""               # fp16/bf16 hazards and how impl avoids them
    # Ops that make hard decisions (a quantiser's level, a gate's on/off) are discontinuous: a
    # last-bit difference upstream of a decision flips it, and the flipped element is off by a
    # whole level or a whole gated term, whatever the tolerance. ``decisions`` names the
    # intermediate tensors that are decisions (recorded and forced through
    # `gatex.ops.decisions`; the lowerings mark them): parity compares them one by one and judges
    # the outputs against torch run with the artifact's decisions (decision-forced parity).
    decisions: tuple[str, ...] = ()
    lowerings: dict[str, Callable[..., Any]] = field(default_factory=dict, compare=False, repr=False)
    unsupported_reasons: dict[str, str] = field(default_factory=dict, compare=False, repr=False)

    @property
    def id(self) -> str:
        return f"gatex::{self.name}"

    @property
    def torch_qualname(self) -> str:
        return f"gatex::{self.torch_name}"

    @property
    def torch_op(self) -> Any:
        """The registered torch custom op (``torch.ops.gatex.<torch_name>``)."""
        return getattr(torch.ops.gatex, self.torch_name)

    def param(self, name: str) -> Param:
        for p in self.params:
            if p.name == name:
                return p
        raise KeyError(f"{self.name} has no parameter {name!r}")

    def defaults(self) -> dict[str, Any]:
        return {p.name: p.default for p in self.params}

    def validate_params(self, **values: Any) -> dict[str, Any]:
        """Fill defaults, reject unknown names and out-of-range values; returns the full set."""
        unknown = set(values) - {p.name for p in self.params}
        if unknown:
            raise ParameterRangeError(
                f"{self.name} has no parameter {', '.join(sorted(unknown))}; "
                f"it takes {', '.join(p.name for p in self.params) or 'none'}")
        out = self.defaults()
        out.update(values)
        for p in self.params:
            p.validate(out[p.name], op=self.name)
        return out

    def tolerance(self, dtype: torch.dtype | str) -> Tolerance:
        key = dtype if isinstance(dtype, str) else DTYPE_NAMES[dtype]
        return self.tolerances[key]

    def lowering(self, backend: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
        """Decorator: register this op's lowering for ``backend``; a second one is an error."""
        if backend not in BACKENDS:
            raise ValueError(f"unknown backend {backend!r}; known: {', '.join(BACKENDS)}")

        def register(fn: Callable[..., Any]) -> Callable[..., Any]:
            if backend in self.lowerings or backend in self.unsupported_reasons:
                raise DuplicateRegistrationError(f"{self.id} already has a {backend} lowering")
            self.lowerings[backend] = fn
            return fn

        return register

    def unsupported(self, backend: str, reason: str) -> None:
        """Record, with a reason, that ``backend`` cannot carry this op."""
        if backend in self.lowerings or backend in self.unsupported_reasons:
            raise DuplicateRegistrationError(f"{self.id} already has a {backend} entry")
        self.unsupported_reasons[backend] = reason

    def backends(self) -> tuple[str, ...]:
        """Backends that can run this op now: torch always (custom op), others by lowering."""
        return ("torch",) + tuple(b for b in BACKENDS[1:] if b in self.lowerings)
