"""Inputs in batches, and both sides' outputs over them: the pieces every parity run shares.

An artifact with a fixed batch size runs in chunks of it and the reference runs the same
chunks; fp16/bf16 inputs reach a torch reference widened to fp32 (exact).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from gatex.errors import BadInputError
from gatex.runtimes.base import Runtime, TensorSpec


def split_batches(feeds: Mapping[str, np.ndarray], batch: int | None
                  ) -> tuple[list[dict[str, np.ndarray]], str]:
    """``feeds`` in chunks of ``batch`` samples along axis 0 (None: one chunk), and a note."""
    feeds = dict(feeds)
    if batch is None or not feeds:
        return [feeds], ""
    n = min(int(np.shape(a)[0]) if np.ndim(a) else 0 for a in feeds.values())
    if n < batch:
        raise BadInputError(f"the artifact runs batches of exactly {batch} samples; the inputs "
                            f"hold {n}")
    count = n // batch
    chunks = [{k: a[i * batch:(i + 1) * batch] for k, a in feeds.items()} for i in range(count)]
    note = f"fixed batch {batch}: {count} chunks"
    if n % batch:
        note += f", the last {n % batch} samples dropped"
    return chunks, note


def _widen_for_reference(feeds: dict[str, np.ndarray], specs: tuple[TensorSpec, ...] | None
                         ) -> dict[str, np.ndarray]:
    # fp16/bf16 -> fp32 is exact, so the reference sees the very values the artifact saw; a
    # reference that declares its inputs gets them by position under its own names.
    low = ("float16", "bfloat16")
    if specs is None:
        return {k: a.astype(np.float32) if a.dtype.name in low else a for k, a in feeds.items()}
    if len(specs) != len(feeds):
        return dict(feeds)  # the reference's own validation names what is missing
    out = {}
    for spec, a in zip(specs, feeds.values()):
        if a.dtype.name in low and spec.dtype in ("float32", "float64"):
            a = a.astype(spec.dtype)
        out[spec.name] = a
    return out


def _concat(chunks: Sequence[np.ndarray]) -> np.ndarray:
    if len(chunks) == 1:
        return chunks[0]
    return np.concatenate(chunks, axis=0) if chunks[0].ndim else np.stack(chunks)


def _run_batches(runtime: Runtime, batches: Sequence[dict[str, np.ndarray]]
                 ) -> tuple[dict[str, np.ndarray], dict[str, int]]:
    outputs: dict[str, list[np.ndarray]] = {}
    nans: dict[str, int] = {}
    for feeds in batches:
        for name, value in runtime.run(feeds).items():
            outputs.setdefault(name, []).append(value)
        for name, n in runtime.last_input_nans.items():
            nans[name] = nans.get(name, 0) + n
    return {k: _concat(v) for k, v in outputs.items()}, nans


def _pair_names(actual: dict[str, np.ndarray], expected: dict[str, np.ndarray]
                ) -> dict[str, np.ndarray]:
    # By name when the names agree; by position when the reference's names are its own
    # (a torch model's "output"); a different count is a reference that does not fit.
    if set(actual) == set(expected):
        return expected
    if len(actual) == len(expected):
        return dict(zip(actual, expected.values()))
    raise BadInputError(f"the reference returns {len(expected)} outputs "
                        f"({', '.join(expected)}) but the artifact has {len(actual)} "
                        f"({', '.join(actual)}); give the reference that matches the artifact")
