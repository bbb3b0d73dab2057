"""What a bench can run here: the machine and versions, the backends available and which
artifact each takes, and the input batches (zoo digits or random data of the declared shape)."""

from __future__ import annotations

import os
import platform
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from gatex import _optional
from gatex._version import __version__
from gatex.artifacts.onnx_file import read_onnx
from gatex.artifacts.onnx_nodes import plugin_nodes
from gatex.benchmarking.schema import ALIASES, ARTIFACT_SUFFIXES, BACKENDS
from gatex.environment import installed_version
from gatex.errors import BackendUnavailableError, BadInputError, GatexError
from gatex.models import zoo
from gatex.runtimes.torch_runtime import describe_model_failure

# -- machine and versions -------------------------------------------------------------------------

def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.lower().startswith(("model name", "hardware", "cpu model")):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    if sys.platform == "darwin":
        try:
            out = subprocess.run(["sysctl", "-n", "machdep.cpu.brand_string"], check=False,
                                 capture_output=True, text=True, timeout=5)
            if out.stdout.strip():
                return out.stdout.strip()
        except (OSError, subprocess.SubprocessError):
            pass
    return platform.processor() or platform.machine() or "unknown"


def _physical_cores() -> int | None:
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            text = f.read()
    except OSError:
        return None
    cores, phys = set(), "0"
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key = key.strip()
        if key == "physical id":
            phys = value.strip()
        elif key == "core id":
            cores.add((phys, value.strip()))
    return len(cores) or None


def machine_info() -> dict[str, Any]:
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None
    return {"cpu": _cpu_model(), "cores_logical": os.cpu_count(),
            "cores_physical": _physical_cores(), "cores_usable": usable,
            "os": platform.platform(), "machine": platform.machine(),
            "python": platform.python_version()}


def versions() -> dict[str, Any]:

    out: dict[str, Any] = {"gatex": __version__, "python": platform.python_version()}
    for name in ("numpy", "torch", "onnxruntime", "onnx", "coremltools", "tensorrt"):
        out[name] = installed_version(name)[1]
    return out


# -- backends: which exist here, which can run what -----------------------------------------------

def _has_module(name: str) -> bool:
    return _optional.available(name)


def unavailable_reason(backend: str, device: str = "cpu") -> str | None:
    """Why ``backend`` cannot be benchmarked here, or None when it can."""
    if backend == "torch":
        if device == "cuda":
            import torch

            if not torch.cuda.is_available():
                return "torch has no CUDA device here; use --device cpu"
        return None
    if backend == "ort":
        if not _has_module("onnxruntime"):
            return "onnxruntime is not installed: reinstall gatex (onnx, onnxruntime and onnxscript are core dependencies)"
        if device == "cuda":
            import onnxruntime

            if "CUDAExecutionProvider" not in onnxruntime.get_available_providers():
                return "onnxruntime here has no CUDAExecutionProvider (install onnxruntime-gpu)"
        return None
    if backend == "openvino":
        if not _has_module("openvino"):
            return "OpenVINO is not installed: pip install 'gatex[openvino]'"
        if device == "cuda":
            return "gatex runs OpenVINO on its CPU plugin only; use --device cpu"
        return None
    if backend == "coreml":
        if platform.system() != "Darwin":
            return (f"CoreML runs models only on macOS; on {platform.system()} gatex can only "
                    "emulate them, and emulated timings say nothing about CoreML's speed")
        if not _has_module("coremltools"):
            return "coremltools is not installed: pip install 'gatex[coreml]'"
        if not _has_module("gatex.runtimes.coreml_runtime"):
            return "this gatex has no CoreML runtime yet"
        return None
    if backend == "trt":
        if not _has_module("tensorrt"):
            return ("TensorRT is not installed here (gatex never installs it; it needs an NVIDIA "
                    "GPU and NVIDIA's TensorRT packages)")
        return None
    raise BadInputError(f"unknown backend {backend!r}")


def parse_backends(spec: str | Sequence[str]) -> tuple[tuple[str, ...], bool]:
    """(backends in canonical order, whether the user named them) from ``all`` or a list."""
    items = [spec] if isinstance(spec, str) else list(spec)
    names = [n.strip().lower() for item in items for n in str(item).split(",") if n.strip()]
    if not names:
        raise BadInputError(f"--backend is empty; use all or a list of {', '.join(BACKENDS)}")
    if names == ["all"]:
        return BACKENDS, False
    chosen = []
    for n in names:
        canonical = ALIASES.get(n, n)
        if canonical not in BACKENDS:
            raise BadInputError(f"unknown backend {n!r}; use all or a comma-separated list of "
                                f"{', '.join(BACKENDS)}")
        chosen.append(canonical)
    return tuple(b for b in BACKENDS if b in chosen), True


def backend_for(path: Path) -> str:
    """The backend that runs an artifact, by its suffix."""
    suffix = path.suffix.lower()
    for backend, suffixes in ARTIFACT_SUFFIXES.items():
        if suffix in suffixes:
            return backend
    known = ", ".join(dict.fromkeys(s for ss in ARTIFACT_SUFFIXES.values() for s in ss))
    raise BadInputError(f"{path}: gatex bench runs {known} artifacts; got {suffix or 'no suffix'}")


# -- inputs ---------------------------------------------------------------------------------------

class OnnxHeader(NamedTuple):
    inputs: list[tuple[str, str, tuple[Any, ...]]]   # (name, dtype, shape) of each graph input
    metadata: dict[str, str]
    plugins: bool                                     # holds TensorRT plugin nodes


def onnx_header(path: Path) -> OnnxHeader:
    """What the bench needs of an ONNX file, from one read and without a session."""
    try:
        from onnx import helper
    except ImportError:
        raise BackendUnavailableError("reading an .onnx artifact needs onnx: "
                                      "reinstall gatex (onnx, onnxruntime and onnxscript are core dependencies)") from None

    proto = read_onnx(path, external_data=False)  # external locations checked, none read
    inits = {i.name for i in proto.graph.initializer}
    specs = []
    for i in proto.graph.input:
        if i.name in inits:
            continue
        t = i.type.tensor_type
        dtype = np.dtype(helper.tensor_dtype_to_np_dtype(t.elem_type)).name
        shape = tuple(d.dim_value if d.HasField("dim_value") else (d.dim_param or None)
                      for d in t.shape.dim)
        specs.append((i.name, dtype, shape))
    return OnnxHeader(specs, {p.key: p.value for p in proto.metadata_props},
                       bool(plugin_nodes(proto)))


def zoo_batch(unit: str, batch: int) -> np.ndarray:
    """The first ``batch`` held-out digits for ``unit`` (repeated when more are asked)."""
    x, _ = zoo.held_out(unit)
    x = x.numpy()
    if batch > x.shape[0]:
        x = np.resize(x, (batch, *x.shape[1:]))
    return np.ascontiguousarray(x[:batch], dtype=np.float32)


def random_batch(shape: Sequence[Any], batch: int, name: str) -> np.ndarray:
    per_sample = tuple(shape[1:])
    if not all(isinstance(d, int) and d > 0 for d in per_sample):
        raise BadInputError(f"input {name!r} has dynamic sizes beyond the batch "
                            f"({list(shape)}); pass --unit NAME or --model with --input-shape")
    rng = np.random.default_rng(0)
    return rng.standard_normal((batch, *per_sample), dtype=np.float32)


def check_model_fits(torch_model: Any, inputs: list[np.ndarray],
                      onnx_specs: Sequence[tuple[str, str, Sequence[Any]]] | None,
                      pairs: Sequence[tuple[str, Path]]) -> None:
    """Bad input, before any worker starts: --input-shape that the artifact's inputs cannot take,
    or a torch model that cannot run on them (both shapes named, one line)."""
    import torch


    for (name, dtype, shape), array in zip(onnx_specs or (), inputs):
        declared = list(shape)[1:]
        fixed = [(i, d) for i, d in enumerate(declared) if isinstance(d, int)]
        if len(declared) != array.ndim - 1 or any(array.shape[1 + i] != d for i, d in fixed):
            dims = ",".join(str(d) for d in shape)
            raise BadInputError(f"--input-shape gives {list(array.shape)}, but {pairs[0][1].name} "
                                f"takes input {name!r} {dtype}[{dims}]")
    feeds = {f"input_{i}": a for i, a in enumerate(inputs)}
    try:
        with torch.no_grad():
            torch_model(*(torch.from_numpy(a) for a in inputs))
    except GatexError:
        raise
    except (RuntimeError, ValueError, TypeError, IndexError) as exc:
        raise BadInputError(describe_model_failure(feeds, exc)) from None
