"""Every gated op as an `OpSpec`, registered in `REGISTRY`, each a `gatex::` torch custom op.

Importing this package registers all op families (one file each), then every op that an
installed package declares in the ``gatex.ops`` entry-point group. An op defined outside gatex
registers itself with `register` (in one file: spec, torch reference and impl, its lowerings;
see docs/extending.md); after that `gatex units`, export to every backend, parity and bench
treat it as they treat gatex's own.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Mapping
from importlib import metadata
from typing import Any

from gatex.ops import conv_gating, gated_dense, golu, pagating, pagru, zilu  # noqa: F401  (register)
from gatex.ops._torch import call_op, compute_in_fp32, keep_ops, publish, schema_for
from gatex.ops.kernels import register_cuda_kernels
from gatex.ops.lowering.gates import CATALOGUE, Gate, register_gate
from gatex.ops.registry import REGISTRY, OpRegistry
from gatex.ops.spec import BACKENDS, OpSpec, Param, TensorrtLowering, Tolerance

ENTRY_POINT_GROUP = "gatex.ops"


def get_op(name: str) -> OpSpec:
    """The spec of op ``name`` (``"GoLU"``, ``"gatex::GoLU"``, ``"golu"``)."""
    return REGISTRY.get(name)


def register(spec: OpSpec, schema: str | None = None, *,
             lowerings: Mapping[str, Any] | None = None,
             unsupported: Mapping[str, str] | None = None,
             fake: Callable[..., Any] | None = None) -> OpSpec:
    """Register an op defined outside gatex, as gatex's own op files register theirs.

    ``spec`` goes into `REGISTRY` and becomes the torch custom op ``gatex::<spec.torch_name>``
    (``schema`` derived from the spec unless given, `schema_for`; ``fake`` its shape function,
    default: the inputs broadcast). ``lowerings`` maps a backend to its lowering ("onnx":
    ``lower(b, *inputs, **params)``, "coreml": ``lower(m, *inputs, **params)``, "tensorrt": a
    `TensorrtLowering`); ``unsupported`` maps a backend to the reason it cannot carry the op.
    Lowerings may also be hung on the returned spec later (``@spec.lowering("onnx")``). A name
    taken already is a `DuplicateRegistrationError`. With a TensorRT plan the op's Triton
    kernel becomes its CUDA implementation where triton and CUDA are there."""
    published = publish(spec, schema, fake=fake)
    for backend, lower in (lowerings or {}).items():
        published.lowering(backend)(lower)
    for backend, reason in (unsupported or {}).items():
        published.unsupported(backend, reason)
    if getattr(published.lowerings.get("tensorrt"), "plugin", False):
        register_cuda_kernels()
    return published


def load_entry_points() -> list[str]:
    """Import every module of the ``gatex.ops`` entry-point group (each registers its ops);
    returns their names. One that fails is one ``warning:`` line on stderr, never a failure of
    gatex itself: an installed plugin must not break ``gatex --help``."""
    loaded = []
    try:
        points = metadata.entry_points(group=ENTRY_POINT_GROUP)
    except Exception:  # noqa: BLE001  (broken metadata of some distribution)
        return loaded
    for point in points:
        try:
            point.load()
        except Exception as exc:  # noqa: BLE001  (a plugin's own bug)
            print(f"warning: gatex.ops entry point {point.name!r} ({point.value}) failed to "
                  f"load: {type(exc).__name__}: {exc}", file=sys.stderr)
            continue
        loaded.append(point.name)
    return loaded


BUILTIN_OPS: tuple[str, ...] = tuple(REGISTRY.names())
"""The ops gatex itself defines (registered before any entry point)."""

ENTRY_POINTS = load_entry_points()
"""The ``gatex.ops`` entry points loaded at import (their ops are in `REGISTRY`)."""

# Triton kernels become the CUDA implementation of the elementwise ops where triton is installed
# and torch has CUDA (GATEX_TRITON=0 turns it off); CPU tensors always run the torch impls.
register_cuda_kernels()


__all__ = ["BACKENDS", "BUILTIN_OPS", "CATALOGUE", "ENTRY_POINTS", "ENTRY_POINT_GROUP", "Gate",
           "OpRegistry", "OpSpec", "Param", "REGISTRY", "TensorrtLowering", "Tolerance",
           "call_op", "compute_in_fp32", "get_op", "keep_ops", "load_entry_points", "register",
           "register_gate", "schema_for"]
