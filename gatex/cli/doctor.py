"""``gatex doctor``: which backends, devices and versions this machine has (`gatex.environment`)."""

from __future__ import annotations

import json
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text

from gatex.environment import EnvironmentReport, probe


def _table(report: EnvironmentReport) -> Table:
    table = Table(title="gatex doctor")
    table.add_column("component", no_wrap=True, style="bold")
    table.add_column("available", no_wrap=True)
    table.add_column("version", overflow="fold")
    table.add_column("note", overflow="fold")
    for c in report.components:
        available = Text("yes", style="green") if c.available else Text("no", style="yellow")
        table.add_row(c.name, available, Text(c.version or "-"), Text(c.note))
    return table


def doctor(
    as_json: Annotated[bool, typer.Option(
        "--json", help="Print the report as one JSON object and nothing else.",
    )] = False,
    deep: Annotated[bool, typer.Option(
        "--deep", help="Import torch and ask it about its CUDA and MPS devices (several "
                       "seconds); without it torch's facts come from its files and the driver.",
    )] = False,
) -> None:
    """Show which backends, devices and versions gatex can use on this machine. Always exits 0.

    JSON keys: python_version, python_executable, platform, system, machine, torch_version,
    cuda_available, cuda_version, cuda_devices, mps_available, onnxruntime_providers,
    coreml_can_predict, components (each: name, available, version, note).
    """
    report = probe(deep=deep)
    if as_json:
        typer.echo(json.dumps(report.as_dict(), indent=2))
        return
    console = Console()
    console.print(Text.assemble(("Python ", "bold"), report.python_version, " at ",
                                report.python_executable, " on ", report.platform))
    console.print(_table(report))
