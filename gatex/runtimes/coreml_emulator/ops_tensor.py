"""Shape, indexing and data-movement MIL ops: exact in any precision.

coremltools' ``value_inference`` for most; gatex's own concat (coremltools ignores ``interleave``),
scatter_along_axis (coremltools ignores ``mode`` and always overwrites), range_1d (coremltools
declines ranges over a size limit meant for constant folding), band_part (coremltools loops in
Python over M x N) and gather_nd (none).
"""

from __future__ import annotations

import numpy as np

from gatex.runtimes.coreml_emulator.registry import OpCall, kernel, reuse_value_inference

reuse_value_inference(
    "reshape", "transpose", "expand_dims", "squeeze", "stack", "split", "tile",
    "slice_by_index", "slice_by_size", "gather", "gather_along_axis", "reverse", "pad",
    "flatten2d", "fill", "fill_like", "shape", "identity", "topk", "argsort",
)


@kernel("range_1d")
def range_1d(call: OpCall) -> np.ndarray:
    """[start, end) in steps of ``step``, like np.arange."""
    return np.arange(call.start, call.end, call.step)


@kernel("band_part")
def band_part(call: OpCall) -> np.ndarray:
    """Keep x[..., m, n] where (lower < 0 or m - n <= lower) and (upper < 0 or n - m <= upper)."""
    x = call.x
    lower, upper = int(call.scalar("lower", -1)), int(call.scalar("upper", -1))
    m = np.arange(x.shape[-2])[:, None]
    n = np.arange(x.shape[-1])[None, :]
    keep = ((lower < 0) | (m - n <= lower)) & ((upper < 0) | (n - m <= upper))
    return np.where(keep, x, np.zeros((), dtype=x.dtype))


@kernel("gather_nd")
def gather_nd(call: OpCall) -> np.ndarray:
    """x[indices[..., 0], ..., indices[..., K-1]] after ``batch_dims`` shared leading dims."""
    x, indices = call.x, np.asarray(call.indices)
    batch_dims = int(call.scalar("batch_dims", 0))
    k = indices.shape[-1]
    batch = x.shape[:batch_dims]
    flat_x = x.reshape(int(np.prod(batch, dtype=np.int64)), *x.shape[batch_dims:])
    flat_i = indices.reshape(flat_x.shape[0], -1, k)
    dims = np.asarray(flat_x.shape[1:1 + k])
    flat_i = np.where(flat_i < 0, flat_i + dims, flat_i)  # iOS17 allows negative indices
    rows = np.arange(flat_x.shape[0])[:, None]
    picked = flat_x[(rows, *np.moveaxis(flat_i, -1, 0))]
    return picked.reshape(*indices.shape[:-1], *x.shape[batch_dims + k:])


@kernel("concat")
def concat(call: OpCall) -> np.ndarray:
    """Join ``values`` along ``axis``; ``interleave`` alternates equal slices of each input.
    Scalars join as one-element vectors (dynamic shapes: ``concat(batch, 64)``)."""
    values, axis = call["values"], int(call.scalar("axis"))
    if any(np.ndim(v) == 0 for v in values):
        values = [np.atleast_1d(v) for v in values]
    if not call.scalar("interleave", False):
        return np.concatenate(values, axis=axis)
    stacked = np.stack(values, axis=axis + 1 if axis >= 0 else axis)
    shape = list(values[0].shape)
    shape[axis] = -1
    return stacked.reshape(shape)


_SCATTER = {"add": np.add, "sub": np.subtract, "mul": np.multiply, "div": np.divide,
            "max": np.maximum, "min": np.minimum}


@kernel("scatter_along_axis")
def scatter_along_axis(call: OpCall) -> np.ndarray:
    """data with ``updates`` written at ``indices`` along ``axis``; ``mode`` update overwrites,
    add/sub/mul/div/max/min combine with what is there (repeated indices accumulate)."""
    data, indices, updates = call.data, np.asarray(call.indices), call.updates
    axis = int(call.scalar("axis", 0)) % data.ndim
    mode = call.scalar("mode", "add")
    indices = np.where(indices < 0, indices + data.shape[axis], indices)
    grid = list(np.indices(indices.shape, sparse=True))
    grid[axis] = indices
    out = np.array(data, copy=True)
    if mode == "update":
        out[tuple(grid)] = updates
        return out
    if mode not in _SCATTER:
        raise NotImplementedError(f"scatter mode {mode!r}")
    _SCATTER[mode].at(out, tuple(grid), updates)
    return out
