"""``gatex units``: every registered op, its formula, parameters and backend support."""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text

from gatex.ops import REGISTRY, OpSpec, Param

# The keys of one op in ``gatex units --json``, in output order (README, "gatex units --json").
OP_KEYS = ("name", "id", "torch_op", "family", "summary", "formula", "source", "inputs",
           "optional_inputs", "params", "elementwise", "dtypes", "tolerances", "backends",
           "unsupported", "hazards")
PARAM_KEYS = ("name", "default", "range", "lo", "hi", "choices", "kind", "learnable", "nonzero",
              "doc")


def param_record(p: Param) -> dict[str, Any]:
    """One parameter as JSON data; ``lo``/``hi`` are null where unbounded (JSON has no inf)."""
    default = list(p.default) if isinstance(p.default, tuple) else p.default
    return {"name": p.name, "default": default, "range": p.range_text(), "lo": p.lo, "hi": p.hi,
            "choices": list(p.choices), "kind": p.kind.__name__, "learnable": p.learnable,
            "nonzero": p.nonzero, "doc": p.doc}


def op_record(spec: OpSpec) -> dict[str, Any]:
    """One op as JSON data, keys in `OP_KEYS` order."""
    return {
        "name": spec.name,
        "id": spec.id,
        "torch_op": spec.torch_qualname,
        "family": spec.family,
        "summary": spec.summary,
        "formula": spec.formula,
        "source": spec.source,
        "inputs": list(spec.inputs),
        "optional_inputs": list(spec.optional_inputs),
        "params": [param_record(p) for p in spec.params],
        "elementwise": spec.elementwise,
        "dtypes": list(spec.dtypes),
        "tolerances": {dtype: {"rtol": tol.rtol, "atol": tol.atol}
                       for dtype, tol in spec.tolerances.items()},
        "backends": list(spec.backends()),
        "tensorrt": _tensorrt_text(spec),
        "unsupported": dict(spec.unsupported_reasons),
        "hazards": spec.hazards,
    }


def _tensorrt_text(spec: OpSpec) -> str:
    """How TensorRT carries the op, from its ``tensorrt`` lowering; "" where it has none."""
    lowering = spec.lowerings.get("tensorrt")
    return lowering.describe() if hasattr(lowering, "describe") else ""


def _param_text(p: Param) -> Text:
    default = p.default
    if isinstance(default, tuple):
        default = "(" + ", ".join(map(str, default)) + ")"
    text = Text(f"{p.name}={default}", style="bold")
    text.append(f" {p.range_text()}")
    if p.learnable:
        text.append(" learnable", style="green")
    return text


def _inputs_text(spec: OpSpec) -> str:
    return ", ".join(f"{name}?" if name in spec.optional_inputs else name for name in spec.inputs)


def _all_ops_table(specs: list[OpSpec]) -> Table:
    table = Table(title=f"gatex ops ({len(specs)})", show_lines=True)
    table.add_column("op", no_wrap=True, style="bold cyan")
    table.add_column("family", no_wrap=True)
    table.add_column("inputs")
    table.add_column("formula")
    table.add_column(Text("parameters: name=default [range]"))
    table.add_column("backends")
    for spec in specs:
        params = Text("\n").join(_param_text(p) for p in spec.params) if spec.params else Text("-")
        # Text, not str: rich would read "[...]" in a formula as markup
        table.add_row(spec.name, spec.family, Text(_inputs_text(spec)), Text(spec.formula),
                      params, ", ".join(spec.backends()))
    return table


def _one_op_table(spec: OpSpec) -> Table:
    table = Table(title=f"{spec.id}  (torch.ops.gatex.{spec.torch_name})", show_header=False,
                  show_lines=True)
    table.add_column("field", style="bold", no_wrap=True)
    table.add_column("value")
    params = Table(show_edge=False, pad_edge=False)
    for column in ("name", "default", "range", "learnable", "meaning"):
        params.add_column(column)
    for p in spec.params:
        params.add_row(p.name, Text(repr(p.default)), Text(p.range_text()),
                       "yes" if p.learnable else "no", Text(p.doc))
    tolerances = "\n".join(f"{dtype}: rtol={tol.rtol:g}, atol={tol.atol:g}"
                           for dtype, tol in spec.tolerances.items())
    unsupported = "\n".join(f"{b}: {reason}" for b, reason in spec.unsupported_reasons.items())
    rows: list[tuple[str, Any]] = [
        ("summary", spec.summary),
        ("formula", spec.formula),
        ("family", spec.family),
        ("source", spec.source),
        ("inputs", _inputs_text(spec) + ("   (? optional)" if spec.optional_inputs else "")),
        ("parameters", params if spec.params else "none"),
        ("elementwise", "yes" if spec.elementwise else "no"),
        ("dtypes", ", ".join(spec.dtypes)),
        ("tolerances", tolerances),
        ("backends", ", ".join(spec.backends())),
        ("tensorrt", _tensorrt_text(spec) or "-"),
        ("unsupported", unsupported or "-"),
        ("hazards", spec.hazards or "none known"),
    ]
    for field, value in rows:
        table.add_row(field, Text(value) if isinstance(value, str) else value)
    return table


def units(
    name: Annotated[str | None, typer.Argument(
        help="Show one op in detail (e.g. GoLU, gatex::GoLU, golu).", show_default=False,
    )] = None,
    as_json: Annotated[bool, typer.Option(
        "--json",
        help="Print JSON and nothing else: a list of op objects, or one object with NAME.",
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
    specs = [REGISTRY.get(name)] if name is not None else list(REGISTRY)
    if as_json:
        records = [op_record(spec) for spec in specs]
        typer.echo(json.dumps(records[0] if name is not None else records, indent=2))
        return
    console = Console()
    if name is not None:
        console.print(_one_op_table(specs[0]))
        return
    console.print(_all_ops_table(specs))
    hazards = [spec for spec in specs if spec.hazards]
    if hazards:
        console.print("\n[bold]Numerical hazards[/bold] (low precision, hard gates) and how gatex "
                      "handles them:")
        for spec in hazards:
            console.print(Text.assemble((f"  {spec.name}: ", "bold cyan"), spec.hazards))
    console.print("\n`gatex units NAME` shows one op in detail; "
                  "`--json` for machine-readable output.")
