"""Decision-forced parity's verdict on the decisions themselves: per layer (one deciding op call
and one decision tensor), how many elements the artifact decided otherwise than torch, how many
of those flips lie within the rounding bound (boundary flips, `gatex.ops.decisions`), and
whether the artifact's gates follow its own pre-decision values and torch's thresholds.

A layer fails when a flip lies beyond its bound (margin > bound: no rounding explains it) or
when a gate contradicts the rule ``gate == (pre > T)`` evaluated on the artifact's own ``pre``
with torch's threshold ``T`` in the artifact's dtype (a moved or inverted threshold).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np


@dataclass(frozen=True)
class LayerDecisions:
    """One decision tensor of one deciding op call, over every batch."""

    index: int            # position among the deciding op calls, from 0
    op: str               # spec name
    name: str             # "gate", "levels"
    module: str           # the torch module that ran it ("" = the root module)
    node: str             # the artifact's node (ONNX) or MIL op prefix
    elements: int = 0
    flips: int = 0        # elements decided otherwise than torch
    boundary_flips: int = 0   # flips whose margin is within the bound
    violations: int = 0   # gates against the rule pre > T on the artifact's own values
    worst_ratio: float = 0.0  # the largest margin / bound over the flips (<= 1: boundary)

    @property
    def beyond(self) -> int:
        return self.flips - self.boundary_flips

    @property
    def passed(self) -> bool:
        return self.beyond == 0 and self.violations == 0

    def where(self) -> str:
        """``#3 PGConv2d levels in 'blocks.0.conv2'`` (the torch module, else the node)."""
        return f"#{self.index + 1} {self.op} {self.name} in {self.module or self.node!r}"

    def describe(self) -> str:
        if not self.flips:
            text = f"0 of {self.elements} flipped"
        else:
            within = "all" if self.boundary_flips == self.flips else str(self.boundary_flips)
            text = (f"{self.flips} of {self.elements} flipped, {within} within the bound "
                    f"(worst margin {self.worst_ratio:.2g}x)")
        if self.violations:
            text += f"; {self.violations} contradict pre > T"
        return text


@dataclass(frozen=True)
class DecisionReport:
    """Every layer's decisions, and how the outputs were judged.

    ``forced``: the outputs were compared with torch run with the artifact's decisions;
    False with ``reason`` when the decisions could not be read or paired (the strict
    elementwise judgement applied). ``seconds``: how long the forced runs took (the artifact's
    check-only form and torch with its decisions, every batch)."""

    layers: tuple[LayerDecisions, ...] = ()
    forced: bool = False
    reason: str = ""
    seconds: float = 0.0

    @property
    def passed(self) -> bool:
        return all(layer.passed for layer in self.layers)

    @property
    def first_beyond(self) -> LayerDecisions | None:
        return next((layer for layer in self.layers if not layer.passed), None)

    def summary(self) -> str:
        if not self.forced:
            return f"decisions not forced: {self.reason}"
        flips = sum(layer.flips for layer in self.layers)
        first = self.first_beyond
        if first is not None:
            return f"decision differs beyond the rounding bound at {first.where()}: " \
                   f"{first.describe()}"
        worst = max((layer.worst_ratio for layer in self.layers), default=0.0)
        return (f"{len(self.layers)} decision tensors, {flips} boundary flips (worst margin "
                f"{worst:.3g}x the bound); outputs judged against torch with the artifact's "
                "decisions")


SHOWN_LAYERS = 12   # layers listed in the terminal and Markdown (every one is in the JSON)


def layer_record(layer: LayerDecisions) -> dict[str, Any]:
    return {"index": layer.index, "op": layer.op, "name": layer.name, "module": layer.module,
            "node": layer.node, "elements": layer.elements, "flips": layer.flips,
            "boundary_flips": layer.boundary_flips, "beyond": layer.beyond,
            "violations": layer.violations, "worst_ratio": layer.worst_ratio,
            "passed": layer.passed}


def report_record(report: DecisionReport | None) -> dict[str, Any] | None:
    """The report as JSON (``gatex.parity/1`` ``decisions``); None where no op decides."""
    if report is None:
        return None
    first = report.first_beyond
    return {"forced": report.forced, "passed": report.passed, "reason": report.reason,
            "summary": report.summary(), "seconds": round(report.seconds, 4),
            "first_beyond": None if first is None else layer_record(first),
            "layers": [layer_record(layer) for layer in report.layers]}


def report_lines(report: DecisionReport) -> list[str]:
    """The summary, then the layers that flipped or failed (the first `SHOWN_LAYERS`)."""
    shown = [layer for layer in report.layers if layer.flips or not layer.passed]
    lines = [report.summary()]
    lines += [f"{'FAIL ' if not layer.passed else ''}{layer.where()}: {layer.describe()}"
              for layer in shown[:SHOWN_LAYERS]]
    if len(shown) > SHOWN_LAYERS:
        lines.append(f"... {len(shown) - SHOWN_LAYERS} more layers with flips (--json lists "
                     "every layer)")
    return lines


def count_flips(d: Any, value: np.ndarray, pre: np.ndarray | None) -> dict[str, Any]:
    """One decision tensor against torch's `Decision` ``d``: the counts a `LayerDecisions`
    adds up. ``value`` is the artifact's decision, ``pre`` its pre-decision value (gates)."""
    value = np.asarray(value)   # shaped as torch's (the caller pairs and checks them)
    mine = value.astype(bool) if d.kind == "threshold" else np.asarray(value, np.float64)
    flips = mine != d.value
    n_flips = int(flips.sum())
    within = flips & (d.margin <= d.bound)
    ratio = float(np.max(d.margin[flips] / np.maximum(d.bound[flips], 1e-300))) if n_flips else 0.0
    violations = 0
    if d.kind == "threshold" and pre is not None:
        violations = int(rule_violations(mine, np.asarray(pre), d.threshold).sum())
    return {"elements": int(flips.size), "flips": n_flips, "boundary_flips": int(within.sum()),
            "violations": violations, "worst_ratio": ratio}


RULE_ULPS = 4   # how far, in ulps of T in the artifact's dtype, its own T may sit from torch's


def rule_violations(gate: np.ndarray, pre: np.ndarray, threshold: np.ndarray) -> np.ndarray:
    """Where ``gate`` contradicts ``pre > T`` on the artifact's own ``pre``, with torch's ``T``
    in ``pre``'s dtype widened by `RULE_ULPS` ulps either way: an artifact that computed T
    in its dtype (an fp16 graph folding bn_mean + th sqrt(var)) is not a violation, a moved
    threshold or an inverted gate is."""
    t = np.broadcast_to(threshold, pre.shape).astype(pre.dtype)
    slack = RULE_ULPS * np.spacing(np.abs(t))
    p = pre.astype(np.float64)
    t64, slack = t.astype(np.float64), slack.astype(np.float64)
    return (gate & (p <= t64 - slack)) | (~gate & (p > t64 + slack))


def accumulate(layers: list[LayerDecisions] | None,
               counts: Sequence[tuple[LayerDecisions, dict[str, Any]]]) -> list[LayerDecisions]:
    """One more batch's ``counts`` (a fresh `LayerDecisions` naming the layer, and its counts,
    per decision tensor in call order, as many as ``layers`` holds) added to ``layers`` (None:
    the first batch)."""
    if layers is None:
        layers = [layer for layer, _ in counts]
    return [replace(layer, elements=layer.elements + c["elements"],
                    flips=layer.flips + c["flips"],
                    boundary_flips=layer.boundary_flips + c["boundary_flips"],
                    violations=layer.violations + c["violations"],
                    worst_ratio=max(layer.worst_ratio, c["worst_ratio"]))
            for layer, (_, c) in zip(layers, counts)]
