"""`OpenvinoRuntime`: an ONNX artifact on OpenVINO (CPU), as gatex hands it over.

OpenVINO's ONNX frontend has no conversion rule for ``gatex``-domain nodes ("No conversion rule
found for operations: gatex.paGLU"), and it does not expand model-local functions the way
onnxruntime does. So gatex hands it the artifact's standard-op form: every local function
inlined (``onnx.inliner.inline_local_functions``: each gatex node becomes its body, the same
ops onnxruntime runs), TensorRT plugin nodes (plugin flavor, bundle ONNX) replaced by their
decompositions. The result says so in its notes. The ``inline`` flavor needs neither step.

OpenVINO is the optional extra ``openvino``; without it this runtime is unavailable (exit 3).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from gatex._optional import require
from gatex.artifacts.onnx_file import read_onnx
from gatex.artifacts.onnx_nodes import decompose_plugin_nodes
from gatex.errors import CheckFailedError, CheckpointError
from gatex.runtimes.base import Runtime, TensorSpec

# OpenVINO element type names -> NumPy dtype names
OV_DTYPES = {"f32": "float32", "f16": "float16", "f64": "float64", "bf16": "bfloat16",
             "i64": "int64", "i32": "int32", "i16": "int16", "i8": "int8", "u8": "uint8",
             "boolean": "bool"}


def import_openvino() -> Any:
    return require("openvino")


class OpenvinoRuntime(Runtime):
    """OpenVINO's CPU plugin over the ONNX file at ``path`` (see the module docstring);
    ``threads`` sets its inference threads (None: OpenVINO's choice)."""

    name = "openvino"

    def __init__(self, path: str | Path, *, threads: int | None = None) -> None:
        super().__init__()
        self.path = Path(path)
        self.threads = threads
        self.compiled: Any = None
        self.inlined: tuple[str, ...] = ()
        self.replaced: tuple[str, ...] = ()
        self._metadata: dict[str, str] = {}
        self._inputs: tuple[TensorSpec, ...] = ()
        self._outputs: tuple[str, ...] = ()

    @property
    def label(self) -> str:
        return "openvino (CPU)"

    @property
    def notes(self) -> tuple[str, ...]:
        notes = []
        if self.inlined:
            notes.append(f"OpenVINO ran {self.path.name} with its gatex functions inlined by "
                         f"gatex ({', '.join(self.inlined)}: standard ONNX ops; OpenVINO has "
                         "no rule for gatex nodes)")
        if self.replaced:
            notes.append(f"its TensorRT plugin nodes ({', '.join(self.replaced)}) ran as their "
                         "standard-op decompositions")
        return tuple(notes)

    def _load(self) -> None:
        import onnx
        import onnx.inliner

        ov = import_openvino()
        proto = read_onnx(self.path, external_data=True)   # checks paths and sizes first
        self._metadata = {p.key: p.value for p in proto.metadata_props}
        self.replaced = tuple(decompose_plugin_nodes(proto))
        self.inlined = tuple(sorted({n.op_type for n in proto.graph.node
                                     if n.domain not in ("", "ai.onnx")}))
        proto = onnx.inliner.inline_local_functions(proto)
        left = sorted({f"{n.domain}.{n.op_type}" for n in proto.graph.node
                       if n.domain not in ("", "ai.onnx")})
        if left:
            raise CheckpointError(f"OpenVINO cannot run {self.path}: it holds ops with no "
                                  f"function to inline ({', '.join(left)})")
        core = ov.Core()
        # f32 as the model declares it: on CPUs with bf16 units (AVX512_BF16, AMX) OpenVINO
        # otherwise computes an fp32 model in bf16 (measured: ResNet-20 logits off by 4e-4)
        config: dict[str, Any] = {"INFERENCE_PRECISION_HINT": "f32"}
        if self.threads is not None:
            config["INFERENCE_NUM_THREADS"] = int(self.threads)
        try:
            model = core.read_model(proto.SerializeToString(), b"")
            self.compiled = core.compile_model(model, "CPU", config)
        except Exception as exc:  # OpenVINO raises its own RuntimeError subclasses
            raise CheckpointError(f"OpenVINO cannot load {self.path}: {_one_line(exc)}") from None
        self._inputs = tuple(_spec(p) for p in self.compiled.inputs)
        self._outputs = tuple(p.get_any_name() for p in self.compiled.outputs)

    def _close(self) -> None:
        self.compiled = None

    def _input_specs(self) -> tuple[TensorSpec, ...]:
        return self._inputs

    def _output_names(self) -> tuple[str, ...]:
        return self._outputs

    @property
    def metadata(self) -> dict[str, str]:
        self._require_loaded("metadata")
        return dict(self._metadata)

    def _run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        ordered = [feeds[s.name] for s in self._inputs]
        try:
            result = self.compiled(ordered)
        except Exception as exc:  # the artifact failed on valid feeds
            raise CheckFailedError(f"{self.label} failed running {self.path}: "
                                   f"{_one_line(exc)}") from None
        return {name: np.asarray(result[port])
                for name, port in zip(self._outputs, self.compiled.outputs)}


def _spec(port: Any) -> TensorSpec:
    shape = tuple(d.get_length() if d.is_static else None for d in port.get_partial_shape())
    dtype = OV_DTYPES.get(port.get_element_type().get_type_name(),
                          port.get_element_type().get_type_name())
    return TensorSpec(port.get_any_name(), dtype, shape)


def _one_line(exc: BaseException) -> str:
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return (lines[0] if lines else type(exc).__name__)[:300]
