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
            forced = _keyed(mine)
            with decisions.recording(dtype_of(outputs), forced=forced,
                                     where=reference.current_module) as tape:
                expected.append(reference.run(ref_batch))
            mine, why = _paired(tape.calls, mine, forced)
            counts, why = compare_calls(tape.calls, mine) if not why else ([], why)
            if why:
                return DecisionReport(reason=f"the decisions do not pair: {why}")
            if layers is None:
                layers = new_layers(tape.calls, mine, [c.module for c in tape.calls], counts)
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
    """The artifact's decisions for the tape: keyed by (torch module, occurrence) when the
    artifact records every call's module (ONNX from torch.onnx), else by call order (CoreML,
    whose program keeps torch's order)."""
    given = [{k: v for k, v in c.values.items() if "__" not in k} for c in calls]
    if not calls or not all(c.module for c in calls):
        return given
    keyed: dict[tuple[str, int], dict[str, np.ndarray]] = {}
    seen: dict[str, int] = {}
    for c, values in zip(calls, given):
        keyed[(c.module, seen.get(c.module, 0))] = values
        seen[c.module] = seen.get(c.module, 0) + 1
    return keyed


def _paired(torch_calls: Sequence[decisions.OpDecisions], calls: Sequence[ArtifactCall],
            forced: decisions.Forced) -> tuple[list[ArtifactCall], str]:
    """The artifact's calls in torch's call order (as `_keyed` paired them), or why not."""
    if not isinstance(forced, dict):
        return list(calls), ""
    by_key, seen = {}, {}
    for c in calls:
        by_key[(c.module, seen.get(c.module, 0))] = c
        seen[c.module] = seen.get(c.module, 0) + 1
    missing = [f"{t.op} in {t.module!r}" for t in torch_calls
               if (t.module, t.occurrence) not in by_key]
    if missing:
        return [], f"the artifact has no decisions for torch's {', '.join(missing[:3])}"
    if len(by_key) != len(torch_calls):
        return [], f"torch made {len(torch_calls)} deciding op calls, the artifact {len(by_key)}"
    return [by_key[(t.module, t.occurrence)] for t in torch_calls], ""


def _join(batches: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    return {k: _concat([b[k] for b in batches]) for k in batches[0]}
