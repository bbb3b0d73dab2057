"""Parity verdicts as JSON, JUnit XML, Markdown and a rich table; every file written atomically.

JSON schema ``gatex.parity/1`` (keys are stable; a change of meaning bumps the number)::

    {"schema": "gatex.parity/1", "gatex_version": str, "passed": bool,
     "results": [{
        "artifact": str, "runtime": str, "reference": str, "emulated": bool, "dtype": str,
        "passed": bool,
        "tolerance": {"rtol": float, "atol": float, "dtype": str,
                      "origin": "spec" | "user" | "user+spec" | "spec+floor"
                                | "user+spec+floor", "ops": [str],
                      "reductions": [str], "text": str, "outliers": float,
                      "outlier_ops": [str]},
        "inputs": {"source": str, "samples": int | null, "nan_counts": {input: int}},
        "outputs": [{
            "name": str, "passed": bool, "message": str, "shape": [int],
            "expected_shape": [int], "dtype": str,
            "max_abs": float, "max_rel": float, "mean_abs": float, "cosine": float,
            "max_ulp": int | null,
            "nan": {"actual": int, "expected": int, "mismatched": int},
            "inf": {"actual": int, "expected": int, "mismatched": int},
            "outside": int,
            "worst": {"index": [int], "actual": float, "expected": float} | null,
            "top1": float | null,
            "needed": {"atol": float | null, "rtol": float | null} | null,
            "floor": {"dtype": str, "torch_max_abs": float, "torch_atol": float,
                      "rtol": float, "factor": float, "atol": float, "raised": bool} | null,
            "outliers_allowed": int}],
        "locate": null | {"matched": bool, "reason": str, "summary": str,
                          "first_divergence": null | {"index", "op", "node", "module"},
                          "ops": [{"index", "op", "node", "module", "passed", "max_abs",
                                   "max_rel", "message"}], "decision": str},
        "notes": [str],
        "decisions": null | {"forced": bool, "passed": bool, "reason": str, "summary": str,
                             "seconds": float, "first_beyond": null | LAYER,
                             "layers": [LAYER]},
        "pruned": null | {"passed": bool, "summary": str,
                          "layers": [{"name": str, "pruned": int, "removed": int,
                                      "violations": int, "first": [int, int] | null,
                                      "note": str | null}]}}]}

A metric that is absent (shapes differ) or not finite is null: the file is strict JSON.
Additions keep the number: ``floor`` (optional; null where no precision floor was measured) is
torch's own low-precision error on that output (its max_abs, and the atol it needs at ``rtol``)
and the atol floor it makes, ``factor`` x ``torch_atol`` (``raised``: that floor, not the
spec's atol, was the atol applied; ``tolerance.atol`` stays the spec's). ``pruned``
(optional; null where not run) is the pruned-weights check of an artifact whose reference
holds GatedDense layers: per layer, the weights pruned in the source (K * G == 0) that the
artifact keeps, those compaction removed, and those that are non-zero in the artifact
(``violations``, the first at [in, out]), or the ``note`` saying why the layer could not be
read; a failed check fails the result. ``tolerance.outliers`` (optional; 0 unless the user gave
``--max-outliers``) is the fraction of each output's elements that may lie outside the
tolerance (``outlier_ops``: who asked); ``outputs[].outliers_allowed`` (optional) is that
fraction as a count for the output, and ``outside`` says how many were used. ``decisions``
(optional; null for models without hard-decision ops, or with ``--decisions strict``) is
decision-forced parity (`gatex.comparison.decisions`): ``forced`` false with the ``reason``
when the artifact's decisions could not be read (the outputs were then judged strictly);
each LAYER is one decision tensor of one op call: {"index", "op", "name", "module", "node",
"elements", "flips", "boundary_flips", "beyond", "violations", "worst_ratio", "passed"}, and
``first_beyond`` the first that failed (a flip beyond its rounding bound, or a gate against
``pre > T``).
"""

from __future__ import annotations

import io
import json
import math
import os
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rich import box
from rich.console import Console
from rich.table import Table
from rich.text import Text

from gatex import _io
from gatex._version import __version__
from gatex.comparison import LocateResult, OutputParity, ParityResult
from gatex.comparison.decisions import report_lines, report_record
from gatex.errors import BadInputError

SCHEMA = "gatex.parity/1"
TOP_KEYS = ("schema", "gatex_version", "passed", "results")
RESULT_KEYS = ("artifact", "runtime", "reference", "emulated", "dtype", "passed", "tolerance",
               "inputs", "outputs", "locate", "notes", "pruned", "decisions")
PRUNED_LAYER_KEYS = ("name", "pruned", "removed", "violations", "first", "note")
TOLERANCE_KEYS = ("rtol", "atol", "dtype", "origin", "ops", "reductions", "text", "outliers",
                  "outlier_ops")
OUTPUT_KEYS = ("name", "passed", "message", "shape", "expected_shape", "dtype", "max_abs",
               "max_rel", "mean_abs", "cosine", "max_ulp", "nan", "inf", "outside", "worst",
               "top1", "needed", "floor", "outliers_allowed")
FLOOR_KEYS = ("dtype", "torch_max_abs", "torch_atol", "rtol", "factor", "atol", "raised")
LOCATE_KEYS = ("matched", "reason", "summary", "first_divergence", "ops", "decision")


# -- files ----------------------------------------------------------------------------------------

def check_writable(path: str | Path) -> Path:
    """Fail now, with one line, if ``path`` cannot be written (before any work is done)."""
    path = Path(path)
    if path.is_dir():
        raise BadInputError(f"cannot write {path}: it is a directory; give a file path")
    parent = path.parent
    if not parent.exists():  # a typo in a CI path must not quietly make a new tree
        raise BadInputError(f"cannot write {path}: folder {parent} does not exist; create it "
                            "first or give an existing folder")
    if not parent.is_dir():
        raise BadInputError(f"cannot write {path}: {parent} is not a directory")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise BadInputError(f"cannot write {path}: {parent} is not writable; choose another path")
    return path


def write_atomic(path: str | Path, text: str) -> Path:
    """Write ``text`` to a temporary file beside ``path``, then rename it into place.

    A reader sees the old file or the new one, never half of one; on any failure or interrupt
    nothing is left (`gatex._io.staged_file`).
    """
    return _io.write_text_atomic(check_writable(path), text)


# -- JSON -----------------------------------------------------------------------------------------

def _num(x: float | int | None) -> float | int | None:
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return None
    return x


def output_record(o: OutputParity) -> dict[str, Any]:
    worst = None
    if o.worst_index is not None:
        worst = {"index": list(o.worst_index), "actual": _num(o.worst_actual),
                 "expected": _num(o.worst_expected)}
    needed = None if o.needed is None else {"atol": _num(o.needed.atol),
                                            "rtol": _num(o.needed.rtol)}
    floor = None if o.floor is None else {
        "dtype": o.floor.dtype, "torch_max_abs": _num(o.floor.torch_max_abs),
        "torch_atol": _num(o.floor.torch_atol), "rtol": o.floor.rtol, "factor": o.floor.factor,
        "atol": _num(o.floor.atol), "raised": o.floor.raised}
    return {
        "name": o.name, "passed": o.passed, "message": o.message, "shape": list(o.shape),
        "expected_shape": list(o.expected_shape), "dtype": o.dtype,
        "max_abs": _num(o.max_abs), "max_rel": _num(o.max_rel), "mean_abs": _num(o.mean_abs),
        "cosine": _num(o.cosine), "max_ulp": o.max_ulp,
        "nan": {"actual": o.nan_actual, "expected": o.nan_expected, "mismatched": o.nan_mismatch},
        "inf": {"actual": o.inf_actual, "expected": o.inf_expected, "mismatched": o.inf_mismatch},
        "outside": o.outside, "worst": worst, "top1": _num(o.top1), "needed": needed,
        "floor": floor, "outliers_allowed": o.outliers_allowed,
    }


def locate_record(loc: LocateResult | None) -> dict[str, Any] | None:
    if loc is None:
        return None
    first = loc.first_divergence
    return {
        "matched": not loc.unmatched_reason,
        "reason": loc.unmatched_reason,
        "summary": loc.summary(),
        "first_divergence": None if first is None else {
            "index": first.index, "op": first.op, "node": first.node, "module": first.module},
        "ops": [{"index": c.index, "op": c.op, "node": c.node, "module": c.module,
                 "passed": c.parity.passed, "max_abs": _num(c.parity.max_abs),
                 "max_rel": _num(c.parity.max_rel), "message": c.parity.message}
                for c in loc.comparisons],
        "decision": loc.decision,
    }


def result_record(r: ParityResult) -> dict[str, Any]:
    t = r.tolerance
    return {
        "artifact": r.artifact, "runtime": r.runtime, "reference": r.reference,
        "emulated": r.emulated, "dtype": r.dtype, "passed": r.passed,
        "tolerance": {"rtol": t.rtol, "atol": t.atol, "dtype": t.dtype, "origin": t.origin,
                      "ops": list(t.ops), "reductions": list(t.reductions),
                      "text": t.describe(), "outliers": t.outliers,
                      "outlier_ops": list(t.outlier_ops)},
        "inputs": {"source": r.inputs, "samples": r.samples, "nan_counts": dict(r.input_nans)},
        "outputs": [output_record(o) for o in r.outputs],
        "locate": locate_record(r.locate),
        "notes": list(r.notes),
        "pruned": pruned_record(r.pruned),
        "decisions": report_record(r.decisions),
    }


def pruned_record(check: Any) -> dict[str, Any] | None:
    """A `PrunedWeightsCheck` as JSON (None: not run)."""
    if check is None:
        return None
    return {"passed": bool(check), "summary": check.summary(),
            "layers": [{"name": x.name, "pruned": x.pruned, "removed": x.removed,
                        "violations": x.violations,
                        "first": None if x.first is None else list(x.first), "note": x.note}
                       for x in check.layers]}


def to_json(results: Sequence[ParityResult]) -> str:
    """The ``gatex.parity/1`` document (module docstring) for ``results``."""
    doc = {"schema": SCHEMA, "gatex_version": __version__,
           "passed": bool(results) and all(results),
           "results": [result_record(r) for r in results]}
    return json.dumps(doc, indent=2, allow_nan=False) + "\n"


# -- JUnit XML ------------------------------------------------------------------------------------

def _junit_counts(r: ParityResult) -> tuple[int, int]:
    """(tests, failures) of one artifact: its outputs, and the pruned-weights and decisions
    checks where run."""
    pruned, decided = r.pruned is not None, r.decisions is not None
    return (len(r.outputs) + pruned + decided,
            len(r.failures()) + (pruned and not bool(r.pruned)) +
            (decided and not r.decisions.passed))


def to_junit(results: Sequence[ParityResult]) -> str:
    """JUnit XML: one testsuite per artifact, one testcase per output (and one for the
    pruned-weights check where it ran), a failure per failing one."""
    counts = [_junit_counts(r) for r in results]
    root = ET.Element("testsuites", name="gatex parity", tests=str(sum(t for t, _ in counts)),
                      failures=str(sum(f for _, f in counts)), errors="0")
    for r, (tests, failures) in zip(results, counts):
        suite = ET.SubElement(root, "testsuite", name=r.artifact, tests=str(tests),
                              failures=str(failures), errors="0", skipped="0")
        props = ET.SubElement(suite, "properties")
        nans = ", ".join(f"{k}={n}" for k, n in r.input_nans.items())
        for key, value in (("runtime", r.runtime), ("reference", r.reference),
                           ("dtype", r.dtype), ("tolerance", r.tolerance.describe()),
                           ("tolerance_origin", r.tolerance.origin),
                           ("emulated", str(r.emulated).lower()), ("inputs", inputs_text(r)),
                           ("input_nans", nans or "none"), *_floor_properties(r)):
            ET.SubElement(props, "property", name=key, value=value)
        for o in r.outputs:
            case = ET.SubElement(suite, "testcase", name=o.name, classname=f"gatex.parity."
                                 f"{_classname(r.artifact)}")
            if not o.passed:
                failure = ET.SubElement(case, "failure", message=o.message, type="ParityFailure")
                failure.text = _details(o)
            elif o.outside:   # passed on the user's outlier allowance: say so where CI shows it
                ET.SubElement(case, "system-out").text = o.message
        if r.pruned is not None:
            case = ET.SubElement(suite, "testcase", name="pruned-weights",
                                 classname=f"gatex.parity.{_classname(r.artifact)}")
            if r.pruned:
                ET.SubElement(case, "system-out").text = r.pruned.summary()
            else:
                ET.SubElement(case, "failure", message=r.pruned.summary(),
                              type="PrunedWeightsFailure")
        if r.decisions is not None:
            case = ET.SubElement(suite, "testcase", name="decisions",
                                 classname=f"gatex.parity.{_classname(r.artifact)}")
            text = "\n".join(report_lines(r.decisions))
            if r.decisions.passed:
                ET.SubElement(case, "system-out").text = text
            else:
                ET.SubElement(case, "failure", message=r.decisions.summary(),
                              type="DecisionFailure").text = text
        extra = [*(f"warning: input {k!r} holds {n} NaN values (reported, not refused)"
                   for k, n in r.input_nans.items()),
                 *r.notes, *([f"locate: {r.locate.summary()}"] if r.locate else [])]
        if extra:
            ET.SubElement(suite, "system-out").text = "\n".join(extra)
    ET.indent(root)
    return ET.tostring(root, encoding="unicode", xml_declaration=True) + "\n"


def _floor_properties(r: ParityResult) -> list[tuple[str, str]]:
    # one property per output with a measured floor: its atol, what it is, whether it applied
    return [(f"precision_floor.{o.name}", f"atol {o.floor.atol:.6g} = {o.floor.describe()}"
             f"{', raised the atol' if o.floor.raised else ', spec atol kept'}")
            for o in r.outputs if o.floor is not None]


def _classname(artifact: str) -> str:
    return Path(artifact).name.replace(".", "_")


def _details(o: OutputParity) -> str:
    fields = ("max_abs", "max_rel", "mean_abs", "cosine", "max_ulp", "nan_mismatch",
              "inf_mismatch", "outside", "outliers_allowed", "top1")
    lines = [o.message] + [f"{f}: {getattr(o, f)}" for f in fields if getattr(o, f) is not None]
    if o.floor is not None:
        raised = "raised the atol" if o.floor.raised else "spec atol kept"
        lines += [f"torch_{o.floor.dtype}_max_abs: {o.floor.torch_max_abs}",
                  f"torch_{o.floor.dtype}_atol: {o.floor.torch_atol} (at rtol {o.floor.rtol})",
                  f"precision_floor_atol: {o.floor.atol} ({raised})"]
    return "\n".join(lines)


# -- Markdown and the terminal --------------------------------------------------------------------

def _g(x: float | int | None, spec: str = ".3g") -> str:
    return "-" if x is None else format(x, spec)


def _ulp(x: int | None) -> str:
    # 2071786496 ULPs is a wrong value, not a rounding difference: 3 digits say so in 8 columns
    return "-" if x is None else (f"{x:d}" if x < 100_000 else f"{x:.2e}")


def _runtime(r: ParityResult) -> str:
    # a runtime whose label already says so ("coreml (emulated)") is not labelled twice
    return r.runtime + (" (emulated)" if r.emulated and "emulated" not in r.runtime else "")


def _nans(o: OutputParity) -> str:
    return f"{o.nan_actual}/{o.nan_expected}"


def _top1(o: OutputParity) -> str:
    return "-" if o.top1 is None else f"{o.top1:.2%}"


def _verdict(o: OutputParity) -> str:
    return "pass" if o.passed else "FAIL"


# Markdown: every column, full artifact paths (CI summaries are read in a browser)
MARKDOWN_HEADERS = ["artifact", "runtime", "output", "max abs", "max rel", "cosine", "max ULP",
                    "top-1", "NaN a/e", "verdict"]
LOW_SHORT = {"float16": "fp16", "bfloat16": "bf16"}


def floor_header(results: Sequence[ParityResult]) -> str | None:
    """The header of the precision-floor yardstick column (torch's own low-precision max abs,
    beside the artifact's), ``"torch fp16"``; None when no output has a measured floor."""
    dtypes = sorted({o.floor.dtype for r in results for o in r.outputs if o.floor is not None})
    return "torch " + "/".join(LOW_SHORT.get(d, d) for d in dtypes) if dtypes else None


def headers(results: Sequence[ParityResult]) -> list[str]:
    """`MARKDOWN_HEADERS`, with the `floor_header` column after "max abs" where there is one."""
    columns = list(MARKDOWN_HEADERS)
    if (floor := floor_header(results)) is not None:
        columns.insert(columns.index("max abs") + 1, floor)
    return columns


def _torch_lowp(o: OutputParity) -> str:
    return "-" if o.floor is None else _g(o.floor.torch_max_abs)


def _markdown_row(r: ParityResult, o: OutputParity, columns: Sequence[str],
                  floor: str | None) -> list[str]:
    cells = _cells(r, r.artifact, o, floor)
    cells["max ULP"] = _g(o.max_ulp, "d")   # every digit: Markdown has room
    return [cells[c] for c in columns]


def to_markdown(results: Sequence[ParityResult]) -> str:
    """A Markdown summary (CI step summaries): the verdict, a table, tolerances and failures."""
    passed = bool(results) and all(results)
    floor = floor_header(results)
    columns = headers(results)
    lines = [f"## gatex parity: {'PASSED' if passed else 'FAILED'}", "",
             "| " + " | ".join(columns) + " |",
             "|" + "".join("---:|" if c in NUMERIC or c == floor else "---|" for c in columns)]
    for r in results:
        for o in r.outputs:
            lines.append("| " + " | ".join(_md(c) for c in _markdown_row(r, o, columns, floor))
                         + " |")
    lines.append("")
    for r in results:
        lines.append(f"- `{_md(r.artifact)}` vs {_md(r.reference)}: tolerance "
                     f"{_md(r.tolerance.describe())}; inputs: {_md(inputs_text(r))}")
        for name, n in r.input_nans.items():
            lines.append(f"  - warning: input `{_md(name)}` holds {n} NaN values (reported, "
                         "not refused)")
        for note in r.notes:
            lines.append(f"  - note: {_md(note)}")
        for o in r.outputs:
            if not o.passed:
                lines.append(f"  - FAIL {_md(o.message)}")
            elif o.outside:
                lines.append(f"  - pass with outliers (--max-outliers): {_md(o.message)}")
        if r.pruned is not None:
            lines.append(f"  - {'' if r.pruned else 'FAIL '}{_md(r.pruned.summary())}")
        if r.decisions is not None:
            head, *layers = report_lines(r.decisions)
            failed = "FAIL " if not r.decisions.passed else ""
            lines += [f"  - {failed}decisions: {_md(head)}", *(f"    - {_md(x)}" for x in layers)]
        if r.locate is not None:
            lines.append(f"  - locate: {_md(r.locate.summary())}")
    return "\n".join(lines) + "\n"


def _md(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def inputs_text(r: ParityResult) -> str:
    """Where the inputs came from and how many samples: ``zoo held-out digits (450 samples)``."""
    count = f"{r.samples} samples" if r.samples is not None else ""
    if not r.inputs:
        return count or "-"
    return f"{r.inputs} ({count})" if count else r.inputs


def short_names(results: Sequence[ParityResult]) -> list[str]:
    """Artifact basenames for the terminal table; full paths where two basenames collide."""
    names = [Path(r.artifact).name or r.artifact for r in results]
    return [n if names.count(n) == 1 else r.artifact for n, r in zip(names, results)]


# The terminal table's columns in the order they are dropped when the terminal is too narrow
# (the first goes first); output, max abs, verdict (and the artifact, with several) always stay.
# The runtime is printed under the table anyway; a dropped metric is named in the caption.
DROP_ORDER = ("runtime", "cosine", "NaN a/e", "max ULP", "top-1", "max rel")
NUMERIC = frozenset({"max abs", "max rel", "cosine", "max ULP", "top-1"})


def drop_order(results: Sequence[ParityResult]) -> list[str]:
    """`DROP_ORDER` for these results: a column with nothing in it ("-" everywhere) goes first,
    the NaN counts go last when any output holds a NaN; a precision-floor column (torch's own
    low-precision error) goes after max ULP (the tolerance line under the table names the
    floor anyway)."""
    outputs = [o for r in results for o in r.outputs]
    empty = [c for c, present in (("top-1", any(o.top1 is not None for o in outputs)),
                                  ("max ULP", any(o.max_ulp is not None for o in outputs)))
             if not present]
    base = list(DROP_ORDER)
    if (floor := floor_header(results)) is not None:
        base.insert(base.index("max ULP") + 1, floor)
    order = [*empty, *(c for c in base if c not in empty)]
    if any(o.nan_actual or o.nan_expected for o in outputs):
        order.remove("NaN a/e")
        order.append("NaN a/e")
    return order


def _cells(r: ParityResult, name: str, o: OutputParity, floor: str | None = None
           ) -> dict[str, str]:
    cells = {"artifact": name, "runtime": _runtime(r), "output": o.name,
             "max abs": _g(o.max_abs), "max rel": _g(o.max_rel), "cosine": _g(o.cosine, ".6f"),
             "max ULP": _ulp(o.max_ulp), "top-1": _top1(o), "NaN a/e": _nans(o),
             "verdict": _verdict(o)}
    if floor is not None:
        cells[floor] = _torch_lowp(o)
    return cells


def _build_table(rows: list[tuple[dict[str, str], bool]], columns: Sequence[str],
                 title: str, caption: str | None) -> Table:
    table = Table(title=title, caption=caption, box=box.SIMPLE_HEAD, show_edge=False,
                  pad_edge=False, collapse_padding=True, caption_justify="left")
    for c in columns:
        right = c in NUMERIC or c.startswith("torch ")   # the floor column is a number too
        table.add_column(c, justify="right" if right else "left", overflow="fold")
    for cells, passed in rows:
        texts = [Text(cells[c]) for c in columns]
        texts[-1].stylize("green" if passed else "bold red")
        table.add_row(*texts)
    return table


def results_table(results: Sequence[ParityResult], width: int | None = None) -> Table:
    """The verdicts as a rich table that fits ``width`` columns (default: no limit).

    One artifact: its name is the title. Several: an artifact column of basenames. Columns that
    do not fit are dropped in `DROP_ORDER` and named in the caption, never cut to ``arti…``.
    """
    from rich.measure import Measurement

    many = len(results) > 1
    names = short_names(results)
    title = "gatex parity" if many or not results else f"gatex parity: {names[0]}"
    floor = floor_header(results)
    rows = [(_cells(r, n, o, floor), o.passed) for r, n in zip(results, names)
            for o in r.outputs]
    columns = [c for c in headers(results) if many or c != "artifact"]
    dropped: list[str] = []
    if width is not None:
        console = Console(width=width, file=io.StringIO(), color_system=None)
        for candidate in (None, *drop_order(results)):
            if candidate is not None:
                columns.remove(candidate)
                dropped.append(candidate)
            table = _build_table(rows, columns, title, None)
            natural = Measurement.get(console, console.options.update_width(1 << 16), table)
            if natural.maximum <= width:
                break
    if "runtime" in dropped and not many and results and results[0].emulated:
        title += " (emulated)"
    metrics = [c for c in dropped if c != "runtime"]
    caption = None
    if metrics:
        caption = (f"not shown at {width} columns: {', '.join(metrics)} (gatex parity --json "
                   "or --markdown has every metric)")
    return _build_table(rows, columns, title, caption)


def print_results(results: Sequence[ParityResult], console: Console) -> None:
    """The table, then per artifact: what ran against what, tolerance and its source, inputs,
    NaN warnings, notes, failures, locate."""
    console.print(results_table(results, console.width))
    for r, name in zip(results, short_names(results)):
        console.print(Text(f"{name}: {_runtime(r)} vs {r.reference}", style="bold"))
        console.print(Text(f"  tolerance: {r.tolerance.describe()}"))
        console.print(Text(f"  inputs: {inputs_text(r)}"))
        for note in r.notes:
            console.print(Text(f"  note: {note}"))
        for input_name, n in r.input_nans.items():
            console.print(Text(f"  warning: input {input_name!r} holds {n} NaN values (reported, "
                               "not refused)", style="yellow"))
        for o in r.outputs:
            if not o.passed:
                console.print(Text(f"  FAIL {o.message}", style="red"))
            elif o.outside:
                console.print(Text(f"  pass with outliers (--max-outliers): {o.message}",
                                   style="yellow"))
        if r.decisions is not None:
            head, *layers = report_lines(r.decisions)
            style = "red" if not r.decisions.passed else ""
            console.print(Text(f"  decisions: {head}", style=style))
            for line in layers:
                console.print(Text(f"    {line}", style=style if "FAIL" in line else ""))
        if r.locate is not None:
            console.print(Text(f"  locate: {r.locate.summary()}"))


def render_text(results: Sequence[ParityResult], width: int = 160) -> str:
    """What `print_results` prints, as plain text (for assertion messages and logs)."""
    buffer = io.StringIO()
    print_results(results, Console(file=buffer, width=width, color_system=None))
    return buffer.getvalue()


def write_verdicts(results: Sequence[ParityResult], *, json_path: Path | None = None,
                   junit_path: Path | None = None, markdown_path: Path | None = None) -> None:
    """Write each requested verdict file atomically, all rendered before the first is written."""
    texts = [(path, render(results)) for path, render in (
        (json_path, to_json), (junit_path, to_junit), (markdown_path, to_markdown))
        if path is not None]
    for path, text in texts:
        write_atomic(path, text)


def check_verdict_paths(paths: Sequence[Path | None], inputs: Sequence[Path]) -> None:
    """Refuse verdict paths that would overwrite each other or one of the ``inputs`` (the
    artifacts, the inputs file), then check each is writable; nothing is written."""
    given = [Path(p) for p in paths if p is not None]
    resolved = [p.resolve() for p in given]
    for i, (path, real) in enumerate(zip(given, resolved)):
        if real in resolved[:i]:
            raise BadInputError(f"two verdict files would both be written to {path}; give "
                                "each its own path")
        if any(real == Path(q).resolve() for q in inputs):
            raise BadInputError(f"the verdict file {path} would overwrite an input of this run; "
                                "choose another path")
        check_writable(path)
