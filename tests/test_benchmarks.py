"""The benchmark scripts still run: onnx_ops.py at a tiny size end to end with its bad-input
handling, and conv_gates.py at a tiny size."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("onnxruntime")

REPO_ROOT = Path(__file__).resolve().parent.parent
SCRIPT = REPO_ROOT / "benchmarks" / "onnx_ops.py"
TINY = ["--ops", "GoLU,paGLU", "--size", "4096", "--repeats", "3", "--warmup", "1",
        "--block-batch", "2", "--block-seq", "8", "--block-dim", "32", "--block-repeats", "3"]


def _load_script():
    spec = importlib.util.spec_from_file_location("onnx_ops_bench", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """One run of the script as a user runs it (a fresh process), shared by the tests below."""
    out = tmp_path_factory.mktemp("bench")
    env = {k: v for k, v in os.environ.items() if k != "GATEX_DEBUG"}
    env["PYTHONPATH"] = str(REPO_ROOT)
    proc = subprocess.run([sys.executable, str(SCRIPT), *TINY, "--json", str(out / "r.json"),
                           "--markdown", str(out / "r.md")], cwd=REPO_ROOT, env=env, text=True,
                          capture_output=True, timeout=300, stdin=subprocess.DEVNULL, check=False)
    return proc, out


def test_tiny_run_prints_every_ratio(tiny_run) -> None:
    proc, _ = tiny_run
    assert proc.returncode == 0, proc.stderr
    ratio = r"\d+\.\d\dx \[\d+\.\d\d-\d+\.\d\d\]"
    for op in ("GoLU", "paGLU"):
        row = next(line for line in proc.stdout.splitlines() if re.search(rf"\b{op}\b", line))
        # portable/naive, inline/naive, portable/Gelu, inline/Gelu, each with its IQR
        assert len(re.findall(ratio, row)) == 4, row
    block = next(line for line in proc.stdout.splitlines() if "pre-LN" in line)
    assert len(re.findall(ratio, block)) == 1, block
    assert "intra_op_num_threads=2" in proc.stdout
    assert "Traceback" not in proc.stderr


def test_json_ratios_are_the_medians_of_paired_rounds(tiny_run) -> None:
    proc, out = tiny_run
    assert proc.returncode == 0, proc.stderr
    report = json.loads((out / "r.json").read_text())
    assert report["settings"]["threads"] == 2 and report["settings"]["size"] == 4096
    assert [o["op"] for o in report["ops"]] == ["GoLU", "paGLU"]
    for o in report["ops"]:
        times = {k: np.asarray(v) for k, v in o["times_s"].items()}
        assert all(len(t) == 3 and (t > 0).all() for t in times.values())
        for key, value in o["ratio"].items():
            num, den = key.split("/")
            paired = times[num] / times[den]
            assert value["median"] == pytest.approx(float(np.median(paired)), rel=1e-12)
            assert value["p25"] <= value["median"] <= value["p75"]
        assert o["median_ms"]["gelu"] == pytest.approx(np.median(times["gelu"]) * 1e3)
        worst_naive = max(o["ratio"][f"{f}/naive"]["median"] for f in ("portable", "inline"))
        target = o["targets"]["not_slower_than_naive"]
        assert target["ratio"] == worst_naive
        if target["same_kernels"]:   # identical kernels: the ratio is noise, the verdict says so
            assert o["ort_nodes"]["portable"] == o["ort_nodes"]["naive"]
            assert target["verdict"] == "met (same kernels)"
        else:
            assert (target["verdict"] == "met") == (worst_naive <= 1.0)
        # every variant computed the op: errors against float64 are within the fp32 tolerance
        assert all(0 <= e < 1e-4 for e in o["max_abs_error"].values())
    golu = report["ops"][0]["ort_nodes"]
    # what onnxruntime runs for gatex's GoLU: two Exp passes, no more nodes than the naive export
    assert golu["portable"].count("Exp") == 2
    assert len(golu["portable"]) <= len(golu["naive"])
    block = report["block"]
    assert block["shape"] == [2, 8, 32] and block["activation_elements"] == 2 * 8 * 128
    paired = np.asarray(block["times_s"]["golu"]) / np.asarray(block["times_s"]["gelu"])
    assert block["ratio"]["golu/gelu"]["median"] == pytest.approx(float(np.median(paired)))
    assert max(block["max_abs_error"].values()) < 1e-3


def test_markdown_has_the_tables(tiny_run) -> None:
    proc, out = tiny_run
    assert proc.returncode == 0, proc.stderr
    text = (out / "r.md").read_text()
    assert "| op | portable ms |" in text and "| block | GoLU ms |" in text
    assert re.search(r"\| GoLU \|.*\d+\.\d\dx", text)


@pytest.mark.parametrize("args, message", [
    (["--ops", "NoSuchOp"], "unknown op"),
    (["--ops", "GatedDense"], "not an elementwise op"),
    (["--size", "0"], "--size must be >= 1"),
    (["--ops", "none", "--no-block"], "nothing to measure"),
    (["--block-dim", "30"], "multiple of 4"),
    (["--json", "/nonexistent-dir/r.json"], "does not exist"),
])
def test_bad_input_is_one_line_and_exit_2(args, message, capsys) -> None:
    bench = _load_script()
    assert bench.main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and message in err[0], err


def test_verdicts() -> None:
    bench = _load_script()
    assert bench.verdict(0.97, 1.0) == "met"
    assert bench.verdict(1.0, 1.0) == "met"
    assert bench.verdict(1.15, 1.0) == "missed by 15%"
    assert bench.verdict(3.6, 3.0) == "missed by 20%"


# -- benchmarks/conv_gates.py (issue 7): the CG/PG price against plain convolutions ---------------

def test_conv_gates_tiny_run_checks_outputs_and_reports_paired_ratios(tmp_path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "GATEX_DEBUG"}
    env["PYTHONPATH"] = str(REPO_ROOT)
    out = tmp_path / "cg.json"
    proc = subprocess.run([sys.executable, str(REPO_ROOT / "benchmarks" / "conv_gates.py"),
                           "--batches", "1", "--sizes", "8", "--repeats", "3", "--inner", "1",
                           "--json", str(out)], cwd=REPO_ROOT, env=env, text=True,
                          capture_output=True, timeout=300, stdin=subprocess.DEVNULL, check=False)
    assert proc.returncode == 0, proc.stderr
    data = json.loads(out.read_text())
    (case,) = data["cases"]
    assert (case["batch"], case["size"]) == (1, 8)
    # every exported model was checked against its torch model before it was timed
    assert set(case["max_abs_diff"]) == {"CG", "PG", "plain-CG", "plain-PG"}
    assert max(case["max_abs_diff"].values()) < 1e-4
    for gate in ("CG", "PG"):
        ratio = case[gate]["ratio_median"]
        lo, hi = case[gate]["ratio_iqr"]
        assert lo <= ratio <= hi and ratio > 0
        printed = re.search(rf"{gate} [\d.]+ ms vs plain [\d.]+ ms = ([\d.]+)x", proc.stdout)
        assert printed and float(printed.group(1)) == pytest.approx(ratio, abs=0.006)
    # the gated networks run more convolution kernels than the plain ones (the dense lowering)
    kernels = data["conv_kernels"]
    assert kernels["CG"]["conv"] > kernels["plain-CG"]["conv"]
    assert kernels["PG"]["nodes"] > kernels["plain-PG"]["nodes"]


# -- benchmarks/zilu_sigma_forms.py: ZiLU's exact forms against the 4-pass form they replaced ----

def test_zilu_sigma_forms_tiny_run_prints_the_three_ratios() -> None:
    env = {k: v for k, v in os.environ.items() if k != "GATEX_DEBUG"}
    env["PYTHONPATH"] = str(REPO_ROOT)
    script = REPO_ROOT / "benchmarks" / "zilu_sigma_forms.py"
    proc = subprocess.run([sys.executable, str(script), "--size", "4096", "--repeats", "3",
                           "--warmup", "1"], cwd=REPO_ROOT, env=env, text=True,
                          capture_output=True, timeout=300, stdin=subprocess.DEVNULL, check=False)
    assert proc.returncode == 0, proc.stderr      # every form agreed with torch before timing
    for pair in ("portable/inline", "portable/hardsigmoid", "inline/hardsigmoid"):
        match = re.search(rf"{pair}: ([\d.]+)x \[([\d.]+)-([\d.]+)\]", proc.stdout)
        assert match, proc.stdout
        median, lo, hi = map(float, match.groups())
        assert 0 < lo <= median <= hi
    bad = subprocess.run([sys.executable, str(script), "--size", "0"], cwd=REPO_ROOT, env=env,
                         text=True, capture_output=True, timeout=120, check=False)
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1


def test_zilu_gelu_checks_every_form_and_names_the_best_exact_one(tmp_path) -> None:
    out = tmp_path / "z.json"
    proc = _script("zilu_gelu.py", "--sizes", "4096", "--repeats", "2", "--warmup", "0",
                   "--json", str(out), timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    (size,) = json.loads(out.read_text())["sizes"]
    forms = {r["form"]: r for r in size["forms"]}
    assert set(forms) == {"gatex-inline", "gatex-portable", "prelu", "no-clip", "hardsigmoid"}
    # gatex's own forms keep the tails and the infinities; the cheaper ones lose them, and the
    # check says where
    assert forms["gatex-inline"]["exact"] and forms["gatex-portable"]["exact"]
    assert forms["prelu"]["exact"]
    assert not forms["no-clip"]["exact"] and "inf" in forms["no-clip"]["miss"]
    assert not forms["hardsigmoid"]["exact"] and forms["hardsigmoid"]["tails_max_rel"] > 1e-3
    assert forms["gatex-inline"]["tails_max_rel"] < 1e-6
    assert forms["gatex-inline"]["kernels"].count("Atan") == 1
    assert size["best_exact"] in ("gatex-inline", "gatex-portable", "prelu")
    assert all(r["x_gelu"]["median"] > 0 and r["predicted_x_gelu"] > 0 for r in forms.values())
    assert f"best exact form: {size['best_exact']}" in proc.stdout
    bad = _script("zilu_gelu.py", "--sizes", "4k", timeout=120)
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1


# -- benchmarks/decisions_resnet20.py (issue 15), fused_projections.py and export_speed.py
# (issue 16): each runs as a user runs it, in a fresh process -------------------------------------

def _script(name: str, *args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "GATEX_DEBUG"}
    env["PYTHONPATH"] = str(REPO_ROOT)
    return subprocess.run([sys.executable, str(REPO_ROOT / "benchmarks" / name), *args],
                          cwd=REPO_ROOT, env=env, text=True, capture_output=True, timeout=timeout,
                          check=False)


def test_decisions_resnet20_tiny_run_reports_flips_errors_and_the_time_ratio(tmp_path) -> None:
    out = tmp_path / "d.json"
    proc = _script("decisions_resnet20.py", "--models", "PG", "--targets", "onnx-fp32",
                   "--batch", "2", "--rounds", "1", "--max-ratio", "100", "--json", str(out))
    assert proc.returncode == 0, proc.stderr[-2000:]
    (row,) = json.loads(out.read_text())
    assert row["forced"] and row["forced_passed"], row
    assert row["forced_max_abs"] < 1e-5 and row["worst_ratio"] <= 1
    assert len(row["layers"]) == 18 * 3 and row["ratio"] > 0
    assert "resnet20-PG on onnx-fp32 (batch 2)" in proc.stdout
    assert "forced/plain time" in proc.stdout
    bad = _script("decisions_resnet20.py", "--models", "XX", timeout=120)
    assert bad.returncode == 2 and bad.stderr.startswith("error: unknown models")


def test_fused_projections_runs_and_checks_outputs_equal(tmp_path) -> None:
    out = tmp_path / "f.json"
    proc = _script("fused_projections.py", "--rounds", "1", "--json", str(out), timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    rows = json.loads(out.read_text())
    assert len(rows) == 5 and all(r["max_abs_diff"] == 0 and r["speedup"] > 0 for r in rows)


@pytest.mark.slow
def test_export_speed_tiny_run_prints_the_ratios(tmp_path) -> None:
    out = tmp_path / "e.json"
    proc = _script("export_speed.py", "--models", "resnet20-CG", "--rounds", "1", "--warmup",
                   "0", "--json", str(out))
    assert proc.returncode == 0, proc.stderr[-2000:]
    (row,) = json.loads(out.read_text())
    assert set(row["ratios"]) == {"export", "export+check"} and row["seconds"]["plain"] > 0
    assert "trace" in row["stages"]


def test_gpu_check_script_records_every_step_and_skips_what_needs_a_gpu(tmp_path) -> None:
    """benchmarks/gpu_check.sh on a CPU machine: every GPU step skipped with its reason, one
    JSON written (the budget here is too small for the harness, which is skipped as such)."""
    import torch

    result = tmp_path / "gpu.json"
    env = {**os.environ, "PYTHON": sys.executable, "GPU_CHECK_INSTALL": "0",
           "GPU_CHECK_BUDGET_S": "5"}
    proc = subprocess.run(["bash", str(REPO_ROOT / "benchmarks" / "gpu_check.sh"), str(result)],
                          cwd=REPO_ROOT, env=env, text=True, capture_output=True, timeout=120,
                          check=False)
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(result.read_text())
    assert doc["schema"] == "gatex.gpu-check/1"
    assert list(doc["steps"]) == ["install", "gpu_tests", "trt_kernels", "bench_cuda",
                                  "bench_harness"]
    if not torch.cuda.is_available():
        for name in ("gpu_tests", "trt_kernels", "bench_cuda"):
            assert doc["steps"][name]["status"] == "skipped"
            assert "no CUDA device" in doc["steps"][name]["tail"]
    assert "budget is spent" in doc["steps"]["bench_harness"]["tail"]


@pytest.mark.slow
def test_coreml_speed_tiny_run_prints_the_ratios_and_the_emulator(tmp_path) -> None:
    pytest.importorskip("coremltools")
    out = tmp_path / "c.json"
    proc = _script("coreml_speed.py", "--models", "gru-PaGRUCell", "--rounds", "1",
                   "--warmup", "0", "--json", str(out))
    assert proc.returncode == 0, proc.stderr[-2000:]
    (row,) = json.loads(out.read_text())
    assert set(row["ratios"]) == {"export", "export+check"} and row["emulator"]["ratio"] > 0
