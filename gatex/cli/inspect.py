"""``gatex inspect``: what an ONNX file or CoreML package holds, with per-layer size and sparsity.

The JSON keys (``--json``) are documented in `gatex.artifacts.inspect`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer


def inspect(
    artifact: Annotated[Path, typer.Argument(
        help="An ONNX file (.onnx) or a CoreML package (.mlpackage).", show_default=False,
        metavar="ARTIFACT",
    )],
    as_json: Annotated[bool, typer.Option(
        "--json", help="Print one JSON object (stable keys, see gatex.artifacts.inspect).",
    )] = False,
) -> None:
    """Describe an artifact: opsets, IR version, gatex ops and metadata, functions, file size,
    and each weight's size and sparsity (fraction of exact zeros). Bad file exits 2."""
    from gatex.artifacts.inspect import inspect_artifact

    info = inspect_artifact(artifact)
    if as_json:
        typer.echo(json.dumps(info.to_json(), indent=2, sort_keys=True))
        return
    from rich.console import Console
    from rich.table import Table

    console = Console()
    params, zeros = info.parameters, info.zeros
    console.print(f"[bold]{info.path}[/]: {info.format}, {info.file_bytes / 1024:.1f} KiB on disk")
    if info.format == "onnx":
        opsets = ", ".join(f"{d or 'ai.onnx'} {v}" for d, v in info.opsets.items())
        console.print(f"IR version {info.ir_version}; opsets: {opsets}", markup=False)
        customs = ", ".join(f"{k} x{v}" for k, v in info.custom_ops.items()) or "none"
        console.print(f"custom ops: {customs}", markup=False)
        console.print(f"functions: {', '.join(info.functions) or 'none'}", markup=False)
    else:
        console.print(f"spec version {info.ir_version}")
    console.print("ops: " + (", ".join(f"{k} x{v}" for k, v in info.ops.items()) or "none"),
                  markup=False)
    for key, value in info.metadata.items():
        console.print(f"metadata {key} = {value}", markup=False)
    table = Table(title="weights by layer")
    for column in ("layer", "parameters", "zeros", "sparsity", "bytes"):
        table.add_column(column, justify="left" if column == "layer" else "right")
    for layer in info.layers:
        table.add_row(layer.name, f"{layer.elements:,}", f"{layer.zeros:,}",
                      f"{layer.sparsity:.2%}", f"{layer.bytes:,}")
    console.print(table)
    detail = Table(title="weights")
    for column in ("name", "shape", "dtype", "sparsity", "bytes", "storage"):
        detail.add_column(column)
    for w in info.weights:
        detail.add_row(w.name, "x".join(map(str, w.shape)), w.dtype, f"{w.sparsity:.2%}",
                       f"{w.bytes:,}", w.storage)
    console.print(detail)
    console.print(f"total: {params:,} parameters, {zeros:,} exact zeros "
                  f"({zeros / params if params else 0.0:.2%})")
