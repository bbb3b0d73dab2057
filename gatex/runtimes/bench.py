"""``gatex bench``: latency, memory, load time and size of one model on each backend.

Each backend runs in its own process (`gatex.runtimes.bench_worker`), one after the other, so a
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
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from gatex.errors import BackendUnavailableError, BadInputError, CheckpointError, GatexError

SCHEMA = "gatex.bench/1"
BACKENDS = ("torch", "ort", "coreml", "trt")
ALIASES = {"onnxruntime": "ort", "onnx": "ort", "tensorrt": "trt", "pytorch": "torch"}
ARTIFACT_SUFFIXES = {"ort": (".onnx",), "coreml": (".mlpackage", ".mlmodel"),
                     "trt": (".engine", ".plan")}
CV_WARN_THRESHOLD = 0.10
REPEAT_SPREAD_WARN = 0.05
DEFAULT_WARMUP = 10
DEFAULT_ITERATIONS = 100
DEFAULT_MAX_REGRESSION = 10.0
DEFAULT_TIMEOUT = 600.0
DEVICES = ("cpu", "cuda")
UNIT_METADATA_KEY = "gatex.unit"


# -- statistics -----------------------------------------------------------------------------------

@dataclass(frozen=True)
class LatencyStats:
    """Summary of one backend's timed runs, in milliseconds (see the module docstring)."""

    count: int
    min: float
    mean: float
    p50: float
    p90: float
    p99: float
    max: float
    std: float

    @property
    def cv(self) -> float:
        """Coefficient of variation, std / mean."""
        return self.std / self.mean if self.mean > 0 else 0.0

    def as_dict(self) -> dict[str, float]:
        return {k: getattr(self, k) for k in ("min", "mean", "p50", "p90", "p99", "max", "std")}


def latency_stats(samples_ns: Sequence[int | float]) -> LatencyStats:
    """Statistics of per-run times given in nanoseconds, reported in milliseconds.

    >>> latency_stats([1e6, 2e6, 3e6]).p50
    2.0
    """
    if len(samples_ns) == 0:
        raise ValueError("no timed runs to summarise")
    ms = np.asarray(samples_ns, dtype=np.float64) / 1e6
    p50, p90, p99 = np.percentile(ms, [50, 90, 99])
    std = float(ms.std(ddof=1)) if ms.size > 1 else 0.0
    return LatencyStats(int(ms.size), float(ms.min()), float(ms.mean()), float(p50), float(p90),
                        float(p99), float(ms.max()), std)


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
        from gatex import __version__

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


# -- machine and versions -------------------------------------------------------------------------

def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.lower().startswith(("model name", "hardware", "cpu model")):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    if sys.platform == "darwin":
        try:
            out = subprocess.run(["sysctl", "-n", "machdep.cpu.brand_string"], check=False,
                                 capture_output=True, text=True, timeout=5)
            if out.stdout.strip():
                return out.stdout.strip()
        except (OSError, subprocess.SubprocessError):
            pass
    return platform.processor() or platform.machine() or "unknown"


def _physical_cores() -> int | None:
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            text = f.read()
    except OSError:
        return None
    cores, phys = set(), "0"
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key = key.strip()
        if key == "physical id":
            phys = value.strip()
        elif key == "core id":
            cores.add((phys, value.strip()))
    return len(cores) or None


def machine_info() -> dict[str, Any]:
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None
    return {"cpu": _cpu_model(), "cores_logical": os.cpu_count(),
            "cores_physical": _physical_cores(), "cores_usable": usable,
            "os": platform.platform(), "machine": platform.machine(),
            "python": platform.python_version()}


def versions() -> dict[str, Any]:
    from gatex import __version__
    from gatex.environment import installed_version

    out: dict[str, Any] = {"gatex": __version__, "python": platform.python_version()}
    for name in ("numpy", "torch", "onnxruntime", "onnx", "coremltools", "tensorrt"):
        out[name] = installed_version(name)[1]
    return out


# -- backends: which exist here, which can run what -----------------------------------------------

def _has_module(name: str) -> bool:
    import importlib.util

    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False


def unavailable_reason(backend: str, device: str = "cpu") -> str | None:
    """Why ``backend`` cannot be benchmarked here, or None when it can."""
    if backend == "torch":
        if device == "cuda":
            import torch

            if not torch.cuda.is_available():
                return "torch has no CUDA device here; use --device cpu"
        return None
    if backend == "ort":
        if not _has_module("onnxruntime"):
            return "onnxruntime is not installed: reinstall gatex (onnx, onnxruntime and onnxscript are core dependencies)"
        if device == "cuda":
            import onnxruntime

            if "CUDAExecutionProvider" not in onnxruntime.get_available_providers():
                return "onnxruntime here has no CUDAExecutionProvider (install onnxruntime-gpu)"
        return None
    if backend == "coreml":
        if platform.system() != "Darwin":
            return (f"CoreML runs models only on macOS; on {platform.system()} gatex can only "
                    "emulate them, and emulated timings say nothing about CoreML's speed")
        if not _has_module("coremltools"):
            return "coremltools is not installed: pip install 'gatex[coreml]'"
        if not _has_module("gatex.runtimes.coreml_runtime"):
            return "this gatex has no CoreML runtime yet"
        return None
    if backend == "trt":
        if not _has_module("tensorrt"):
            return ("TensorRT is not installed here (gatex never installs it; it needs an NVIDIA "
                    "GPU and NVIDIA's TensorRT packages)")
        return None
    raise BadInputError(f"unknown backend {backend!r}")


def parse_backends(spec: str | Sequence[str]) -> tuple[tuple[str, ...], bool]:
    """(backends in canonical order, whether the user named them) from ``all`` or a list."""
    items = [spec] if isinstance(spec, str) else list(spec)
    names = [n.strip().lower() for item in items for n in str(item).split(",") if n.strip()]
    if not names:
        raise BadInputError(f"--backend is empty; use all or a list of {', '.join(BACKENDS)}")
    if names == ["all"]:
        return BACKENDS, False
    chosen = []
    for n in names:
        canonical = ALIASES.get(n, n)
        if canonical not in BACKENDS:
            raise BadInputError(f"unknown backend {n!r}; use all or a comma-separated list of "
                                f"{', '.join(BACKENDS)}")
        chosen.append(canonical)
    return tuple(b for b in BACKENDS if b in chosen), True


def backend_for(path: Path) -> str:
    """The backend that runs an artifact, by its suffix."""
    suffix = path.suffix.lower()
    for backend, suffixes in ARTIFACT_SUFFIXES.items():
        if suffix in suffixes:
            return backend
    known = ", ".join(s for ss in ARTIFACT_SUFFIXES.values() for s in ss)
    raise BadInputError(f"{path}: gatex bench runs {known} artifacts; got {suffix or 'no suffix'}")


# -- inputs ---------------------------------------------------------------------------------------

class _OnnxHeader(NamedTuple):
    inputs: list[tuple[str, str, tuple[Any, ...]]]   # (name, dtype, shape) of each graph input
    metadata: dict[str, str]
    plugins: bool                                     # holds TensorRT plugin nodes


def _onnx_header(path: Path) -> _OnnxHeader:
    """What the bench needs of an ONNX file, from one read and without a session."""
    try:
        from onnx import helper
    except ImportError:
        raise BackendUnavailableError("reading an .onnx artifact needs onnx: "
                                      "reinstall gatex (onnx, onnxruntime and onnxscript are core dependencies)") from None
    from gatex.artifacts.onnx_file import read_onnx
    from gatex.exporters.onnx import plugin_nodes

    proto = read_onnx(path, external_data=False)  # external locations checked, none read
    inits = {i.name for i in proto.graph.initializer}
    specs = []
    for i in proto.graph.input:
        if i.name in inits:
            continue
        t = i.type.tensor_type
        dtype = np.dtype(helper.tensor_dtype_to_np_dtype(t.elem_type)).name
        shape = tuple(d.dim_value if d.HasField("dim_value") else (d.dim_param or None)
                      for d in t.shape.dim)
        specs.append((i.name, dtype, shape))
    return _OnnxHeader(specs, {p.key: p.value for p in proto.metadata_props},
                       bool(plugin_nodes(proto)))


def zoo_batch(unit: str, batch: int) -> np.ndarray:
    """The first ``batch`` held-out digits for ``unit`` (repeated when more are asked)."""
    from gatex.models import zoo

    x, _ = zoo.held_out(unit)
    x = x.numpy()
    if batch > x.shape[0]:
        x = np.resize(x, (batch, *x.shape[1:]))
    return np.ascontiguousarray(x[:batch], dtype=np.float32)


def random_batch(shape: Sequence[Any], batch: int, name: str) -> np.ndarray:
    per_sample = tuple(shape[1:])
    if not all(isinstance(d, int) and d > 0 for d in per_sample):
        raise BadInputError(f"input {name!r} has dynamic sizes beyond the batch "
                            f"({list(shape)}); pass --unit NAME or --model with --input-shape")
    rng = np.random.default_rng(0)
    return rng.standard_normal((batch, *per_sample), dtype=np.float32)


def _check_model_fits(torch_model: Any, inputs: list[np.ndarray],
                      onnx_specs: Sequence[tuple[str, str, Sequence[Any]]] | None,
                      pairs: Sequence[tuple[str, Path]]) -> None:
    """Bad input, before any worker starts: --input-shape that the artifact's inputs cannot take,
    or a torch model that cannot run on them (both shapes named, one line)."""
    import torch

    from gatex.runtimes.torch_runtime import describe_model_failure

    for (name, dtype, shape), array in zip(onnx_specs or (), inputs):
        declared = list(shape)[1:]
        fixed = [(i, d) for i, d in enumerate(declared) if isinstance(d, int)]
        if len(declared) != array.ndim - 1 or any(array.shape[1 + i] != d for i, d in fixed):
            dims = ",".join(str(d) for d in shape)
            raise BadInputError(f"--input-shape gives {list(array.shape)}, but {pairs[0][1].name} "
                                f"takes input {name!r} {dtype}[{dims}]")
    feeds = {f"input_{i}": a for i, a in enumerate(inputs)}
    try:
        with torch.no_grad():
            torch_model(*(torch.from_numpy(a) for a in inputs))
    except GatexError:
        raise
    except (RuntimeError, ValueError, TypeError, IndexError) as exc:
        raise BadInputError(describe_model_failure(feeds, exc)) from None


# -- running a backend in its own process ---------------------------------------------------------

ProgressCallback = Callable[[str, str, int, int], None]   # (row id, phase, done, total)


def run_worker(job: dict[str, Any], workdir: Path, *, timeout: float, tag: str,
               on_progress: ProgressCallback | None = None, row_id: str = "") -> dict[str, Any]:
    """Run one job in a fresh ``python -m gatex.runtimes.bench_worker``; its result dict.

    A worker that crashes, hangs past ``timeout`` or writes no result yields
    ``{"status": "error", "reason": ...}`` naming what happened; nothing escapes this process.
    """

    job_path, result_path = workdir / f"{tag}.job.json", workdir / f"{tag}.result.json"
    job_path.write_text(json.dumps(job), encoding="utf-8")
    env = dict(os.environ)
    package_root = str(Path(__file__).resolve().parents[2])
    env["PYTHONPATH"] = os.pathsep.join(p for p in (package_root, env.get("PYTHONPATH")) if p)
    # what the backends leave in TMPDIR (onnxruntime's .ses session file, torch inductor's
    # cache folder) goes into a folder of this worker's own, removed when it ends
    scratch = workdir / f"{tag}-tmpdir"
    scratch.mkdir(exist_ok=True)
    env["TMPDIR"] = str(scratch)
    try:
        return _run_worker_process(job_path, result_path, workdir, env, timeout=timeout,
                                   tag=tag, on_progress=on_progress, row_id=row_id)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _run_worker_process(job_path: Path, result_path: Path, workdir: Path,
                        env: dict[str, str], *, timeout: float, tag: str,
                        on_progress: ProgressCallback | None, row_id: str) -> dict[str, Any]:
    from gatex.runtimes.bench_worker import PROGRESS_PREFIX

    with open(workdir / f"{tag}.stderr", "w+", encoding="utf-8", errors="replace") as err:
        proc = subprocess.Popen(
            [sys.executable, "-m", "gatex.runtimes.bench_worker", str(job_path),
             str(result_path)], stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=err,
            text=True, errors="replace", env=env)

        def read_progress() -> None:
            assert proc.stdout is not None
            for line in proc.stdout:
                parts = line.split()
                if len(parts) == 4 and parts[0] == PROGRESS_PREFIX and on_progress is not None:
                    try:
                        on_progress(row_id, parts[1], int(parts[2]), int(parts[3]))
                    except ValueError:
                        pass

        reader = threading.Thread(target=read_progress, daemon=True)
        reader.start()
        try:
            code = proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            return {"status": "error", "reason": f"timed out after {timeout:g} s (killed); "
                                                 "use fewer --iterations or a larger --timeout"}
        finally:
            if proc.poll() is None:  # interrupted: never leave a worker behind
                proc.kill()
                proc.wait()
            reader.join(timeout=5)
        err.seek(0)
        stderr_lines = [ln.strip() for ln in err.read().splitlines() if ln.strip()]
    if result_path.is_file():
        try:
            return json.loads(result_path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError):
            pass
    if code < 0:
        try:
            how = f"killed by {signal.Signals(-code).name}"
        except ValueError:
            how = f"killed by signal {-code}"
    else:
        how = f"exited with code {code}"
    last = f": {stderr_lines[-1][:300]}" if stderr_lines else ""
    return {"status": "error", "reason": f"the worker process crashed ({how}) and wrote no "
                                         f"result{last}"}


def row_from_worker(backend: str, artifact: str | None, label: str,
                    out: dict[str, Any] | Sequence[dict[str, Any]], batch_size: int
                    ) -> BackendRow:
    """The row of one worker's result, or of several (``--repeat``: one per process).

    Several results pool their timed runs (and device timings); load and first-run times are
    their median, memory the result with the largest peak above its baseline, and each
    process's own p50 is kept (`BackendRow.repeat_p50s`). A failed process fails the row (the
    bench runs no more for that backend), naming which process when it was not the first.
    """
    outs = [out] if isinstance(out, dict) else list(out)
    if not outs:
        raise ValueError("no worker result to make a row of")
    for k, o in enumerate(outs):
        status = o.get("status", "error")
        if status != "ok":
            where = f"process {k + 1}: " if k else ""   # the later ones did not run
            return BackendRow(backend, label, artifact, status=status,
                              reason=where + str(o.get("reason") or "no reason given"))
    per_run = [[int(s) for s in o["samples_ns"]] for o in outs]
    samples = [s for run in per_run for s in run]
    lat = latency_stats(samples)
    dev = [int(s) for o in outs for s in (o.get("device_samples_ns") or ())]
    first = outs[0]

    def median_of(key: str) -> float | None:
        values = [o[key] for o in outs if isinstance(o.get(key), (int, float))]
        return float(np.median(values)) if values else None

    memories = [o["memory"] for o in outs if o.get("memory")]
    memory = max(memories, key=lambda m: m.get("peak_above_baseline_bytes") or 0) \
        if memories else None
    notes = list(dict.fromkeys(n for o in outs for n in (o.get("notes") or ())))
    return BackendRow(
        backend, first.get("label") or label, artifact, threads=first.get("threads"),
        model_size_bytes=first.get("model_size_bytes"), model_file=first.get("model_file"),
        load_ms=median_of("load_ms"), first_run_ms=median_of("first_run_ms"), latency=lat,
        device_latency=latency_stats(dev) if dev else None,
        throughput_sps=batch_size / (lat.mean / 1e3) if lat.mean > 0 else None,
        memory=memory, notes=notes, samples_ns=samples,
        repeat_p50s=[latency_stats(run).p50 for run in per_run] if len(outs) > 1 else None)


# -- the bench ------------------------------------------------------------------------------------

@dataclass
class _Target:
    backend: str
    source: dict[str, Any]
    artifact: str | None       # file name shown in the table (None for torch)
    label: str


def parse_cpus(cpus: str | Sequence[int] | None) -> tuple[int, ...] | None:
    """``--cpus``: "0", "0,2" or "0-3" (or a sequence of ints) -> the sorted CPU ids, each one
    this process may run on; None stays None. Linux only (``os.sched_setaffinity``)."""
    if cpus is None:
        return None
    if not hasattr(os, "sched_setaffinity"):
        raise BadInputError("--cpus pins each worker with os.sched_setaffinity, which this "
                            "platform lacks (Linux only)")
    ids: set[int] = set()
    try:
        parts = cpus.split(",") if isinstance(cpus, str) else [str(int(c)) for c in cpus]
        for part in (p.strip() for p in parts):
            lo, _, hi = part.partition("-")
            ids.update(range(int(lo), int(hi or lo) + 1))
    except ValueError:
        raise BadInputError(f"--cpus must list CPU ids like 0,1 or 0-3; got {cpus!r}") from None
    usable = os.sched_getaffinity(0)
    if not ids or not ids <= usable:
        raise BadInputError(f"--cpus {cpus!r}: this process may run on CPUs "
                            f"{','.join(map(str, sorted(usable)))} only")
    return tuple(sorted(ids))


def _check_numbers(batch_size: int | None, warmup: int, iterations: int | None,
                   duration: float | None, threads: int | None, timeout: float,
                   max_regression: float | None, device: str, repeat: int = 1) -> None:
    if batch_size is not None and batch_size < 1:
        raise BadInputError(f"--batch-size must be at least 1; got {batch_size}")
    if warmup < 0:
        raise BadInputError(f"--warmup must be 0 or more; got {warmup}")
    if iterations is not None and duration is not None:
        raise BadInputError("give --iterations or --duration, not both")
    if iterations is not None and iterations < 1:
        raise BadInputError(f"--iterations must be at least 1; got {iterations}")
    if duration is not None and not duration > 0:
        raise BadInputError(f"--duration must be a positive number of seconds; got {duration}")
    if threads is not None and threads < 1:
        raise BadInputError(f"--threads must be at least 1; got {threads}")
    if not timeout > 0:
        raise BadInputError(f"--timeout must be positive; got {timeout}")
    if max_regression is not None and not max_regression >= 0:
        raise BadInputError(f"--max-regression must be a percentage >= 0; got {max_regression}")
    if device not in DEVICES:
        raise BadInputError(f"unknown device {device!r}; use one of {', '.join(DEVICES)}")
    if isinstance(repeat, bool) or not isinstance(repeat, int) or repeat < 1:
        raise BadInputError(f"--repeat must be at least 1; got {repeat}")


def _match_artifacts(paths: list[Path], backends: tuple[str, ...], named: bool,
                     headers: dict[Path, _OnnxHeader]) -> list[tuple[str, Path]]:
    """(backend, artifact) pairs to measure; a named backend that can run none is bad input,
    and so is an ONNX file holding TensorRT plugin nodes. ``headers`` receives each readable
    ONNX file's header (one read per file).

    Without artifacts there is nothing to match: each backend gets an export of the model."""
    if not paths:
        return []
    kinds = [(backend_for(p), p) for p in paths]
    for p in paths:
        if not p.exists():
            raise BadInputError(f"artifact {p} does not exist")
    for k, p in kinds:
        if k != "ort":
            continue
        try:
            headers[p] = _onnx_header(p)
        except CheckpointError:   # unreadable: the first one is refused below, others error rows
            continue
        if headers[p].plugins:   # parity can decompose them; timing cannot
            raise BadInputError(f"{p.name} holds TensorRT plugin nodes, which onnxruntime "
                                "cannot time; bench its engine with --backend trt on a TensorRT "
                                "machine, or the portable export with --backend ort")
    if named:
        for b in backends:
            if b != "torch" and not any(k == b for k, _ in kinds):
                runs = ", ".join(ARTIFACT_SUFFIXES[b])
                given = ", ".join(p.name for p in paths)
                raise BadInputError(f"backend {b} cannot run {given}: {b} runs {runs} artifacts")
        for k, p in kinds:
            if k not in backends:
                raise BadInputError(f"{p.name} runs on {k}, which --backend "
                                    f"{','.join(backends)} leaves out; add {k}")
    return [(k, p) for k, p in kinds if k in backends]


def bench(artifacts: Sequence[str | Path] = (), *, unit: str | None = None,
          model: str | None = None, weights: str | Path | None = None,
          trust_checkpoint: bool = False, input_shape: Sequence[int] | None = None,
          backends: str | Sequence[str] = "all", batch_size: int | None = None,
          warmup: int = DEFAULT_WARMUP, iterations: int | None = None,
          duration: float | None = None, threads: int | None = None, device: str = "cpu",
          cpus: str | Sequence[int] | None = None, repeat: int = 1,
          baseline: str | Path | None = None, max_regression: float | None = None,
          timeout: float = DEFAULT_TIMEOUT, reference: bool = True,
          on_progress: ProgressCallback | None = None,
          on_plan: Callable[[list[BackendRow]], None] | None = None) -> BenchResult:
    """Measure a model on each backend, each in its own process; torch eager is the reference.

    The model is ``artifacts`` (.onnx, .mlpackage, .engine; the torch reference is the zoo unit
    an ONNX file records, or ``unit`` / ``model``), or a zoo ``unit`` / a user ``model`` alone,
    exported to a temporary ONNX file for the ort row. ``backends`` is ``"all"`` (every backend
    here; the others become rows with the reason) or names: a named backend that is not here
    raises `BackendUnavailableError`. ``iterations`` (default 100) or ``duration`` seconds of
    timed runs after ``warmup`` runs. A failed backend is an error row, not an exception.
    ``reference=False`` leaves the torch row out (the harness benchmark times one backend).
    ``cpus`` ("0", "0,2", "0-3"; Linux) pins every worker to those CPUs before it imports a
    backend: on a shared machine a worker that migrates between CPUs times the machine too.
    ``repeat`` measures every backend in that many fresh processes, interleaved, pooling their
    runs; a p50 that moves more than 5 % between them flags the row unsteady (module docstring).

    >>> result = bench(unit="GoLU", backends="torch,ort", iterations=50)
    >>> result.row("ort").relative["p50"]    # ort's p50 / torch's p50
    """
    _check_numbers(batch_size, warmup, iterations, duration, threads, timeout, max_regression,
                   device, repeat)
    pinned = parse_cpus(cpus)
    chosen, named = parse_backends(backends)
    if isinstance(artifacts, (str, Path)):
        artifacts = [artifacts]
    paths = [Path(a) for a in artifacts]
    if not paths and unit is None and model is None:
        raise BadInputError("give an ARTIFACT, --unit NAME or --model REF to benchmark")
    if unit is not None and model is not None:
        raise BadInputError("give --unit or --model, not both")
    if model is None and (weights is not None or input_shape is not None):
        raise BadInputError("--weights and --input-shape go with --model")
    headers: dict[Path, _OnnxHeader] = {}
    pairs = _match_artifacts(paths, chosen, named, headers)
    if max_regression is not None and baseline is None:
        raise BadInputError("--max-regression needs --baseline F (a previous gatex bench --json)")
    baseline_doc = read_baseline(baseline) if baseline is not None else None

    reasons = {b: unavailable_reason(b, device) for b in chosen}
    if named:
        missing = [b for b in chosen if reasons[b]]
        if missing:
            raise BackendUnavailableError(f"backend {missing[0]} is not available: "
                                          f"{reasons[missing[0]]}")
    if iterations is None and duration is None:
        iterations = DEFAULT_ITERATIONS

    # the torch reference and the inputs
    onnx_specs: list[tuple[str, str, tuple[Any, ...]]] | None = None
    if unit is None and model is None:
        onnx_paths = [p for k, p in pairs if k == "ort"]
        if onnx_paths:
            header = headers.get(onnx_paths[0]) or _onnx_header(onnx_paths[0])
            onnx_specs, unit = header.inputs, header.metadata.get(UNIT_METADATA_KEY)
    elif pairs and pairs[0][0] == "ort":
        onnx_specs = (headers.get(pairs[0][1]) or _onnx_header(pairs[0][1])).inputs
    if onnx_specs:
        static = onnx_specs[0][2][0] if onnx_specs[0][2] else None
        if isinstance(static, int) and static > 0:
            if batch_size is not None and batch_size != static:
                raise BadInputError(f"{pairs[0][1].name} has a fixed batch of {static}; pass "
                                    f"--batch-size {static} or export with a dynamic batch")
            batch_size = static
    batch_size = batch_size or 1

    torch_model = None
    source: dict[str, Any] | None = None
    if unit is not None:
        from gatex.models import zoo

        unit = zoo.entry(unit).unit
        source = {"kind": "zoo", "unit": unit}
        inputs = [zoo_batch(unit, batch_size)]
        what = f"zoo held-out digits for {unit}, batch {batch_size}"
    elif model is not None:
        import torch

        from gatex.loading import load_model

        if input_shape is None:
            raise BadInputError("--model needs --input-shape (e.g. 1,64): the bench feeds random "
                                "normal inputs of that shape")
        ref = str(Path(model).resolve()) if str(model).endswith(".pt2") else model
        torch_model = load_model(ref, weights=weights, trust_checkpoint=trust_checkpoint)
        source = {"kind": "model", "ref": ref,
                  "weights": str(Path(weights).resolve()) if weights else None,
                  "trust_checkpoint": trust_checkpoint}
        shape = (batch_size, *tuple(input_shape)[1:])
        inputs = [torch.randn(shape, generator=torch.Generator().manual_seed(0)).numpy()]
        what = f"random normal {list(shape)} (seed 0)"
        _check_model_fits(torch_model, inputs, onnx_specs, pairs)
    else:
        if not onnx_specs:
            raise BadInputError("give --unit NAME or --model REF (with --input-shape) so gatex "
                                "knows the model's inputs")
        inputs = []
        for name, dtype, shape in onnx_specs:
            if not np.issubdtype(np.dtype(dtype), np.floating):
                raise BadInputError(f"input {name!r} is {dtype}; gatex bench fills float inputs "
                                    "only (pass --unit or --model)")
            inputs.append(random_batch(shape, batch_size, name))
        what = f"random normal, batch {batch_size} (seed 0)"

    targets: list[_Target] = []
    rows_unavailable: dict[str, BackendRow] = {}
    if not reference:
        pass
    elif source is not None:
        targets.append(_Target("torch", source, None, "torch (eager)"))
    else:
        rows_unavailable["torch"] = BackendRow(
            "torch", "torch (eager)", status="unavailable",
            reason="no torch model: the artifact records no gatex.unit; pass --unit or --model")
    for b in chosen:
        if b != "torch" and reasons[b]:
            rows_unavailable[b] = BackendRow(b, b, status="unavailable", reason=reasons[b])

    with tempfile.TemporaryDirectory(prefix="gatex-bench-") as tmp:
        workdir = Path(tmp)
        for kind, p in pairs:
            if not reasons[kind]:
                targets.append(_Target(kind, {"kind": "artifact", "path": str(p.resolve())},
                                       p.name, kind))
        if not paths:  # --unit / --model: export what each available backend runs
            for b in chosen:
                if b == "torch" or reasons[b]:
                    continue
                exported = _export_for(b, unit, torch_model, inputs, workdir, model)
                targets.append(_Target(b, {"kind": "artifact", "path": str(exported)},
                                       exported.name, b))
        np.savez(workdir / "inputs.npz", **{f"input_{i}": a for i, a in enumerate(inputs)})

        planned = [BackendRow(t.backend, t.label, t.artifact, status="pending")
                   for t in targets]
        if on_plan is not None:
            on_plan(planned)
        jobs = [{"backend": t.backend, "source": t.source,
                 "inputs": str(workdir / "inputs.npz"), "warmup": warmup,
                 "iterations": iterations, "duration_s": duration, "threads": threads,
                 "device": device, "cpus": list(pinned) if pinned else None} for t in targets]
        outs: list[list[dict[str, Any]]] = [[] for _ in targets]
        for r in range(repeat):   # interleaved: every backend once, then again
            progress = on_progress
            if repeat > 1 and on_progress is not None:
                def progress(row_id: str, phase: str, done: int, total: int,
                             _r: int = r, _cb: ProgressCallback = on_progress) -> None:
                    _cb(row_id, f"{phase} {_r + 1}/{repeat}", done, total)
            for i, t in enumerate(targets):
                if outs[i] and outs[i][-1].get("status") != "ok":
                    continue   # a failed backend is not run again
                tag = f"{i}-{t.backend}" if repeat == 1 else f"{i}-{t.backend}-{r}"
                outs[i].append(run_worker(jobs[i], workdir, timeout=timeout, tag=tag,
                                          on_progress=progress, row_id=planned[i].id))
        rows = [row_from_worker(t.backend, t.artifact, t.label, outs[i], batch_size)
                for i, t in enumerate(targets)]
    order = {b: i for i, b in enumerate(BACKENDS)}
    rows.extend(rows_unavailable.values())
    rows.sort(key=lambda r: order[r.backend])
    add_relative(rows)
    machine = machine_info()
    settings = {"batch_size": batch_size, "warmup": warmup, "iterations": iterations,
                "duration_s": duration, "threads": threads, "device": device,
                "cpus": list(pinned) if pinned else None, "repeat": repeat,
                "timeout_s": float(timeout), "cv_warn_threshold": CV_WARN_THRESHOLD,
                "reference": "torch" if reference else None, "unit": unit, "model": model,
                "artifacts": [str(p) for p in paths], "inputs": what}
    comparison = None
    if baseline_doc is not None:
        pct = DEFAULT_MAX_REGRESSION if max_regression is None else max_regression
        comparison = compare_baseline(rows, baseline_doc, pct, file=str(baseline),
                                      machine=machine)
    return BenchResult(machine, versions(), settings, rows, comparison,
                       datetime.now(timezone.utc).isoformat(timespec="seconds"))


def _export_for(backend: str, unit: str | None, torch_model: Any, inputs: list[np.ndarray],
                workdir: Path, model_ref: str | None = None) -> Path:
    """Export the reference model for ``backend`` into ``workdir`` (no parity check: the bench
    measures speed; ``gatex export`` / ``gatex parity`` prove the numbers)."""
    import torch

    from gatex.exporters import export

    to = {"ort": "onnx", "coreml": "coreml", "trt": "trt"}[backend]
    examples = tuple(torch.from_numpy(a) for a in inputs)
    target = unit if unit is not None else torch_model
    name = None if unit is not None or not model_ref else \
        Path(model_ref.rpartition(":")[2]).stem or None   # net.py:build -> build
    result = export(target, examples, to=to, out_dir=workdir / backend, name=name, check=False)
    return Path(result.path)


__all__ = ["ALIASES", "BACKENDS", "CV_WARN_THRESHOLD", "REPEAT_SPREAD_WARN", "SCHEMA",
           "BackendRow", "BaselineComparison", "BenchResult", "LatencyStats", "Regression",
           "add_relative", "bench", "compare_baseline", "latency_stats", "machine_info",
           "parse_backends", "read_baseline", "run_worker", "unavailable_reason"]
