"""``gatex units``: every registered op, its formula, parameters and backend support.

The ops come as data (`gatex.ops.catalogue`): gatex's own from ``catalogue.json``, read without
importing torch, and the registry itself only where an installed package adds ops through the
``gatex.ops`` entry points. Everything here renders records (dicts), never specs.
"""

from __future__ import annotations

import difflib
import json
from importlib import metadata
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text

from gatex.errors import UnknownOpError

CATALOGUE_FILE = Path(__file__).resolve().parents[1] / "ops" / "catalogue.json"
ENTRY_POINT_GROUP = "gatex.ops"   # gatex.ops.ENTRY_POINT_GROUP, without importing gatex.ops


def _plugins_installed() -> bool:
    try:
        return bool(metadata.entry_points(group=ENTRY_POINT_GROUP))
    except Exception:  # noqa: BLE001  (broken metadata of some distribution: no plugins)
        return False


def op_records() -> list[dict[str, Any]]:
    """Every op as a record: the catalogue file, or the registry when plugins add ops."""
    if _plugins_installed() or not CATALOGUE_FILE.is_file():
        from gatex.ops.catalogue import all_records

        return all_records()
    return json.loads(CATALOGUE_FILE.read_text())


def _key(name: str) -> str:
    return name.removeprefix("gatex::").replace("_", "").lower()


def find_record(records: list[dict[str, Any]], name: str) -> dict[str, Any]:
    """The op ``name`` (name, id or torch name, any case, underscores ignored), or
    `UnknownOpError` with the closest names."""
    for record in records:
        if _key(name) in (_key(record["name"]), _key(record["torch_op"])):
            return record
    names = [r["name"] for r in records]
    by_key = {_key(n): n for n in names}
    close = difflib.get_close_matches(_key(name), list(by_key), n=3, cutoff=0.5)
    hint = f"; did you mean {', '.join(by_key[c] for c in close)}?" if close else ""
    raise UnknownOpError(f"unknown op {name!r}{hint} (`gatex units` lists them)")


def _default_text(default: Any) -> str:
    return "(" + ", ".join(map(str, default)) + ")" if isinstance(default, list) else str(default)


def _param_text(p: dict[str, Any]) -> Text:
    text = Text(f"{p['name']}={_default_text(p['default'])}", style="bold")
    text.append(f" {p['range']}")
    if p["learnable"]:
        text.append(" learnable", style="green")
    return text


def _inputs_text(op: dict[str, Any]) -> str:
    return ", ".join(f"{n}?" if n in op["optional_inputs"] else n for n in op["inputs"])


def _all_ops_table(ops: list[dict[str, Any]]) -> Table:
    table = Table(title=f"gatex ops ({len(ops)})", show_lines=True)
    table.add_column("op", no_wrap=True, style="bold cyan")
    table.add_column("family", no_wrap=True)
    table.add_column("inputs")
    table.add_column("formula")
    table.add_column(Text("parameters: name=default [range]"))
    table.add_column("backends")
    for op in ops:
        params = Text("\n").join(_param_text(p) for p in op["params"]) if op["params"] \
            else Text("-")
        # Text, not str: rich would read "[...]" in a formula as markup
        table.add_row(op["name"], op["family"], Text(_inputs_text(op)), Text(op["formula"]),
                      params, ", ".join(op["backends"]))
    return table


def _print_compact(console: Console, ops: list[dict[str, Any]]) -> None:
    """The default listing: per op a head line and two indented lines (formula, parameters)
    that wrap at the terminal's width instead of being cut (80 columns included)."""
    from rich.padding import Padding

    console.print(Text(f"gatex ops ({len(ops)})", style="bold"))
    for op in ops:
        head = Text.assemble((op["name"], "bold cyan"), f"  ({op['family']})  ",
                             ("inputs ", "dim"), _inputs_text(op), ("  backends ", "dim"),
                             ", ".join(op["backends"]))
        console.print(Padding(head, (1, 0, 0, 0)))
        console.print(Padding(Text(op["formula"]), (0, 0, 0, 4)))
        if op["params"]:
            console.print(Padding(Text("  ").join(_param_text(p) for p in op["params"]),
                                  (0, 0, 0, 4)))


def _one_op_table(op: dict[str, Any]) -> Table:
    torch_name = op["torch_op"].removeprefix("gatex::")
    table = Table(title=f"{op['id']}  (torch.ops.gatex.{torch_name})", show_header=False,
                  show_lines=True)
    table.add_column("field", style="bold", no_wrap=True)
    table.add_column("value")
    params = Table(show_edge=False, pad_edge=False)
    for column in ("name", "default", "range", "learnable", "meaning"):
        params.add_column(column)
    for p in op["params"]:
        default = tuple(p["default"]) if isinstance(p["default"], list) else p["default"]
        params.add_row(p["name"], Text(repr(default)), Text(p["range"]),
                       "yes" if p["learnable"] else "no", Text(p["doc"]))
    tolerances = "\n".join(f"{dtype}: rtol={tol['rtol']:g}, atol={tol['atol']:g}"
                           for dtype, tol in op["tolerances"].items())
    unsupported = "\n".join(f"{b}: {reason}" for b, reason in op["unsupported"].items())
    rows: list[tuple[str, Any]] = [
        ("summary", op["summary"]),
        ("formula", op["formula"]),
        ("family", op["family"]),
        ("source", op["source"]),
        ("inputs", _inputs_text(op) + ("   (? optional)" if op["optional_inputs"] else "")),
        ("parameters", params if op["params"] else "none"),
        ("elementwise", "yes" if op["elementwise"] else "no"),
        ("dtypes", ", ".join(op["dtypes"])),
        ("tolerances", tolerances),
        ("backends", ", ".join(op["backends"])),
        ("tensorrt", op["tensorrt"] or "-"),
        ("unsupported", unsupported or "-"),
        ("hazards", op["hazards"] or "none known"),
    ]
    for field, value in rows:
        table.add_row(field, Text(value) if isinstance(value, str) else value)
    return table


def markdown(ops: list[dict[str, Any]]) -> str:
    """Every op as Markdown: the page docs/ops.md is (``gatex units --markdown``)."""
    lines = ["# gatex ops", "",
             "Generated by `gatex units --markdown` from the op specs (a test keeps this page "
             "equal to them). Each op is one `gatex::` torch custom op, one ONNX node (domain "
             "`gatex`), one CoreML composite and one TensorRT plugin or decomposition.", ""]
    for op in ops:
        lines += [f"## {op['name']}", "", op["summary"], "", f"    {op['formula']}", "",
                  f"- inputs: {_inputs_text(op)}" + (" (? optional)" if op["optional_inputs"]
                                                    else ""),
                  f"- torch: `torch.ops.gatex.{op['torch_op'].removeprefix('gatex::')}`; "
                  f"family `{op['family']}`; source: {op['source']}",
                  f"- backends: {', '.join(op['backends'])}; TensorRT: {op['tensorrt'] or '-'}"]
        lines += [f"- {backend} unsupported: {reason}"
                  for backend, reason in op["unsupported"].items()]
        tols = "; ".join(f"{d} rtol {t['rtol']:g} atol {t['atol']:g}"
                         for d, t in op["tolerances"].items())
        lines += [f"- tolerances: {tols}", ""]
        if op["params"]:
            lines += ["| parameter | default | range | learnable | meaning |",
                      "|---|---|---|---|---|"]
            lines += [f"| {p['name']} | {_default_text(p['default'])} | {p['range']} | "
                      f"{'yes' if p['learnable'] else 'no'} | {p['doc']} |" for p in op["params"]]
            lines.append("")
        if op["hazards"]:
            lines += [f"Hazards: {op['hazards']}", ""]
    return "\n".join(lines).rstrip("\n") + "\n"


def units(
    name: Annotated[str | None, typer.Argument(
        help="Show one op in detail (e.g. GoLU, gatex::GoLU, golu).", show_default=False,
        metavar="NAME",
    )] = None,
    as_json: Annotated[bool, typer.Option(
        "--json",
        help="Print JSON and nothing else: a list of op objects, or one object with NAME.",
    )] = False,
    as_markdown: Annotated[bool, typer.Option(
        "--markdown", help="Print the ops as a Markdown page (docs/ops.md is this output).",
    )] = False,
    wide: Annotated[bool, typer.Option(
        "--wide", help="One table with a column per field (for wide terminals); the default "
                       "listing wraps at any width.",
    )] = False,
) -> None:
    """List every gated op: formula, parameters with defaults and ranges, backends, hazards.

    JSON keys of an op: name, id (gatex::Name), torch_op, family, summary, formula, source,
    inputs, optional_inputs, params (each: name, default, range, lo, hi, choices, kind,
    learnable, nonzero, doc; lo/hi null when unbounded), elementwise, dtypes, tolerances
    ({dtype: {rtol, atol}}), backends, tensorrt (plugin or decomposition), unsupported
    ({backend: reason}), hazards.
    An unknown NAME exits with code 2.
    """
    records = op_records()
    ops = [find_record(records, name)] if name is not None else records
    if as_json:
        typer.echo(json.dumps(ops[0] if name is not None else ops, indent=2))
        return
    if as_markdown:
        typer.echo(markdown(ops), nl=False)
        return
    console = Console()
    if name is not None:
        console.print(_one_op_table(ops[0]))
        return
    if wide:
        console.print(_all_ops_table(ops))
    else:
        _print_compact(console, ops)
    hazards = [op for op in ops if op["hazards"]]
    if hazards:
        console.print("\n[bold]Numerical hazards[/bold] (low precision, hard gates) and how gatex "
                      "handles them:")
        for op in hazards:
            console.print(Text.assemble((f"  {op['name']}: ", "bold cyan"), op["hazards"]))
    console.print("\n`gatex units NAME` shows one op in detail; `--wide` as one table; "
                  "`--json` or `--markdown` for machine-readable output.")
