"""``gatex matrix plan|run|merge``: a parity matrix (models x targets x dtypes) split over CI
runners and shards, run where the hardware is, merged into one verdict (`gatex.matrix`)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

matrix_app = typer.Typer(
    help="Plan a parity matrix over CI runners and shards, run a shard, merge the shards.",
    no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False)

MATRIX_ARG = typer.Argument(help="The matrix file (TOML with a [matrix] table).",
                            show_default=False, metavar="MATRIX")


def _costs(baseline: Path | None) -> dict[str, float]:
    """Measured seconds per cell from a run folder's manifests, where given."""
    if baseline is None:
        return {}
    from gatex.matrix.run import read_manifests

    return {c["id"]: float(c.get("seconds") or 0) for m in read_manifests([baseline])
            for c in m.get("cells", []) if c.get("seconds")}


@matrix_app.command("plan", epilog="Examples:\n\n  gatex matrix plan gatex.toml --shards 3 "
                    "--format github\n\n  gatex matrix plan gatex.toml --runner macos --format "
                    "json")
def plan(
    matrix: Annotated[Path, MATRIX_ARG],
    shards: Annotated[int, typer.Option(help="Shards per runner kind.")] = 1,
    runner: Annotated[str | None, typer.Option(
        help="Only this runner kind's shards: linux, macos or gpu.", show_default=False)] = None,
    fmt: Annotated[str, typer.Option("--format", help="github (include: JSON), gitlab "
                                     "(parallel: matrix: YAML) or json (every cell).")] = "github",
    costs_from: Annotated[Path | None, typer.Option(
        "--costs-from", help="A run folder whose measured seconds balance the shards.",
        show_default=False)] = None,
) -> None:
    """Print the shards a CI matrix runs: the cells grouped by the runner kind that can execute
    them (ONNX on linux; CoreML on macos, emulated on linux without one; TensorRT on gpu),
    balanced by cost."""
    from gatex.matrix.plan import plan as make_plan
    from gatex.matrix.plan import render
    from gatex.matrix.spec import load_matrix

    m = load_matrix(matrix)
    costs = _costs(costs_from)
    typer.echo(render(make_plan(m, shards, runner=runner, costs=costs), fmt, m, costs), nl=False)


@matrix_app.command("run", epilog="Examples:\n\n  gatex matrix run gatex.toml --shard 2/3 "
                    "--out out/\n\n  gatex matrix run gatex.toml --runner macos --from "
                    "linux-out/ --out mac-out/")
def run(
    matrix: Annotated[Path, MATRIX_ARG],
    out: Annotated[Path, typer.Option(help="The run folder: artifacts, verdicts, manifest.",
                                      show_default=False)],
    shard: Annotated[str, typer.Option(help="I/N: this job's shard of the plan.")] = "1/1",
    runner: Annotated[str, typer.Option(help="The runner kind this job is.")] = "linux",
    jobs: Annotated[int, typer.Option(help="Cells run at once, each in a worker process.")] = 1,
    from_dir: Annotated[Path | None, typer.Option(
        "--from", help="A run folder whose artifacts this job checks instead of exporting.",
        show_default=False)] = None,
    costs_from: Annotated[Path | None, typer.Option(
        "--costs-from", help="As for plan: the same costs give the same shards.",
        show_default=False)] = None,
) -> None:
    """Export and check this shard's cells, writing each artifact, its gatex.parity/1 verdict
    and a manifest into --out. A failing cell fails only itself; exit 1 when any failed."""
    from gatex.errors import CheckFailedError
    from gatex.matrix.plan import parse_shard, shard_cells
    from gatex.matrix.plan import plan as make_plan
    from gatex.matrix.run import run_shard
    from gatex.matrix.spec import MatrixError, load_matrix

    index, count = parse_shard(shard)
    m = load_matrix(matrix)
    if runner not in m.runners:
        raise MatrixError(f"--runner {runner} is not declared in {matrix} "
                          f"(runners = {list(m.runners)})")
    if from_dir is not None and not from_dir.is_dir():
        raise MatrixError(f"--from {from_dir} is not a folder")
    mine = shard_cells(make_plan(m, count, costs=_costs(costs_from)), index, count, runner)

    def show(rec: dict) -> None:
        quiet = rec.get("status") in ("pass", "exported")
        typer.echo(f"{rec.get('status', 'error'):8} {rec['id']}  {rec.get('seconds', 0):.1f} s"
                   + ("" if quiet else f"  {rec['message'][:120]}"))

    manifest = run_shard(m, mine, out, jobs=jobs, from_dir=from_dir, on_cell=show)
    checked = [c for c in manifest["cells"] if c["status"] != "exported"]
    failed = [c for c in checked if c["status"] != "pass"]
    exported = len(manifest["cells"]) - len(checked)
    typer.echo(f"shard {mine.name} on {runner}: {len(checked) - len(failed)} of {len(checked)} "
               f"cells pass" + (f", {exported} exported for another runner" if exported else "")
               + f"; manifest in {out}")
    if failed:
        raise CheckFailedError(f"{len(failed)} matrix cells failed, first {failed[0]['id']}: "
                               f"{failed[0]['message'][:200]}")


@matrix_app.command("merge", epilog="Examples:\n\n  gatex matrix merge out-1/ out-2/ out-3/ "
                    "--junit matrix.xml --markdown summary.md\n\n  gatex matrix merge out-*/ "
                    "--baseline ci/baseline.json --update-baseline")
def merge(
    dirs: Annotated[list[Path], typer.Argument(help="The shards' run folders.",
                                               show_default=False, metavar="DIR...")],
    junit: Annotated[Path | None, typer.Option(help="JUnit XML: a testcase per cell.",
                                               show_default=False)] = None,
    markdown: Annotated[Path | None, typer.Option(help="Markdown: models x targets table.",
                                                  show_default=False)] = None,
    json_path: Annotated[Path | None, typer.Option("--json", help="JSON (gatex.matrix/1).",
                                                   show_default=False)] = None,
    baseline: Annotated[Path | None, typer.Option(
        help="Fail cells whose error or latency regressed past this baseline.",
        show_default=False)] = None,
    update_baseline: Annotated[bool, typer.Option(
        "--update-baseline", help="Write the baseline with every improvement taken in.")] = False,
    max_regression: Annotated[float, typer.Option(
        help="Percent a cell's latency may grow over the baseline's.")] = 50.0,
) -> None:
    """One verdict for the whole matrix: cells planned but run by no shard are missing (a
    failure). Exit 1 when any cell failed or is missing; 2 for a folder without a manifest."""
    from gatex.comparison.report import check_writable, write_atomic
    from gatex.errors import BadInputError, CheckFailedError
    from gatex.matrix import merge as merging

    if update_baseline and baseline is None:
        raise BadInputError("--update-baseline needs --baseline F")
    for path in (junit, markdown, json_path, baseline if update_baseline else None):
        if path is not None:
            check_writable(path)
    merged = merging.merge(dirs)
    if baseline is not None:
        merging.ratchet(merged, baseline, max_regression=max_regression, update=update_baseline)
    for path, render in ((junit, merging.to_junit), (markdown, merging.to_markdown),
                         (json_path, merging.to_json)):
        if path is not None:
            write_atomic(path, render(merged))
    typer.echo(merging.to_markdown(merged), nl=False)
    if not merged.passed:
        bad = [c["id"] for c in merged.cells if c["status"] != "pass"] + merged.missing
        raise CheckFailedError(f"matrix failed: {len(bad)} cells failed or missing, first "
                               f"{bad[0]}")
