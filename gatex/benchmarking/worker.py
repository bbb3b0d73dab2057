"""The child side of ``gatex bench``: one backend, one process, measured from a clean baseline.

    python -m gatex.benchmarking.worker JOB.json RESULT.json

The parent (`gatex.benchmarking.run`) writes the job; this process imports the backend, takes
its memory baseline, loads the model (timed: ``load_ms``), runs it once (``first_run_ms``),
warms up, then times ``iterations`` runs (or runs for ``duration_s``) and writes the result
JSON atomically. Progress goes to stdout as ``@gatex-bench <phase> <done> <total>`` lines.

Timing: each run is ``perf_counter_ns`` around one call of the backend's own entry point
(``session.run`` for onnxruntime, ``model(x)`` under ``torch.inference_mode`` for torch), with
the inputs validated and converted once, before warm-up, and the garbage collector off during
the timed runs (as ``timeit`` does). On CUDA, torch's device time is measured with CUDA events
around the model call on inputs already on the device (``device_samples_ns``), and the
end-to-end time (host -> device copy, model, device -> host copy, synchronised) is the main
latency.

Memory (Linux): after the imports and the inputs are in memory, the kernel's peak-RSS mark is
reset (``/proc/self/clear_refs`` ← 5, Linux >= 4.0) and the current RSS is the baseline; the
peak is ``VmHWM`` at the end, so ``peak_above_baseline_bytes`` is what loading and running the
model added, this backend's alone. Where the mark cannot be reset (macOS, old kernels) the
baseline is ``ru_maxrss`` after the imports and the peak ``ru_maxrss`` at the end (method
``ru_maxrss``): a peak below the import-time peak then reads as 0.

Test hook: ``GATEX_BENCH_TEST_CRASH=<backend>`` (or ``<backend>:<artifact file name>``, a row
id) makes that worker abort (SIGABRT) right after loading, to prove a crash stays in its process.
"""

from __future__ import annotations

import gc
import json
import os
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

PROGRESS_PREFIX = "@gatex-bench"
CRASH_ENV = "GATEX_BENCH_TEST_CRASH"
PROGRESS_STEPS = 20   # progress lines per timed phase, printed between timed runs


# -- memory ---------------------------------------------------------------------------------------

def _status_kb(field: str) -> int | None:
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def _ru_maxrss_bytes() -> int:
    try:
        import resource
    except ImportError:  # Windows: no getrusage; memory reads as 0
        return 0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak) if sys.platform == "darwin" else int(peak) * 1024  # macOS: bytes, Linux: KiB


class MemoryProbe:
    """Peak resident memory of this process above a baseline (see the module docstring)."""

    def __init__(self) -> None:
        self.method = "ru_maxrss"
        try:
            with open("/proc/self/clear_refs", "w", encoding="ascii") as f:
                f.write("5")
            if _status_kb("VmHWM") is not None:
                self.method = "vmhwm-reset"
        except OSError:
            pass
        if self.method == "vmhwm-reset":
            self.baseline = (_status_kb("VmRSS") or 0) * 1024
        else:
            self.baseline = _ru_maxrss_bytes()

    def current(self) -> int | None:
        kb = _status_kb("VmRSS")
        return None if kb is None else kb * 1024

    def peak(self) -> int:
        if self.method == "vmhwm-reset":
            return (_status_kb("VmHWM") or 0) * 1024
        return _ru_maxrss_bytes()


# -- timing ---------------------------------------------------------------------------------------

def progress(phase: str, done: int, total: int) -> None:
    print(f"{PROGRESS_PREFIX} {phase} {done} {total}", flush=True)


def time_runs(step: Callable[[], Any], iterations: int | None, duration_s: float | None,
              phase: str = "timed") -> list[int]:
    """Nanoseconds per call of ``step``: ``iterations`` calls, or calls until ``duration_s``."""
    clock = time.perf_counter_ns
    samples: list[int] = []
    append = samples.append
    gc_was_on = gc.isenabled()
    gc.disable()
    try:
        if iterations is not None:
            chunk = max(1, iterations // PROGRESS_STEPS)
            done = 0
            while done < iterations:
                for _ in range(min(chunk, iterations - done)):
                    t0 = clock()
                    step()
                    append(clock() - t0)
                done = len(samples)
                progress(phase, done, iterations)
        else:
            assert duration_s is not None
            total_ns = int(duration_s * 1e9)
            report_every = max(1, total_ns // PROGRESS_STEPS)
            start = next_report = clock()
            end = start + total_ns
            t1 = start
            while t1 < end:
                t0 = clock()
                step()
                t1 = clock()
                append(t1 - t0)
                if t1 >= next_report:
                    progress(phase, min(t1 - start, total_ns) // 1_000_000, total_ns // 1_000_000)
                    next_report = t1 + report_every
    finally:
        if gc_was_on:
            gc.enable()
    return samples


def warm_up(step: Callable[[], Any], count: int) -> None:
    for i in range(count):
        step()
        if (i + 1) % max(1, count // 4) == 0 or i + 1 == count:
            progress("warmup", i + 1, count)


# -- backends -------------------------------------------------------------------------------------

class Measured:
    """What a backend adapter gives the measuring loop."""

    def __init__(self, label: str, step: Callable[[], Any], *, threads: int | None,
                 size_bytes: int, model_file: str | None, notes: list[str] | None = None,
                 device_timer: Callable[[int | None, float | None], list[int]] | None = None,
                 device_memory: Callable[[], int | None] | None = None) -> None:
        self.label = label
        self.step = step
        self.threads = threads
        self.size_bytes = size_bytes
        self.model_file = model_file
        self.notes = notes or []
        self.device_timer = device_timer
        self.device_memory = device_memory


def path_size(path: str | Path) -> int:
    """Bytes in a file, or in every file under a directory (an .mlpackage)."""
    p = Path(path)
    if p.is_dir():
        return sum(f.stat().st_size for f in p.rglob("*") if f.is_file())
    size = p.stat().st_size
    external = p.with_name(p.name + ".data")  # gatex's ONNX external data (models over 2 GB)
    if p.suffix == ".onnx" and external.is_file():
        size += external.stat().st_size
    return size


def _torch_model(source: dict[str, Any]) -> tuple[Any, int, str | None]:
    """(model, size in bytes, the file the size is of or None for parameters+buffers)."""
    from gatex.loading import load_model
    from gatex.models import zoo

    kind = source["kind"]
    if kind == "zoo":
        entry = zoo.entry(source["unit"])
        model = zoo.load(entry.unit)
        return model, path_size(entry.weights_path), str(entry.weights_path)
    model = load_model(source["ref"], weights=source.get("weights"),
                       trust_checkpoint=bool(source.get("trust_checkpoint")))
    for f in (source.get("weights"), source["ref"] if str(source["ref"]).endswith(".pt2")
              else None):
        if f:
            return model, path_size(f), str(f)
    tensors = [*model.parameters(), *model.buffers()]
    return model, sum(t.numel() * t.element_size() for t in tensors), None


def torch_backend(job: dict[str, Any], inputs: list[np.ndarray]) -> Measured:
    import torch

    device = job["device"]
    if job.get("threads"):
        torch.set_num_threads(int(job["threads"]))
    model, size, model_file = _torch_model(job["source"])
    model = model.eval().to(device)
    host = [torch.from_numpy(np.ascontiguousarray(a)) for a in inputs]
    threads = torch.get_num_threads()
    if not device.startswith("cuda"):
        def step() -> Any:
            with torch.inference_mode():
                return model(*host)

        return Measured(f"torch (eager, {device.upper()})", step, threads=threads,
                        size_bytes=size, model_file=model_file)

    # CUDA: end-to-end (copies in and out, synchronised) is the latency; events time the model
    # alone on inputs already resident on the device.
    resident = [t.to(device) for t in host]
    pinned = [t.pin_memory() for t in host]

    def to_host(out: Any) -> Any:
        if isinstance(out, torch.Tensor):
            return out.cpu()
        if isinstance(out, (tuple, list)):
            return [to_host(o) for o in out]
        if isinstance(out, dict):
            return {k: to_host(v) for k, v in out.items()}
        return out

    def end_to_end() -> Any:
        with torch.inference_mode():
            out = to_host(model(*[t.to(device, non_blocking=True) for t in pinned]))
        torch.cuda.synchronize()
        return out

    def device_timer(iterations: int | None, duration_s: float | None) -> list[int]:
        start, stop = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)

        def one() -> int:
            with torch.inference_mode():
                start.record()
                model(*resident)
                stop.record()
            stop.synchronize()
            return int(start.elapsed_time(stop) * 1e6)  # ms -> ns

        samples: list[int] = []
        if iterations is not None:
            for i in range(iterations):
                samples.append(one())
                if (i + 1) % max(1, iterations // PROGRESS_STEPS) == 0:
                    progress("device", i + 1, iterations)
        else:
            end = time.perf_counter() + float(duration_s or 0)
            while time.perf_counter() < end:
                samples.append(one())
        return samples

    torch.cuda.reset_peak_memory_stats()
    return Measured(f"torch (eager, {torch.cuda.get_device_name()})", end_to_end,
                    threads=threads, size_bytes=size, model_file=model_file,
                    device_timer=device_timer,
                    device_memory=lambda: int(torch.cuda.max_memory_allocated()))


def _cast_for(spec: Any, array: np.ndarray) -> np.ndarray:
    if array.dtype.kind == "f" and spec.dtype in ("float16", "float64", "float32"):
        return array.astype(spec.dtype, copy=False)
    if array.dtype.kind == "f" and spec.dtype == "bfloat16":
        import ml_dtypes

        return array.astype(ml_dtypes.bfloat16)
    return array


def ort_backend(job: dict[str, Any], inputs: list[np.ndarray]) -> Measured:
    from gatex.runtimes.onnxruntime_runtime import OrtRuntime

    path = job["source"]["path"]
    runtime = OrtRuntime(path, device=job["device"], threads=job.get("threads"))
    runtime.load()
    specs = runtime.input_specs or ()
    if len(specs) != len(inputs):
        from gatex.errors import BadInputError

        raise BadInputError(f"{path} takes {len(specs)} inputs; the bench prepared {len(inputs)}")
    feeds = runtime.validate_feeds({s.name: _cast_for(s, a) for s, a in zip(specs, inputs)})
    run = runtime.session.run
    notes = []
    if job["device"] != "cpu":
        notes.append("onnxruntime: end-to-end time only (host arrays in and out)")
    return Measured(runtime.label, lambda: run(None, feeds), threads=job.get("threads"),
                    size_bytes=path_size(path), model_file=str(path), notes=notes)


# Backends whose only interface is a gatex Runtime class: (module, class, keyword arguments),
# constructed with the artifact path; each call goes through Runtime.run (feed validation
# included). CoreML must really predict: its emulator's timings say nothing about CoreML.
RUNTIME_CLASSES: dict[str, tuple[str, str, dict[str, Any]]] = {
    "openvino": ("gatex.runtimes.openvino_runtime", "OpenvinoRuntime", {}),
    "coreml": ("gatex.runtimes.coreml_runtime", "CoremlRuntime", {"emulate": False}),
    "trt": ("gatex.runtimes.tensorrt_runtime", "TensorrtRuntime", {}),
}


def runtime_class_backend(job: dict[str, Any], inputs: list[np.ndarray]) -> Measured:
    import importlib

    from gatex.errors import BackendUnavailableError

    module, cls, kwargs = RUNTIME_CLASSES[job["backend"]]
    runtime = getattr(importlib.import_module(module), cls)(job["source"]["path"], **kwargs)
    runtime.load()
    if getattr(runtime, "emulated", False):
        raise BackendUnavailableError(f"{runtime.label} is emulated here; emulated timings say "
                                      "nothing about the backend's speed")
    specs = runtime.input_specs or ()
    feeds = {s.name: _cast_for(s, a) for s, a in zip(specs, inputs)}
    return Measured(runtime.label, lambda: runtime.run(feeds), threads=None,
                    size_bytes=path_size(job["source"]["path"]),
                    model_file=str(job["source"]["path"]),
                    notes=[f"{job['backend']}: timed through gatex's Runtime.run"])


BACKENDS: dict[str, Callable[[dict[str, Any], list[np.ndarray]], Measured]] = {
    "torch": torch_backend, "ort": ort_backend,
    "openvino": runtime_class_backend, "coreml": runtime_class_backend,
    "trt": runtime_class_backend,
}


def _import_backend(backend: str) -> None:
    # The baseline is taken after these imports: only loading and running count as the backend's.
    import torch  # noqa: F401  (gatex itself imports torch)
    import torch._dynamo  # noqa: F401  (a torch.library custom op imports it on its first call)

    import gatex.runtimes.base  # noqa: F401
    if backend == "ort":
        import onnxruntime  # noqa: F401

        import gatex.runtimes.onnxruntime_runtime  # noqa: F401
    if backend == "openvino":
        import onnx.inliner  # noqa: F401
        import openvino  # noqa: F401

        import gatex.runtimes.openvino_runtime  # noqa: F401


# -- the job --------------------------------------------------------------------------------------

def measure(job: dict[str, Any]) -> dict[str, Any]:
    """Run one job (see `gatex.benchmarking.run.Job`); the result dict the parent reads."""
    backend = job["backend"]
    _import_backend(backend)
    with np.load(job["inputs"], allow_pickle=False) as data:
        inputs = [data[f"input_{i}"] for i in range(len(data.files))]
    memory = MemoryProbe()

    t0 = time.perf_counter_ns()
    measured = BACKENDS[backend](job, inputs)
    load_ns = time.perf_counter_ns() - t0
    path = job["source"].get("path")
    if os.environ.get(CRASH_ENV) in (backend, f"{backend}:{Path(path).name if path else ''}"):
        os.abort()
    t0 = time.perf_counter_ns()
    measured.step()
    first_ns = time.perf_counter_ns() - t0
    warm_up(measured.step, int(job["warmup"]))
    rss_before = memory.current()
    samples = time_runs(measured.step, job.get("iterations"), job.get("duration_s"))
    rss_after = memory.current()
    device_samples = None
    if measured.device_timer is not None:
        warm_up(measured.step, min(int(job["warmup"]), 10))
        device_samples = measured.device_timer(job.get("iterations"), job.get("duration_s"))
    peak = memory.peak()
    return {
        "status": "ok", "label": measured.label, "threads": measured.threads,
        "model_size_bytes": measured.size_bytes, "model_file": measured.model_file,
        "load_ms": load_ns / 1e6, "first_run_ms": first_ns / 1e6,
        "samples_ns": samples, "device_samples_ns": device_samples,
        "memory": {
            "method": memory.method, "baseline_rss_bytes": memory.baseline,
            "peak_rss_bytes": peak, "peak_above_baseline_bytes": max(0, peak - memory.baseline),
            "timed_growth_bytes": (None if rss_before is None or rss_after is None
                                   else rss_after - rss_before),
            "peak_device_bytes": (measured.device_memory() if measured.device_memory else None),
        },
        "notes": measured.notes,
    }


def _write(path: Path, payload: dict[str, Any]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(payload), encoding="utf-8")
    os.replace(tmp, path)


def _die_with_parent() -> None:
    """Linux: the kernel sends this worker SIGKILL when its parent (the bench) dies, however it
    dies (SIGKILL included), so a worker never runs on alone. Elsewhere the parent's own
    interrupt handling ends its workers."""
    if not sys.platform.startswith("linux"):
        return
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        pr_set_pdeathsig = 1
        libc.prctl(pr_set_pdeathsig, signal.SIGKILL, 0, 0, 0)
    except (OSError, AttributeError):
        return
    if os.getppid() == 1:  # the parent died before prctl took effect
        os._exit(1)


def main(argv: list[str]) -> int:
    _die_with_parent()
    if len(argv) != 2:
        print("usage: python -m gatex.benchmarking.worker JOB.json RESULT.json", file=sys.stderr)
        return 2
    job = json.loads(Path(argv[0]).read_text(encoding="utf-8"))
    out = Path(argv[1])
    if job.get("cpus"):   # before any backend is imported and sizes its thread pools
        os.sched_setaffinity(0, job["cpus"])
    from gatex.errors import BackendUnavailableError, GatexError

    try:
        result = measure(job)
    except BackendUnavailableError as exc:
        _write(out, {"status": "unavailable", "reason": " ".join(str(exc).split())})
        return 0
    except GatexError as exc:
        _write(out, {"status": "error", "reason": " ".join(str(exc).split())})
        return 1
    except Exception as exc:  # noqa: BLE001  (any backend failure becomes that backend's row)
        _write(out, {"status": "error",
                     "reason": f"{type(exc).__name__}: {' '.join(str(exc).split())[:500]}"})
        return 1
    _write(out, result)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
