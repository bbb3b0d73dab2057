"""The verdicts: one artifact's `ParityResult` (every output's `OutputParity` under one
`ToleranceChoice`), and `LocateResult`, the first diverging gatex op (`--locate`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from gatex.comparison.decisions import DecisionReport
from gatex.comparison.metrics import OutputParity
from gatex.comparison.tolerance import ToleranceChoice


@dataclass(frozen=True)
class OpComparison:
    """One gatex op's output in the artifact against the same op's output in torch (--locate)."""

    index: int          # execution order among the gatex ops, from 0
    op: str             # spec name
    node: str           # the ONNX node's name
    module: str         # the torch module that ran it ("" = the root module)
    parity: OutputParity


@dataclass(frozen=True)
class LocateResult:
    """The gatex ops compared in execution order, or why they could not be paired."""

    comparisons: tuple[OpComparison, ...] = ()
    unmatched_reason: str = ""
    decision: str = ""   # the first layer whose decisions differ beyond the bound, described

    @property
    def first_divergence(self) -> OpComparison | None:
        return next((c for c in self.comparisons if not c.parity), None)

    def summary(self) -> str:
        if self.decision:
            return f"first layer whose decisions differ beyond the rounding bound: {self.decision}"
        if self.unmatched_reason:
            return f"cannot locate: {self.unmatched_reason}"
        first = self.first_divergence
        if first is None:
            return (f"all {len(self.comparisons)} gatex ops agree within tolerance; any "
                    "difference arises in standard ops")
        where = f"node {first.node!r}" + (f", torch module {first.module!r}" if first.module
                                           else "")
        return (f"first diverging gatex op: #{first.index + 1} of {len(self.comparisons)}, "
                f"{first.op} ({where}): {first.parity.message}")


@dataclass(frozen=True)
class ParityResult:
    """Every output of one artifact against the reference; truthy iff there are outputs and all pass.

    ``emulated`` marks results computed by an emulator rather than the real backend (CoreML's
    MIL emulator on Linux); ``inputs`` says where the inputs came from, ``input_nans`` which
    inputs held NaNs (reported, not refused). ``pruned``: for a reference with GatedDense
    layers, the artifact's pruned-weights check (`gatex.exporters.compact.PrunedWeightsCheck`);
    a violated one fails the result whatever the outputs say. ``decisions``: for a model with
    hard-decision ops, the decisions compared layer by layer (`DecisionReport`); a flip beyond
    its rounding bound fails the result.
    """

    artifact: str
    runtime: str
    reference: str
    dtype: str
    tolerance: ToleranceChoice
    outputs: tuple[OutputParity, ...]
    emulated: bool = False
    inputs: str = ""
    samples: int | None = None
    input_nans: dict[str, int] = field(default_factory=dict)
    locate: LocateResult | None = None
    notes: tuple[str, ...] = ()
    pruned: Any | None = None
    decisions: DecisionReport | None = None

    @property
    def passed(self) -> bool:
        return bool(self.outputs) and all(self.outputs) and \
            (self.pruned is None or bool(self.pruned)) and \
            (self.decisions is None or self.decisions.passed)

    def __bool__(self) -> bool:
        return self.passed

    def failures(self) -> tuple[OutputParity, ...]:
        return tuple(o for o in self.outputs if not o)

    def summary(self) -> str:
        """One line: the verdict, and for a failure the first failing output's message."""
        verdict = "PASS" if self.passed else "FAIL"
        head = f"{verdict} {self.artifact} on {self.runtime} vs {self.reference}"
        if self.passed:
            return f"{head}: {len(self.outputs)} outputs within {self.tolerance.describe()}"
        if not self.outputs:
            return f"{head}: no outputs compared"
        if not self.failures():  # the outputs agree; the decisions or pruned weights do not
            if self.decisions is not None and not self.decisions.passed:
                return f"{head}: {self.decisions.summary()}"
            return f"{head}: {self.pruned.summary()}"
        return f"{head}: {self.failures()[0].message}"
