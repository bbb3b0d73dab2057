"""``gatex bench`` on the command line: bad input is one line and exit 2 before anything runs, a
backend that is not here exit 3, a failed backend or a regression exit 1 naming it (reports
written first). Most cases measure nothing; one runs the real command end to end."""

from __future__ import annotations

import importlib.util
import json
import platform
import sys

import pytest
from typer.testing import CliRunner

from gatex.cli import app
from gatex.benchmarking import run as bench_module
from gatex.benchmarking.schema import SCHEMA, BenchResult, add_relative, compare_baseline
from cli_checks import one_error_line

WIDE = {"COLUMNS": "200"}


def invoke(*args: str, env: dict[str, str] | None = None):
    return CliRunner().invoke(app, list(args), env={**WIDE, **(env or {})})


@pytest.fixture
def fake_onnx(tmp_path):
    # bad-input checks run on names and suffixes before any file is read
    path = tmp_path / "model.onnx"
    path.write_bytes(b"not really onnx")
    return path


def test_help_documents_options_and_exit_codes():
    result = invoke("bench", "--help")
    assert result.exit_code == 0
    for text in ("--backend", "--iterations", "--duration", "--baseline", "--max-regression",
                 "--plot", "--markdown", "--json", "--threads", "--batch-size", "--warmup",
                 "--repeat",
                 "3 backend unavailable"):
        assert text in result.stdout


@pytest.mark.parametrize("args, message", [
    (["--unit", "GoLU", "--backend", "tflite"], "unknown backend 'tflite'"),
    (["--unit", "GoLU", "--iterations", "0"], "--iterations must be at least 1; got 0"),
    (["--unit", "GoLU", "--iterations", "-5"], "--iterations must be at least 1; got -5"),
    (["--unit", "GoLU", "--duration", "0"], "--duration must be a positive"),
    (["--unit", "GoLU", "--iterations", "5", "--duration", "1"], "not both"),
    (["--unit", "GoLU", "--warmup", "-1"], "--warmup must be 0 or more"),
    (["--unit", "GoLU", "--batch-size", "0"], "--batch-size must be at least 1"),
    (["--unit", "GoLU", "--threads", "0"], "--threads must be at least 1"),
    (["--unit", "NoSuchUnit", "--backend", "torch"], "no zoo model for unit 'NoSuchUnit'"),
    (["--backend", "torch"], "give an ARTIFACT, --unit NAME or --model REF"),
    (["missing.onnx"], "artifact missing.onnx does not exist"),
    (["model.txt"], "gatex bench runs .onnx"),
    (["--unit", "GoLU", "--max-regression", "5"], "--max-regression needs --baseline"),
    (["--unit", "GoLU", "--baseline", "b.json", "--max-regression", "-1"],
     "--max-regression must be a percentage >= 0"),
    (["--model", "nets.py:build"], "--model needs its inputs"),
    (["--unit", "GoLU", "--input-shape", "1,64"], "go with --model"),
    (["--unit", "GoLU", "--device", "tpu"], "unknown device 'tpu'"),
    (["--unit", "GoLU", "--repeat", "0"], "--repeat must be at least 1; got 0"),
])
def test_bad_input_is_one_line_and_exit_2(args, message, tmp_path):
    json_out = tmp_path / "out.json"
    result = invoke("bench", *args, "--json", str(json_out))
    assert result.exit_code == 2, result.output
    assert message in one_error_line(result)
    assert not json_out.exists()


def test_an_artifact_the_backend_cannot_run_is_bad_input(fake_onnx):
    result = invoke("bench", str(fake_onnx), "--backend", "coreml")
    assert result.exit_code == 2
    assert "backend coreml cannot run model.onnx: coreml runs .mlpackage, .mlmodel" in \
        one_error_line(result)
    result = invoke("bench", str(fake_onnx), "--backend", "torch")
    assert result.exit_code == 2 and "add ort" in one_error_line(result)


def test_baseline_of_another_schema_is_bad_input(tmp_path):
    parity = tmp_path / "parity.json"
    parity.write_text(json.dumps({"schema": "gatex.parity/1", "passed": True, "results": []}))
    result = invoke("bench", "--unit", "GoLU", "--baseline", str(parity))
    assert result.exit_code == 2
    assert "has schema 'gatex.parity/1', not 'gatex.bench/1'" in one_error_line(result)


@pytest.mark.skipif(importlib.util.find_spec("tensorrt") is not None,
                    reason="TensorRT is installed here")
def test_trt_asked_for_by_name_is_exit_3():
    result = invoke("bench", "--unit", "GoLU", "--backend", "torch,trt")
    assert result.exit_code == 3
    assert "backend trt is not available: TensorRT is not installed" in one_error_line(result)


@pytest.mark.skipif(platform.system() == "Darwin", reason="CoreML predicts on macOS")
def test_coreml_asked_for_by_name_off_macos_is_exit_3(tmp_path):
    package = tmp_path / "m.mlpackage"
    package.mkdir()
    result = invoke("bench", str(package), "--backend", "coreml")
    assert result.exit_code == 3
    line = one_error_line(result)
    assert "backend coreml is not available" in line and "emulat" in line


def test_plot_without_matplotlib_is_exit_3(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "matplotlib", None)   # find_spec now says: not installed
    result = invoke("bench", "--unit", "GoLU", "--plot", str(tmp_path / "p.png"))
    assert result.exit_code == 3
    assert "--plot needs matplotlib" in one_error_line(result)
    assert "gatex[plot]" in result.stderr


# -- the gate, on a crafted result (nothing measured) ---------------------------------------------

def crafted(torch_ms: float, ort_ms: float, baseline: dict | None = None, *,
            ort_status: str = "ok") -> BenchResult:
    rows = [bench_module.row_from_worker("torch", None, "torch", {
                "status": "ok", "samples_ns": [int(torch_ms * 1e6)] * 3}, 1),
            bench_module.row_from_worker("ort", "m.onnx", "ort", {
                "status": ort_status, "reason": "the worker process crashed (killed by SIGSEGV)",
                "samples_ns": [int(ort_ms * 1e6)] * 3}, 1)]
    add_relative(rows)
    comparison = compare_baseline(rows, baseline, 10.0, file="base.json") if baseline else None
    return BenchResult({"cpu": "c", "cores_logical": 1, "cores_physical": 1, "cores_usable": 1,
                        "os": "o", "machine": "m", "python": "3"}, {"gatex": "0"},
                       {"batch_size": 1, "warmup": 0, "iterations": 3, "duration_s": None,
                        "unit": "GoLU", "model": None, "artifacts": []}, rows, comparison)


def test_regression_past_the_baseline_exits_1_naming_the_backend(monkeypatch, tmp_path):
    base = {"schema": SCHEMA, "backends": [
        {"id": "torch", "status": "ok", "latency_ms": {"p50": 2.0}},
        {"id": "ort:m.onnx", "status": "ok", "latency_ms": {"p50": 0.5}}]}
    monkeypatch.setattr(bench_module, "bench", lambda *a, **k: crafted(2.1, 0.6, base))
    out, md = tmp_path / "r.json", tmp_path / "r.md"
    result = invoke("bench", "--unit", "GoLU", "--json", str(out), "--markdown", str(md))
    assert result.exit_code == 1
    line = one_error_line(result)
    assert "more than 10 %" in line
    assert "ort:m.onnx p50 0.6 ms vs baseline 0.5 ms (+20.0 %)" in line
    assert "torch p50" not in line                # +5 % is within the allowed 10 %
    doc = json.loads(out.read_text())          # written before the verdict
    assert doc["passed"] is False
    assert [r["id"] for r in doc["baseline"]["regressions"]] == ["ort:m.onnx"]
    assert "**Regressions**" in md.read_text()


def test_within_the_allowed_regression_exits_0(monkeypatch):
    base = {"schema": SCHEMA, "backends": [
        {"id": "ort:m.onnx", "status": "ok", "latency_ms": {"p50": 0.5}}]}
    monkeypatch.setattr(bench_module, "bench", lambda *a, **k: crafted(2.0, 0.54, base))
    result = invoke("bench", "--unit", "GoLU")
    assert result.exit_code == 0, result.output
    assert "no backend slower than 10 %" in result.stdout
    # --wide, not a terminal (a CI log): every column, not folded into 80 columns
    wide = invoke("bench", "--unit", "GoLU", "--wide")
    header = next(line for line in wide.stdout.splitlines() if "p50 ms" in line)
    assert "peak RSS MiB" in header and len(header) > 80


def test_the_default_table_fits_80_columns_with_every_number_whole(monkeypatch):
    monkeypatch.setattr(bench_module, "bench", lambda *a, **k: crafted(2.1234, 0.5678))
    for env in ({"COLUMNS": "80"}, {}):   # a terminal of 80 columns, and a piped log
        result = invoke("bench", "--unit", "GoLU", env=env)
        assert result.exit_code == 0, result.output
        lines = result.stdout.splitlines()
        assert max(len(line.rstrip()) for line in lines) <= 80, result.stdout
        assert "…" not in result.stdout
        rows = {line.split()[0]: line.split() for line in lines
                if line.strip().startswith(("torch ", "ort "))}
        assert rows["torch"][1:4] == ["2.12", "2.12", "2.12"]        # p50 p90 p99, whole
        assert rows["ort"][1] == "0.568" and rows["ort"][-1] == "0.267"  # x torch


def test_failed_backend_exits_1_naming_it(monkeypatch):
    monkeypatch.setattr(bench_module, "bench",
                        lambda *a, **k: crafted(2.0, 0.5, ort_status="error"))
    result = invoke("bench", "--unit", "GoLU")
    assert result.exit_code == 1
    assert "bench: backend ort:m.onnx failed: the worker process crashed (killed by SIGSEGV)" \
        in one_error_line(result)


# -- end to end: --unit exports to a temporary ONNX file, every backend in its own process --------

@pytest.mark.slow
def test_unit_end_to_end_lists_every_backend(tmp_path):
    out = tmp_path / "bench.json"
    result = invoke("bench", "--unit", "GoLU", "--backend", "all", "--iterations", "10",
                    "--warmup", "2", "--batch-size", "4", "--json", str(out))
    assert result.exit_code == 0, result.output
    doc = json.loads(out.read_text())
    rows = {r["backend"]: r for r in doc["backends"]}
    assert list(rows) == ["torch", "ort", "openvino", "coreml", "trt"]
    assert rows["torch"]["status"] == rows["ort"]["status"] == "ok"
    assert rows["ort"]["artifact"] == "GoLU-portable-fp32.onnx"
    assert rows["ort"]["relative_to_reference"]["p50"] == pytest.approx(
        rows["ort"]["latency_ms"]["p50"] / rows["torch"]["latency_ms"]["p50"])
    assert rows["torch"]["iterations"] == 10 and doc["settings"]["batch_size"] == 4
    for name in ("coreml", "trt"):
        if rows[name]["status"] == "unavailable":   # listed with the reason, not dropped
            assert f"{name}: unavailable: {rows[name]['reason']}" in result.stdout
    assert "torch (eager, CPU)" in result.stdout and "onnxruntime" in result.stdout


def test_bench_refuses_a_plugin_onnx_in_one_line(tmp_path):
    from gatex.pipeline import export

    path = export("GoLU", to="onnx", flavor="plugin", out_dir=tmp_path, check=False).path
    result = CliRunner().invoke(app, ["bench", str(path), "--backend", "ort"])
    assert result.exit_code == 2
    assert "holds TensorRT plugin nodes" in one_error_line(result)
