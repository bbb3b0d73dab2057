"""What this machine can run: Python, torch and its devices, and each optional backend.

`probe()` never imports a heavy optional package when a version lookup answers the question:
versions come from `importlib.metadata`, presence from `importlib.util.find_spec` (which does not
import a top-level package). Only torch (a hard dependency, to ask it about its devices) and
onnxruntime (to list its execution providers) are imported. ``probe(deep=False)`` (what
``gatex doctor`` runs; ``--deep`` asks torch) does not import torch either: it reads torch's
version and CUDA build from ``torch/version.py`` as text (parsed, never run), and the NVIDIA
devices from the driver (``/proc/driver/nvidia/gpus``). A missing or broken package is
reported, never raised.

    >>> report = probe()
    >>> report.component("torch").available
    True
"""

from __future__ import annotations

import functools
import importlib.metadata
import importlib.util
import platform
import sys
from dataclasses import asdict, dataclass
from typing import Any

from gatex import _optional


@dataclass(frozen=True)
class Component:
    """One row of the report: a package or a device, whether gatex can use it here, and why not."""

    name: str
    available: bool
    version: str | None
    note: str


@dataclass(frozen=True)
class EnvironmentReport:
    """Everything `gatex doctor` shows: this interpreter and OS, then one `Component` per row."""

    python_version: str
    python_executable: str
    platform: str
    system: str                          # platform.system(): "Linux", "Darwin", "Windows"
    machine: str                         # platform.machine(): "x86_64", "arm64", ...
    torch_version: str | None
    cuda_available: bool
    cuda_version: str | None             # the CUDA torch was built with, if any
    cuda_devices: tuple[str, ...]
    mps_available: bool
    onnxruntime_providers: tuple[str, ...]
    coreml_can_predict: bool
    components: tuple[Component, ...]

    def component(self, name: str) -> Component:
        """The row called ``name`` (e.g. ``"onnxruntime"``); KeyError if the report has none."""
        for c in self.components:
            if c.name == name:
                return c
        raise KeyError(f"no component {name!r}; have {', '.join(c.name for c in self.components)}")

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready: every field above, tuples as lists, components as a list of objects."""
        return asdict(self)


def installed_version(import_name: str) -> tuple[bool, str | None]:
    """(installed?, version) for a top-level module, without importing it.

    The version is that of the distribution providing the module (``cupy`` may come from
    ``cupy-cuda12x``, ``tensorrt`` from ``tensorrt-cu12``); None when it was not installed by pip.
    """
    try:
        spec = importlib.util.find_spec(import_name)
    except (ImportError, ValueError):
        spec = None
    dists = _distributions_of(import_name)
    for dist in dists:
        try:
            return True, importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            continue
    return spec is not None, None


def _distributions_of(import_name: str) -> list[str]:
    try:
        mapping = _packages_distributions()
    except Exception:  # noqa: BLE001  (a broken dist-info elsewhere must not hide this one)
        mapping = {}
    return [import_name, *mapping.get(import_name, [])]


@functools.cache
def _packages_distributions() -> dict[str, list[str]]:
    # Scanning every installed distribution costs ~0.1 s: do it once per process.
    return dict(importlib.metadata.packages_distributions())


@dataclass(frozen=True)
class _TorchFacts:
    version: str | None
    cuda_available: bool
    cuda_version: str | None
    cuda_devices: tuple[str, ...]
    mps_available: bool
    error: str


def _probe_torch() -> _TorchFacts:
    try:
        import torch
    except Exception as exc:  # noqa: BLE001  (torch is required: report it, do not crash)
        return _TorchFacts(None, False, None, (), False, f"{type(exc).__name__}: {exc}")
    cuda_available = False
    devices: tuple[str, ...] = ()
    try:
        cuda_available = bool(torch.cuda.is_available())
        if cuda_available:
            devices = tuple(torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count()))
    except Exception:  # noqa: BLE001  (a driver mismatch raises here: "no usable CUDA")
        cuda_available, devices = False, ()
    try:
        mps = bool(torch.backends.mps.is_available())
    except Exception:  # noqa: BLE001  (a probe reports; it never raises)
        mps = False
    return _TorchFacts(torch.__version__, cuda_available, torch.version.cuda, devices, mps, "")


def _torch_facts_from_files() -> _TorchFacts | None:
    """What `_probe_torch` learns, without importing torch: None when torch's version file
    cannot be read (then torch itself is asked)."""
    import ast
    from pathlib import Path

    try:
        spec = importlib.util.find_spec("torch")
    except (ImportError, ValueError):
        spec = None
    if spec is None or not spec.origin:
        return _TorchFacts(None, False, None, (), False, "ModuleNotFoundError: No module named "
                                                         "'torch'")
    values: dict[str, Any] = {}
    try:
        tree = ast.parse((Path(spec.origin).parent / "version.py").read_text())
        for node in tree.body:
            if isinstance(node, (ast.Assign, ast.AnnAssign)) and node.value is not None:
                targets = node.targets if isinstance(node, ast.Assign) else [node.target]
                for t in targets:
                    if isinstance(t, ast.Name):
                        values[t.id] = ast.literal_eval(node.value)
    except (OSError, SyntaxError, ValueError):
        return None
    version, cuda = values.get("__version__"), values.get("cuda")
    if not isinstance(version, str):
        return None
    devices = _nvidia_devices() if isinstance(cuda, str) else ()
    mps = platform.system() == "Darwin" and platform.machine() == "arm64"
    return _TorchFacts(version, bool(devices), cuda if isinstance(cuda, str) else None, devices,
                       mps, "")


def _nvidia_devices() -> tuple[str, ...]:
    """The GPUs the NVIDIA driver lists (Linux), honouring CUDA_VISIBLE_DEVICES="" / "-1"."""
    import os
    from pathlib import Path

    if os.environ.get("CUDA_VISIBLE_DEVICES", None) in ("", "-1"):
        return ()
    names = []
    for info in sorted(Path("/proc/driver/nvidia/gpus").glob("*/information")):
        try:
            text = info.read_text()
        except OSError:
            continue
        model = next((line.split(":", 1)[1].strip() for line in text.splitlines()
                      if line.startswith("Model:")), "NVIDIA GPU")
        names.append(model)
    return tuple(names)


def _probe_onnxruntime() -> tuple[bool, str | None, tuple[str, ...], str]:
    installed, version = installed_version("onnxruntime")
    if not installed:
        return False, None, (), ""
    try:
        import onnxruntime
    except Exception as exc:  # noqa: BLE001  (installed but broken, e.g. a missing .so)
        return True, version, (), f"installed but fails to import ({type(exc).__name__}: {exc})"
    return True, onnxruntime.__version__, tuple(onnxruntime.get_available_providers()), ""


def _coreml_can_predict(system: str, coremltools_installed: bool) -> bool:
    # MLModel.predict needs the Core ML framework, which exists only on macOS; there the
    # coremltools wheel ships the native module that calls it.
    if system != "Darwin" or not coremltools_installed:
        return False
    try:
        return importlib.util.find_spec("coremltools.libcoremlpython") is not None
    except Exception:  # noqa: BLE001  (find_spec imports coremltools, which may be broken)
        return False


ONNX_EXTRA = "pip install --force-reinstall gatex (onnx, onnxruntime and onnxscript are core)"
COREML_EXTRA = _optional.install_hint("coremltools")


def _cuda_note(t: _TorchFacts) -> str:
    if t.cuda_available:
        return ", ".join(t.cuda_devices)
    built = f"torch built with CUDA {t.cuda_version}" if t.cuda_version else "CPU build of torch"
    return f"no CUDA device ({built}): GPU tests and the Triton fast path are skipped"


def _onnxruntime_note(installed: bool, providers: tuple[str, ...], error: str) -> str:
    if error:
        return error
    if not installed:
        return f"not installed: ONNX parity and bench need {ONNX_EXTRA}"
    return "providers: " + ", ".join(providers)


def _coreml_predict_note(system: str, coremltools_installed: bool, can_predict: bool) -> str:
    if can_predict:
        return "MLModel.predict works here: CoreML parity runs the real model"
    if system != "Darwin":
        return "CoreML predict needs macOS; parity on Linux uses the MIL emulator"
    if not coremltools_installed:
        return f"needs coremltools: {COREML_EXTRA}"
    return "coremltools lacks its native predict module here; parity uses the MIL emulator"


def _triton_note(installed: bool, cuda: bool) -> str:
    if not installed:
        return "not installed: Triton kernels (CUDA fast path, TensorRT plugins) are off"
    if not cuda:
        return "installed, but Triton kernels need a CUDA GPU and there is none here"
    return "Triton kernels for the CUDA fast path and TensorRT plugins"


def probe(*, deep: bool = True) -> EnvironmentReport:
    """What gatex can use on this machine; a missing or broken package is reported, not raised.

    ``deep=False`` does not import torch (module docstring): its CUDA and MPS rows then say
    what the driver and the platform show, which torch confirms only when asked (``deep``)."""
    system = platform.system()
    t = (None if deep else _torch_facts_from_files()) or _probe_torch()
    asked = deep or t.version is None
    ort_installed, ort_version, providers, ort_error = _probe_onnxruntime()
    onnx_installed, onnx_version = installed_version("onnx")
    script_installed, script_version = installed_version("onnxscript")
    ct_installed, ct_version = installed_version("coremltools")
    trt_installed, trt_version = installed_version("tensorrt")
    triton_installed, triton_version = installed_version("triton")
    cupy_installed, cupy_version = installed_version("cupy")
    can_predict = _coreml_can_predict(system, ct_installed)

    rows = [
        Component("torch", t.version is not None, t.version,
                  "gatex:: custom ops run here" if t.version is not None
                  else f"torch fails to import ({t.error}); install torch first"),
        Component("cuda", t.cuda_available, t.cuda_version if t.cuda_available else None,
                  _cuda_note(t) + ("" if asked or not t.cuda_available else
                                   " (seen by the driver; gatex doctor --deep asks torch)")),
        Component("mps", t.mps_available, None,
                  ("Apple GPU available to torch" if asked else
                   "Apple silicon: torch's MPS backend (gatex doctor --deep asks torch)")
                  if t.mps_available else "no Apple GPU (MPS needs macOS on Apple silicon)"),
        Component("onnx", onnx_installed, onnx_version,
                  "ONNX export and checking" if onnx_installed
                  else f"not installed: ONNX export needs {ONNX_EXTRA}"),
        Component("onnxruntime", ort_installed and not ort_error, ort_version,
                  _onnxruntime_note(ort_installed, providers, ort_error)),
        Component("onnxscript", script_installed, script_version,
                  "used by torch's dynamo ONNX exporter" if script_installed
                  else f"not installed: torch's dynamo ONNX exporter needs it ({ONNX_EXTRA})"),
        Component("coremltools", ct_installed, ct_version,
                  "CoreML conversion" if ct_installed
                  else f"not installed: CoreML export needs {COREML_EXTRA}"),
        Component("coreml-predict", can_predict, None,
                  _coreml_predict_note(system, ct_installed, can_predict)),
        Component("tensorrt", trt_installed, trt_version,
                  "engine builds run here" if trt_installed
                  else "not installed: engine builds will write a build script instead"),
        Component("triton", triton_installed and t.cuda_available, triton_version,
                  _triton_note(triton_installed, t.cuda_available)),
        Component("cupy", cupy_installed, cupy_version,
                  "optional GPU array library" if cupy_installed
                  else "not installed (optional GPU array library)"),
    ]
    return EnvironmentReport(
        python_version=platform.python_version(),
        python_executable=sys.executable,
        platform=platform.platform(),
        system=system,
        machine=platform.machine(),
        torch_version=t.version,
        cuda_available=t.cuda_available,
        cuda_version=t.cuda_version,
        cuda_devices=t.cuda_devices,
        mps_available=t.mps_available,
        onnxruntime_providers=providers,
        coreml_can_predict=can_predict,
        components=tuple(rows),
    )
