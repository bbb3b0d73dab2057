"""The ``gatex`` CLI: help, units, doctor, and errors as one line plus the documented exit code."""

from __future__ import annotations

import importlib.util
import json
import platform
import textwrap

import pytest
import torch
from typer.testing import CliRunner

import gatex
from gatex.cli import app
from gatex.ops import BUILTIN_OPS, REGISTRY

WIDE = {"COLUMNS": "200"}  # rich wraps at the terminal width; tests read whole cells

ALL_OPS = set(BUILTIN_OPS)  # the registry's own ops (tests/ops/ops_cases.py lists OPS.md's)

# README.md, "gatex units --json": the documented keys, written out so a change must be deliberate.
OP_KEYS = {"name", "id", "torch_op", "family", "summary", "formula", "source", "inputs",
           "optional_inputs", "params", "elementwise", "dtypes", "tolerances", "backends",
           "tensorrt", "unsupported", "hazards"}
PARAM_KEYS = {"name", "default", "range", "lo", "hi", "choices", "kind", "learnable", "nonzero",
              "doc"}


def invoke(*args: str, env: dict[str, str] | None = None):
    return CliRunner().invoke(app, list(args), env={**WIDE, **(env or {})})


@pytest.mark.parametrize("args", [["--help"], ["-h"], ["units", "--help"], ["doctor", "--help"]])
def test_help_exits_0_and_documents_exit_codes(args):
    result = invoke(*args)
    assert result.exit_code == 0, result.output
    assert "Usage" in result.stdout
    for text in ("0 ok", "1 check failed", "2 bad input", "3 backend unavailable"):
        assert text in result.stdout


def test_no_arguments_shows_help_and_exits_2():
    result = invoke()  # no command is a usage error: help, and the bad-input code
    assert result.exit_code == 2
    assert "Usage" in result.stdout and "units" in result.stdout and "doctor" in result.stdout


def test_version():
    result = invoke("--version")
    assert result.exit_code == 0
    assert result.stdout.strip() == f"gatex {gatex.__version__}"


def test_units_at_80_columns_lists_every_op_and_cuts_nothing():
    result = invoke("units", env={"COLUMNS": "80"})
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert max(len(line.rstrip()) for line in lines) <= 80
    assert "…" not in result.stdout                         # wrapped, never cut
    heads = {line.split()[0] for line in lines if line and not line.startswith(" ")
             and "(" in line}
    assert ALL_OPS <= heads
    flat = " ".join(result.stdout.split())
    for record in json.loads(invoke("units", "--json").stdout):
        assert " ".join(record["formula"].split()) in flat, record["name"]


def test_units_lists_every_op():
    assert {spec.name for spec in REGISTRY} == ALL_OPS
    result = invoke("units", "--wide")
    assert result.exit_code == 0, result.output
    rows = {line.split("│")[1].strip() for line in result.stdout.splitlines()
            if line.startswith("│") and line.split("│")[1].strip()}
    assert rows == ALL_OPS
    assert f"gatex ops ({len(ALL_OPS)})" in result.stdout
    assert "alpha * x * exp(-beta * exp(-gamma * x))" in result.stdout  # GoLU's formula
    assert "alpha=0.5 [0, 1] learnable" in result.stdout                # paGLU's alpha


def _by_name(records: list[dict]) -> dict[str, dict]:
    return {r["name"]: r for r in records}


def test_units_json_is_the_whole_stdout_with_documented_keys():
    result = invoke("units", "--json")
    assert result.exit_code == 0
    records = json.loads(result.stdout)  # fails if anything else is printed
    assert [r["name"] for r in records] == REGISTRY.names()
    for record in records:
        assert set(record) == OP_KEYS, record["name"]
        for param in record["params"]:
            assert set(param) == PARAM_KEYS, (record["name"], param["name"])
        assert record["id"] == f"gatex::{record['name']}"
        assert record["backends"][0] == "torch"


def test_units_json_values_for_golu_paglu_and_conv():
    ops = _by_name(json.loads(invoke("units", "--json").stdout))
    golu = ops["GoLU"]
    assert golu["torch_op"] == "gatex::golu"
    assert golu["inputs"] == ["x"]
    assert golu["formula"] == "alpha * x * exp(-beta * exp(-gamma * x))"
    assert [p["name"] for p in golu["params"]] == ["alpha", "beta", "gamma"]
    for p in golu["params"]:
        assert (p["default"], p["range"], p["lo"], p["hi"]) == (1.0, "[0, inf]", 0.0, None)
        assert p["learnable"] is False and p["kind"] == "float"
    fp16 = REGISTRY.get("GoLU").tolerance("float16")
    assert golu["tolerances"]["float16"] == {"rtol": fp16.rtol, "atol": fp16.atol}
    assert "fp16" in golu["hazards"]

    (alpha,) = ops["paGLU"]["params"]
    assert (alpha["name"], alpha["default"], alpha["range"], alpha["learnable"]) == \
        ("alpha", 0.5, "[0, 1]", True)
    gate = ops["paUnit"]["params"][1]
    assert gate["default"] == "sigmoid" and "golu" in gate["choices"]
    assert gate["range"].startswith("{sigmoid, ")
    assert ops["GatedDense"]["optional_inputs"] == ["bias"]
    stride = ops["CGConv2d"]["params"][0]
    assert (stride["name"], stride["default"], stride["kind"]) == ("stride", [1, 1], "tuple")


@pytest.mark.parametrize("name", ["GoLU", "gatex::GoLU", "golu"])
def test_units_one_op(name):
    result = invoke("units", name)
    assert result.exit_code == 0, result.output
    assert "gatex::GoLU" in result.stdout
    assert "alpha * x * exp(-beta * exp(-gamma * x))" in result.stdout
    assert "float16: rtol=0.004, atol=0.001" in result.stdout
    record = json.loads(invoke("units", name, "--json").stdout)
    assert isinstance(record, dict) and record["name"] == "GoLU"


@pytest.mark.parametrize("name, hint", [("NoSuchOp", None), ("paGLUU", "paGLU")])
def test_units_unknown_op_is_one_line_and_exit_2(name, hint):
    result = invoke("units", name)
    assert result.exit_code == 2
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(f"error: unknown op '{name}'")
    assert "Traceback" not in result.output
    if hint:
        assert f"did you mean {hint}" in lines[0]


def test_doctor_json_reports_torch_and_optional_backends():
    result = invoke("doctor", "--json")
    assert result.exit_code == 0
    report = json.loads(result.stdout)
    components = {c["name"]: c for c in report["components"]}
    assert components["torch"]["available"] is True
    assert components["torch"]["version"] == report["torch_version"] == torch.__version__
    assert report["cuda_available"] == torch.cuda.is_available()
    assert set(components) == {"torch", "cuda", "mps", "onnx", "onnxruntime", "onnxscript",
                               "coremltools", "coreml-predict", "tensorrt", "triton", "cupy"}
    ort_installed = importlib.util.find_spec("onnxruntime") is not None
    assert components["onnxruntime"]["available"] is ort_installed
    if ort_installed:
        assert "CPUExecutionProvider" in report["onnxruntime_providers"]
    if platform.system() != "Darwin":
        assert report["coreml_can_predict"] is False
        assert "MIL emulator" in components["coreml-predict"]["note"]


def test_doctor_table():
    result = invoke("doctor")
    assert result.exit_code == 0, result.output
    assert torch.__version__ in result.stdout
    for name in ("torch", "onnxruntime", "coremltools", "tensorrt", "triton"):
        assert f"│ {name} " in result.stdout


# The real entry point (`python -m gatex` runs gatex.cli.main), in a fresh process.

def test_entry_point_unknown_op_is_one_stderr_line_and_exit_2(run_python):
    proc = run_python("-m", "gatex", "units", "NoSuchOp")
    assert proc.returncode == 2
    assert proc.stdout == ""
    assert proc.stderr.splitlines() == [
        "error: unknown op 'NoSuchOp' (`gatex units` lists them)"]


# A throwaway command registered in the child process only: main() must map each GatexError to
# its exit code, and anything else to exit 1 with a one-line "bug" message.
RAISING_COMMAND = textwrap.dedent("""
    import sys
    from gatex import errors
    from gatex.cli import app, main

    @app.command("boom")
    def boom(kind: str) -> None:
        if kind == "bug":
            raise ZeroDivisionError("the divisor was zero")
        raise getattr(errors, kind)(f"{kind} says what went wrong\\nand what to do")

    main(sys.argv[1:])
""")


@pytest.mark.parametrize("kind, code", [("BackendUnavailableError", 3), ("CheckFailedError", 1)])
def test_main_maps_gatex_errors_to_their_exit_codes(run_python, kind, code):
    proc = run_python("-c", RAISING_COMMAND, "boom", kind)
    assert proc.returncode == code
    assert proc.stderr.splitlines() == [f"error: {kind} says what went wrong and what to do"]


def test_main_reports_a_bug_in_one_line_and_a_traceback_only_with_gatex_debug(run_python):
    proc = run_python("-c", RAISING_COMMAND, "boom", "bug")
    assert proc.returncode == 1
    (line,) = proc.stderr.splitlines()
    assert "bug in gatex" in line and "ZeroDivisionError: the divisor was zero" in line
    assert "GATEX_DEBUG=1" in line

    debug = run_python("-c", RAISING_COMMAND, "boom", "bug", env={"GATEX_DEBUG": "1"})
    assert debug.returncode == 1
    assert "Traceback (most recent call last)" in debug.stderr
    assert debug.stderr.splitlines()[-1] == line
