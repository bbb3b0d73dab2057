"""Bench results as a rich table, JSON (``gatex.bench/1``), Markdown and a PNG plot.

Files are written atomically (`gatex.comparison.report.write_atomic`). The plot needs matplotlib,
the optional extra ``plot`` (``pip install 'gatex[plot]'``), imported only when a plot is asked
for; `check_plot_available` says so up front (exit 3) before anything is measured.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text

from gatex import _io, _optional
from gatex._io import json_safe
from gatex.benchmarking import run as bench_run  # by module: tests replace bench_run.bench
from gatex.benchmarking.schema import BackendRow, BenchResult
from gatex.comparison.report import check_writable, write_atomic
from gatex.errors import BackendUnavailableError, BadInputError, CheckFailedError

PLOT_EXTRA = _optional.install_hint("matplotlib")


# -- numbers as text ------------------------------------------------------------------------------

def ms(x: float | None) -> str:
    """Milliseconds with 4 significant digits; '-' when absent."""
    if x is None:
        return "-"
    return f"{x:.4g}"


def mib(n: int | None) -> str:
    return "-" if n is None else f"{n / 2**20:.1f}"


def kib(n: int | None) -> str:
    return "-" if n is None else f"{n / 1024:.1f}"


def ratio(row: BackendRow) -> str:
    if not row.relative:
        return "-"
    return f"{row.relative['p50']:.3g}"


def _title(result: BenchResult) -> str:
    s = result.settings
    what = s.get("unit") or s.get("model") or ", ".join(Path(a).name for a in s["artifacts"])
    runs = (f"{s['iterations']} runs" if s.get("iterations") is not None
            else f"{s['duration_s']:g} s of runs")
    repeat = s.get("repeat") or 1
    if repeat > 1:
        runs += f" in each of {repeat} processes, interleaved"
    return f"gatex bench: {what} (batch {s['batch_size']}, {s['warmup']} warm-up, {runs})"


# -- table ----------------------------------------------------------------------------------------

COLUMNS = ("backend", "artifact", "p50 ms", "p90 ms", "p99 ms", "mean ± std ms", "cv",
           "samples/s", "p50 / torch", "load ms", "peak RSS MiB", "size KiB")


LOG_WIDTH = 220   # the table's width when stdout is not a terminal (it needs about 200)
SPREAD_COLUMN = "p50 spread"   # with --repeat: (max - min) / min of the per-process p50s
CV_AT = COLUMNS.index("cv")
SPREAD_AT = CV_AT + 1          # the spread column sits right after cv


def _columns(result: BenchResult) -> tuple[str, ...]:
    if (result.settings.get("repeat") or 1) > 1:
        return (*COLUMNS[:SPREAD_AT], SPREAD_COLUMN, *COLUMNS[SPREAD_AT:])
    return COLUMNS


def _cells(row: BackendRow, spread: bool = False) -> list[str]:
    lat = row.latency
    peak = (row.memory or {}).get("peak_above_baseline_bytes")
    cells = [row.label, row.artifact or "-", ms(lat and lat.p50), ms(lat and lat.p90),
             ms(lat and lat.p99), f"{ms(lat.mean)} ± {ms(lat.std)}" if lat else "-",
             f"{lat.cv:.1%}" if lat else "-",
             f"{row.throughput_sps:,.0f}" if row.throughput_sps else "-", ratio(row),
             ms(row.load_ms), mib(peak), kib(row.model_size_bytes)]
    if spread:
        value = row.repeat_spread
        cells.insert(SPREAD_AT, "-" if value is None else f"{value:.1%}")
    return cells


# The compact default (fits 80 columns): the numbers a user compares. --wide / JSON / Markdown
# carry the rest (mean and std, cv, load time, the artifact's name).
COMPACT = ("backend", "p50", "p90", "p99", "samples/s", "peak MiB", "size KiB", "x torch")


def _short(x: float | None) -> str:
    return "-" if x is None else f"{x:.3g}"


def _compact_label(row: BackendRow, rows: list[BackendRow]) -> Any:
    """The backend's short name; its artifact's stem too where one backend has several rows."""
    label = row.backend
    if row.artifact and sum(r.backend == row.backend for r in rows) > 1:
        stem = Path(row.artifact).stem
        label += ":" + (stem if len(stem) <= 12 else stem[:11] + "~")
    if row.ok:
        return label
    return Text(f"{label} {row.status}", style="red" if row.status == "error" else "yellow")


def _compact_cells(row: BackendRow, rows: list[BackendRow]) -> list[Any]:
    lat = row.latency
    peak = (row.memory or {}).get("peak_above_baseline_bytes")
    p50 = _short(lat and lat.p50)
    return [_compact_label(row, rows),
            Text(p50 + "!", style="yellow") if row.unstable or row.unsteady else p50,
            _short(lat and lat.p90), _short(lat and lat.p99),
            f"{row.throughput_sps:,.0f}" if row.throughput_sps else "-", mib(peak),
            kib(row.model_size_bytes), ratio(row)]


def compact_table(result: BenchResult) -> Table:
    """The default table: one line per backend within 80 columns (a "!" marks a p50 that varied:
    cv or the spread between processes past its threshold)."""
    from rich import box

    t = Table(title=_title(result) + "; latency in ms, x torch = p50 / torch's p50",
              box=box.SIMPLE_HEAD, pad_edge=False, padding=(0, 1), collapse_padding=True,
              title_justify="left")
    for c in COMPACT:
        t.add_column(c, justify="left" if c == "backend" else "right", no_wrap=True)
    for row in result.rows:
        t.add_row(*_compact_cells(row, result.rows))
    return t


def table(result: BenchResult) -> Table:
    """Every column (``--wide``)."""
    t = Table(title=_title(result))
    columns = _columns(result)
    spread = SPREAD_COLUMN in columns
    for c in columns:
        t.add_column(c, justify="left" if c in ("backend", "artifact") else "right",
                     overflow="fold")
    t.add_column("status", overflow="fold")
    for row in result.rows:
        cells: list[Any] = list(_cells(row, spread))
        if row.unstable:
            cells[CV_AT] = Text(cells[CV_AT] + " !", style="yellow")
        if spread and row.unsteady:
            cells[SPREAD_AT] = Text(cells[SPREAD_AT] + " !", style="yellow")
        style = {"ok": "green", "error": "red"}.get(row.status, "yellow")
        t.add_row(*cells, Text(row.status, style=style))
    return t


def print_result(result: BenchResult, console: Console, wide: bool = False) -> None:
    console.print(table(result) if wide else compact_table(result))
    for row in result.rows:
        if not row.ok:
            style = "red" if row.status == "error" else "yellow"
            console.print(Text(f"{row.id}: {row.status}: {row.reason}", style=style))
    for row in result.rows:
        if row.device_latency is not None:
            d = row.device_latency
            console.print(f"{row.id}: device time (events, model only) p50 {ms(d.p50)} ms, "
                          f"p99 {ms(d.p99)} ms; the table's latency is end-to-end with copies")
        for note in row.notes:
            console.print(f"{row.id}: {note}")
    for w in result.warnings:  # one line each on stderr, as every gatex warning
        typer.echo(f"warning: {' '.join(str(w).split())}", err=True)
    b = result.baseline
    if b is not None:
        for r in b.regressions:
            console.print(Text(f"regression: {r.describe()} > {b.max_regression_pct:g} % "
                               "allowed", style="red"))
        if not b.regressions:
            console.print(f"baseline {b.file}: no backend slower than {b.max_regression_pct:g} % "
                          f"(compared: {', '.join(b.compared) or 'none'})")
        if b.missing:
            console.print(f"baseline {b.file} has no row for {', '.join(b.missing)}")
        for note in b.notes:
            console.print(Text(f"note: {note}", style="yellow"))
    m = result.machine
    console.print(f"machine: {m['cpu']}, {m['cores_usable'] or m['cores_logical']} usable cores, "
                  f"{m['os']}, Python {m['python']}", style="dim")


# -- Markdown -------------------------------------------------------------------------------------

def markdown(result: BenchResult) -> str:
    """A CI step summary: the table, what did not run and why, warnings, the baseline verdict."""
    columns = _columns(result)
    lines = [f"## {_title(result)}", "",
             "| " + " | ".join(columns) + " | status |",
             "|" + "|".join(["---"] * 2 + ["---:"] * (len(columns) - 2) + ["---"]) + "|"]
    for row in result.rows:
        cells = [c.replace("|", "\\|") for c in _cells(row, SPREAD_COLUMN in columns)]
        lines.append("| " + " | ".join([*cells, row.status]) + " |")
    lines.append("")
    not_run = [r for r in result.rows if not r.ok]
    if not_run:
        lines.extend(f"- **{r.id}** {r.status}: {r.reason}" for r in not_run)
        lines.append("")
    lines.append("p50 / torch below 1 is faster than torch eager. Peak RSS is the backend "
                 "process's peak above its baseline after imports.")
    if result.warnings:
        lines.append("")
        lines.extend(f"- :warning: {w}" for w in result.warnings)
    b = result.baseline
    if b is not None:
        lines.append("")
        if b.regressions:
            lines.append(f"**Regressions** (p50 more than {b.max_regression_pct:g} % over "
                         f"`{b.file}`):")
            lines.extend(f"- {r.describe()}" for r in b.regressions)
        else:
            lines.append(f"Baseline `{b.file}`: no backend slower than "
                         f"{b.max_regression_pct:g} % (compared: "
                         f"{', '.join(b.compared) or 'none'}).")
        lines.extend(f"- note: {n}" for n in b.notes)
    m, v = result.machine, result.versions
    lines.append("")
    lines.append(f"Machine: {m['cpu']}, {m['cores_usable'] or m['cores_logical']} usable cores, "
                 f"{m['os']}; Python {m['python']}, "
                 + ", ".join(f"{k} {val}" for k, val in v.items()
                             if val and k not in ("python",)) + ".")
    return "\n".join(lines) + "\n"


# -- JSON -----------------------------------------------------------------------------------------

def to_json(result: BenchResult) -> str:
    return json.dumps(json_safe(result.as_dict(), lambda _: None), indent=2,
                      allow_nan=False) + "\n"


# -- plot -----------------------------------------------------------------------------------------

def check_plot_available() -> None:
    if not _optional.available("matplotlib"):
        raise BackendUnavailableError(f"--plot needs matplotlib, which is not installed: "
                                      f"{PLOT_EXTRA}")


def write_plot(result: BenchResult, path: str | Path) -> Path:
    """A PNG of each measured backend's latency distribution (box plot, log scale)."""
    check_plot_available()
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = check_writable(path)
    rows = [r for r in result.rows if r.ok and r.samples_ns]
    if not rows:
        raise BadInputError("nothing to plot: no backend was measured")
    data = [[s / 1e6 for s in r.samples_ns] for r in rows]
    fig, ax = plt.subplots(figsize=(8, 1.2 + 0.7 * len(rows)))
    try:
        import inspect

        # matplotlib 3.10 added orientation= and deprecated vert=
        horizontal = ({"orientation": "horizontal"}
                      if "orientation" in inspect.signature(ax.boxplot).parameters
                      else {"vert": False})
        ax.boxplot(data, whis=(1, 99), showfliers=True, flierprops={"markersize": 2},
                   **horizontal)
        ax.set_yticks(range(1, len(rows) + 1), [r.id for r in rows])
        ax.set_xscale("log")
        ax.set_xlabel("latency per run (ms, log scale); whiskers p1-p99")
        ax.set_title(_title(result), fontsize=9)
        for i, r in enumerate(rows, start=1):
            if r.latency is not None:
                ax.annotate(f"p50 {r.latency.p50:.3g} ms", (r.latency.p50, i + 0.3), fontsize=7)
        fig.tight_layout()
        with _io.staged_file(path, suffix=".png") as tmp:
            fig.savefig(tmp, format="png", dpi=120)
    finally:
        plt.close(fig)
    return path


def write_reports(result: BenchResult, *, json_path: Path | None = None,
                  markdown_path: Path | None = None, plot_path: Path | None = None) -> None:
    if json_path is not None:
        write_atomic(json_path, to_json(result))
    if markdown_path is not None:
        write_atomic(markdown_path, markdown(result))
    if plot_path is not None:
        write_plot(result, plot_path)




# -- the command ----------------------------------------------------------------------------------

def run_bench_command(artifacts: list[Path], *, json_path: Path | None = None,
                      markdown_path: Path | None = None, plot_path: Path | None = None,
                      console: Console | None = None, progress_console: Console | None = None,
                      wide: bool = False, **options: Any) -> BenchResult:
    """``gatex bench``: check the outputs, measure with progress bars, print, write, gate.

    Output paths and the plot extra are checked before anything runs, so a bad path costs no
    time and leaves no file. Reports are written before the verdict: a failed backend or a
    regression past ``--max-regression`` raises `CheckFailedError` (exit 1) naming it.
    """
    from rich.progress import BarColumn, Progress, TaskID, TextColumn, TimeElapsedColumn


    for out in (json_path, markdown_path, plot_path):
        if out is not None:
            check_writable(out)
    if plot_path is not None:
        check_plot_available()
    if console is None:
        console = Console()
        if wide and not console.is_terminal and "COLUMNS" not in os.environ:
            # a CI log or a file: the wide table at its natural width, not folded
            console.width = max(console.width, LOG_WIDTH)
    progress_console = progress_console or Console(stderr=True)
    # bars only on a terminal: in a log they would leave a blank line before any error line
    bars = Progress(TextColumn("{task.description}"), BarColumn(),
                    TextColumn("{task.fields[done]}"), TimeElapsedColumn(),
                    console=progress_console, transient=True,
                    disable=not progress_console.is_terminal)
    tasks: dict[str, TaskID] = {}

    def on_plan(rows: list[BackendRow]) -> None:
        for r in rows:
            tasks[r.id] = bars.add_task(f"{r.id}: starting", total=None, done="")

    def on_progress(row_id: str, phase: str, done: int, total: int) -> None:
        if row_id in tasks:
            unit = " ms" if phase.startswith("timed") and options.get("duration") else ""
            bars.update(tasks[row_id], description=f"{row_id}: {phase}", completed=done,
                        total=total, done=f"{done}/{total}{unit}")

    with bars:
        result = bench_run.bench(artifacts, on_plan=on_plan, on_progress=on_progress,
                                 **options)
    print_result(result, console, wide)
    write_reports(result, json_path=json_path, markdown_path=markdown_path,
                  plot_path=plot_path)
    if result.failed:
        first = result.failed[0]
        more = f" (and {len(result.failed) - 1} more)" if len(result.failed) > 1 else ""
        raise CheckFailedError(f"bench: backend {first.id} failed: {first.reason}{more}")
    if result.regressions:
        b = result.baseline
        assert b is not None
        names = "; ".join(r.describe() for r in b.regressions)
        raise CheckFailedError(f"bench: slower than the baseline by more than "
                               f"{b.max_regression_pct:g} %: {names}")
    return result


__all__ = ["check_plot_available", "compact_table", "markdown", "print_result",
           "run_bench_command", "table",
           "to_json", "write_plot", "write_reports"]
