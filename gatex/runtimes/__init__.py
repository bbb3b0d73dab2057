"""Runtimes: torch eager, onnxruntime, CoreML (+ its MIL emulator) and TensorRT, each running a
loaded artifact.

`Runtime` is the template every backend follows (`base.py`); `locate.py` finds the first
diverging gatex op of an ONNX model. The metrics and verdicts live in `gatex.comparison`
(re-exported here); running an artifact against its reference (``gatex parity``) is
`gatex.pipeline.check`.
Backends import lazily: ``import gatex.runtimes`` loads neither onnxruntime nor onnx.
"""

from __future__ import annotations

from typing import Any

from gatex.runtimes.base import Runtime, RuntimeNotLoadedError, TensorSpec
from gatex.comparison import (
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
}


def __getattr__(name: str) -> Any:  # PEP 562: runtime classes load their modules on first use
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'gatex.runtimes' has no attribute {name!r}")


__all__ = ["FLOOR_FACTOR", "LocateResult", "NeededTolerance", "OpComparison", "OrtRuntime",
           "OutputParity", "ParityResult", "PrecisionFloor", "Runtime", "RuntimeNotLoadedError",
           "TensorSpec", "ToleranceChoice", "TorchRuntime", "choose_tolerance", "compare",
           "compare_outputs", "tolerance_for", "ulp_distance"]
