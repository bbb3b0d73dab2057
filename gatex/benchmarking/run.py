"""`bench`: every backend of a bench in a worker process of its own, one after the other (or
interleaved with ``--repeat``), each row built from its worker's result
(`gatex.benchmarking.schema`)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from gatex.benchmarking.plan import (
    OnnxHeader,
    backend_for,
    check_model_fits,
    machine_info,
    onnx_header,
    parse_backends,
    random_batch,
    unavailable_reason,
    versions,
    zoo_batch,
)
from gatex.benchmarking.schema import (
    ARTIFACT_SUFFIXES,
    BACKENDS,
    CV_WARN_THRESHOLD,
    DEFAULT_ITERATIONS,
    DEFAULT_MAX_REGRESSION,
    DEFAULT_TIMEOUT,
    DEFAULT_WARMUP,
    DEVICES,
    UNIT_METADATA_KEY,
    BackendRow,
    BenchResult,
    add_relative,
    compare_baseline,
    read_baseline,
)
from gatex.benchmarking.stats import latency_stats
from gatex.benchmarking.worker import PROGRESS_PREFIX
from gatex.errors import BackendUnavailableError, BadInputError, CheckpointError
from gatex.loading import load_model
from gatex.models import zoo
from gatex.pipeline import export

# -- running a backend in its own process ---------------------------------------------------------

ProgressCallback = Callable[[str, str, int, int], None]   # (row id, phase, done, total)


def run_worker(job: dict[str, Any], workdir: Path, *, timeout: float, tag: str,
               on_progress: ProgressCallback | None = None, row_id: str = "") -> dict[str, Any]:
    """Run one job in a fresh ``python -m gatex.benchmarking.worker``; its result dict.

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
    with open(workdir / f"{tag}.stderr", "w+", encoding="utf-8", errors="replace") as err:
        proc = subprocess.Popen(
            [sys.executable, "-m", "gatex.benchmarking.worker", str(job_path),
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
                     headers: dict[Path, OnnxHeader]) -> list[tuple[str, Path]]:
    """(backend, artifact) pairs to measure; a named backend that can run none is bad input,
    and so is an ONNX file holding TensorRT plugin nodes. ``headers`` receives each readable
    ONNX file's header (one read per file).

    Without artifacts there is nothing to match: each backend gets an export of the model."""
    if not paths:
        return []
    kinds = [(backend_for(p), p) for p in paths]
    # a .onnx file runs on ort and on openvino alike: it is openvino's too where asked
    kinds += [("openvino", p) for k, p in kinds if k == "ort" and "openvino" in backends]
    for p in paths:
        if not p.exists():
            raise BadInputError(f"artifact {p} does not exist")
    for k, p in kinds:
        if k != "ort":
            continue
        try:
            headers[p] = onnx_header(p)
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
            if k not in backends and not (k == "ort" and "openvino" in backends):
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
          inputs: Sequence[np.ndarray] | None = None, inputs_note: str = "the given inputs",
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
    ``inputs`` (arrays in the model's input order, any dtype: token ids too) replaces the
    generated inputs for ``model`` or an artifact alone; their first size is the batch.
    ``repeat`` measures every backend in that many fresh processes, interleaved, pooling their
    runs; a p50 that moves more than 5 % between them flags the row unsteady (module docstring).

    >>> result = bench(unit="GoLU", backends="torch,ort", iterations=50)
    >>> result.row("ort").relative["p50"]    # ort's p50 / torch's p50
    """
    _check_numbers(batch_size, warmup, iterations, duration, threads, timeout, max_regression,
                   device, repeat)
    pinned = parse_cpus(cpus)
    chosen, named = parse_backends(backends)
    paths = [Path(a) for a in ([artifacts] if isinstance(artifacts, (str, Path)) else artifacts)]
    _check_sources(paths, unit, model, weights, input_shape, max_regression, baseline)
    headers: dict[Path, OnnxHeader] = {}
    pairs = _match_artifacts(paths, chosen, named, headers)
    baseline_doc = read_baseline(baseline) if baseline is not None else None
    reasons = {b: unavailable_reason(b, device) for b in chosen}
    missing = [b for b in chosen if reasons[b]] if named else []
    if missing:
        raise BackendUnavailableError(f"backend {missing[0]} is not available: "
                                      f"{reasons[missing[0]]}")
    if iterations is None and duration is None:
        iterations = DEFAULT_ITERATIONS
    given = _given_inputs(inputs, unit, input_shape, batch_size)
    if given is not None:
        batch_size = given[0].shape[0] if given[0].ndim else 1
    onnx_specs, unit, batch_size = _onnx_inputs(pairs, headers, unit, model, batch_size)
    if given is not None:
        torch_model, source, inputs, what = _reference_for_given(
            given, inputs_note, unit, model, weights, trust_checkpoint, onnx_specs, pairs)
    else:
        torch_model, source, inputs, what = _reference_and_inputs(
            unit, model, weights, trust_checkpoint, input_shape, batch_size, onnx_specs, pairs)
    if unit is not None:
        unit = source["unit"]
    rows_unavailable = {b: BackendRow(b, b, status="unavailable", reason=reasons[b])
                        for b in chosen if b != "torch" and reasons[b]}
    targets: list[_Target] = []
    if reference and source is not None:
        targets.append(_Target("torch", source, None, "torch (eager)"))
    elif reference:
        rows_unavailable["torch"] = BackendRow(
            "torch", "torch (eager)", status="unavailable",
            reason="no torch model: the artifact records no gatex.unit; pass --unit or --model")
    with tempfile.TemporaryDirectory(prefix="gatex-bench-") as tmp:
        workdir = Path(tmp)
        targets += [_Target(kind, {"kind": "artifact", "path": str(p.resolve())}, p.name, kind)
                    for kind, p in pairs if not reasons[kind]]
        if not paths:  # --unit / --model: export what each available backend runs
            exports: dict[str, Path] = {}  # ort and openvino time one ONNX file
            for b in chosen:
                if b != "torch" and not reasons[b]:
                    key = "ort" if b == "openvino" else b
                    if key not in exports:
                        exports[key] = _export_for(b, unit, torch_model, inputs, workdir, model)
                    exported = exports[key]
                    targets.append(_Target(b, {"kind": "artifact", "path": str(exported)},
                                           exported.name, b))
        np.savez(workdir / "inputs.npz", **{f"input_{i}": a for i, a in enumerate(inputs)})
        planned = [BackendRow(t.backend, t.label, t.artifact, status="pending") for t in targets]
        if on_plan is not None:
            on_plan(planned)
        job = {"inputs": str(workdir / "inputs.npz"), "warmup": warmup,
               "iterations": iterations, "duration_s": duration, "threads": threads,
               "device": device, "cpus": list(pinned) if pinned else None}
        outs = _run_rounds(targets, planned, job, workdir, repeat=repeat, timeout=timeout,
                           on_progress=on_progress)
        rows = [row_from_worker(t.backend, t.artifact, t.label, outs[i], batch_size)
                for i, t in enumerate(targets)]
    order = {b: i for i, b in enumerate(BACKENDS)}
    rows = sorted([*rows, *rows_unavailable.values()], key=lambda r: order[r.backend])
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


def _check_sources(paths: list[Path], unit: str | None, model: str | None, weights: Any,
                   input_shape: Any, max_regression: float | None, baseline: Any) -> None:
    if not paths and unit is None and model is None:
        raise BadInputError("give an ARTIFACT, --unit NAME or --model REF to benchmark")
    if unit is not None and model is not None:
        raise BadInputError("give --unit or --model, not both")
    if model is None and (weights is not None or input_shape is not None):
        raise BadInputError("--weights and --input-shape go with --model")
    if max_regression is not None and baseline is None:
        raise BadInputError("--max-regression needs --baseline F (a previous gatex bench --json)")


def _onnx_inputs(pairs: list[tuple[str, Path]], headers: dict[Path, OnnxHeader],
                 unit: str | None, model: str | None, batch_size: int | None
                 ) -> tuple[list[tuple[str, str, tuple[Any, ...]]] | None, str | None, int]:
    """The first ONNX artifact's declared inputs (and, with no --unit/--model, the zoo unit it
    records), and the batch size: the file's fixed batch where it has one."""
    onnx_specs = None
    if unit is None and model is None:
        onnx_paths = [p for k, p in pairs if k in ("ort", "openvino")]
        if onnx_paths:
            header = headers.get(onnx_paths[0]) or onnx_header(onnx_paths[0])
            onnx_specs, unit = header.inputs, header.metadata.get(UNIT_METADATA_KEY)
    elif pairs and pairs[0][0] in ("ort", "openvino"):
        onnx_specs = (headers.get(pairs[0][1]) or onnx_header(pairs[0][1])).inputs
    if onnx_specs:
        static = onnx_specs[0][2][0] if onnx_specs[0][2] else None
        if isinstance(static, int) and static > 0:
            if batch_size is not None and batch_size != static:
                raise BadInputError(f"{pairs[0][1].name} has a fixed batch of {static}; pass "
                                    f"--batch-size {static} or export with a dynamic batch")
            batch_size = static
    return onnx_specs, unit, batch_size or 1


def _reference_and_inputs(unit: str | None, model: str | None, weights: Any,
                          trust_checkpoint: bool, input_shape: Sequence[int] | None,
                          batch_size: int, onnx_specs: Any, pairs: list[tuple[str, Path]]
                          ) -> tuple[Any, dict[str, Any] | None, list[np.ndarray], str]:
    """(torch model or None, the torch row's source, the input batch, how it was made)."""
    if unit is not None:
        unit = zoo.entry(unit).unit
        return None, {"kind": "zoo", "unit": unit}, [zoo_batch(unit, batch_size)], \
            f"zoo held-out digits for {unit}, batch {batch_size}"
    if model is not None:
        import torch


        if input_shape is None:
            raise BadInputError("--model needs its inputs: --input-shape 1,64 (random normal), "
                                "--input NAME:DTYPE[SHAPE]:LO..HI per input, or --inputs F.npz")
        ref = str(Path(model).resolve()) if str(model).endswith(".pt2") else model
        torch_model = load_model(ref, weights=weights, trust_checkpoint=trust_checkpoint)
        source = {"kind": "model", "ref": ref,
                  "weights": str(Path(weights).resolve()) if weights else None,
                  "trust_checkpoint": trust_checkpoint}
        shape = (batch_size, *tuple(input_shape)[1:])
        inputs = [torch.randn(shape, generator=torch.Generator().manual_seed(0)).numpy()]
        check_model_fits(torch_model, inputs, onnx_specs, pairs)
        return torch_model, source, inputs, f"random normal {list(shape)} (seed 0)"
    if not onnx_specs:
        raise BadInputError("give --unit NAME or --model REF (with --input-shape) so gatex "
                            "knows the model's inputs")
    inputs = []
    for name, dtype, shape in onnx_specs:
        if not np.issubdtype(np.dtype(dtype), np.floating):
            raise BadInputError(f"input {name!r} is {dtype}; gatex bench fills float inputs "
                                f"only: give them with --input {name}:{dtype}[...]:LO..HI "
                                "or --inputs F.npz")
        inputs.append(random_batch(shape, batch_size, name))
    return None, None, inputs, f"random normal, batch {batch_size} (seed 0)"


def _given_inputs(inputs: Sequence[np.ndarray] | None, unit: str | None, input_shape: Any,
                  batch_size: int | None) -> list[np.ndarray] | None:
    if inputs is None:
        return None
    arrays = [np.ascontiguousarray(a) for a in inputs]
    if not arrays:
        raise BadInputError("the inputs file holds no arrays")
    if unit is not None or input_shape is not None:
        raise BadInputError("--inputs / --input replace the inputs of --model or an artifact; "
                            "a zoo --unit has its digits, --input-shape is the other way")
    batch = arrays[0].shape[0] if arrays[0].ndim else 1
    if batch_size is not None and batch_size != batch:
        raise BadInputError(f"the given inputs have batch {batch}; --batch-size {batch_size} "
                            "contradicts them (leave it out)")
    return arrays


def _reference_for_given(inputs: list[np.ndarray], note: str, unit: str | None,
                         model: str | None, weights: Any, trust_checkpoint: bool,
                         onnx_specs: Any, pairs: list[tuple[str, Path]]
                         ) -> tuple[Any, dict[str, Any] | None, list[np.ndarray], str]:
    """The torch reference (--model, or the zoo unit the artifact records) for given inputs."""
    if onnx_specs and len(onnx_specs) != len(inputs):
        raise BadInputError(f"{pairs[0][1].name} takes {len(onnx_specs)} inputs "
                            f"({', '.join(n for n, _, _ in onnx_specs)}); {len(inputs)} given")
    if model is None:
        if unit is None:
            return None, None, inputs, note
        return None, {"kind": "zoo", "unit": zoo.entry(unit).unit}, inputs, note
    ref = str(Path(model).resolve()) if str(model).endswith(".pt2") else model
    torch_model = load_model(ref, weights=weights, trust_checkpoint=trust_checkpoint)
    source = {"kind": "model", "ref": ref,
              "weights": str(Path(weights).resolve()) if weights else None,
              "trust_checkpoint": trust_checkpoint}
    check_model_fits(torch_model, inputs, None, pairs)
    return torch_model, source, inputs, note


def _run_rounds(targets: list[_Target], planned: list[BackendRow], job: dict[str, Any],
                workdir: Path, *, repeat: int, timeout: float,
                on_progress: ProgressCallback | None) -> list[list[dict[str, Any]]]:
    """Every target's worker results, ``repeat`` rounds interleaved (every backend once, then
    again); a backend that failed is not run again."""
    outs: list[list[dict[str, Any]]] = [[] for _ in targets]
    for r in range(repeat):
        progress = on_progress
        if repeat > 1 and on_progress is not None:
            def progress(row_id: str, phase: str, done: int, total: int,
                         _r: int = r, _cb: ProgressCallback = on_progress) -> None:
                _cb(row_id, f"{phase} {_r + 1}/{repeat}", done, total)
        for i, t in enumerate(targets):
            if outs[i] and outs[i][-1].get("status") != "ok":
                continue
            tag = f"{i}-{t.backend}" if repeat == 1 else f"{i}-{t.backend}-{r}"
            outs[i].append(run_worker({"backend": t.backend, "source": t.source, **job}, workdir,
                                      timeout=timeout, tag=tag, on_progress=progress,
                                      row_id=planned[i].id))
    return outs


def _export_for(backend: str, unit: str | None, torch_model: Any, inputs: list[np.ndarray],
                workdir: Path, model_ref: str | None = None) -> Path:
    """Export the reference model for ``backend`` into ``workdir`` (no parity check: the bench
    measures speed; ``gatex export`` / ``gatex parity`` prove the numbers)."""
    import torch


    to = {"ort": "onnx", "openvino": "onnx", "coreml": "coreml", "trt": "trt"}[backend]
    examples = tuple(torch.from_numpy(a) for a in inputs)
    target = unit if unit is not None else torch_model
    name = None if unit is not None or not model_ref else \
        Path(model_ref.rpartition(":")[2]).stem or None   # net.py:build -> build
    result = export(target, examples, to=to, out_dir=workdir / ("ort" if to == "onnx" else backend),
                    name=name, check=False)
    return Path(result.path)


__all__ = ["bench", "parse_cpus", "row_from_worker", "run_worker"]
