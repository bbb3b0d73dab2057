"""Parity verdicts as JSON, JUnit XML, Markdown and a rich table; every file written atomically.

JSON schema ``gatex.parity/1`` (keys are stable; a change of meaning bumps the number)::

    {"schema": "gatex.parity/1", "gatex_version": str, "passed": bool,
     "results": [{
        "artifact": str, "runtime": str, "reference": str, "emulated": bool, "dtype": str,
        "passed": bool,
        "tolerance": {"rtol": float, "atol": float, "dtype": str,
                      "origin": "spec" | "user" | "user+spec", "ops": [str],
                      "reductions": [str], "text": str},
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
            "needed": {"atol": float | null, "rtol": float | null} | null}],
        "locate": null | {"matched": bool, "reason": str, "summary": str,
                          "first_divergence": null | {"index", "op", "node", "module"},
                          "ops": [{"index", "op", "node", "module", "passed", "max_abs",
                                   "max_rel", "message"}]},
        "notes": [str]}]}

A metric that is absent (shapes differ) or not finite is null: the file is strict JSON.
"""

from __future__ import annotations

import io
import json
import math
import os
import tempfile
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table
from rich.text import Text

from gatex.errors import BadInputError
from gatex.runtimes.parity import LocateResult, OutputParity, ParityResult

SCHEMA = "gatex.parity/1"
TOP_KEYS = ("schema", "gatex_version", "passed", "results")
RESULT_KEYS = ("artifact", "runtime", "reference", "emulated", "dtype", "passed", "tolerance",
               "inputs", "outputs", "locate", "notes")
TOLERANCE_KEYS = ("rtol", "atol", "dtype", "origin", "ops", "reductions", "text")
OUTPUT_KEYS = ("name", "passed", "message", "shape", "expected_shape", "dtype", "max_abs",
               "max_rel", "mean_abs", "cosine", "max_ulp", "nan", "inf", "outside", "worst",
               "top1", "needed")
LOCATE_KEYS = ("matched", "reason", "summary", "first_divergence", "ops")


# -- files ----------------------------------------------------------------------------------------

def check_writable(path: str | Path) -> Path:
    """Fail now, with one line, if ``path`` cannot be written (before any work is done)."""
    path = Path(path)
    if path.is_dir():
        raise BadInputError(f"cannot write {path}: it is a directory; give a file path")
    parent = path.parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir():
        raise BadInputError(f"cannot write {path}: {parent} is not a directory")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise BadInputError(f"cannot write {path}: {parent} is not writable; choose another path")
    return path


def write_atomic(path: str | Path, text: str) -> Path:
    """Write ``text`` to a temporary file beside ``path``, then rename it into place.

    A reader sees the old file or the new one, never half of one; on any failure nothing is left.
    """
    path = check_writable(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as exc:
        raise BadInputError(f"cannot write {path}: {exc.strerror or exc}") from None
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(exc, OSError):
            raise BadInputError(f"cannot write {path}: {exc.strerror or exc}") from None
        raise
    return path


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
    return {
        "name": o.name, "passed": o.passed, "message": o.message, "shape": list(o.shape),
        "expected_shape": list(o.expected_shape), "dtype": o.dtype,
        "max_abs": _num(o.max_abs), "max_rel": _num(o.max_rel), "mean_abs": _num(o.mean_abs),
        "cosine": _num(o.cosine), "max_ulp": o.max_ulp,
        "nan": {"actual": o.nan_actual, "expected": o.nan_expected, "mismatched": o.nan_mismatch},
        "inf": {"actual": o.inf_actual, "expected": o.inf_expected, "mismatched": o.inf_mismatch},
        "outside": o.outside, "worst": worst, "top1": _num(o.top1), "needed": needed,
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
    }


def result_record(r: ParityResult) -> dict[str, Any]:
    t = r.tolerance
    return {
        "artifact": r.artifact, "runtime": r.runtime, "reference": r.reference,
        "emulated": r.emulated, "dtype": r.dtype, "passed": r.passed,
        "tolerance": {"rtol": t.rtol, "atol": t.atol, "dtype": t.dtype, "origin": t.origin,
                      "ops": list(t.ops), "reductions": list(t.reductions),
                      "text": t.describe()},
        "inputs": {"source": r.inputs, "samples": r.samples, "nan_counts": dict(r.input_nans)},
        "outputs": [output_record(o) for o in r.outputs],
        "locate": locate_record(r.locate),
        "notes": list(r.notes),
    }


def to_json(results: Sequence[ParityResult]) -> str:
    """The ``gatex.parity/1`` document (module docstring) for ``results``."""
    from gatex import __version__

    doc = {"schema": SCHEMA, "gatex_version": __version__,
           "passed": bool(results) and all(results),
           "results": [result_record(r) for r in results]}
    return json.dumps(doc, indent=2, allow_nan=False) + "\n"


# -- JUnit XML ------------------------------------------------------------------------------------

def to_junit(results: Sequence[ParityResult]) -> str:
    """JUnit XML: one testsuite per artifact, one testcase per output, a failure per failing one."""
    root = ET.Element("testsuites", name="gatex parity",
                      tests=str(sum(len(r.outputs) for r in results)),
                      failures=str(sum(len(r.failures()) for r in results)), errors="0")
    for r in results:
        suite = ET.SubElement(root, "testsuite", name=r.artifact, tests=str(len(r.outputs)),
                              failures=str(len(r.failures())), errors="0", skipped="0")
        props = ET.SubElement(suite, "properties")
        for key, value in (("runtime", r.runtime), ("reference", r.reference),
                           ("dtype", r.dtype), ("tolerance", r.tolerance.describe()),
                           ("emulated", str(r.emulated).lower()), ("inputs", r.inputs)):
            ET.SubElement(props, "property", name=key, value=value)
        for o in r.outputs:
            case = ET.SubElement(suite, "testcase", name=o.name, classname=f"gatex.parity."
                                 f"{_classname(r.artifact)}")
            if not o.passed:
                failure = ET.SubElement(case, "failure", message=o.message, type="ParityFailure")
                failure.text = _details(o)
        extra = [*r.notes, *([r.locate.summary()] if r.locate else [])]
        if extra:
            ET.SubElement(suite, "system-out").text = "\n".join(extra)
    ET.indent(root)
    return ET.tostring(root, encoding="unicode", xml_declaration=True) + "\n"


def _classname(artifact: str) -> str:
    return Path(artifact).name.replace(".", "_")


def _details(o: OutputParity) -> str:
    fields = ("max_abs", "max_rel", "mean_abs", "cosine", "max_ulp", "nan_mismatch",
              "inf_mismatch", "outside", "top1")
    lines = [o.message] + [f"{f}: {getattr(o, f)}" for f in fields if getattr(o, f) is not None]
    return "\n".join(lines)


# -- Markdown and the terminal --------------------------------------------------------------------

def _g(x: float | int | None, spec: str = ".3g") -> str:
    return "-" if x is None else format(x, spec)


def _row(r: ParityResult, o: OutputParity) -> list[str]:
    return [r.artifact, r.runtime + (" (emulated)" if r.emulated else ""), o.name,
            _g(o.max_abs), _g(o.max_rel), _g(o.cosine, ".6f"), _g(o.max_ulp, "d"),
            "-" if o.top1 is None else f"{o.top1:.2%}",
            f"{o.nan_actual}/{o.nan_expected}", "pass" if o.passed else "FAIL"]


HEADERS = ["artifact", "runtime", "output", "max abs", "max rel", "cosine", "max ULP", "top-1",
           "NaN a/e", "verdict"]


def to_markdown(results: Sequence[ParityResult]) -> str:
    """A Markdown summary (CI step summaries): the verdict, a table, tolerances and failures."""
    passed = bool(results) and all(results)
    lines = [f"## gatex parity: {'PASSED' if passed else 'FAILED'}", "",
             "| " + " | ".join(HEADERS) + " |", "|" + "---|" * 3 + "---:|" * 5 + "---|" * 2]
    for r in results:
        for o in r.outputs:
            lines.append("| " + " | ".join(_md(c) for c in _row(r, o)) + " |")
    lines.append("")
    for r in results:
        lines.append(f"- `{_md(r.artifact)}`: tolerance {_md(r.tolerance.describe())}; "
                     f"inputs: {_md(r.inputs or '-')}")
        for o in r.failures():
            lines.append(f"  - FAIL {_md(o.message)}")
        if r.locate is not None:
            lines.append(f"  - locate: {_md(r.locate.summary())}")
    return "\n".join(lines) + "\n"


def _md(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def results_table(results: Sequence[ParityResult]) -> Table:
    table = Table(title="gatex parity", show_lines=False)
    for h in HEADERS:
        table.add_column(h, justify="right" if h in ("max abs", "max rel", "cosine", "max ULP",
                                                     "top-1") else "left")
    for r in results:
        for o in r.outputs:
            cells = [Text(c) for c in _row(r, o)]
            cells[-1].stylize("green" if o.passed else "bold red")
            table.add_row(*cells)
    return table


def print_results(results: Sequence[ParityResult], console: Console) -> None:
    """The table, then per artifact: tolerance and its source, input notes, failures, locate."""
    console.print(results_table(results))
    for r in results:
        console.print(Text(f"{r.artifact}: tolerance {r.tolerance.describe()}; inputs: "
                           f"{r.inputs or '-'}" + (f" ({r.samples} samples)" if r.samples else "")))
        for note in r.notes:
            console.print(Text(f"  note: {note}"))
        for name, n in r.input_nans.items():
            console.print(Text(f"  warning: input {name!r} holds {n} NaN values (reported, "
                               "not refused)", style="yellow"))
        for o in r.failures():
            console.print(Text(f"  FAIL {o.message}", style="red"))
        if r.locate is not None:
            console.print(Text(f"  locate: {r.locate.summary()}"))


def render_text(results: Sequence[ParityResult], width: int = 160) -> str:
    """What `print_results` prints, as plain text (for assertion messages and logs)."""
    buffer = io.StringIO()
    print_results(results, Console(file=buffer, width=width, color_system=None))
    return buffer.getvalue()


def write_verdicts(results: Sequence[ParityResult], *, json_path: Path | None = None,
                   junit_path: Path | None = None, markdown_path: Path | None = None) -> None:
    """Write each requested verdict file atomically."""
    for path, render in ((json_path, to_json), (junit_path, to_junit),
                         (markdown_path, to_markdown)):
        if path is not None:
            write_atomic(path, render(results))
