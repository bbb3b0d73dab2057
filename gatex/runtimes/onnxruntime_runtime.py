"""`OrtRuntime`: an ONNX model on onnxruntime (CPU execution provider; CUDA when asked and present).

Plain onnxruntime runs the portable flavor as is: a ``gatex``-domain node with a model-local
function is expanded by onnxruntime itself, so nothing of gatex is needed at run time.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from gatex.artifacts.onnx_file import check_file, read_onnx
from gatex.artifacts.onnx_nodes import decompose_plugin_nodes, plugin_nodes
from gatex.errors import (
    BackendUnavailableError,
    BadInputError,
    CheckFailedError,
    CheckpointError,
    require_choice,
)
from gatex.runtimes.base import Runtime, TensorSpec

# onnxruntime's type strings -> NumPy dtype names (bfloat16 is ml_dtypes' name)
ORT_DTYPES = {
    "tensor(float)": "float32", "tensor(float16)": "float16", "tensor(double)": "float64",
    "tensor(bfloat16)": "bfloat16", "tensor(int64)": "int64", "tensor(int32)": "int32",
    "tensor(int16)": "int16", "tensor(int8)": "int8", "tensor(uint8)": "uint8",
    "tensor(bool)": "bool",
}
DEVICES = ("cpu", "cuda", "auto")
_OPTIMIZATION = {"none": "ORT_DISABLE_ALL", "basic": "ORT_ENABLE_BASIC",
                 "extended": "ORT_ENABLE_EXTENDED", "all": "ORT_ENABLE_ALL"}

ModelSource = str | Path | bytes | Any  # a path, serialized bytes, or an onnx.ModelProto


def import_onnxruntime() -> Any:
    try:
        import onnxruntime
    except ImportError as exc:
        raise BackendUnavailableError(
            f"onnxruntime is not available ({exc}); install it with reinstall gatex (onnx, onnxruntime and onnxscript are core dependencies)"
        ) from None
    return onnxruntime


def describe_source(model: ModelSource) -> str:
    if isinstance(model, (str, Path)):
        return str(model)
    return "<in-memory ONNX model>"


class OrtRuntime(Runtime):
    """onnxruntime InferenceSession over ``model`` (path, bytes or ``onnx.ModelProto``).

    ``device``: "cpu" (default: deterministic, what parity uses), "cuda" (the CUDA execution
    provider, or `BackendUnavailableError`), "auto" (CUDA when onnxruntime has it). ``threads``
    sets intra-op threads (None: onnxruntime's default); ``optimization`` is the graph
    optimization level: none, basic, extended or all.
    """
    name = "onnxruntime"

    def __init__(self, model: ModelSource, *, device: str = "cpu", threads: int | None = None,
                 optimization: str = "all") -> None:
        super().__init__()
        require_choice(device, DEVICES, "onnxruntime device")
        require_choice(optimization, _OPTIMIZATION, "optimization level")
        if threads is not None and threads < 0:
            raise BadInputError(f"threads must be >= 0 (0: onnxruntime decides); got {threads}")
        self.model = model
        self.device = device
        self.threads = threads
        self.optimization = optimization
        self.session: Any = None
        self._inputs: tuple[TensorSpec, ...] = ()
        self._outputs: tuple[TensorSpec, ...] = ()

    @property
    def label(self) -> str:
        if self.session is None:
            return f"onnxruntime ({self.device.upper()})"
        provider = self.session.get_providers()[0]
        return f"onnxruntime ({provider.removesuffix('ExecutionProvider')})"

    def _providers(self, ort: Any) -> list[str]:
        available = ort.get_available_providers()
        has_cuda = "CUDAExecutionProvider" in available
        if self.device == "cuda" and not has_cuda:
            raise BackendUnavailableError(
                "onnxruntime here has no CUDAExecutionProvider (providers: "
                f"{', '.join(available)}); install onnxruntime-gpu or use --device cpu")
        if self.device == "cuda" or (self.device == "auto" and has_cuda):
            return ["CUDAExecutionProvider", "CPUExecutionProvider"]
        return ["CPUExecutionProvider"]

    def _load(self) -> None:
        ort = import_onnxruntime()
        options = ort.SessionOptions()
        if self.threads is not None:
            options.intra_op_num_threads = self.threads
        options.graph_optimization_level = getattr(ort.GraphOptimizationLevel,
                                                   _OPTIMIZATION[self.optimization])
        options.log_severity_level = 3  # errors only: parity output stays readable
        source: Any = self.model
        where = describe_source(self.model)
        if isinstance(source, Path):
            source = str(source)
        if isinstance(source, str):
            if not Path(source).is_file():
                raise BadInputError(f"ONNX model {source} does not exist or is not a file")
            check_file(source)  # no external data outside its folder
        elif not isinstance(source, bytes):
            if not hasattr(source, "SerializeToString"):
                raise BadInputError(f"OrtRuntime needs a path, bytes or onnx.ModelProto; got "
                                    f"{type(source).__name__}")
            source = source.SerializeToString()
        try:
            self.session = ort.InferenceSession(source, options, providers=self._providers(ort))
        except Exception as exc:  # onnxruntime raises its own pybind types (InvalidGraph, Fail...)
            raise CheckpointError(f"onnxruntime cannot load {where}: {_one_line(exc)}") from None
        self._inputs = tuple(_spec(a) for a in self.session.get_inputs())
        self._outputs = tuple(_spec(a) for a in self.session.get_outputs())

    def _close(self) -> None:
        self.session = None

    def _input_specs(self) -> tuple[TensorSpec, ...]:
        return self._inputs

    def _output_names(self) -> tuple[str, ...]:
        return tuple(o.name for o in self._outputs)

    @property
    def output_specs(self) -> tuple[TensorSpec, ...]:
        self._require_loaded("output_specs")
        return self._outputs

    @property
    def metadata(self) -> dict[str, str]:
        """The model's ``metadata_props`` (the exporter records ``gatex.unit`` there)."""
        self._require_loaded("metadata")
        return dict(self.session.get_modelmeta().custom_metadata_map)

    def _run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        try:
            outputs = self.session.run(None, feeds)
        except Exception as exc:  # the artifact itself failed on valid feeds
            raise CheckFailedError(f"{self.label} failed running {describe_source(self.model)}: "
                                   f"{_one_line(exc)}") from None
        return dict(zip(self._output_names(), outputs))


class PluginStandInRuntime(OrtRuntime):
    """A plugin-flavor ONNX file (``--flavor plugin``, or a TensorRT bundle's ONNX) on
    onnxruntime, its TensorRT plugin nodes replaced by their standard-op decompositions
    (`gatex.exporters.onnx.decompose_plugin_nodes`).

    This checks, where TensorRT is not installed, the graph TensorRT would receive: the
    precision written into it, the wiring and attributes of every plugin node, the inlined ops.
    It does not run the plugin kernels (tests/ops/test_kernels.py checks those against torch),
    so its results are labelled emulated, and `replaced` names the ops that were decomposed.
    """
    emulated = True

    def __init__(self, path: str | Path, *, device: str = "cpu", threads: int | None = None
                 ) -> None:
        import onnx


        path = Path(path)
        proto = read_onnx(path, external_data=True)
        self.path = path
        self.replaced = decompose_plugin_nodes(proto)
        self._bf16 = any(v.type.tensor_type.elem_type == onnx.TensorProto.BFLOAT16
                         for v in proto.graph.input)
        super().__init__(proto, device=device, threads=threads)

    def _load(self) -> None:
        try:
            super()._load()
        except CheckpointError as exc:   # name the file, not "<in-memory ONNX model>"
            text = str(exc).replace(describe_source(self.model), f"{self.path} (its TensorRT "
                                                                 "plugins decomposed)")
            if self._bf16:
                text += ("; a bf16 graph: onnxruntime's CPU provider has no bf16 kernels for "
                         "most ops, so check the fp32 or fp16 bundle here")
            raise CheckpointError(text) from None

    @property
    def label(self) -> str:
        if not self.replaced:   # nothing to decompose: plain onnxruntime
            return super().label
        return f"{super().label} (TensorRT plugins decomposed: {', '.join(self.replaced)})"

    @property
    def notes(self) -> tuple[str, ...]:
        if not self.replaced:
            return ()
        return (f"{self.path.name} holds TensorRT plugin nodes ({', '.join(self.replaced)}); "
                "without TensorRT they ran as their standard-op decompositions on onnxruntime: "
                "this checks the graph TensorRT receives, not the plugin kernels",)


def has_plugin_nodes(path: str | Path) -> bool:
    """Whether the ONNX file at ``path`` holds TensorRT plugin nodes (False if unreadable: the
    caller's runtime then reports the file)."""


    try:
        return bool(plugin_nodes(read_onnx(path, external_data=False)))
    except Exception:  # noqa: BLE001
        return False


def _spec(arg: Any) -> TensorSpec:
    dtype = ORT_DTYPES.get(arg.type, arg.type)
    shape = None if arg.shape is None else tuple(
        d if isinstance(d, int) or d is None else str(d) for d in arg.shape)
    return TensorSpec(arg.name, dtype, shape)


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text[:500] if text else type(exc).__name__
