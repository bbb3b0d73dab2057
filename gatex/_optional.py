"""Optional third-party packages: which extra brings each, and one way to import them.

The core install (torch, numpy, safetensors, typer, rich, onnx, onnxruntime, onnxscript) runs
the main job. Everything below is optional; `require` imports it or raises
`BackendUnavailableError` (exit 3) with one line naming the extra that installs it.
"""

from __future__ import annotations

import importlib
import importlib.util
from types import ModuleType

from gatex.errors import BackendUnavailableError

EXTRAS = {  # import name: (extra, what it gives gatex)
    "coremltools": ("coreml", "CoreML export, the MIL emulator and CoreML parity"),
    "h5py": ("keras", "reading upstream Gated BERT Keras weight files"),
    "matplotlib": ("plot", "gatex bench --plot"),
    "triton": ("triton", "the gate kernels (CUDA fast path, TensorRT plugin PTX)"),
    "sklearn": ("train", "retraining the reference zoo"),
    "openvino": ("openvino", "gatex parity / gatex bench --backend openvino"),
}


def install_hint(module: str) -> str:
    """``pip install 'gatex[coreml]'`` for ``coremltools``, and so on."""
    extra, _ = EXTRAS[module]
    return f"pip install 'gatex[{extra}]'"


def available(module: str) -> bool:
    """Whether ``module`` can be imported here, looked up without importing it (False also
    where the lookup itself fails: a broken parent package, ``__spec__`` unset). The one place
    gatex asks whether a package is there."""
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def require(module: str, purpose: str | None = None) -> ModuleType:
    """``module`` imported, or BackendUnavailableError naming the extra that installs it."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        extra, gives = EXTRAS[module]
        raise BackendUnavailableError(
            f"{module} is not installed ({exc}); {purpose or gives} needs it: install gatex's "
            f"{extra} extra: {install_hint(module)}") from None


__all__ = ["EXTRAS", "available", "install_hint", "require"]
