"""Parity assertions for your own pytest suites.

    import gatex.testing

    def test_export_matches_torch(tmp_path):
        model = build_my_model().eval()
        x = torch.randn(4, 64)
        gatex.testing.assert_parity("my_model.onnx", model, x)   # spec tolerances of its ops

The tolerance comes from the specs of the gatex ops the models hold (the loosest of them, in
the artifact's output dtype) unless you pass one (then it is reported as yours). The failure
message's first line is the one-line verdict (the first failing output, by how much, and the
tolerance that would have passed); the parity table follows: every output's max abs/rel error,
cosine, ULP distance, NaN counts.
"""

from __future__ import annotations

from collections.abc import Mapping
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import numpy as np

from gatex.comparison import ParityResult
from gatex.comparison.report import render_text
from gatex.errors import BadInputError
from gatex.ops.spec import Tolerance
from gatex.pipeline.check import compare_runtimes
from gatex.runtimes.base import Runtime
from gatex.runtimes.onnxruntime_runtime import OrtRuntime
from gatex.runtimes.torch_runtime import TorchRuntime, to_numpy


def as_runtime(obj: Any) -> Runtime:
    """A `Runtime` for ``obj``: itself, an ``nn.Module`` (torch eager), or an ONNX model
    (a ``.onnx`` path, serialized bytes, or an ``onnx.ModelProto``) on onnxruntime CPU."""
    if isinstance(obj, Runtime):
        return obj
    from torch import nn

    if isinstance(obj, nn.Module):
        return TorchRuntime(obj)
    if isinstance(obj, (str, Path)) and Path(obj).suffix.lower() != ".onnx":
        raise BadInputError(f"{obj}: assert_parity runs .onnx files, nn.Modules and Runtimes")
    if isinstance(obj, (str, Path, bytes)) or hasattr(obj, "SerializeToString"):
        return OrtRuntime(obj)
    raise BadInputError(f"cannot run a {type(obj).__name__}; give an nn.Module, a .onnx path, "
                        "an onnx.ModelProto or a gatex Runtime")


def _feeds(inputs: Any, runtime: Runtime) -> dict[str, Any]:
    if isinstance(inputs, Mapping):
        return dict(inputs)
    values = list(inputs) if isinstance(inputs, (tuple, list)) else [inputs]
    specs = runtime.input_specs
    if specs is None:
        return {f"input_{i}": v for i, v in enumerate(values)}
    if len(specs) != len(values):
        raise BadInputError(f"{runtime.label} takes {len(specs)} inputs "
                            f"({', '.join(s.name for s in specs)}); got {len(values)}")
    return {s.name: v for s, v in zip(specs, values)}


def assert_parity(model_or_artifact: Any, reference: Any, inputs: Any, *,
                  dtype: str | None = None,
                  tolerance: Tolerance | tuple[float, float] | None = None,
                  precision_floor: bool = True, decisions: str = "forced") -> ParityResult:
    """Assert that ``model_or_artifact`` reproduces ``reference`` on ``inputs``.

    ``model_or_artifact`` and ``reference``: an ``nn.Module``, a ``.onnx`` path / ModelProto,
    or a `Runtime`. ``inputs``: a mapping of input name to array/tensor, one array/tensor, or a
    sequence of them in input order. ``dtype`` picks the spec tolerances (default: the
    artifact's output dtype); ``tolerance`` (a `Tolerance` or ``(rtol, atol)``) replaces them
    and is reported as yours. An fp16/bf16 artifact checked against an ``nn.Module`` gets the
    precision floor (each atol at least 2x the atol the module's own fp16/bf16 run needs; see
    `gatex.pipeline.compare_runtimes`) unless ``precision_floor=False``. A model with
    hard-decision ops (CGConv2d, PGConv2d) is judged by decision-forced parity unless
    ``decisions="strict"`` (`compare_runtimes`). Returns the
    `ParityResult`; raises AssertionError when any output fails: the one-line verdict
    (`ParityResult.summary`), then the parity table.
    """
    if isinstance(tolerance, tuple):
        tolerance = Tolerance(*tolerance)
    artifact, ref = as_runtime(model_or_artifact), as_runtime(reference)
    with ExitStack() as stack:
        for runtime in (artifact, ref):
            if not runtime.loaded:  # close what we load; a caller's loaded Runtime stays open
                stack.enter_context(runtime)
        feeds = {k: _array(v) for k, v in _feeds(inputs, artifact).items()}
        result = compare_runtimes(artifact, ref, feeds, dtype=dtype, tolerance=tolerance,
                                  inputs_note="assert_parity inputs",
                                  precision_floor=precision_floor, decisions=decisions)
    if not result:
        raise AssertionError(f"{result.summary()}\n{render_text([result])}")
    return result


def _array(value: Any) -> np.ndarray:
    if type(value).__module__.startswith("torch"):
        return to_numpy(value)
    return np.asarray(value)


__all__ = ["as_runtime", "assert_parity"]
