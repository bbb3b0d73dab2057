"""``gatex bench``: latency, memory, load time and size of one model on each backend.

Each backend runs in its own process (`gatex.benchmarking.worker`), one after the other, so a
crash or a leak stays in that process and becomes that backend's error row, and the peak memory
is that backend's alone. torch eager is always the reference row; every other row's p50 and
throughput are also given relative to it.

Statistics over the timed runs (`latency_stats`): min, mean, p50/p90/p99 (linear interpolation
between closest ranks, NumPy's default), max, std (sample standard deviation, ddof=1; 0 for one
run), coefficient of variation cv = std / mean. A run with cv above `CV_WARN_THRESHOLD` (10 %)
is flagged unstable: its percentiles move from run to run. Throughput = batch size / mean
latency, in samples per second.

JSON schema ``gatex.bench/1`` (keys are stable; a change of meaning bumps the number)::

    {"schema": "gatex.bench/1", "gatex_version": str, "created": str (ISO 8601, UTC),
     "passed": bool,                  # no backend failed and no regression past the baseline
     "machine": {"cpu": str, "cores_logical": int | null, "cores_physical": int | null,
                 "cores_usable": int | null, "os": str, "machine": str, "python": str},
     "versions": {"gatex": str, "python": str, "numpy": str | null, "torch": str | null,
                  "onnxruntime": str | null, "onnx": str | null, "coremltools": str | null,
                  "tensorrt": str | null},
     "settings": {"batch_size": int, "warmup": int, "iterations": int | null,
                  "duration_s": float | null, "threads": int | null, "device": str,
                  "cpus": [int] | null,        # CPUs each worker was pinned to (--cpus)
                  "repeat": int,               # processes per backend (--repeat)
                  "timeout_s": float, "cv_warn_threshold": float, "reference": "torch" | null,
                  "unit": str | null, "model": str | null, "artifacts": [str], "inputs": str},
     "backends": [{
        "id": str,                    # "torch", or "<backend>:<artifact file name>"
        "backend": "torch" | "ort" | "coreml" | "trt", "label": str,
        "artifact": str | null,       # the artifact's file name (null for torch)
        "status": "ok" | "unavailable" | "error", "reason": str | null,
        "emulated": bool, "threads": int | null,
        "model_size_bytes": int | null,
        "model_file": str | null,     # the file the size is of; null: parameters + buffers
        "load_ms": float | null,      # model load / session creation / engine build
        "first_run_ms": float | null,
        "iterations": int | null,     # timed runs
        "latency_ms": null | {"min", "mean", "p50", "p90", "p99", "max", "std": float},
        "cv": float | null, "unstable": bool,
        "repeats": null | {"count": int,        # --repeat N > 1: one process per repeat
                           "p50_ms": [float],   # each process's own p50, in run order
                           "spread": float},    # (max - min) / min of those p50s
        "unsteady": bool,             # spread above REPEAT_SPREAD_WARN (5 %)
        "throughput_sps": float | null,
        "device_latency_ms": null | {same keys as latency_ms},   # GPU events, model only
        "memory": null | {"method": "vmhwm-reset" | "ru_maxrss",
                          "baseline_rss_bytes": int, "peak_rss_bytes": int,
                          "peak_above_baseline_bytes": int,
                          "timed_growth_bytes": int | null,   # RSS change over the timed runs
                          "peak_device_bytes": int | null},
        "relative_to_reference": null | {"p50": float, "throughput": float},
        "notes": [str]}],
     "warnings": [str],
     "baseline": null | {"file": str, "max_regression_pct": float,
                         "compared": [str], "missing": [str],
                         "regressions": [{"id": str, "p50_ms": float, "baseline_p50_ms": float,
                                          "change_pct": float}],
                         "notes": [str]}}

With ``--repeat N`` every backend is measured in N fresh processes, interleaved (torch, ort,
..., torch, ort, ...), and the statistics pool the timed runs of all N; load and first-run
times are the median over the processes, memory the largest peak. A row whose per-process
p50s differ by more than ``REPEAT_SPREAD_WARN`` (5 %, issue 5's bar for two consecutive runs)
is flagged unsteady with a warning: the machine changed speed between processes, so a rerun
will not reproduce its p50 either. That is what a single run cannot see: on a shared VM the
CPU's speed can change for tenths of a second at a time, and a short run lands in one state.

``relative_to_reference.p50`` is this row's p50 over torch's (below 1: faster than torch);
``throughput`` is this row's throughput over torch's. With a baseline, a row regresses when its
p50 exceeds the baseline row with the same id by more than ``max_regression_pct`` percent.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gatex._version import __version__
from gatex.benchmarking.stats import LatencyStats
from gatex.errors import BadInputError

SCHEMA = "gatex.bench/1"
BACKENDS = ("torch", "ort", "openvino", "coreml", "trt")
ALIASES = {"onnxruntime": "ort", "onnx": "ort", "tensorrt": "trt", "pytorch": "torch",
           "ov": "openvino"}
# ort first: a .onnx file is ort's unless openvino is asked for too (it runs the same files)
ARTIFACT_SUFFIXES = {"ort": (".onnx",), "openvino": (".onnx",),
                     "coreml": (".mlpackage", ".mlmodel"), "trt": (".engine", ".plan")}
CV_WARN_THRESHOLD = 0.10
REPEAT_SPREAD_WARN = 0.05
DEFAULT_WARMUP = 10
DEFAULT_ITERATIONS = 100
DEFAULT_MAX_REGRESSION = 10.0
DEFAULT_TIMEOUT = 600.0
DEVICES = ("cpu", "cuda")
UNIT_METADATA_KEY = "gatex.unit"


# -- results --------------------------------------------------------------------------------------

@dataclass
class BackendRow:
    """One row of the bench: a backend on one model, measured or with the reason it was not."""
    backend: str
    label: str
    artifact: str | None = None
    status: str = "ok"                     # ok | unavailable | error
    reason: str | None = None
    emulated: bool = False
    threads: int | None = None
    model_size_bytes: int | None = None
    model_file: str | None = None
    load_ms: float | None = None
    first_run_ms: float | None = None
    latency: LatencyStats | None = None
    device_latency: LatencyStats | None = None
    throughput_sps: float | None = None
    memory: dict[str, Any] | None = None
    relative: dict[str, float] | None = None
    notes: list[str] = field(default_factory=list)
    samples_ns: list[int] = field(default_factory=list, repr=False)  # for the plot, not JSON
    repeat_p50s: list[float] | None = None   # ms, one per process with --repeat N > 1

    @property
    def id(self) -> str:
        return self.backend if self.artifact is None else f"{self.backend}:{self.artifact}"

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    @property
    def unstable(self) -> bool:
        return self.latency is not None and self.latency.cv > CV_WARN_THRESHOLD

    @property
    def repeat_spread(self) -> float | None:
        """(max - min) / min of the per-process p50s; None without --repeat."""
        if not self.repeat_p50s or len(self.repeat_p50s) < 2:
            return None
        lo = min(self.repeat_p50s)
        return (max(self.repeat_p50s) - lo) / lo if lo > 0 else float("inf")

    @property
    def unsteady(self) -> bool:
        spread = self.repeat_spread
        return spread is not None and spread > REPEAT_SPREAD_WARN

    def as_dict(self) -> dict[str, Any]:
        lat, dev = self.latency, self.device_latency
        return {
            "id": self.id, "backend": self.backend, "label": self.label,
            "artifact": self.artifact, "status": self.status, "reason": self.reason,
            "emulated": self.emulated, "threads": self.threads,
            "model_size_bytes": self.model_size_bytes, "model_file": self.model_file,
            "load_ms": self.load_ms, "first_run_ms": self.first_run_ms,
            "iterations": lat.count if lat else None,
            "latency_ms": lat.as_dict() if lat else None,
            "cv": lat.cv if lat else None, "unstable": self.unstable,
            "repeats": None if not self.repeat_p50s else {
                "count": len(self.repeat_p50s), "p50_ms": list(self.repeat_p50s),
                "spread": self.repeat_spread},
            "unsteady": self.unsteady,
            "throughput_sps": self.throughput_sps,
            "device_latency_ms": dev.as_dict() if dev else None,
            "memory": self.memory, "relative_to_reference": self.relative,
            "notes": list(self.notes),
        }


@dataclass(frozen=True)
class Regression:
    id: str
    p50_ms: float
    baseline_p50_ms: float
    change_pct: float

    def describe(self) -> str:
        return (f"{self.id} p50 {self.p50_ms:.4g} ms vs baseline {self.baseline_p50_ms:.4g} ms "
                f"({self.change_pct:+.1f} %)")


@dataclass(frozen=True)
class BaselineComparison:
    file: str
    max_regression_pct: float
    compared: tuple[str, ...]
    missing: tuple[str, ...]
    regressions: tuple[Regression, ...]
    notes: tuple[str, ...] = ()

    def as_dict(self) -> dict[str, Any]:
        return {"file": self.file, "max_regression_pct": self.max_regression_pct,
                "compared": list(self.compared), "missing": list(self.missing),
                "regressions": [{"id": r.id, "p50_ms": r.p50_ms,
                                 "baseline_p50_ms": r.baseline_p50_ms,
                                 "change_pct": r.change_pct} for r in self.regressions],
                "notes": list(self.notes)}


@dataclass
class BenchResult:
    """Everything one bench measured; truthy when no backend failed and nothing regressed."""
    machine: dict[str, Any]
    versions: dict[str, Any]
    settings: dict[str, Any]
    rows: list[BackendRow]
    baseline: BaselineComparison | None = None
    created: str = ""

    def row(self, row_id: str) -> BackendRow:
        for r in self.rows:
            if r.id == row_id or (r.backend == row_id and r.artifact is None):
                return r
        matches = [r for r in self.rows if r.backend == row_id]
        if len(matches) == 1:
            return matches[0]
        raise KeyError(f"no bench row {row_id!r}; rows: {', '.join(r.id for r in self.rows)}")

    @property
    def reference(self) -> BackendRow | None:
        return next((r for r in self.rows if r.backend == "torch"), None)

    @property
    def failed(self) -> list[BackendRow]:
        return [r for r in self.rows if r.status == "error"]

    @property
    def regressions(self) -> tuple[Regression, ...]:
        return self.baseline.regressions if self.baseline else ()

    @property
    def warnings(self) -> list[str]:
        out = [f"{r.id}: latency varies (cv {r.latency.cv:.0%} > {CV_WARN_THRESHOLD:.0%}); "
               "the machine is busy or the run too short, so its percentiles are not stable"
               for r in self.rows if r.unstable and r.latency]
        for r in self.rows:
            if r.unsteady and r.repeat_p50s:
                out.append(f"{r.id}: p50 differs by {r.repeat_spread:.0%} between its "
                           f"{len(r.repeat_p50s)} processes ({min(r.repeat_p50s):.4g} to "
                           f"{max(r.repeat_p50s):.4g} ms; > {REPEAT_SPREAD_WARN:.0%}): the "
                           "machine's speed is not steady, so a rerun will not reproduce this "
                           "p50 either")
        return out

    def __bool__(self) -> bool:
        return not self.failed and not self.regressions

    def as_dict(self) -> dict[str, Any]:
        return {"schema": SCHEMA, "gatex_version": __version__, "created": self.created,
                "passed": bool(self), "machine": self.machine, "versions": self.versions,
                "settings": self.settings, "backends": [r.as_dict() for r in self.rows],
                "warnings": self.warnings,
                "baseline": self.baseline.as_dict() if self.baseline else None}


def add_relative(rows: Sequence[BackendRow]) -> None:
    """Fill each measured row's p50 and throughput relative to the torch row."""
    ref = next((r for r in rows if r.backend == "torch" and r.ok and r.latency), None)
    for r in rows:
        if ref is None or not r.ok or r.latency is None or r.throughput_sps is None:
            r.relative = None
            continue
        r.relative = {"p50": r.latency.p50 / ref.latency.p50,
                      "throughput": r.throughput_sps / (ref.throughput_sps or float("nan"))}


# -- baseline -------------------------------------------------------------------------------------

def read_baseline(path: str | Path) -> dict[str, Any]:
    """A previous bench JSON; anything else (missing, not JSON, another schema) is bad input."""
    path = Path(path)
    if not path.is_file():
        raise BadInputError(f"baseline {path} does not exist")
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BadInputError(f"baseline {path} is not readable JSON ({type(exc).__name__}); give "
                            f"a file written by gatex bench --json") from None
    schema = doc.get("schema") if isinstance(doc, dict) else None
    if schema != SCHEMA:
        raise BadInputError(f"baseline {path} has schema {schema!r}, not {SCHEMA!r}; give a file "
                            "written by gatex bench --json")
    rows = doc.get("backends")
    if not isinstance(rows, list) or not all(isinstance(r, dict) and "id" in r for r in rows):
        raise BadInputError(f"baseline {path} says {SCHEMA} but has no valid 'backends' list")
    return doc


def compare_baseline(rows: Sequence[BackendRow], doc: dict[str, Any], max_regression_pct: float,
                     *, file: str = "", machine: dict[str, Any] | None = None
                     ) -> BaselineComparison:
    """Compare each measured row's p50 with the baseline row of the same id."""
    base: dict[str, float] = {}
    for r in doc["backends"]:
        p50 = (r.get("latency_ms") or {}).get("p50")
        if r.get("status") == "ok" and isinstance(p50, (int, float)) and p50 > 0:
            base[str(r["id"])] = float(p50)
    compared, missing, regressions = [], [], []
    for r in rows:
        if not r.ok or r.latency is None:
            continue
        old = base.get(r.id)
        if old is None:
            missing.append(r.id)
            continue
        compared.append(r.id)
        change = (r.latency.p50 / old - 1.0) * 100.0
        if change > max_regression_pct:
            regressions.append(Regression(r.id, r.latency.p50, old, change))
    notes = []
    by_id = {r.id: r for r in rows}
    for reg in regressions:
        row = by_id[reg.id]
        if row.unsteady:
            notes.append(f"{reg.id}'s p50 moved {row.repeat_spread:.0%} between its own "
                         "processes in this run: part of the regression may be the machine")
    old_cpu = (doc.get("machine") or {}).get("cpu")
    if machine and old_cpu and old_cpu != machine.get("cpu"):
        notes.append(f"the baseline ran on another CPU ({old_cpu}); timings may not compare")
    return BaselineComparison(file, float(max_regression_pct), tuple(compared), tuple(missing),
                              tuple(regressions), tuple(notes))
