"""gatex bench: statistics, ratios, baseline gate and JSON schema on known numbers, then two real
runs (each backend in its own process): one measured end to end, one whose worker crashes."""

from __future__ import annotations

import json
import math
import os
import platform
import sys

import numpy as np
import pytest

import gatex
from gatex.errors import BadInputError
from gatex.benchmarking import report as bench_report
from gatex.benchmarking.plan import parse_backends, unavailable_reason
from gatex.benchmarking.run import row_from_worker, run_worker
from gatex.benchmarking.schema import (
    BACKENDS,
    CV_WARN_THRESHOLD,
    REPEAT_SPREAD_WARN,
    SCHEMA,
    BackendRow,
    BenchResult,
    add_relative,
    compare_baseline,
    read_baseline,
)
from gatex.benchmarking.stats import latency_stats

# The schema (module docstring of gatex.benchmarking.schema), written out: a change must be
# deliberate.
TOP_KEYS = {"schema", "gatex_version", "created", "passed", "machine", "versions", "settings",
            "backends", "warnings", "baseline"}
MACHINE_KEYS = {"cpu", "cores_logical", "cores_physical", "cores_usable", "os", "machine",
                "python"}
VERSION_KEYS = {"gatex", "python", "numpy", "torch", "onnxruntime", "onnx", "coremltools",
                "tensorrt"}
SETTINGS_KEYS = {"batch_size", "warmup", "iterations", "duration_s", "threads", "device",
                 "cpus", "repeat", "timeout_s", "cv_warn_threshold", "reference", "unit",
                 "model", "artifacts", "inputs"}
ROW_KEYS = {"id", "backend", "label", "artifact", "status", "reason", "emulated", "threads",
            "model_size_bytes", "model_file", "load_ms", "first_run_ms", "iterations",
            "latency_ms", "cv", "unstable", "repeats", "unsteady", "throughput_sps",
            "device_latency_ms", "memory", "relative_to_reference", "notes"}
LATENCY_KEYS = {"min", "mean", "p50", "p90", "p99", "max", "std"}
MEMORY_KEYS = {"method", "baseline_rss_bytes", "peak_rss_bytes", "peak_above_baseline_bytes",
               "timed_growth_bytes", "peak_device_bytes"}
BASELINE_KEYS = {"file", "max_regression_pct", "compared", "missing", "regressions", "notes"}
REGRESSION_KEYS = {"id", "p50_ms", "baseline_p50_ms", "change_pct"}
REPEATS_KEYS = {"count", "p50_ms", "spread"}


def measured(backend: str, samples_ms: list[float], *, artifact: str | None = None,
             batch: int = 1) -> BackendRow:
    """A row as a worker would report it, from per-run times in milliseconds."""
    out = {"status": "ok", "label": backend, "samples_ns": [int(round(s * 1e6))
                                                           for s in samples_ms]}
    return row_from_worker(backend, artifact, backend, out, batch)


def result_of(rows: list[BackendRow]) -> BenchResult:
    add_relative(rows)
    return BenchResult({"cpu": "test cpu", "cores_logical": 2, "cores_physical": 2,
                        "cores_usable": 2, "os": "test", "machine": "x86_64",
                        "python": "3"}, {"gatex": gatex.__version__}, {
        "batch_size": 1, "warmup": 0, "iterations": 3, "duration_s": None, "artifacts": [],
        "unit": "GoLU", "model": None}, rows)


# -- statistics on known samples ------------------------------------------------------------------

def test_latency_stats_of_1_to_100_ms():
    stats = latency_stats([i * 1_000_000 for i in range(1, 101)])
    # linear interpolation between closest ranks: p = 1 + (n - 1) q
    assert (stats.count, stats.min, stats.max) == (100, 1.0, 100.0)
    assert stats.mean == pytest.approx(50.5)
    assert stats.p50 == pytest.approx(50.5)
    assert stats.p90 == pytest.approx(90.1)
    assert stats.p99 == pytest.approx(99.01)
    # sample variance of 1..n is n (n + 1) / 12
    assert stats.std == pytest.approx(math.sqrt(100 * 101 / 12))
    assert stats.cv == pytest.approx(math.sqrt(100 * 101 / 12) / 50.5)


def test_latency_stats_skewed_sample_and_single_run():
    stats = latency_stats([1e6, 1e6, 1e6, 1e6, 11e6])   # one 11 ms outlier among 1 ms runs
    assert stats.p50 == 1.0 and stats.mean == pytest.approx(3.0)
    assert stats.p90 == pytest.approx(7.0)              # rank 4.6: 1 + 0.6 * (11 - 1)
    assert stats.std == pytest.approx(math.sqrt(80 / 4))
    one = latency_stats([2_500_000])
    assert (one.min, one.p50, one.p99, one.max, one.std, one.cv) == (2.5, 2.5, 2.5, 2.5, 0.0, 0.0)
    with pytest.raises(ValueError):
        latency_stats([])


def test_unstable_above_the_cv_threshold_only():
    assert CV_WARN_THRESHOLD == 0.10
    steady = measured("torch", [0.91, 1.0, 1.09])        # cv 0.09: under the threshold
    noisy = measured("ort", [0.89, 1.0, 1.11], artifact="m.onnx")  # cv 0.11: over it
    assert steady.latency.cv == pytest.approx(0.09) and not steady.unstable
    assert noisy.latency.cv == pytest.approx(0.11) and noisy.unstable
    warnings = result_of([steady, noisy]).warnings
    assert len(warnings) == 1 and warnings[0].startswith("ort:m.onnx") and "10%" in warnings[0]


def test_throughput_and_ratios_to_the_torch_row():
    torch_row = measured("torch", [2.0, 2.0, 2.0, 2.0], batch=8)
    ort_row = measured("ort", [0.5, 0.5, 0.5, 0.5], artifact="m.onnx", batch=8)
    failed = BackendRow("coreml", "coreml", status="error", reason="boom")
    add_relative([torch_row, ort_row, failed])
    assert torch_row.throughput_sps == pytest.approx(8 / 2e-3)       # 4000 samples/s
    assert ort_row.throughput_sps == pytest.approx(8 / 0.5e-3)
    assert torch_row.relative == {"p50": 1.0, "throughput": 1.0}
    assert ort_row.relative == pytest.approx({"p50": 0.25, "throughput": 4.0})
    assert failed.relative is None
    alone = measured("ort", [1.0], artifact="m.onnx")
    add_relative([alone])                       # no torch row: nothing to be relative to
    assert alone.relative is None


# -- --repeat: several processes per backend, pooled, their p50 spread flagged ---------------

def worker_out(samples_ms: list[float], **extra) -> dict:
    return {"status": "ok", "label": "ort", "samples_ns": [int(round(s * 1e6))
                                                          for s in samples_ms], **extra}


def test_repeats_pool_their_runs_and_keep_each_process_p50():
    outs = [worker_out([1.0, 1.0, 1.2], load_ms=10.0, first_run_ms=2.0,
                       memory={"peak_above_baseline_bytes": 5}, notes=["emulated"]),
            worker_out([1.02, 1.02, 1.4], load_ms=30.0, first_run_ms=4.0,
                       memory={"peak_above_baseline_bytes": 9}, notes=["emulated"]),
            worker_out([1.04, 1.04, 0.9], load_ms=20.0, first_run_ms=3.0,
                       memory={"peak_above_baseline_bytes": 7}, notes=["emulated"])]
    row = row_from_worker("ort", "m.onnx", "ort", outs, 4)
    assert row.latency == latency_stats([s for o in outs for s in o["samples_ns"]])
    assert row.latency.count == 9 and len(row.samples_ns) == 9
    assert row.repeat_p50s == pytest.approx([1.0, 1.02, 1.04])
    assert row.repeat_spread == pytest.approx(0.04)    # (1.04 - 1.0) / 1.0: under 5 %
    assert not row.unsteady
    assert (row.load_ms, row.first_run_ms) == (20.0, 3.0)      # medians over the processes
    assert row.memory == {"peak_above_baseline_bytes": 9}     # the largest peak
    assert row.notes == ["emulated"]                           # once, not once a process
    assert row.throughput_sps == pytest.approx(4 / (row.latency.mean / 1e3))
    doc = row.as_dict()
    assert set(doc["repeats"]) == REPEATS_KEYS and doc["repeats"]["count"] == 3
    assert doc["repeats"]["p50_ms"] == pytest.approx([1.0, 1.02, 1.04])
    assert doc["unsteady"] is False
    single = row_from_worker("ort", "m.onnx", "ort", outs[0], 4)   # one process: no repeats
    assert single.repeat_p50s is None and single.repeat_spread is None
    assert single.as_dict()["repeats"] is None and not single.unsteady


def test_a_p50_that_moves_more_than_5_percent_between_processes_is_flagged():
    assert REPEAT_SPREAD_WARN == 0.05
    steady = row_from_worker("torch", None, "torch",
                             [worker_out([2.0] * 3), worker_out([2.09] * 3)], 1)  # 4.5 %
    moved = row_from_worker("ort", "m.onnx", "ort",
                            [worker_out([1.0] * 3), worker_out([2.0] * 3),
                             worker_out([1.1] * 3)], 1)                           # 100 %
    assert steady.repeat_spread == pytest.approx(0.045) and not steady.unsteady
    assert moved.repeat_spread == pytest.approx(1.0) and moved.unsteady
    warnings = [w for w in result_of([steady, moved]).warnings if "processes" in w]
    assert moved.unstable and not steady.unstable     # the pooled runs' cv says so too
    assert len(warnings) == 1 and warnings[0].startswith("ort:m.onnx: p50 differs by 100% "
                                                         "between its 3 processes (1 to 2 ms")
    # a regression on an unsteady row says the machine may be part of it
    verdict = compare_baseline([steady, moved], baseline_doc({"torch": 2.0, "ort:m.onnx": 1.0}),
                               10.0)
    assert [r.id for r in verdict.regressions] == ["ort:m.onnx"]
    assert any("moved 100% between its own processes" in n for n in verdict.notes)


def test_a_failed_repeat_fails_the_row_naming_the_process():
    outs = [worker_out([1.0]), {"status": "error", "reason": "killed by SIGABRT"}]
    row = row_from_worker("ort", "m.onnx", "ort", outs, 1)
    assert row.status == "error" and row.reason == "process 2: killed by SIGABRT"
    assert row.latency is None and row.as_dict()["repeats"] is None


def test_repeat_table_and_markdown_show_the_spread_column():
    rows = [row_from_worker("torch", None, "torch", [worker_out([2.0]), worker_out([2.0])], 1),
            row_from_worker("ort", "m.onnx", "ort", [worker_out([1.0]), worker_out([1.5])], 1)]
    result = result_of(rows)
    assert bench_report.SPREAD_COLUMN not in bench_report.markdown(result)   # repeat 1
    result.settings["repeat"] = 2
    text = bench_report.markdown(result)
    assert "| cv | p50 spread | samples/s |" in text
    assert "| 0.0% |" in text and "| 50.0% |" in text
    assert "in each of 2 processes, interleaved" in text
    assert bench_report.SPREAD_COLUMN in [c.header for c in bench_report.table(result).columns]


def test_repeat_runs_every_backend_once_per_round_interleaved():
    """--repeat 2: torch, ort, torch, ort (each a fresh worker), pooled into one row each."""
    seen: list[tuple[str, str]] = []

    def on_progress(row_id: str, phase: str, done: int, total: int) -> None:
        if phase.startswith("warmup") and (row_id, phase) not in seen:
            seen.append((row_id, phase))

    result = gatex.bench(unit="GoLU", backends="torch,ort", iterations=15, warmup=1,
                         repeat=2, on_progress=on_progress)
    ort_id = result.row("ort").id
    assert seen == [("torch", "warmup 1/2"), (ort_id, "warmup 1/2"),
                    ("torch", "warmup 2/2"), (ort_id, "warmup 2/2")]
    assert result.settings["repeat"] == 2
    for row in (result.row("torch"), result.row("ort")):
        assert row.ok, row.reason
        assert row.latency.count == 30 and len(row.repeat_p50s) == 2
        assert row.as_dict()["repeats"]["count"] == 2


@pytest.fixture
def crashing_pair(tiny, tmp_path, monkeypatch):
    """Two copies of one ONNX model, a.onnx and b.onnx; a.onnx's worker aborts after loading."""
    first, second = tmp_path / "a.onnx", tmp_path / "b.onnx"
    first.write_bytes(tiny.onnx.read_bytes())
    second.write_bytes(tiny.onnx.read_bytes())
    monkeypatch.setenv("GATEX_BENCH_TEST_CRASH", "ort:a.onnx")
    return first, second


def test_repeat_with_a_crashing_backend_measures_the_others_every_round(crashing_pair):
    result = gatex.bench(list(crashing_pair), backends="ort", iterations=5, warmup=1,
                         batch_size=4, repeat=3)
    crashed, fine = result.row("ort:a.onnx"), result.row("ort:b.onnx")
    assert crashed.status == "error" and "SIGABRT" in crashed.reason
    assert not crashed.reason.startswith("process")          # the first process crashed
    assert fine.ok and len(fine.repeat_p50s) == 3 and fine.latency.count == 15


def test_repeat_below_one_is_bad_input():
    for bad in (0, -1):
        with pytest.raises(BadInputError, match="--repeat must be at least 1"):
            gatex.bench(unit="GoLU", backends="torch", repeat=bad)


# -- baseline -------------------------------------------------------------------------------------

def baseline_doc(p50_by_id: dict[str, float], cpu: str = "test cpu") -> dict:
    return {"schema": SCHEMA, "machine": {"cpu": cpu}, "backends": [
        {"id": k, "status": "ok", "latency_ms": {"p50": v}} for k, v in p50_by_id.items()]}


def test_baseline_names_the_backend_past_the_allowed_regression():
    rows = [measured("torch", [1.0]), measured("ort", [0.5], artifact="m.onnx")]
    doc = baseline_doc({"torch": 0.95, "ort:m.onnx": 0.4})   # torch +5.3 %, ort +25 %
    verdict = compare_baseline(rows, doc, 10.0, file="old.json")
    assert [r.id for r in verdict.regressions] == ["ort:m.onnx"]
    assert verdict.regressions[0].change_pct == pytest.approx(25.0)
    assert verdict.regressions[0].baseline_p50_ms == 0.4
    assert verdict.compared == ("torch", "ort:m.onnx") and verdict.missing == ()
    assert compare_baseline(rows, doc, 30.0).regressions == ()
    strict = compare_baseline(rows, doc, 5.0)                  # 5.26 % > 5 %: torch too
    assert [r.id for r in strict.regressions] == ["torch", "ort:m.onnx"]


def test_baseline_missing_rows_failed_rows_and_another_machine():
    rows = [measured("torch", [1.0]), measured("ort", [9.0], artifact="new.onnx"),
            BackendRow("trt", "trt", status="error", reason="crashed")]
    doc = baseline_doc({"torch": 1.0, "trt": 0.1}, cpu="other cpu")
    verdict = compare_baseline(rows, doc, 0.0, machine={"cpu": "test cpu"})
    assert verdict.regressions == ()           # equal p50 is no regression, even at 0 %
    assert verdict.missing == ("ort:new.onnx",)
    assert "other cpu" in verdict.notes[0]


def test_read_baseline_refuses_other_files(tmp_path):
    parity = tmp_path / "parity.json"
    parity.write_text(json.dumps({"schema": "gatex.parity/1", "results": []}))
    with pytest.raises(BadInputError, match="gatex.parity/1"):
        read_baseline(parity)
    broken = tmp_path / "broken.json"
    broken.write_text("{not json")
    with pytest.raises(BadInputError, match="not readable JSON"):
        read_baseline(broken)
    with pytest.raises(BadInputError, match="does not exist"):
        read_baseline(tmp_path / "none.json")
    no_rows = tmp_path / "rows.json"
    no_rows.write_text(json.dumps({"schema": SCHEMA, "backends": "x"}))
    with pytest.raises(BadInputError, match="backends"):
        read_baseline(no_rows)


# -- backends -------------------------------------------------------------------------------------

def test_parse_backends():
    assert parse_backends("all") == (BACKENDS, False)
    assert parse_backends("trt,onnxruntime,torch") == (("torch", "ort", "trt"), True)
    assert parse_backends(["ort", "TensorRT"]) == (("ort", "trt"), True)
    for bad in ("tflite", "torch,all", ""):
        with pytest.raises(BadInputError):
            parse_backends(bad)


@pytest.mark.skipif(platform.system() == "Darwin", reason="CoreML predicts on macOS")
def test_coreml_is_not_a_timing_backend_off_macos():
    reason = unavailable_reason("coreml")
    assert reason is not None and "emulat" in reason and "macOS" in reason


def test_trt_reason_when_tensorrt_is_absent():
    import importlib.util

    if importlib.util.find_spec("tensorrt") is not None:
        pytest.skip("TensorRT is installed here")
    assert "TensorRT is not installed" in unavailable_reason("trt")
    assert unavailable_reason("torch") is None


# -- a real run: torch (the zoo paGLU the ONNX records) and onnxruntime, one process each ---------

ITERATIONS, BATCH = 40, 8


@pytest.fixture(scope="module")
def real(pa_glu_export):
    return gatex.bench(pa_glu_export.path, backends="all", iterations=ITERATIONS, warmup=3,
                       batch_size=BATCH)


def test_real_run_rows(real, pa_glu_export):
    from gatex.models import zoo

    assert [r.backend for r in real.rows] == ["torch", "ort", "openvino", "coreml", "trt"]
    torch_row, ort_row = real.row("torch"), real.row("ort")
    assert torch_row.ok and ort_row.ok, (torch_row.reason, ort_row.reason)
    assert ort_row.id == f"ort:{pa_glu_export.path.name}"
    assert real.row("trt").status == "unavailable" and real.row("trt").reason
    for row in (torch_row, ort_row):
        lat = row.latency
        assert lat.count == ITERATIONS == len(row.samples_ns)
        assert lat == latency_stats(row.samples_ns)
        assert 0 < lat.min <= lat.p50 <= lat.p90 <= lat.p99 <= lat.max
        assert row.throughput_sps == pytest.approx(BATCH / (lat.mean / 1e3))
        assert row.load_ms > 0 and row.first_run_ms > 0
        mem = row.memory
        assert mem["peak_rss_bytes"] >= mem["baseline_rss_bytes"] > 0
        assert mem["peak_above_baseline_bytes"] == mem["peak_rss_bytes"] - mem["baseline_rss_bytes"]
        if sys.platform == "linux":
            assert mem["method"] == "vmhwm-reset"
    # sizes: the ONNX file itself; for torch, the zoo weights file
    assert ort_row.model_size_bytes == pa_glu_export.path.stat().st_size
    assert torch_row.model_size_bytes == zoo.entry("paGLU").weights_path.stat().st_size
    assert ort_row.relative["p50"] == pytest.approx(ort_row.latency.p50 / torch_row.latency.p50)
    assert real.settings["unit"] == "paGLU" and real.settings["batch_size"] == BATCH
    assert bool(real)


def test_real_run_json_schema_is_pinned(real, tmp_path):
    path = tmp_path / "bench.json"
    bench_report.write_reports(real, json_path=path)
    doc = json.loads(path.read_text())
    assert set(doc) == TOP_KEYS and doc["schema"] == SCHEMA == "gatex.bench/1"
    assert set(doc["machine"]) == MACHINE_KEYS and set(doc["versions"]) == VERSION_KEYS
    assert set(doc["settings"]) == SETTINGS_KEYS
    assert doc["versions"]["torch"] and doc["versions"]["onnxruntime"]
    for row in doc["backends"]:
        assert set(row) == ROW_KEYS
        if row["status"] == "ok":
            assert set(row["latency_ms"]) == LATENCY_KEYS and set(row["memory"]) == MEMORY_KEYS
            assert row["iterations"] == ITERATIONS
    ort = next(r for r in doc["backends"] if r["backend"] == "ort")
    assert ort["latency_ms"]["p50"] == real.row("ort").latency.p50
    assert doc["passed"] is True and doc["baseline"] is None
    # the file is its own baseline: read back, nothing regresses; a faster past fails ort
    assert read_baseline(path)["schema"] == SCHEMA
    assert compare_baseline(real.rows, doc, 0.0).regressions == ()
    ort["latency_ms"]["p50"] /= 2
    verdict = compare_baseline(real.rows, doc, 50.0)
    assert [r.id for r in verdict.regressions] == [ort["id"]]
    assert verdict.regressions[0].change_pct == pytest.approx(100.0)
    assert set(verdict.as_dict()) == BASELINE_KEYS
    assert set(verdict.as_dict()["regressions"][0]) == REGRESSION_KEYS


def test_real_run_markdown(real):
    text = bench_report.markdown(real)
    ort = real.row("ort")
    assert f"| {ort.label} | {ort.artifact} | {bench_report.ms(ort.latency.p50)} |" in text
    assert "**trt** unavailable:" in text and "Machine:" in text


def test_real_run_plot(real, tmp_path):
    pytest.importorskip("matplotlib", reason="the plot extra (matplotlib) is not installed")
    png = bench_report.write_plot(real, tmp_path / "latency.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 5000


# -- a crash stays in its worker ------------------------------------------------------------------

def test_crashing_backend_is_an_error_row_and_the_rest_is_measured(crashing_pair):
    first, second = crashing_pair
    result = gatex.bench([first, second], backends="all", duration=0.3, warmup=1,
                         batch_size=4)
    crashed, ort_row = result.row("ort:a.onnx"), result.row("ort:b.onnx")
    assert crashed.status == "error" and "SIGABRT" in crashed.reason
    # --duration: runs until 0.3 s have passed; almost all of that time is inside the runs
    assert ort_row.ok and ort_row.latency.count >= 2
    assert 0.8 * 0.3 <= sum(ort_row.samples_ns) / 1e9 <= 0.3 + ort_row.latency.max / 1e3
    assert (result.settings["duration_s"], result.settings["iterations"]) == (0.3, None)
    assert ort_row.model_size_bytes == second.stat().st_size
    # the file records no gatex.unit: no torch model, so the reference row says why, no ratios
    torch_row = result.row("torch")
    assert torch_row.status == "unavailable" and "--unit" in torch_row.reason
    assert ort_row.relative is None
    assert not result and result.failed == [crashed]


def test_worker_still_running_at_the_timeout_is_killed(tmp_path):
    job = {"backend": "torch", "source": {"kind": "zoo", "unit": "GoLU"},
           "inputs": str(tmp_path / "missing.npz"), "warmup": 0, "iterations": 1,
           "duration_s": None, "threads": None, "device": "cpu"}
    out = run_worker(job, tmp_path, timeout=0.2, tag="t")
    assert out["status"] == "error" and "timed out after 0.2 s" in out["reason"]
    assert not any(p.suffix == ".tmp" for p in tmp_path.iterdir())


def test_worker_error_is_its_result_not_an_exception(tmp_path):
    # the worker's own error handling, run in this process: a backend that fails to load
    from gatex.benchmarking import worker as bench_worker

    np.savez(tmp_path / "x.npz", input_0=np.zeros((1, 64), np.float32))
    job = {"backend": "ort", "source": {"kind": "artifact", "path": str(tmp_path / "no.onnx")},
           "inputs": str(tmp_path / "x.npz"), "warmup": 0, "iterations": 1,
           "duration_s": None, "threads": None, "device": "cpu"}
    (tmp_path / "job.json").write_text(json.dumps(job))
    code = bench_worker.main([str(tmp_path / "job.json"), str(tmp_path / "out.json")])
    out = json.loads((tmp_path / "out.json").read_text())
    assert code == 1
    assert out == {"status": "error", "reason": f"ONNX model {tmp_path / 'no.onnx'} does not "
                                                "exist or is not a file"}
    row = row_from_worker("ort", "no.onnx", "ort", out, 1)
    assert (row.status, row.latency, row.relative) == ("error", None, None)


# -- --cpus: every worker pinned ----------------------------------------------------------------

def test_parse_cpus_lists_ranges_and_refuses_what_this_process_cannot_use():
    from gatex.benchmarking.run import parse_cpus

    if not hasattr(os, "sched_setaffinity"):
        with pytest.raises(BadInputError, match="Linux only"):
            parse_cpus("0")
        return
    usable = sorted(os.sched_getaffinity(0))
    assert parse_cpus(None) is None
    assert parse_cpus(str(usable[0])) == (usable[0],)
    assert parse_cpus([usable[-1], usable[0]]) == tuple(sorted({usable[0], usable[-1]}))
    assert parse_cpus(f"{usable[0]}-{usable[0]}") == (usable[0],)
    for bad in ("x", "", "1-a", str(max(usable) + 1000)):
        with pytest.raises(BadInputError, match="--cpus"):
            parse_cpus(bad)


@pytest.mark.skipif(not hasattr(os, "sched_setaffinity"), reason="--cpus needs Linux")
def test_worker_pins_itself_to_the_cpus_asked(tmp_path):
    """The settings record the CPUs; a worker run in a probe process (its main() then the
    affinity printed from the same process) has pinned itself to them and still measured."""
    cpu = sorted(os.sched_getaffinity(0))[-1]
    result = gatex.bench(unit="GoLU", backends="torch", iterations=5, warmup=1, cpus=str(cpu))
    assert result.settings["cpus"] == [cpu]
    assert result.row("torch").ok
    np.savez(tmp_path / "x.npz", input_0=np.zeros((1, 64), np.float32))
    job = {"backend": "torch", "source": {"kind": "zoo", "unit": "GoLU"},
           "inputs": str(tmp_path / "x.npz"), "warmup": 0, "iterations": 1,
           "duration_s": None, "threads": None, "device": "cpu", "cpus": [cpu]}
    (tmp_path / "job.json").write_text(json.dumps(job))
    probe = ("import json, os, sys; from gatex.benchmarking import worker as w; "
             "code = w.main(sys.argv[1:]); print(sorted(os.sched_getaffinity(0)))")
    import subprocess

    done = subprocess.run([sys.executable, "-c", probe, str(tmp_path / "job.json"),
                           str(tmp_path / "out.json")], capture_output=True, text=True,
                          timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == str([cpu])
    assert json.loads((tmp_path / "out.json").read_text())["status"] == "ok"


# -- GPU: device time from CUDA events, end to end apart ------------------------------------------

@pytest.mark.gpu
def test_cuda_event_timing_is_reported_apart_from_end_to_end():
    import torch

    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA device (torch.cuda.is_available() is False)")
    result = gatex.bench(unit="GoLU", backends="torch", device="cuda", iterations=50, warmup=5,
                         batch_size=256)
    row = result.row("torch")
    assert row.ok, row.reason
    assert row.device_latency is not None and row.device_latency.count == 50
    # the model alone cannot take longer than the model plus both copies and a synchronise
    assert row.device_latency.p50 <= row.latency.p50
    assert row.memory["peak_device_bytes"] > 0


def test_cuda_asked_for_without_a_device_is_unavailable():
    import torch

    from gatex.errors import BackendUnavailableError

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    with pytest.raises(BackendUnavailableError, match="no CUDA device"):
        gatex.bench(unit="GoLU", backends="torch", device="cuda")
