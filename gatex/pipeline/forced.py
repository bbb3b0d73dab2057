"""Decision-forced parity: the engine `compare_runtimes` uses for models with hard-decision ops.

Per batch: the artifact's check-only form gives its decisions (`gatex.runtimes.decisions`);
torch runs once with them forced, each op call recording the decision it would have made
itself, with its margin and bound (`gatex.ops.decisions.recording`). The decisions are compared
layer by layer (`gatex.comparison.decisions`), and the artifact's outputs are judged against
the forced run at the specs' tolerance for the artifact's dtype: no allowance, no floor. An fp16
artifact is so judged against torch's fp32 run with its decisions, so the verdict is about the
export, not about torch's own fp16 arithmetic.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from gatex.comparison.decisions import DecisionReport, accumulate, compare_calls, new_layers
from gatex.ops import REGISTRY, decisions
from gatex.runtimes.base import Runtime, nan_count
from gatex.runtimes.decisions import deciding_ops, expose
from gatex.runtimes.torch_runtime import TorchRuntime

MODES = ("forced", "strict")


@dataclass
class ForcedRun:
    """What decision-forced parity ran: the artifact's outputs (its check-only form's) and
    torch's with the artifact's decisions, both concatenated over the batches, the NaNs the
    inputs held, and the decisions' report."""

    actual: dict[str, np.ndarray]
    expected: dict[str, np.ndarray]
    input_nans: dict[str, int]
    report: DecisionReport


def forced_run(artifact: Runtime, reference: Runtime, ops: Sequence[str],
               batches: Sequence[dict[str, np.ndarray]],
               ref_batches: Sequence[dict[str, np.ndarray]], dtype_of: Callable[[dict], str]
               ) -> ForcedRun | DecisionReport | None:
    """Decision-forced parity's runs, or a `DecisionReport` saying why nothing was forced (the
    artifact's decisions cannot be read or paired), or None when ``ops`` make no hard
    decisions. ``dtype_of(outputs)`` is the dtype the artifact computes in, given its outputs
    (the bounds are that dtype's)."""
    if not deciding_ops(ops):
        return None
    if not isinstance(reference, TorchRuntime):
        return DecisionReport(reason=f"the reference ({reference.label}) is not a torch model, "
                                     "so its decisions cannot be forced")
    start = time.perf_counter()
    reader, why = expose(artifact)
    if reader is None:
        return DecisionReport(reason=why)
    layers = None
    actual, expected = [], []
    nans: dict[str, int] = {}
    try:
        for batch, ref_batch in zip(batches, ref_batches):
            feeds = artifact.validate_feeds(batch)
            for name, a in feeds.items():
                if (n := nan_count(a)):
                    nans[name] = nans.get(name, 0) + n
            outputs, mine = reader.run(feeds)
            actual.append(outputs)
            given = [{k: v for k, v in c.values.items() if "__" not in k} for c in mine]
            with decisions.recording(dtype_of(outputs), forced=given) as tape:
                expected.append(reference.run(ref_batch))
            modules = [c.module for c in reference.last_op_calls
                       if REGISTRY.get(c.op).decisions]
            counts, why = compare_calls(tape.calls, mine)
            if why:
                return DecisionReport(reason=f"the decisions do not pair: {why}")
            if layers is None:
                layers = new_layers(tape.calls, mine, modules, counts)
            layers = accumulate(layers, counts)
    except decisions.ForcingError as exc:
        return DecisionReport(reason=f"the decisions cannot be forced: {exc}")
    finally:
        reader.close()
    report = DecisionReport(tuple(layers or ()), forced=True,
                            seconds=time.perf_counter() - start)
    return ForcedRun(_join(actual), _join(expected), nans, report)


def _join(batches: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    def cat(chunks: list[np.ndarray]) -> np.ndarray:
        if len(chunks) == 1:
            return chunks[0]
        return np.concatenate(chunks, axis=0) if chunks[0].ndim else np.stack(chunks)

    return {k: cat([b[k] for b in batches]) for k in batches[0]}
