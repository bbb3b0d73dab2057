"""Runtimes (torch eager, onnxruntime) and the parity engine that compares their outputs.

`Runtime` is the template every backend follows (`base.py`); `parity.py` holds the pure metrics
and verdicts; `check.py` runs an artifact against its reference (``gatex parity``); `locate.py`
finds the first diverging gatex op; `report.py` writes the verdicts. Backends import lazily:
``import gatex.runtimes`` loads neither onnxruntime nor onnx.
"""

from __future__ import annotations

from typing import Any

from gatex.runtimes.base import Runtime, RuntimeNotLoadedError, TensorSpec
from gatex.runtimes.parity import (
    FLOOR_FACTOR,
    LocateResult,
    NeededTolerance,
    OpComparison,
    OutputParity,
    ParityResult,
    PrecisionFloor,
    ToleranceChoice,
    choose_tolerance,
    compare,
    compare_outputs,
    tolerance_for,
    ulp_distance,
)

_LAZY = {
    "TorchRuntime": "gatex.runtimes.torch_runtime",
    "OrtRuntime": "gatex.runtimes.onnxruntime_runtime",
    "compare_runtimes": "gatex.runtimes.check",
    "check_artifact": "gatex.runtimes.check",
    "run_parity_command": "gatex.runtimes.check",
    "measure_torch_error": "gatex.runtimes.check",
}


def __getattr__(name: str) -> Any:  # PEP 562: runtime classes load their modules on first use
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'gatex.runtimes' has no attribute {name!r}")


__all__ = ["FLOOR_FACTOR", "LocateResult", "NeededTolerance", "OpComparison", "OrtRuntime", "OutputParity",
           "ParityResult", "PrecisionFloor", "Runtime", "RuntimeNotLoadedError", "TensorSpec", "ToleranceChoice",
           "TorchRuntime",
           "check_artifact", "choose_tolerance", "compare", "compare_outputs", "compare_runtimes",
           "measure_torch_error", "run_parity_command", "tolerance_for", "ulp_distance"]
