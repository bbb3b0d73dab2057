"""Which tolerance judges an artifact: the op specs' tolerances for its ops and dtype, or the
user's ``--rtol/--atol``, and the precision floor for 16-bit outputs (`ToleranceChoice`)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import numpy as np

from gatex.comparison.metrics import PrecisionFloor, dtype_name, fmt
from gatex.errors import BadInputError
from gatex.ops import REGISTRY
from gatex.ops.spec import REDUCTION_TOLERANCES, Tolerance


@dataclass(frozen=True)
class ToleranceChoice:
    """The tolerance a check used, and where it came from.

    ``origin`` is "spec" (the op specs' per-dtype tolerances), "user" (given explicitly) or
    "user+spec" (one of rtol/atol given, the other from the specs), with "+floor" appended
    when a measured precision floor raised the atol of at least one output (`with_floors`).
    ``ops`` are the gatex ops whose specs were combined; ``reductions`` the standard reduction
    ops (MatMul, Conv, ...) that brought in the spec file's reduction tolerance.
    ``tolerance`` is the one chosen before any floor; ``floors`` holds the measured floors by
    output name, and an output's own `OutputParity.tolerance` is the one applied to it.
    ``outliers`` is the fraction of each output's elements the user excused (``--max-outliers``),
    ``outlier_ops`` who asked for it; 0 by default: hard decisions are proved by
    decision-forced parity (`gatex.comparison.decisions`), not excused.
    """

    tolerance: Tolerance
    dtype: str
    origin: str
    ops: tuple[str, ...] = ()
    reductions: tuple[str, ...] = ()
    floors: tuple[tuple[str, PrecisionFloor], ...] = ()
    outliers: float = 0.0
    outlier_ops: tuple[str, ...] = ()

    def with_outliers(self, setting: float | None) -> ToleranceChoice:
        """This choice with the allowance asked for: None or 0 none, a number in [0, 1) is the
        share of each output's elements that may lie outside, the user's, for any model."""
        from dataclasses import replace

        if not setting:
            return replace(self, outliers=0.0, outlier_ops=())
        fraction = float(setting)
        if not 0 <= fraction < 1:
            raise BadInputError(f"the share of outliers must be in [0, 100) percent; got "
                                f"{fraction * 100:g} %")
        return replace(self, outliers=fraction, outlier_ops=("given by the user",))

    def with_floors(self, measured: Mapping[str, PrecisionFloor], *, may_raise: bool = True
                    ) -> ToleranceChoice:
        """This choice with the measured floors by output name, each marked ``raised`` where
        ``may_raise`` (the atol is not the user's) and its atol exceeds the chosen one."""
        from dataclasses import replace

        floors = tuple((name, replace(f, raised=may_raise and f.atol > self.atol))
                       for name, f in measured.items())
        raised = any(f.raised for _, f in floors)
        origin = self.origin + ("+floor" if raised else "")
        return replace(self, floors=floors, origin=origin)

    @property
    def floor_map(self) -> dict[str, PrecisionFloor]:
        return dict(self.floors)

    @property
    def rtol(self) -> float:
        return self.tolerance.rtol

    @property
    def atol(self) -> float:
        return self.tolerance.atol

    def sources(self) -> str:
        text = ", ".join(self.ops)
        if self.reductions:
            text += f" and standard reductions ({', '.join(self.reductions)})"
        return text

    def describe(self) -> str:
        tol = f"rtol={fmt(self.rtol)}, atol={fmt(self.atol)}"
        origin = self.origin.removesuffix("+floor")
        if origin == "spec":
            text = f"{tol} ({self.dtype}; loosest spec of {self.sources()})"
        elif origin == "user":
            text = f"{tol} (given by the user)"
        else:
            text = f"{tol} ({self.dtype}; given by the user, the rest from the specs of " \
                   f"{self.sources()})"
        if self.outliers:
            text += (f"; up to {100 * self.outliers:g} % of each output's elements may be "
                     f"outside ({', '.join(self.outlier_ops)})")
        return text + self._floors_text()

    def _floors_text(self) -> str:
        if not self.floors:
            return ""
        many = len(self.floors) > 1
        parts = []
        for name, f in self.floors:
            where = f" for {name}" if many else ""
            if f.raised:
                parts.append(f"atol raised to {fmt(f.atol)}{where} = {f.describe()}")
            elif f.atol > self.atol:  # not raised though above: the atol is the user's
                parts.append(f"precision floor{where} {fmt(f.atol)} = {f.describe()}, not "
                             "applied: the atol is the user's")
            else:
                parts.append(f"precision floor{where} {fmt(f.atol)} = {f.describe()}, "
                             "not above this atol")
        return "; " + "; ".join(parts)


def tolerance_for(op_names: Iterable[str], dtype: object, *,
                  reductions: Iterable[str] = ()) -> ToleranceChoice:
    """The tolerance a model holding ``op_names`` is checked against in ``dtype``.

    A model is held to the loosest of its ops: rtol and atol are each the maximum over the gatex
    ops' spec tolerances for that dtype. A model cannot be checked more tightly than its least
    precise op allows, and taking the maximum never invents a bound no spec states.
    ``reductions`` names the standard ops with a reduction inside that the model runs (MatMul,
    Gemm, Conv; torch's addmm, convolution): their accumulation order differs between backends
    exactly as for the gatex reduction ops, so they bring in the spec file's
    ``REDUCTION_TOLERANCES`` for the dtype, and the choice lists them. Other standard ops
    (Add, Relu, pooling, ...) round once per element and add no tolerance of their own.
    """
    dtype = dtype_name(dtype)
    specs = {REGISTRY.get(n).name: REGISTRY.get(n) for n in op_names}
    if not specs:
        raise BadInputError("the model runs no gatex op, so no op spec gives a tolerance; pass "
                            "one explicitly (--rtol and --atol, or tolerance=)")
    for spec in specs.values():
        if dtype not in spec.tolerances:
            raise BadInputError(f"{spec.name} has no {dtype} tolerance (its spec covers "
                                f"{', '.join(spec.tolerances)})")
    bounds = [s.tolerance(dtype) for s in specs.values()]
    reductions = tuple(sorted(set(reductions)))
    if reductions:
        bounds.append(REDUCTION_TOLERANCES[dtype])
    return ToleranceChoice(Tolerance(max(t.rtol for t in bounds), max(t.atol for t in bounds)),
                           dtype, "spec", tuple(sorted(specs)), reductions)


def choose_tolerance(op_names: Iterable[str], dtype: object, *, rtol: float | None = None,
                     atol: float | None = None, reductions: Iterable[str] = ()
                     ) -> ToleranceChoice:
    """`tolerance_for`, unless the user gives rtol and/or atol (then reported as theirs)."""
    for label, value in (("rtol", rtol), ("atol", atol)):
        if value is not None and not (np.isfinite(value) and value >= 0):
            raise BadInputError(f"{label} must be a finite number >= 0; got {value}")
    dtype = dtype_name(dtype)
    if rtol is not None and atol is not None:  # the user's tolerance is applied to every element
        return ToleranceChoice(Tolerance(float(rtol), float(atol)), dtype, "user",
                               tuple(sorted(set(op_names))), tuple(sorted(set(reductions))))
    spec = tolerance_for(op_names, dtype, reductions=reductions)
    if rtol is None and atol is None:
        return spec
    chosen = Tolerance(spec.rtol if rtol is None else float(rtol),
                       spec.atol if atol is None else float(atol))
    return ToleranceChoice(chosen, dtype, "user+spec", spec.ops, spec.reductions)
