"""One verdict for a whole matrix from the shards' run folders: JUnit (a testcase per cell),
Markdown (models x targets/dtypes, for a CI step summary), JSON; cells planned but found in no
shard are ``missing``, which fails the matrix like a failed cell.

Baselines ratchet (``--baseline F``, reviewed in the repository like code): per cell and
output the observed max abs error, and the cell's latency (onnxruntime cells). A cell fails
when an output's error grows past its recorded value by more than `ERROR_MARGIN` x the
tolerance's atol (the op specs' scale of a rounding difference), or its latency past
``max_regression`` percent; ``update`` writes the baseline with every improvement (and every
new cell) taken in, never a regression.
"""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gatex.comparison.report import write_atomic
from gatex.matrix.run import read_manifests
from gatex.matrix.spec import MatrixError

SCHEMA = "gatex.matrix/1"
BASELINE_SCHEMA = "gatex.matrix-baseline/1"
ERROR_MARGIN = 0.25


@dataclass
class Merged:
    cells: list[dict[str, Any]]
    missing: list[str]
    notes: list[str] = field(default_factory=list)
    planned: list[str] = field(default_factory=list)   # every cell id, in plan order

    @property
    def passed(self) -> bool:
        return not self.missing and all(c["status"] == "pass" for c in self.cells)


def merge(dirs: Sequence[Path]) -> Merged:
    """The cells of every manifest under ``dirs``, in plan order; a cell run twice keeps its
    last record (with a note). A cell only exported (for another runner) has no verdict: it is
    missing unless that runner's shard checked it."""
    manifests = read_manifests(dirs)
    planned: list[str] = []
    for m in manifests:
        planned += [c for c in m.get("planned", []) if c not in planned]
    found: dict[str, dict[str, Any]] = {}
    notes = []
    for m in manifests:
        for rec in m.get("cells", []):
            if rec.get("status") == "exported":   # an artifact for another runner: no verdict
                continue
            if rec["id"] in found:
                notes.append(f"cell {rec['id']} ran in more than one shard; the last run counts")
            found[rec["id"]] = rec
    order = {c: i for i, c in enumerate(planned)}
    cells = sorted(found.values(), key=lambda r: order.get(r["id"], len(order)))
    return Merged(cells, [c for c in planned if c not in found], notes, planned)


def ratchet(merged: Merged, baseline: Path, *, max_regression: float = 50.0,
            update: bool = False) -> None:
    """Fail the cells that regressed against ``baseline`` (in place: status ``fail``, the
    reason in the message); with ``update``, write the tightened baseline."""
    recorded: dict[str, Any] = {}
    if baseline.exists():
        try:
            doc = json.loads(baseline.read_text())
        except ValueError as exc:
            raise MatrixError(f"baseline {baseline} is not JSON: {exc}") from None
        if doc.get("schema") != BASELINE_SCHEMA:
            raise MatrixError(f"{baseline} is not a gatex matrix baseline ({BASELINE_SCHEMA})")
        recorded = doc.get("cells", {})
    elif not update:
        raise MatrixError(f"baseline {baseline} does not exist (--update-baseline writes it)")
    new: dict[str, Any] = dict(recorded)
    for cell in merged.cells:
        if cell["status"] != "pass":
            continue
        old = recorded.get(cell["id"], {})
        reasons = []
        margin = ERROR_MARGIN * float(cell.get("atol") or 0.0)
        for name, error in cell["outputs"].items():
            before = old.get("outputs", {}).get(name)
            if before is not None and error is not None and error > before + margin:
                reasons.append(f"{name} error {error:.3g} > recorded {before:.3g} + "
                               f"{margin:.3g}")
        latency, before_ms = cell.get("latency_ms"), old.get("latency_ms")
        if latency is not None and before_ms and latency > before_ms * (1 + max_regression / 100):
            reasons.append(f"latency {latency:.3g} ms > recorded {before_ms:.3g} ms + "
                           f"{max_regression:g} %")
        if reasons:
            cell["status"], cell["message"] = "fail", "ratchet: " + "; ".join(reasons)
            continue
        outputs = {n: min(e, old.get("outputs", {}).get(n, e)) if e is not None else None
                   for n, e in cell["outputs"].items()}
        ms = min(x for x in (latency, before_ms) if x) if (latency or before_ms) else None
        new[cell["id"]] = {"outputs": outputs, "latency_ms": ms}
    if update:
        text = json.dumps({"schema": BASELINE_SCHEMA, "cells": dict(sorted(new.items()))},
                          indent=2, sort_keys=True) + "\n"
        write_atomic(baseline, text)


def to_json(merged: Merged) -> str:
    return json.dumps({"schema": SCHEMA, "passed": merged.passed, "cells": merged.cells,
                       "missing": merged.missing, "notes": merged.notes}, indent=2) + "\n"


def to_junit(merged: Merged) -> str:
    """One testsuite per model, one testcase per cell (``target/dtype``), missing included."""
    by_model: dict[str, list[tuple[str, dict[str, Any] | None]]] = {}
    for c in merged.cells:
        by_model.setdefault(c["model"], []).append((c["id"], c))
    for cid in merged.missing:
        by_model.setdefault(cid.split("/")[0], []).append((cid, None))
    failures = sum(c["status"] != "pass" for c in merged.cells) + len(merged.missing)
    root = ET.Element("testsuites", name="gatex matrix",
                      tests=str(len(merged.cells) + len(merged.missing)),
                      failures=str(failures), errors="0")
    for model, cases in by_model.items():
        bad = sum(c is None or c["status"] != "pass" for _, c in cases)
        suite = ET.SubElement(root, "testsuite", name=model, tests=str(len(cases)),
                              failures=str(bad), errors="0", skipped="0")
        for cid, c in cases:
            name = cid.split("/", 1)[1]
            case = ET.SubElement(suite, "testcase", name=name, classname=f"gatex.matrix.{model}",
                                 time=str(c.get("seconds", 0)) if c else "0")
            if c is None:
                ET.SubElement(case, "failure", message="missing: no shard ran this cell",
                              type="MatrixCellMissing")
            elif c["status"] != "pass":
                ET.SubElement(case, "failure", message=c["message"][:500],
                              type="MatrixCellFailure").text = c["message"]
            else:
                ET.SubElement(case, "system-out").text = c["message"]
    ET.indent(root)
    return ET.tostring(root, encoding="unicode", xml_declaration=True) + "\n"


def _cell_text(c: dict[str, Any] | None) -> str:
    if c is None:
        return "missing"
    if c["status"] != "pass":
        return "**FAIL**" if c["status"] == "fail" else "**error**"
    worst = max((e for e in c["outputs"].values() if e is not None), default=None)
    return "pass" if worst is None else f"pass {worst:.1e}"


def to_markdown(merged: Merged) -> str:
    """The models x (target/dtype) table, then a line per failed or missing cell."""
    ids = list(dict.fromkeys([*merged.planned, *(c["id"] for c in merged.cells)]))
    models = list(dict.fromkeys(i.split("/")[0] for i in ids))
    columns = list(dict.fromkeys(i.split("/", 1)[1] for i in ids))
    by_id = {c["id"]: c for c in merged.cells}
    verdict = "PASSED" if merged.passed else "FAILED"
    passed = sum(c["status"] == "pass" for c in merged.cells)
    lines = [f"## gatex matrix: {verdict}", "",
             f"{passed} of {len(ids)} cells pass; {len(merged.missing)} missing", "",
             "| model | " + " | ".join(columns) + " |", "|---" * (len(columns) + 1) + "|"]
    for m in models:
        row = [_cell_text(by_id.get(f"{m}/{col}")) if f"{m}/{col}" in ids else "-"
               for col in columns]
        lines.append(f"| {m} | " + " | ".join(row) + " |")
    lines.append("")
    for c in merged.cells:
        if c["status"] != "pass":
            lines.append(f"- `{c['id']}`: {c['message'].replace('|', '/')[:300]}")
    lines += [f"- `{cid}`: missing (no shard ran it)" for cid in merged.missing]
    lines += [f"- note: {n}" for n in merged.notes]
    return "\n".join(lines) + "\n"
