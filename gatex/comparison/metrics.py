"""Parity: how far one set of outputs is from a reference, and whether that is within tolerance.

Pure functions over NumPy arrays; results are frozen dataclasses that are truthy when they pass.

Pass rule for one output (``numpy.allclose``'s, asymmetric: the reference ``e`` scales the bound)::

    shapes equal, NaN at the same positions, the same infinities at the same positions, and
    |a - e| <= atol + rtol * |e|   for every element finite on both sides.

Metrics: ``max_abs``, ``mean_abs`` and ``cosine`` over elements finite on both sides;
``max_rel`` = max |a - e| / |e| over those with e != 0; ``max_ulp`` = the largest number of
representable values of the output dtype between a and e (e rounded to that dtype first) over
elements that are NaN on neither side; ``top1`` = the fraction of rows of 2-D logits whose
argmax agrees. A failing output also reports the tolerance that would have passed: the smallest
atol at the given rtol and the smallest rtol at the given atol.

Tolerances come from the op specs (`tolerance_for`) or from the user, and a `ToleranceChoice`
always says which; nothing here loosens one silently. The one measured exception is the
precision floor of a low-precision (fp16/bf16) artifact: a per-op spec tolerance is right for one
op, but a whole network rounds after every op and its logits' error grows with sum |w x|, not
with |logit|. So where the torch reference itself was run in that precision on the same inputs,
an output's atol is raised to `FLOOR_FACTOR` x the atol torch's own low-precision output needs
at the same rtol (`PrecisionFloor`), and the choice, every output and every report say so, with
the measured numbers.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

import numpy as np

from gatex.errors import BadInputError
from gatex.ops.spec import Tolerance

DTYPE_ALIASES = {
    "fp32": "float32", "float32": "float32", "float": "float32", "f32": "float32",
    "fp16": "float16", "float16": "float16", "half": "float16", "f16": "float16",
    "bf16": "bfloat16", "bfloat16": "bfloat16",
    "fp64": "float64", "float64": "float64", "double": "float64", "f64": "float64",
}

# bits per value of each float dtype: the width of its sign-magnitude bit pattern
FLOAT_WIDTHS = {"float16": 16, "bfloat16": 16, "float32": 32, "float64": 64}


def dtype_name(dtype: object) -> str:
    """``"fp16"``, ``np.float16``, ``torch.float16`` -> ``"float16"``; unknown -> BadInputError."""
    text = str(getattr(dtype, "name", dtype)).removeprefix("torch.").lower()
    if text not in DTYPE_ALIASES:
        raise BadInputError(f"unknown dtype {dtype!r}; use fp32, fp16, bf16 or fp64")
    return DTYPE_ALIASES[text]


def float_dtype_of(array: np.ndarray) -> str | None:
    """The float dtype name of ``array`` ("float32", "bfloat16", ...), None if not floating."""
    name = array.dtype.name
    return name if name in FLOAT_WIDTHS else None


# -- ULP distance -------------------------------------------------------------------------------

def _bits(values: np.ndarray, dtype: str) -> np.ndarray:
    """The bit patterns of ``values`` rounded (to nearest even) to ``dtype``, as uint64."""
    with np.errstate(over="ignore"):  # a value beyond the dtype's range rounds to inf, as it should
        return _bits_unchecked(values, dtype)


def _bits_unchecked(values: np.ndarray, dtype: str) -> np.ndarray:
    if dtype == "float64":
        return values.astype(np.float64).view(np.uint64)
    if dtype == "float32":
        return values.astype(np.float32).view(np.uint32).astype(np.uint64)
    if dtype == "float16":
        return values.astype(np.float16).view(np.uint16).astype(np.uint64)
    if dtype == "bfloat16":
        if values.dtype.name == "bfloat16":  # ml_dtypes' bfloat16: already exact
            return values.view(np.uint16).astype(np.uint64)
        # bf16 is the top half of fp32: round the low 16 bits to nearest, ties to even. (A float64
        # value is rounded to fp32 first; that double rounding can move a rare exact tie by 1 ULP.)
        f32 = values.astype(np.float32).view(np.uint32).astype(np.uint64)
        return (f32 + 0x7FFF + ((f32 >> 16) & 1)) >> 16
    raise BadInputError(f"no ULP distance for dtype {dtype!r}; use one of {', '.join(FLOAT_WIDTHS)}")


def _ordered(bits: np.ndarray, width: int) -> np.ndarray:
    # Sign-magnitude -> one unsigned line where adjacent floats are adjacent integers:
    # +m -> OFFSET + m, -m -> OFFSET - m, so +0 and -0 meet at OFFSET (distance 0).
    sign = np.uint64(1 << (width - 1))
    magnitude = bits & (sign - np.uint64(1))
    offset = np.uint64(1 << 63)
    return np.where(bits & sign, offset - magnitude, offset + magnitude)


def ulp_distance(actual: np.ndarray, expected: np.ndarray, dtype: str) -> np.ndarray:
    """How many ``dtype`` values lie between ``actual`` and ``expected`` (both rounded to ``dtype``).

    Adjacent floats are 1 apart, +0 and -0 are 0 apart, the largest finite value and inf are 1
    apart. Elementwise, uint64; 0 where either side is NaN (count NaNs separately).

    >>> int(ulp_distance(np.float32(1), np.nextafter(np.float32(1), np.float32(2)), "float32"))
    1
    """
    dtype = dtype_name(dtype)
    a, e = np.asarray(actual), np.asarray(expected)
    nan = np.isnan(a.astype(np.float64)) | np.isnan(e.astype(np.float64))
    width = FLOAT_WIDTHS[dtype]
    ka = _ordered(_bits(np.where(nan, 0, a) if nan.any() else a, dtype), width)
    ke = _ordered(_bits(np.where(nan, 0, e) if nan.any() else e, dtype), width)
    return np.where(ka >= ke, ka - ke, ke - ka)


# -- one output -----------------------------------------------------------------------------------

@dataclass(frozen=True)
class NeededTolerance:
    """The loosening that would have made an output pass (None: no value of it would)."""

    atol: float | None   # smallest atol that passes at the given rtol
    rtol: float | None   # smallest rtol that passes at the given atol (None where e == 0 fails)


# An fp16 artifact may round differently from torch's fp16 kernels (other accumulation order and
# width, rounding after every op as Core ML's GPU/ANE do), but not by much more. Measured on the
# 19 zoo models (all 450 held-out digits), as the atol each needs at the fp16 spec rtol against
# the fp32 model: gatex's CoreML emulator at most 1.73x torch's own fp16 (PaGRUCell; next
# ArcTan_Approx 1.66x), onnxruntime CPU at most 1.11x (PGConv2d) but for CGConv2d's portable
# ONNX (3.3x: it fails). 2x leaves that ratio a little room and still fails a lowering that is
# wrong by more than twice what the precision costs torch.
FLOOR_FACTOR = 2.0

LOW_PRECISIONS = ("float16", "bfloat16")   # the dtypes a precision floor is measured for

_SHORT = {"float16": "fp16", "bfloat16": "bf16", "float32": "fp32", "float64": "fp64"}


@dataclass(frozen=True)
class PrecisionFloor:
    """Torch's own error on one output when the reference model runs in a low precision.

    Over the elements finite on both sides of torch_lowp (the reference model in ``dtype`` on
    the same inputs cast to ``dtype``) and torch_fp32 = e:

        torch_max_abs = max |torch_lowp - e|
        torch_atol    = max(0, max(|torch_lowp - e| - rtol |e|))   the atol torch_lowp needs
        atol          = factor * torch_atol                         the floor

    The floor is the atol torch's own low-precision run needs under the same pass rule, not its
    max_abs: the largest errors sit on the largest values, which rtol already covers (on the
    zoo, max_abs is 1.2-5x torch_atol), so a max_abs floor would let a wrong lowering through
    on the small values by that much more. ``raised``: the floor lifted this output's atol above
    the chosen one (False when that atol is larger already, or is the user's: then the floor is
    only reported).
    """

    dtype: str
    torch_max_abs: float
    torch_atol: float
    rtol: float
    factor: float = FLOOR_FACTOR
    raised: bool = False

    @property
    def atol(self) -> float:
        return self.factor * self.torch_atol

    def applied_to(self, tolerance: Tolerance) -> Tolerance:
        """``tolerance`` with its atol raised to the floor where ``raised``; rtol unchanged."""
        return Tolerance(tolerance.rtol, self.atol) if self.raised else tolerance

    def describe(self) -> str:
        """``2 x torch's own fp16 error (atol 0.00335 at rtol=0.01; max_abs 0.00699)``"""
        return (f"{self.factor:g} x torch's own {_SHORT.get(self.dtype, self.dtype)} error "
                f"(atol {fmt(self.torch_atol)} at rtol={fmt(self.rtol)}; max_abs "
                f"{fmt(self.torch_max_abs)})")


@dataclass(frozen=True)
class OutputParity:
    """One output of an artifact against the reference: metrics, verdict and a one-line message."""

    name: str
    passed: bool
    tolerance: Tolerance
    message: str
    shape: tuple[int, ...]
    expected_shape: tuple[int, ...]
    dtype: str                     # the artifact output's dtype
    max_abs: float | None = None
    max_rel: float | None = None
    mean_abs: float | None = None
    cosine: float | None = None
    max_ulp: int | None = None     # in ``dtype``; None for non-float outputs
    nan_actual: int = 0
    nan_expected: int = 0
    nan_mismatch: int = 0          # positions NaN on exactly one side
    inf_actual: int = 0
    inf_expected: int = 0
    inf_mismatch: int = 0          # positions where an infinity is not matched by the same one
    outside: int = 0               # finite elements outside the tolerance
    worst_index: tuple[int, ...] | None = None   # the element furthest outside (or closest to) it
    worst_actual: float | None = None
    worst_expected: float | None = None
    top1: float | None = None      # 2-D logits: fraction of rows whose argmax agrees
    needed: NeededTolerance | None = None
    floor: PrecisionFloor | None = None   # torch's own low-precision error, where measured
    outliers_allowed: int = 0      # elements that may be outside (the user's --max-outliers)

    def __bool__(self) -> bool:
        return self.passed


def fmt(x: float) -> str:
    return f"{x:.3g}"


def _within(diff: np.ndarray, scale: np.ndarray, tol: Tolerance) -> bool:
    return bool(np.all(diff <= tol.atol + tol.rtol * scale))


def _needed(diff: np.ndarray, scale: np.ndarray, tol: Tolerance) -> NeededTolerance:
    if diff.size == 0:
        return NeededTolerance(0.0, 0.0)
    atol = _settle(max(0.0, float(np.max(diff - tol.rtol * scale))),
                   lambda x: _within(diff, scale, Tolerance(tol.rtol, x)))
    excess = diff - tol.atol
    if np.any((scale == 0) & (excess > 0)):
        return NeededTolerance(atol, None)  # |e| = 0 there: no rtol covers a nonzero difference
    nz = scale > 0
    rtol = max(0.0, float(np.max(excess[nz] / scale[nz]))) if nz.any() else 0.0
    return NeededTolerance(atol, _settle(rtol, lambda x: _within(diff, scale,
                                                                 Tolerance(x, tol.atol))))


def _settle(value: float, passes: Callable[[float], bool]) -> float:
    # The subtraction/division that found ``value`` rounds: step up, one float at a time, until
    # the pass rule itself accepts it (a few steps at most; the cap only guards the loop).
    for _ in range(64):
        if passes(value):
            return value
        value = float(np.nextafter(value, np.inf))
    return value * (1 + 1e-12)


def compare(actual: np.ndarray, expected: np.ndarray, tolerance: Tolerance, *,
            name: str = "output", classifier: bool | None = None,
            floor: PrecisionFloor | None = None, outliers: float = 0.0) -> OutputParity:
    """Compare one output with its reference under ``tolerance`` (see the module docstring).

    ``classifier``: report top-1 agreement; None means "when the output is 2-D with at least two
    columns" (a batch of logits). The ULP distance is counted in ``actual``'s dtype. ``floor``:
    the measured precision floor of this output; where it is ``raised`` the atol is its atol
    (the result's ``tolerance`` is the one applied), and the message names it either way.
    ``outliers``: the fraction of the finite elements that may lie outside the tolerance
    (``floor(outliers * n)`` of them) because a hard decision flipped (`OpSpec.decision_outliers`);
    NaN/Inf mismatches are never excused, and the message says how many were used.

    >>> bool(compare(np.float32([1, 2]), np.float32([1, 2.00001]), Tolerance(1e-5, 0)))
    True
    """
    a_raw, e_raw = np.asarray(actual), np.asarray(expected)
    dtype = a_raw.dtype.name
    if floor is not None:
        tolerance = floor.applied_to(tolerance)
    base = dict(name=name, tolerance=tolerance, shape=tuple(a_raw.shape),
                expected_shape=tuple(e_raw.shape), dtype=dtype, floor=floor)
    if a_raw.shape != e_raw.shape:
        return OutputParity(passed=False, message=f"{name}: shape {tuple(a_raw.shape)} differs "
                            f"from the reference's {tuple(e_raw.shape)}", **base)
    a, e = a_raw.astype(np.float64), e_raw.astype(np.float64)
    nan_a, nan_e = np.isnan(a), np.isnan(e)
    nan_mismatch = int(np.count_nonzero(nan_a != nan_e))
    inf_a, inf_e = np.isinf(a), np.isinf(e)
    inf_mismatch = int(np.count_nonzero((inf_a | inf_e) & ~(nan_a | nan_e) & (a != e)))
    finite = np.isfinite(a) & np.isfinite(e)
    diff = np.abs(a[finite] - e[finite])
    scale = np.abs(e)[finite]
    bound = tolerance.atol + tolerance.rtol * scale
    outside = int(np.count_nonzero(diff > bound))

    metrics: dict[str, object] = dict(
        max_abs=float(diff.max()) if diff.size else 0.0,
        mean_abs=float(diff.mean()) if diff.size else 0.0,
        max_rel=float(np.max(diff[scale > 0] / scale[scale > 0])) if np.any(scale > 0) else 0.0,
        cosine=_cosine(a[finite], e[finite]),
        nan_actual=int(nan_a.sum()), nan_expected=int(nan_e.sum()), nan_mismatch=nan_mismatch,
        inf_actual=int(inf_a.sum()), inf_expected=int(inf_e.sum()), inf_mismatch=inf_mismatch,
        outside=outside,
    )
    ulp_dtype = float_dtype_of(a_raw)
    if ulp_dtype is not None:
        both = ~(nan_a | nan_e)
        ulps = ulp_distance(a_raw[both], e_raw[both], ulp_dtype)
        metrics["max_ulp"] = int(ulps.max()) if ulps.size else 0
    if diff.size:
        flat = int(np.argmax(diff - bound))
        where = tuple(int(i) for i in np.unravel_index(np.flatnonzero(finite)[flat], a.shape))
        metrics.update(worst_index=where, worst_actual=float(a[where]),
                       worst_expected=float(e[where]))
    if classifier is None:
        classifier = a.ndim == 2 and a.shape[1] >= 2
    if classifier:
        metrics["top1"] = (float(np.mean(np.argmax(a, axis=1) == np.argmax(e, axis=1)))
                           if a.shape[0] else 1.0)

    allowed = int(np.floor(outliers * diff.size + 1e-9)) if outliers > 0 else 0
    passed = nan_mismatch == 0 and inf_mismatch == 0 and outside <= allowed
    needed = None if nan_mismatch or inf_mismatch else _needed(diff, scale, tolerance)
    result = OutputParity(passed=passed, message="", needed=needed, outliers_allowed=allowed,
                          **base, **metrics)  # type: ignore[arg-type]
    return _with_message(result, a.size)


def _cosine(a: np.ndarray, e: np.ndarray) -> float:
    na, ne = float(np.linalg.norm(a)), float(np.linalg.norm(e))
    if na == 0 and ne == 0:
        return 1.0
    if na == 0 or ne == 0:
        return 0.0
    return float(np.dot(a.ravel(), e.ravel()) / (na * ne))


def _with_message(r: OutputParity, size: int) -> OutputParity:
    tol = f"rtol={fmt(r.tolerance.rtol)}, atol={fmt(r.tolerance.atol)}"
    yardstick = ""
    if r.floor is not None and r.floor.raised:
        tol += f" (atol = {r.floor.describe()})"
    elif r.floor is not None:
        yardstick = (f"; torch's own {_SHORT.get(r.floor.dtype, r.floor.dtype)} error: max_abs "
                     f"{fmt(r.floor.torch_max_abs)}, needs atol {fmt(r.floor.torch_atol)}")
    if r.passed and r.outside:
        text = (f"{r.name}: ok within {tol} except {r.outside} of {size} values "
                f"({100 * r.outside / max(size, 1):.2g} %), within the {r.outliers_allowed} "
                f"outliers allowed (--max-outliers) (max_abs {fmt(r.max_abs or 0.0)}"
                f"{yardstick})")
        return _replace(r, message=text)
    if r.passed:
        text = f"{r.name}: ok within {tol} (max_abs {fmt(r.max_abs or 0.0)}{yardstick})"
        return _replace(r, message=text)
    parts = []
    if r.nan_mismatch:
        parts.append(f"NaN at {r.nan_mismatch} positions on one side only "
                     f"({r.nan_actual} NaN in the artifact, {r.nan_expected} in the reference)")
    if r.inf_mismatch:
        parts.append(f"{r.inf_mismatch} infinities not matched by the reference")
    if r.outside:
        worst = ""
        if r.worst_index is not None:
            worst = (f" at {list(r.worst_index)}: {r.worst_actual:.6g} vs "
                     f"{r.worst_expected:.6g}")
        allowed = (f", {r.outliers_allowed} outliers allowed (--max-outliers)"
                   if r.outliers_allowed else "")
        parts.append(f"{r.outside} of {size} values outside {tol} (max_abs "
                     f"{fmt(r.max_abs or 0.0)}{worst}{yardstick}{allowed})")
    text = f"{r.name}: " + "; ".join(parts)
    if r.needed is None:
        text += "; no tolerance passes while NaN/inf positions differ"
    elif r.outside:
        atol = f"atol >= {fmt(r.needed.atol)} at rtol={fmt(r.tolerance.rtol)}"
        rtol = ("no rtol passes at this atol (the reference is 0 there)" if r.needed.rtol is None
                else f"rtol >= {fmt(r.needed.rtol)} at atol={fmt(r.tolerance.atol)}")
        text += f"; would pass with {atol}, or {rtol}"
    return _replace(r, message=text)


def _replace(r: OutputParity, **changes: object) -> OutputParity:
    from dataclasses import replace

    return replace(r, **changes)  # type: ignore[arg-type]


def compare_outputs(actual: Mapping[str, np.ndarray], expected: Mapping[str, np.ndarray],
                    tolerance: Tolerance, *, floors: Mapping[str, PrecisionFloor] | None = None,
                    outliers: float = 0.0) -> tuple[OutputParity, ...]:
    """`compare` every output by name, each with its precision floor from ``floors`` where
    measured and the hard-decision ``outliers`` fraction; one missing on either side is a
    failed entry."""
    floors = floors or {}
    results = []
    for name in list(expected) + [n for n in actual if n not in expected]:
        if name not in actual or name not in expected:
            side = "artifact" if name not in actual else "reference"
            shape = tuple(np.shape(expected[name] if name in expected else actual[name]))
            results.append(OutputParity(
                name=name, passed=False, tolerance=tolerance, shape=shape, expected_shape=shape,
                dtype="", message=f"{name}: missing from the {side}'s outputs"))
            continue
        results.append(compare(actual[name], expected[name], tolerance, name=name,
                               floor=floors.get(name), outliers=outliers))
    return tuple(results)
