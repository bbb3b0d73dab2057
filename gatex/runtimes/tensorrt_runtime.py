"""`TensorrtRuntime`: a serialized TensorRT engine (``.engine`` / ``.plan``) on a CUDA device.

TensorRT is imported in `_load`, never at import time; where it (or torch's CUDA) is missing the
runtime raises `BackendUnavailableError` (exit 3) with one line. Device buffers are torch CUDA
tensors (gatex depends on torch anyway): inputs are copied in, TensorRT runs on a torch stream
(``execute_async_v3``), outputs are copied back as NumPy arrays. Engines gatex builds carry
their plugin kernels ahead of time (no Python plugin code needed to run them) and, as the engine
name, gatex's plan (unit, precision, plugin decisions), which `metadata` exposes so
``gatex parity x.engine`` finds its zoo reference the way it does for ONNX files.

Written against TensorRT's documented Python API (``Runtime.deserialize_cuda_engine``,
``ICudaEngine.num_io_tensors / get_tensor_name / get_tensor_mode / get_tensor_dtype /
get_tensor_shape / name``, ``IExecutionContext.set_input_shape / set_tensor_address /
get_tensor_shape / execute_async_v3``) and never run: there is no TensorRT where gatex was
written (docs/tensorrt.md).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from gatex.errors import BackendUnavailableError, BadInputError, CheckpointError
from gatex.runtimes.arrays import from_numpy, to_numpy
from gatex.runtimes.base import Runtime, TensorSpec

ENGINE_SUFFIXES = (".engine", ".plan")
ENGINE_NAME_PREFIX = "gatex "     # gatex.ops.kernels.trt_bundle.ENGINE_NAME_PREFIX


def engine_metadata(name: str) -> dict[str, str]:
    """gatex's plan from an engine's name (``gatex {json}``), as string metadata; {} for an
    engine gatex did not build. Keys as the ONNX exporter's: ``gatex.unit``, ``gatex.dtype``..."""
    if not name.startswith(ENGINE_NAME_PREFIX):
        return {}
    try:
        plan = json.loads(name[len(ENGINE_NAME_PREFIX):])
    except ValueError:
        return {}
    meta = {"gatex.version": str(plan.get("gatex", "")), "gatex.dtype": str(plan.get("precision")),
            "gatex.trt.plugins": str(plan.get("policy")),
            "gatex.trt.decisions": json.dumps(plan.get("decisions", {}))}
    if plan.get("unit"):
        meta["gatex.unit"] = str(plan["unit"])
    return meta


def _import_tensorrt() -> Any:
    try:
        import tensorrt as trt
    except ImportError:
        raise BackendUnavailableError(
            "TensorRT is not installed here (gatex never installs it: it needs an NVIDIA GPU and "
            "NVIDIA's tensorrt packages), so TensorRT engines cannot run") from None
    return trt


def _numpy_dtype(trt: Any, dtype: Any) -> str:
    names = {trt.float32: "float32", trt.float16: "float16", trt.bfloat16: "bfloat16",
             trt.int32: "int32", trt.int64: "int64", trt.int8: "int8", trt.bool: "bool",
             trt.uint8: "uint8"}
    if dtype not in names:
        raise BadInputError(f"engine tensor type {dtype} is not supported by gatex's runtime")
    return names[dtype]


class TensorrtRuntime(Runtime):
    """A TensorRT engine file on CUDA device ``device`` (an index)."""

    name = "tensorrt"

    def __init__(self, path: str | Path, *, device: int = 0) -> None:
        super().__init__()
        self.path = Path(path)
        self.model = self.path
        self.device = device
        self.engine: Any = None
        self.context: Any = None
        self._metadata: dict[str, str] = {}
        self._inputs: tuple[TensorSpec, ...] = ()
        self._outputs: tuple[TensorSpec, ...] = ()
        self._trt: Any = None

    @property
    def label(self) -> str:
        return f"tensorrt (cuda:{self.device})"

    @property
    def metadata(self) -> dict[str, str]:
        """gatex's plan from the engine's name (`engine_metadata`): ``gatex.unit``, ..."""
        self._require_loaded("metadata")
        return dict(self._metadata)

    @property
    def compute_dtype(self) -> str | None:
        """The precision the engine was built in (from gatex's plan), for the tolerances."""
        return {"fp32": "float32", "fp16": "float16", "bf16": "bfloat16"}.get(
            self._metadata.get("gatex.dtype", ""))

    def _load(self) -> None:
        if self.path.suffix.lower() not in ENGINE_SUFFIXES:
            raise BadInputError(f"{self.path}: a TensorRT engine is a "
                                f"{' or '.join(ENGINE_SUFFIXES)} file")
        if not self.path.is_file():
            raise BadInputError(f"TensorRT engine {self.path} does not exist or is not a file")
        trt = _import_tensorrt()
        import torch

        if not torch.cuda.is_available():
            raise BackendUnavailableError("TensorRT engines run on a CUDA device, and torch sees "
                                          "none here")
        try:  # engines with just-in-time gatex plugins need their definitions in the process
            from gatex.ops.kernels.trt_plugins import register_trt_plugins

            register_trt_plugins()
        except Exception:  # noqa: BLE001  (AOT engines, gatex's own, need none)
            pass
        logger = trt.Logger(trt.Logger.WARNING)
        runtime = trt.Runtime(logger)
        engine = runtime.deserialize_cuda_engine(self.path.read_bytes())
        if engine is None:
            raise CheckpointError(f"TensorRT cannot deserialize {self.path} (built by another "
                                  "TensorRT version or for another GPU?)")
        self._trt, self.engine = trt, engine
        self.context = engine.create_execution_context()
        self._metadata = engine_metadata(getattr(engine, "name", "") or "")
        inputs, outputs = [], []
        for i in range(engine.num_io_tensors):
            name = engine.get_tensor_name(i)
            shape = tuple(d if d >= 0 else None for d in engine.get_tensor_shape(name))
            spec = TensorSpec(name, _numpy_dtype(trt, engine.get_tensor_dtype(name)), shape)
            is_input = engine.get_tensor_mode(name) == trt.TensorIOMode.INPUT
            (inputs if is_input else outputs).append(spec)
        self._inputs, self._outputs = tuple(inputs), tuple(outputs)

    def _close(self) -> None:
        self.context = None
        self.engine = None

    def _input_specs(self) -> tuple[TensorSpec, ...]:
        return self._inputs

    def _output_names(self) -> tuple[str, ...]:
        return tuple(s.name for s in self._outputs)

    def _run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        import torch


        device = torch.device("cuda", self.device)
        keep = []   # the input buffers live until TensorRT is done with them
        for spec in self._inputs:
            t = from_numpy(feeds[spec.name]).to(device)
            keep.append(t)
            self.context.set_input_shape(spec.name, tuple(t.shape))
            self.context.set_tensor_address(spec.name, t.data_ptr())
        outputs = {}
        for spec in self._outputs:
            shape = tuple(self.context.get_tensor_shape(spec.name))
            dtype = getattr(torch, spec.dtype)
            out = torch.empty(shape, dtype=dtype, device=device)
            self.context.set_tensor_address(spec.name, out.data_ptr())
            outputs[spec.name] = out
        stream = torch.cuda.current_stream(device)
        if not self.context.execute_async_v3(stream.cuda_stream):
            raise BackendUnavailableError(f"TensorRT failed to run {self.path.name}")
        stream.synchronize()
        return {name: to_numpy(t) for name, t in outputs.items()}
