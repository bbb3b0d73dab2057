"""gatex's elementwise ops as TensorRT plugins (``tensorrt.plugin``), over the Triton kernels.

Importing this module needs neither TensorRT nor triton; `register_trt_plugins` imports them
and raises `BackendUnavailableError` (exit 3) where TensorRT is missing. Each op
``gatex::<Name>`` becomes one plugin whose inputs are the op's data inputs and whose attributes
are its parameters, as the plugin-flavor ONNX node carries them (learnable ones folded to
floats): ``register`` (output like the first input), ``autotune`` (fp32/fp16/bf16, linear),
``aot_impl`` (the Triton kernel compiled to PTX, embedded in the engine) and ``impl`` (the same
kernel launched just in time on TensorRT's stream, through torch). The definitions themselves
live in the standalone `trt_bundle` (shipped in every export bundle); this module supplies the
gatex side: the plugin table, kernel compilation for the local GPU, and the JIT launch.

Never run against a real TensorRT (none where gatex was written): see docs/tensorrt.md.
"""

from __future__ import annotations

import functools
from typing import Any

from gatex.errors import BackendUnavailableError
from gatex.ops.kernels.launch import gated_flat
from gatex.ops.kernels.plans import kernel_ops, plan_for
from gatex.ops.kernels.ptx import compile_plugin_kernel
from gatex.ops.kernels.trt_bundle import define_plugins
from gatex.ops.registry import REGISTRY


def plugin_table(ops: tuple[str, ...] | None = None) -> list[dict[str, Any]]:
    """``{"name", "inputs", "attributes": {name: "float" | "str"}}`` per plugin, from the specs
    (default: every op with a kernel)."""

    table = []
    for op in kernel_ops() if ops is None else ops:
        spec = REGISTRY.get(op)
        attrs = {p.name: "str" if p.kind is str else "float" for p in spec.params}
        table.append({"name": spec.name, "inputs": list(spec.inputs), "attributes": attrs})
    return table


def import_tensorrt() -> tuple[Any, Any]:
    """(tensorrt, tensorrt.plugin), or `BackendUnavailableError` naming what is missing."""
    try:
        import tensorrt as trt
    except ImportError:
        raise BackendUnavailableError(
            "TensorRT is not installed here (gatex never installs it: it needs an NVIDIA GPU and "
            "NVIDIA's tensorrt packages)") from None
    try:
        import tensorrt.plugin as trtp
    except ImportError:
        raise BackendUnavailableError(
            f"TensorRT {getattr(trt, '__version__', '?')} has no tensorrt.plugin module: gatex's "
            "plugins need TensorRT 10.7 or newer") from None
    return trt, trtp


@functools.lru_cache(maxsize=None)
def _compile_cached(op: str, attributes: tuple[tuple[str, Any], ...], dtype: str, arch: int
                    ) -> dict[str, Any]:

    return compile_plugin_kernel(op, dict(attributes), dtype, arch=arch,
                                 ptx_version=None).as_json()


def compile_for_this_gpu(op: str, attributes: dict[str, Any], dtype: str) -> dict[str, Any]:
    """``kernel_for`` of `trt_bundle.define_plugins`: the plugin kernel compiled for the current
    CUDA device's architecture (needs torch with CUDA and triton)."""
    import torch

    if not torch.cuda.is_available():
        raise BackendUnavailableError("compiling plugin kernels for this GPU needs a CUDA device")
    major, minor = torch.cuda.get_device_capability()
    return _compile_cached(op, tuple(sorted(attributes.items())), dtype, major * 10 + minor)


def jit_impl(op: str) -> Any:
    """``impl_for`` of `trt_bundle.define_plugins`: run the flat Triton kernel on TensorRT's
    stream, on TensorRT's buffers (zero-copy torch views)."""
    def run(inputs: list[Any], attributes: dict[str, Any], outputs: Any, stream: int) -> None:
        import torch


        plan = plan_for(op, attributes)
        p = float(attributes[plan.p_param]) if plan.p_param else 0.0
        with torch.cuda.stream(torch.cuda.ExternalStream(stream)):
            tensors = [torch.as_tensor(t, device="cuda") for t in inputs]
            gated_flat(plan, tensors, p, out=torch.as_tensor(outputs[0], device="cuda"))

    return run


def register_trt_plugins(ops: tuple[str, ...] | None = None, *, jit: bool = True) -> list[str]:
    """Define every op of ``ops`` as a TensorRT plugin in this process, its AOT kernels compiled
    for this GPU; returns the plugin ids. Plugins are defined once per process (TensorRT's
    registry takes one definition), see `trt_bundle.define_plugins`."""
    trt, trtp = import_tensorrt()

    return define_plugins(trtp, trt, plugin_table(ops), compile_for_this_gpu,
                          jit_impl if jit else None)
