"""Every corpus model through every target: the cells of the README's real-model matrix.

One function per target takes (entry, model, example inputs, an output folder) and returns a
`Cell`: passed or not, the worst max-abs error over the outputs, the seconds it took, and a
short note. tests/realmodels/test_realmodels.py asserts the cells; benchmarks/realmodels_matrix.py
prints them (and rewrites the README's table).
"""

from __future__ import annotations

import io
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

import gatex
from gatex.exporters.tensorrt import EngineNotBuilt
from gatex.runtimes.onnxruntime_runtime import OrtRuntime, PluginStandInRuntime
from gatex.testing import assert_parity


@dataclass(frozen=True)
class Cell:
    passed: bool
    max_abs: float | None
    seconds: float
    note: str = ""

    def markdown(self) -> str:
        err = "" if self.max_abs is None else f" {self.max_abs:.1e}"
        return ("pass" if self.passed else "**FAIL**") + err


def _worst(parity: Any) -> float | None:
    values = [o.max_abs for o in getattr(parity, "outputs", ()) if o.max_abs is not None]
    return max(values) if values else None


def _export(to: str, **options: Any) -> Callable[..., tuple[bool, Any, str]]:
    def run(entry: Any, model: Any, inputs: tuple, out: Path) -> tuple[bool, Any, str]:
        result = gatex.export(model, inputs, to=to, out_dir=out, name=entry.name, force=True,
                              dynamic_shapes=entry.dynamic, **options)
        note = "; ".join(result.warnings)
        if not result.passed and result.parity is not None:
            note = result.parity.summary()
        return result.passed, result.parity, note
    return run


def _trt_bundle(entry: Any, model: Any, inputs: tuple, out: Path) -> tuple[bool, Any, str]:
    """The TensorRT bundle (fp32 engine precision, plugins auto); without TensorRT its ONNX
    runs with the plugin nodes decomposed (`PluginStandInRuntime`): the graph TensorRT gets."""
    try:
        result = gatex.export(model, inputs, to="trt", precision="fp32", out_dir=out,
                              name=entry.name, force=True, dynamic_shapes=entry.dynamic)
        return result.passed, result.parity, "engine built"
    except EngineNotBuilt as exc:
        runtime = PluginStandInRuntime(exc.artifact.onnx_path)
        parity = _assert_parity(runtime, model, inputs)
        return bool(parity), parity, "bundle graph, plugins decomposed (no TensorRT here)"


def _openvino(entry: Any, model: Any, inputs: tuple, out: Path) -> tuple[bool, Any, str]:
    from gatex.runtimes.openvino_runtime import OpenvinoRuntime

    result = gatex.export(model, inputs, out_dir=out, name=entry.name, force=True,
                          dynamic_shapes=entry.dynamic, check=False)
    parity = _assert_parity(OpenvinoRuntime(result.path), model, inputs)
    return bool(parity), parity, "portable ONNX, functions inlined by gatex"


def _plain_torch_onnx(entry: Any, model: Any, inputs: tuple, out: Path
                      ) -> tuple[bool, Any, str]:
    """The user's own exporter: torch.onnx.export (dynamo) of the gatex model, no gatex."""
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        program = torch.onnx.export(model, inputs, dynamo=True, verbose=False)
    proto = program.model_proto
    proto.ir_version = min(proto.ir_version, 10)  # onnxruntime 1.31 rejects IR 14
    parity = _assert_parity(OrtRuntime(proto), model, inputs)
    return bool(parity), parity, "torch.onnx.export, no gatex translation"


def _assert_parity(runtime: Any, model: Any, inputs: tuple) -> Any:
    try:
        return assert_parity(runtime, model, list(inputs))
    except AssertionError as exc:
        raise _Failed(str(exc).splitlines()[0]) from None


class _Failed(Exception):
    pass


TARGETS: dict[str, Callable[..., tuple[bool, Any, str]]] = {
    "onnx-fp32": _export("onnx"),
    "onnx-fp16": _export("onnx", dtype="fp16"),
    "coreml-fp32": _export("coreml", precision="fp32"),
    "coreml-fp16": _export("coreml", precision="fp16"),
    "trt-bundle": _trt_bundle,
    "openvino": _openvino,
    "torch.onnx": _plain_torch_onnx,
}


def run_cell(entry: Any, model: Any, inputs: tuple, target: str, out: Path) -> Cell:
    start = time.perf_counter()
    try:
        passed, parity, note = TARGETS[target](entry, model, inputs, out)
        return Cell(passed, _worst(parity), time.perf_counter() - start, note)
    except _Failed as exc:
        return Cell(False, None, time.perf_counter() - start, str(exc))
    except Exception as exc:  # noqa: BLE001  (a cell that cannot run is a failed cell)
        text = " ".join(str(exc).split())[:200]
        return Cell(False, None, time.perf_counter() - start, f"{type(exc).__name__}: {text}")


def no_output(fn: Callable[[], Any]) -> Any:
    """``fn()`` with gatex's and torch's chatter kept off the terminal."""
    import contextlib

    with contextlib.redirect_stdout(io.StringIO()):
        return fn()
