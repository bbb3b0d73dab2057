"""Every gated op as an `OpSpec`, registered in `REGISTRY`, each a `gatex::` torch custom op.

Importing this package registers all op families (one file each).
"""

from __future__ import annotations

from gatex.ops import conv_gating, gated_dense, golu, pagating, pagru, zilu  # noqa: F401  (register)
from gatex.ops.registry import REGISTRY, OpRegistry
from gatex.ops.spec import BACKENDS, OpSpec, Param, Tolerance
from gatex.ops.kernels import register_cuda_kernels

# Triton kernels become the CUDA implementation of the elementwise ops where triton is installed
# and torch has CUDA (GATEX_TRITON=0 turns it off); CPU tensors always run the torch impls.
register_cuda_kernels()


def get_op(name: str) -> OpSpec:
    """The spec of op ``name`` (``"GoLU"``, ``"gatex::GoLU"``, ``"golu"``)."""
    return REGISTRY.get(name)


__all__ = ["BACKENDS", "REGISTRY", "OpRegistry", "OpSpec", "Param", "Tolerance", "get_op"]
