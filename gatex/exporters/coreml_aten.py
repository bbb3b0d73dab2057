"""Composites for the aten ops coremltools' torch frontend lacks that real models hit.

Each entry is one conversion function registered with coremltools' ``register_torch_op``
beside gatex's own ops (`gatex.exporters.coreml.register_lowerings`), under the name
coremltools looks the op up by (``diff``, ``where.scalarother``). Found by running the
real-model corpus (tests/realmodels): transformers' GPT-2 calls ``torch.diff``,
``Tensor.new_ones`` and ``&`` / ``|`` of bool masks while building its attention mask; ViT's
attention calls ``torch.where(cond, x, scalar)``. coremltools' own conversions are never
overridden: an op it converts itself is skipped here.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np


def _diff(context: Any, node: Any) -> None:
    """aten.diff(x, n=1, dim=-1, prepend=None, append=None): x[1:] - x[:-1] along dim, n
    times, prepend / append concatenated first."""
    from coremltools.converters.mil import Builder as mb
    from coremltools.converters.mil.frontend.torch.ops import _get_inputs

    inputs = _get_inputs(context, node, min_expected=1)
    x = inputs[0]
    n = int(inputs[1].val) if len(inputs) > 1 and inputs[1] is not None else 1
    dim = int(inputs[2].val) if len(inputs) > 2 and inputs[2] is not None else -1
    prepend, append = (inputs[i] if len(inputs) > i else None for i in (3, 4))
    if prepend is not None or append is not None:
        x = mb.concat(values=[p for p in (prepend, x, append) if p is not None], axis=dim)
    rank = x.rank
    axis = dim % rank
    for _ in range(n):
        begin_hi = [0] * rank
        begin_hi[axis] = 1
        end_lo = [0] * rank
        end_lo[axis] = -1
        mask = [True] * rank
        lo_mask = list(mask)
        lo_mask[axis] = False
        hi = mb.slice_by_index(x=x, begin=begin_hi, end=[0] * rank, begin_mask=lo_mask,
                               end_mask=mask)
        lo = mb.slice_by_index(x=x, begin=[0] * rank, end=end_lo, begin_mask=mask,
                               end_mask=lo_mask)
        # torch.diff of a bool tensor is "changed": xor
        x = mb.logical_xor(x=hi, y=lo) if _dtype_name(x) == "bool" else mb.sub(x=hi, y=lo)
    context.add(mb.identity(x=x, name=node.name))


def _where_scalar_other(context: Any, node: Any) -> None:
    """aten.where.ScalarOther(cond, x, scalar): select(cond, x, scalar) with x broadcast to
    cond's shape first (MIL's select infers the shape of its values, not of cond: a 0-d x
    would declare a 0-d result)."""
    from coremltools.converters.mil import Builder as mb
    from coremltools.converters.mil.frontend.torch.ops import _get_inputs, promote_input_dtypes

    cond, a, b = _get_inputs(context, node, expected=3)
    a, b = promote_input_dtypes([a, b])
    if _dtype_name(cond) != "bool":
        cond = mb.cast(x=cond, dtype="bool")
    spread = mb.add(x=a, y=mb.mul(x=mb.cast(x=cond, dtype=_dtype_name(a)), y=_zero(a)))
    context.add(mb.select(cond=cond, a=spread, b=b, name=node.name))


def _dtype_name(var: Any) -> str:
    from coremltools.converters.mil.mil import types

    return types.builtin_to_string(var.dtype)


def _zero(var: Any) -> Any:
    from coremltools.converters.mil.mil import types

    return np.array(0, dtype=types.nptype_from_builtin(var.dtype))


def _logical(name: str) -> Callable[[Any, Any], None]:
    def convert(context: Any, node: Any) -> None:
        """aten.__and__ / __or__ of bool tensors: coremltools' logical_and / logical_or."""
        from coremltools.converters.mil.frontend.torch import ops

        getattr(ops, name)(context, node)
    return convert


def _new_ones(context: Any, node: Any) -> None:
    """aten.new_ones(self, size, dtype=None): ones of ``size`` in ``dtype`` (default self's),
    as coremltools' own ``ones`` with self's dtype when none is given."""
    from coremltools.converters.mil import Builder as mb
    from coremltools.converters.mil.frontend.torch.ops import (
        NUM_TO_DTYPE_STRING,
        _cast_to,
        _get_inputs,
        _get_kwinputs,
    )
    from coremltools.converters.mil.mil import types

    inputs = _get_inputs(context, node, min_expected=2)
    size = inputs[1]
    dtype = inputs[2] if len(inputs) > 2 else None
    if dtype is None:
        dtype = _get_kwinputs(context, node, "dtype", default=[None])[0]
    if (isinstance(size, list) and not size) or \
            (not isinstance(size, list) and size.val is not None and np.size(size.val) == 0):
        ones = mb.const(val=np.float32(1.0))  # new_ones([]): a 0-d tensor
    else:
        if isinstance(size, list):
            size = mb.concat(values=size, axis=0)
        if _dtype_name(size) != "int32":
            size = mb.cast(x=size, dtype="int32")
        ones = mb.fill(shape=size, value=1.0)
    target = NUM_TO_DTYPE_STRING[dtype.val] if dtype is not None and dtype.val is not None \
        else types.builtin_to_string(inputs[0].dtype)
    context.add(_cast_to(ones, target, node.name), node.name)


ATEN_COMPOSITES: dict[str, Callable[[Any, Any], None]] = {
    "diff": _diff,
    "new_ones": _new_ones,
    "__and__.tensor": _logical("bitwise_and"),
    "__or__.tensor": _logical("logical_or"),
    "where.scalarother": _where_scalar_other,
}
"""coremltools op name -> conversion; the corpus test of each model that hits one keeps it."""

_DONE: set[str] = set()


def register_aten_composites() -> tuple[str, ...]:
    """Register every composite coremltools has no conversion of (once per process), under the
    keys its registry looks the op up by (``aten::__and__.Tensor`` -> ``__and__``, ``__and_``:
    lower-cased, the overload and, for the converter, the in-place underscore dropped)."""
    from coremltools.converters.mil.frontend.torch.torch_op_registry import _TORCH_OPS_REGISTRY
    from coremltools.converters.mil.frontend.torch.utils import (
        sanitize_op_kind,
        unify_inplace_and_functional,
    )

    added = []
    for name, convert in ATEN_COMPOSITES.items():
        if name not in _DONE:
            if _TORCH_OPS_REGISTRY.get_func(name) is not None:
                continue  # coremltools converts it itself (a newer release): keep its own
            # the graph loader checks the sanitized name (``__and__``), the converter looks up
            # its in-place-unified form (``__and_``); set_func_by_name, as register_torch_op
            # refuses a key ending in "_"
            key = sanitize_op_kind(f"aten::{name}")
            fn = _named(convert, f"gatex_aten_{key.strip('_').replace('.', '_')}")
            for k in {key, unify_inplace_and_functional(key)}:
                _TORCH_OPS_REGISTRY.set_func_by_name(fn, k)
            _DONE.add(name)
        added.append(name)
    return tuple(added)


def _named(convert: Callable[[Any, Any], None], name: str) -> Callable[[Any, Any], None]:
    def fn(context: Any, node: Any) -> None:
        convert(context, node)

    fn.__name__ = fn.__qualname__ = name
    return fn
