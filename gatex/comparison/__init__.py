"""Parity: the pure metrics that compare a backend's outputs with a reference (`metrics`), the
tolerance that judges them (`tolerance`), the verdicts (`results`), and the reports that write
them (`report`: console, JSON, JUnit, Markdown).

Nothing here runs a model: `gatex.pipeline.check` runs the artifact and its reference and hands
the outputs to `compare`.
"""

from __future__ import annotations

from gatex.comparison.metrics import (
    FLOOR_FACTOR,
    NeededTolerance,
    OutputParity,
    PrecisionFloor,
    compare,
    compare_outputs,
    ulp_distance,
)
from gatex.comparison.results import LocateResult, OpComparison, ParityResult
from gatex.comparison.tolerance import ToleranceChoice, choose_tolerance, tolerance_for

__all__ = ["FLOOR_FACTOR", "LocateResult", "NeededTolerance", "OpComparison", "OutputParity",
           "ParityResult", "PrecisionFloor", "ToleranceChoice", "choose_tolerance", "compare",
           "compare_outputs", "tolerance_for", "ulp_distance"]
