"""Host side of the Triton gates: broadcasting, stride collapsing, dtypes, the launch.

`gated` runs one elementwise gatex op through `triton_gates.gated_strided_kernel`. It takes the
op's arguments as the ``gatex::`` custom op does (inputs, then parameters by name) and returns a
fresh contiguous tensor of the broadcast shape in the first input's dtype. Tensors must be on a
CUDA device, or on the CPU under Triton's interpreter (``TRITON_INTERPRET=1``, set before triton
is first imported). Anything the kernel does not cover (float64, integer tensors, a paUnit gate
given as a callable) raises `KernelUnsupported`, and the registered CUDA kernel then falls back to
the op's torch impl.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import torch

from gatex.errors import BackendUnavailableError
from gatex.ops.kernels.plans import GatePlan, plan_for

KERNEL_DTYPES = (torch.float32, torch.float16, torch.bfloat16)
BLOCK = 1024
MAX_DIMS = 4
INT32_LIMIT = 2**31
# compile options of every launch: 4 warps; fused multiply-add on, said explicitly (Triton 3.9
# warns that its default will change); the AOT plugin kernels use the same (ptx.py)
LAUNCH_OPTIONS = {"num_warps": 4, "enable_fp_fusion": True}


class KernelUnsupported(ValueError):
    """These arguments are outside what the Triton kernels cover (the torch impl handles them)."""


def interpreting() -> bool:
    """True when Triton runs kernels in its NumPy interpreter (``TRITON_INTERPRET=1``)."""
    return os.environ.get("TRITON_INTERPRET", "0").lower() in ("1", "true", "on", "yes")


def collapse(shape: Sequence[int], strides: Sequence[Sequence[int]]
             ) -> tuple[list[int], list[list[int]]]:
    """Merge adjacent dims that every tensor walks contiguously; drop size-1 dims.

    ``strides`` holds one stride tuple per tensor, each already expanded to ``shape`` (0 on
    broadcast dims). Returns the merged sizes (outermost first) and each tensor's merged strides.

    >>> collapse((2, 3, 4), [(12, 4, 1), (0, 0, 1)])
    ([6, 4], [[4, 1], [0, 1]])
    """
    dims = [(size, [s[i] for s in strides]) for i, size in enumerate(shape) if size != 1]
    if not dims:
        return [1], [[0] for _ in strides]
    merged = [dims[0]]
    for size, inner in dims[1:]:
        outer_size, outer = merged[-1]
        if all(o == s * size for o, s in zip(outer, inner)):
            merged[-1] = (outer_size * size, inner)
        else:
            merged.append((size, inner))
    sizes = [size for size, _ in merged]
    per_tensor = [[st[k] for _, st in merged] for k in range(len(strides))]
    return sizes, per_tensor


def _check_tensors(op: str, tensors: Sequence[torch.Tensor]) -> torch.device:
    device = tensors[0].device
    for t in tensors:
        if t.dtype not in KERNEL_DTYPES:
            raise KernelUnsupported(f"{op}: the Triton kernel takes float32/float16/bfloat16, "
                                    f"not {t.dtype}")
    if device.type != "cuda" and not interpreting():
        raise BackendUnavailableError(f"{op}: Triton kernels run on CUDA tensors (or on the CPU "
                                      "under TRITON_INTERPRET=1); got a tensor on "
                                      f"{device.type}")
    for t in tensors[1:]:
        if t.device != device and not (t.dim() == 0 and t.device.type == "cpu"):
            raise KernelUnsupported(f"{op}: tensors on {device} and {t.device}")
    return device


def gated(op: str, *inputs: torch.Tensor, **params: Any) -> torch.Tensor:
    """``op``'s forward through the Triton kernel family (see the module docstring).

    ``inputs`` are the op's data inputs (v, u or x); a learnable parameter (``alpha``,
    ``sigma``) is a tensor broadcastable against them, the others are Python scalars.
    """
    plan = plan_for(op, {k: v for k, v in params.items() if not isinstance(v, torch.Tensor)})
    expected = 2 if plan.two_inputs else 1
    if len(inputs) != expected or not all(isinstance(t, torch.Tensor) for t in inputs):
        raise KernelUnsupported(f"{op} takes {expected} input tensor(s); got {len(inputs)}")
    p = None
    if plan.p_param is not None:
        p = params.get(plan.p_param, 0.5 if plan.p_param == "alpha" else 1.0)
        if not isinstance(p, torch.Tensor):
            p = torch.tensor(float(p), dtype=torch.float32)
    device = _check_tensors(op, [*inputs, *([p] if p is not None else [])])
    if p is not None and p.device != device:
        p = p.to(device)  # a 0-d CPU parameter next to CUDA inputs (torch allows it)
    return run_plan(plan, list(inputs), p)


def run_plan(plan: GatePlan, inputs: list[torch.Tensor], p: torch.Tensor | None) -> torch.Tensor:
    """Launch `gated_strided_kernel` for ``plan`` on ``inputs`` (and parameter tensor ``p``)."""
    from gatex.ops.kernels import triton_gates

    tensors = inputs + ([p] if p is not None else [])
    shape = torch.broadcast_shapes(*(t.shape for t in tensors))
    out = torch.empty(shape, dtype=inputs[0].dtype, device=inputs[0].device)
    n = out.numel()
    if n == 0:
        return out
    views = [t.expand(shape) for t in tensors]
    sizes, strides = collapse(shape, [v.stride() for v in views])
    if len(sizes) > MAX_DIMS:  # rare: materialise the broadcast, then it is one flat dim
        views = [v.contiguous() for v in views]
        sizes, strides = collapse(shape, [v.stride() for v in views])
    pad = MAX_DIMS - len(sizes)
    sizes = [1] * pad + sizes
    strides = [[0] * pad + s for s in strides]
    reach = max(sum((d - 1) * abs(s) for d, s in zip(sizes, st)) for st in strides)
    sv = strides[0]
    su = strides[1] if plan.two_inputs else sv
    sp = strides[-1] if p is not None else [0] * MAX_DIMS
    v_t = views[0]
    u_t = views[1] if plan.two_inputs else v_t
    p_t = views[-1] if p is not None else v_t
    grid = (triton_cdiv(n, BLOCK),)
    triton_gates.gated_strided_kernel[grid](
        out, v_t, u_t, p_t, n, sizes[1], sizes[2], sizes[3], *sv, *su, *sp,
        float(plan.c0), float(plan.c1), float(plan.c2),
        NDIM=MAX_DIMS - pad, TWO_INPUTS=plan.two_inputs, HAS_P=p is not None,
        WIDE=n >= INT32_LIMIT or reach >= INT32_LIMIT, BLOCK=BLOCK, **plan.constexprs(),
        **LAUNCH_OPTIONS)
    return out


def triton_cdiv(a: int, b: int) -> int:
    return -(-a // b)


def gated_flat(plan: GatePlan, inputs: Sequence[torch.Tensor], p: float, *,
               out: torch.Tensor | None = None) -> torch.Tensor:
    """The TensorRT plugin's kernel (`gated_flat1_kernel` / `gated_flat2_kernel`) on contiguous
    inputs of one shape, ``p`` (alpha or sigma) a compile-time constant; writes into ``out``."""
    from gatex.ops.kernels import triton_gates

    first = inputs[0]
    if any(t.shape != first.shape or not t.is_contiguous() for t in inputs):
        raise KernelUnsupported(f"{plan.op}: the plugin kernel takes contiguous inputs of one "
                                "shape")
    _check_tensors(plan.op, list(inputs))
    out = torch.empty_like(first) if out is None else out
    n = first.numel()
    if n:
        kernel = triton_gates.gated_flat2_kernel if plan.two_inputs else \
            triton_gates.gated_flat1_kernel
        kernel[(triton_cdiv(n, BLOCK),)](*inputs, n, out, **flat_constexprs(plan, p),
                                         **LAUNCH_OPTIONS)
    return out


def flat_constexprs(plan: GatePlan, p: float) -> dict[str, Any]:
    """Every compile-time argument of the flat kernels for ``plan`` and parameter ``p``."""
    return {"P": float(p), "C0": float(plan.c0), "C1": float(plan.c1), "C2": float(plan.c2),
            "BLOCK": BLOCK, **plan.constexprs()}
