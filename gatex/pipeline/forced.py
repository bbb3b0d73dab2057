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
from typing import Any

import numpy as np

from gatex.comparison.decisions import DecisionReport, LayerDecisions, accumulate, count_flips
from gatex.ops import decisions
from gatex.pipeline.batches import _concat
from gatex.runtimes.base import Runtime, nan_count
from gatex.runtimes.decisions import ArtifactCall, deciding_ops, expose
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
    recorded = [o for o in _metadata(artifact).get("gatex.ops", "").split(",") if o]
    if not deciding_ops([*ops, *recorded]):
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
            with decisions.recording(dtype_of(outputs), forced=_keyed(mine),
                                     where=reference.current_module,
                                     judge=_judge(mine)) as tape:
                expected.append(reference.run(ref_batch))
            if len(tape.calls) != len(mine):
                return DecisionReport(reason=f"the decisions do not pair: torch made "
                                             f"{len(tape.calls)} deciding op calls, the "
                                             f"artifact {len(mine)}")
            counts = [c for call in tape.calls for c in call.decisions.values() if c is not None]
            if layers is not None and len(layers) != len(counts):
                return DecisionReport(reason=f"the decisions do not pair: a batch made "
                                             f"{len(counts)} decisions, the first {len(layers)}")
            layers = accumulate(layers, counts)
    except decisions.ForcingError as exc:
        return DecisionReport(reason=f"the decisions cannot be forced: {exc}")
    finally:
        reader.close()
    report = DecisionReport(tuple(layers or ()), forced=True,
                            seconds=time.perf_counter() - start)
    return ForcedRun(_join(actual), _join(expected), nans, report)


def _metadata(artifact: Runtime) -> dict[str, str]:
    try:
        return dict(artifact.metadata)
    except Exception:  # noqa: BLE001  (a runtime without metadata, or not loaded)
        return {}


def _keyed(calls: Sequence[ArtifactCall]) -> decisions.Forced:
    """The artifact's values for the tape: keyed by (torch module, occurrence) when the
    artifact records every call's module (ONNX from torch.onnx), else by call order (CoreML,
    whose program keeps torch's order)."""
    if not calls or not all(c.module for c in calls):
        return [c.values for c in calls]
    seen: dict[str, int] = {}
    keyed = {}
    for c in calls:
        keyed[(c.module, seen.get(c.module, 0))] = c.values
        seen[c.module] = seen.get(c.module, 0) + 1
    return keyed


def _judge(calls: Sequence[ArtifactCall]) -> decisions.Judge:
    """Compares each decision torch records with the artifact's as it is made (`count_flips`),
    so only counts are kept: (the layer, its counts), or None for a `FOLDED` decision the
    artifact does not expose (torch's own by construction). The tape hands over the values it
    paired with the call (`_keyed`); their call says which node they came from."""
    owner = {id(c.values): c for c in calls}

    def judge(index: int, entry: decisions.OpDecisions, d: decisions.Decision,
              given: Any) -> Any:
        mine = owner.get(id(given))
        where = f"{entry.op} call #{index + 1}" + (f" in {entry.module!r}" if entry.module
                                                    else "")
        if mine is None:
            raise decisions.ForcingError(f"the artifact has no decisions for torch's {where}")
        if mine.op != entry.op:
            raise decisions.ForcingError(f"torch's {where} pairs with the artifact's {mine.op} "
                                         f"({mine.node})")
        if d.name not in mine.values:
            if d.name in decisions.FOLDED:
                return None
            raise decisions.ForcingError(f"the artifact's {mine.op} ({mine.node}) exposes no "
                                         f"{d.name!r}")
        value = mine.values[d.name]
        if value.shape != d.value.shape:
            raise decisions.ForcingError(f"the artifact's {d.name} of {mine.op} ({mine.node}) is "
                                         f"{value.shape}, torch's {d.value.shape}")
        layer = LayerDecisions(index, entry.op, d.name, entry.module, mine.node)
        return layer, count_flips(d, value, mine.values.get(f"{d.name}__pre"))

    return judge


def _join(batches: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    return {k: _concat([b[k] for b in batches]) for k in batches[0]}
