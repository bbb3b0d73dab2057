"""Triton kernels for every elementwise gatex op: the CUDA fast path and the TensorRT plugins.

One parameterised kernel family (`plans` says what each op computes, `triton_gates` holds the
kernels, `launch` the host side). Nothing here imports triton until a kernel runs.

- `register_cuda_kernels` makes the kernels the CUDA implementation of the ``gatex::`` torch
  custom ops (``torch.library.register_kernel(..., "cuda")``), so gatex models run fused on a
  GPU; CPU tensors keep the torch impls. It registers only where triton is installed and torch
  is built with CUDA; arguments the kernels do not cover (float64, ...) fall back to the impl.
- `trt_plugins` defines the TensorRT plugins (``tensorrt.plugin``) over the same kernels.
- `policy` decides, per op and precision, plugin or TensorRT's own decomposition.

Verified on the CPU through Triton's interpreter (tests/ops/test_kernels.py); never yet run on a
GPU (docs/tensorrt.md says what has and has not run).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from gatex import _optional
from gatex.ops.kernels.launch import KernelUnsupported, gated
from gatex.ops.kernels.plans import GatePlan, has_kernel, kernel_ops, plan_for
from gatex.ops.registry import REGISTRY

_REGISTERED: dict[str, set[str]] = {}


def triton_installed() -> bool:
    """Whether triton can be imported here (looked up without importing it)."""
    return _optional.available("triton")


def kernel_status() -> tuple[bool, str]:
    """(whether the Triton kernels can be the CUDA ops here, why not), without importing
    triton or initialising CUDA."""
    import os

    import torch

    if os.environ.get("GATEX_TRITON", "1").strip().lower() in ("0", "false", "off", "no"):
        return False, "turned off by GATEX_TRITON=0"
    if not triton_installed():
        return False, "triton is not installed (pip install 'gatex[triton]')"
    if not torch.backends.cuda.is_built():
        return False, "this torch is built without CUDA"
    return True, "triton installed and torch built with CUDA"


def cuda_kernel(op: str) -> Callable[..., Any]:
    """The CUDA kernel of ``gatex::<op>``: the Triton kernel, or the op's torch impl for
    arguments the kernel does not cover. Takes the custom op's positional arguments."""

    spec = REGISTRY.get(op)
    n_inputs = len(spec.inputs)
    names = [p.name for p in spec.params]

    def kernel(*args: Any) -> Any:
        inputs, params = args[:n_inputs], dict(zip(names, args[n_inputs:]))
        try:
            return gated(spec.name, *inputs, **params)
        except KernelUnsupported:
            return spec.impl(*inputs, **params)

    kernel.__name__ = f"{spec.torch_name}_triton"
    kernel.__doc__ = f"gatex::{spec.torch_name} through the Triton gate kernels ({spec.formula})"
    return kernel


def register_cuda_kernels(*, device_type: str = "cuda", force: bool = False) -> tuple[str, ...]:
    """Register the Triton kernels as ``device_type``'s implementation of every elementwise
    ``gatex::`` op; returns the ops registered now (none where `kernel_status` says no).

    Registering twice for one device type does nothing the second time. ``device_type="cpu"``
    with ``force=True`` exists for tests under Triton's interpreter only (CPU tensors then run
    through the interpreter: correct, and thousands of times slower than the impls).
    """
    import torch

    available, _ = kernel_status()
    if not (available or force):
        return ()
    done = _REGISTERED.setdefault(device_type, set())

    new = []
    for op in kernel_ops():
        if op in done:
            continue
        torch.library.register_kernel(REGISTRY.get(op).torch_qualname, device_type, cuda_kernel(op))
        done.add(op)
        new.append(op)
    return tuple(new)


def __getattr__(name: str) -> Any:
    if name == "KERNEL_OPS":  # derived from the specs when asked (`plans.kernel_ops`)
        return kernel_ops()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["KERNEL_OPS", "GatePlan", "cuda_kernel", "has_kernel", "kernel_ops", "kernel_status",
           "plan_for",
           "register_cuda_kernels", "triton_installed"]
