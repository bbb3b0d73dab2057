"""Running one shard of a matrix: each cell exported and checked, its artifact and verdict
written under the run folder with a manifest a later job (another runner, the merge) reads.

    DIR/manifest-<runner>-<i>-of-<N>.json   schema gatex.matrix-run/1: the whole plan's cell
                                            ids ("planned"), and one record per cell run here
    DIR/cells/<cell>/                       the artifact (and its TensorRT bundle)
    DIR/verdicts/<cell>.json                the cell's gatex.parity/1 verdict

A cell that fails (its parity, or an error while exporting or checking) fails that cell only;
the others run. ``jobs`` > 1 runs cells in that many worker processes (spawned: each starts
clean, as the bench's workers do). ``from_dir``: a cell whose artifact a run there exported
(on another runner) is checked from it instead of exported again.
"""

from __future__ import annotations

import concurrent.futures
import functools
import json
import multiprocessing
import statistics
import time
import traceback
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from gatex.artifacts.npz import read_npz
from gatex.comparison.report import result_record, to_json
from gatex.errors import GatexError
from gatex.exporters.tensorrt import EngineNotBuilt
from gatex.loading import load_model
from gatex.matrix.plan import Shard
from gatex.matrix.spec import Cell, Matrix, MatrixError, load_matrix
from gatex.pipeline import export
from gatex.pipeline.check import artifact_runtime, check_artifact, compare_runtimes, zoo_inputs
from gatex.runtimes.onnxruntime_runtime import OrtRuntime
from gatex.runtimes.openvino_runtime import OpenvinoRuntime
from gatex.runtimes.torch_runtime import TorchRuntime

RUN_SCHEMA = "gatex.matrix-run/1"


def safe(cell_id: str) -> str:
    return cell_id.replace("/", "__")


def manifest_name(shard: Shard) -> str:
    return f"manifest-{shard.runner}-{shard.index}-of-{shard.count}.json"


def _inputs(cell: Cell) -> tuple[Any, list[Any] | None]:
    """(the model or zoo unit to export, its example inputs; None for a zoo unit)."""
    m = cell.model
    if m.unit is not None:
        return m.unit, None
    model = load_model(m.ref, weights=m.weights)
    if m.inputs is not None:
        return model, [torch.from_numpy(a) for a in read_npz(Path(m.inputs)).values()]
    g = torch.Generator().manual_seed(0)
    return model, [torch.randn(m.input_shape, generator=g)]


def _export_options(cell: Cell) -> dict[str, Any]:
    t = cell.target
    options = {**cell.model.options, **t.options}
    if t.to == "openvino":   # the ONNX artifact, checked by OpenVINO instead (run_cell)
        return {**options, "flavor": t.flavor, "dtype": cell.dtype, "check": False}
    if t.to == "onnx":
        return {**options, "flavor": t.flavor, "dtype": cell.dtype}
    if t.to == "coreml":
        return {**options, "precision": cell.dtype, "compute_units": t.compute_units}
    return {**options, "precision": cell.dtype, "plugins": t.plugins}


def _check(cell: Cell, path: Path, model: Any, inputs: list[Any] | None) -> Any:
    """The parity of an artifact already written: on OpenVINO for openvino cells, else on the
    runtime its kind picks, against the zoo unit or the model."""
    if cell.target.to == "openvino":
        if isinstance(model, str):
            return check_artifact(path, unit=model, backend="openvino")
        return _check_model(path, model, inputs, OpenvinoRuntime(path))
    if isinstance(model, str):
        return check_artifact(path, unit=model)
    return _check_model(path, model, inputs)


def _latency_ms(path: Path, model: Any, inputs: list[Any] | None) -> float | None:
    """Median of 7 onnxruntime runs (one thread) on the check inputs after one warm-up, in ms
    (onnx cells only: CoreML in the emulator, bundles and OpenVINO are not timed here)."""
    with OrtRuntime(path, threads=1) as runtime:
        if isinstance(model, str):
            feeds, _ = zoo_inputs(model, runtime.input_specs)
        else:
            feeds = {s.name: np.asarray(x) for s, x in zip(runtime.input_specs, inputs)}
            feeds = {k: v.astype(s.dtype) if s.dtype.startswith("float") else v
                     for (k, v), s in zip(feeds.items(), runtime.input_specs)}
        runtime.run(feeds)
        times = []
        for _ in range(7):
            start = time.perf_counter()
            runtime.run(feeds)
            times.append(time.perf_counter() - start)
    return statistics.median(times) * 1e3


def run_cell(cell: Cell, out: Path, from_dir: Path | None = None, *,
             export_only: bool = False) -> dict[str, Any]:
    """Export (or pick up from ``from_dir``) and check one cell; its record for the manifest.
    Never raises for the cell's own failure: the record says ``fail`` or ``error``.
    ``export_only``: write the artifact for another runner's check (status ``exported``)."""
    record: dict[str, Any] = {"id": cell.id, "model": cell.model.name, "target": cell.target.name,
                              "to": cell.target.to, "dtype": cell.dtype, "status": "error",
                              "message": "", "artifact": None, "outputs": {}, "atol": None,
                              "latency_ms": None, "emulated": False, "seconds": 0.0}
    start = time.perf_counter()
    folder = out / "cells" / safe(cell.id)
    try:
        model, inputs = _inputs(cell)
        picked = _picked(cell, from_dir)
        if picked is not None:
            path, parity = picked, _check(cell, picked, model, inputs)
        else:
            try:
                to = "onnx" if cell.target.to == "openvino" else cell.target.to
                options = {**_export_options(cell), **({"check": False} if export_only else {})}
                result = export(model, inputs, to=to, out_dir=folder,
                                name=safe(cell.model.name), force=True, check_inputs=inputs,
                                **options)
                path, parity = result.path, result.parity
                if cell.target.to == "openvino":   # exported unchecked: OpenVINO checks it
                    parity = _check(cell, path, model, inputs)
            except EngineNotBuilt as exc:
                # no TensorRT here: the bundle's graph, plugins decomposed (artifact_runtime
                # picks the plugin stand-in for it)
                path = exc.artifact.onnx_path
                parity = _check(cell, path, model, inputs)
        record["artifact"] = str(Path(path).resolve().relative_to(out.resolve())) \
            if Path(path).resolve().is_relative_to(out.resolve()) else str(path)
        if export_only:
            record["status"] = "exported"
            record["message"] = ("exported here for the macos runner, which checks it "
                                 "(gatex matrix run --from; `Cell.exported_on`)")
        elif parity is not None:
            (out / "verdicts").mkdir(parents=True, exist_ok=True)
            (out / "verdicts" / f"{safe(cell.id)}.json").write_text(to_json([parity]))
            data = result_record(parity)
            record["outputs"] = {o["name"]: o["max_abs"] for o in data["outputs"]}
            record["atol"] = data["tolerance"]["atol"]
            record["emulated"] = data["emulated"]
            record["status"] = "pass" if parity.passed else "fail"
            record["message"] = parity.summary()
        if cell.target.to == "onnx" and not export_only:   # the latency the ratchet keeps
            record["latency_ms"] = _latency_ms(Path(path), model, inputs)
    except GatexError as exc:
        record["message"] = " ".join(str(exc).split())[:500]
    except Exception as exc:  # noqa: BLE001  (a cell's crash fails that cell, not the shard)
        last = traceback.extract_tb(exc.__traceback__)[-1]
        record["message"] = (f"{type(exc).__name__}: {' '.join(str(exc).split())[:400]} "
                             f"({Path(last.filename).name}:{last.lineno})")
    record["seconds"] = round(time.perf_counter() - start, 2)
    return record


def _check_model(path: Path, model: Any, inputs: list[Any] | None,
                 runtime: Any = None) -> Any:
    with runtime or artifact_runtime(path) as artifact, TorchRuntime(model) as reference:
        feeds = {s.name: np.asarray(x) for s, x in zip(artifact.input_specs, inputs or ())}
        return compare_runtimes(artifact, reference, feeds, artifact_name=str(path))


def _picked(cell: Cell, from_dir: Path | None) -> Path | None:
    """The artifact a run in ``from_dir`` wrote for ``cell``, where it did and it is there."""
    if from_dir is None:
        return None
    return _artifacts_in(from_dir.resolve()).get(cell.id)


@functools.cache
def _artifacts_in(folder: Path) -> dict[str, Path]:
    """{cell id: artifact} of every manifest in ``folder`` (read once per process); a path
    that leads outside the folder is one line (exit 2)."""
    found = {}
    for manifest in sorted(folder.glob("manifest-*.json")):
        for rec in _read_manifest(manifest).get("cells", []):
            if not rec.get("artifact"):
                continue
            path = (folder / rec["artifact"]).resolve()
            if not path.is_relative_to(folder):
                raise MatrixError(f"{manifest}: cell {rec.get('id')} names an artifact outside "
                                  f"{folder}")
            if path.exists():
                found.setdefault(rec["id"], path)
    return found


def _read_manifest(path: Path) -> dict[str, Any]:
    try:
        doc = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise MatrixError(f"cannot read {path}: {exc}") from None
    if not isinstance(doc, dict) or doc.get("schema") != RUN_SCHEMA:
        raise MatrixError(f"{path} is not a gatex matrix run manifest ({RUN_SCHEMA})")
    return doc


def _job(args: tuple[str, str, str, str | None, bool]) -> dict[str, Any]:
    matrix_path, cell_id, out, from_dir, export_only = args
    cell = next(c for c in load_matrix(matrix_path).cells() if c.id == cell_id)
    return run_cell(cell, Path(out), Path(from_dir) if from_dir else None,
                    export_only=export_only)


def run_shard(matrix: Matrix, shard: Shard, out: Path, *, jobs: int = 1,
              from_dir: Path | None = None, on_cell: Any = None) -> dict[str, Any]:
    """Run ``shard``'s cells into ``out`` and write its manifest; returns the manifest."""
    if jobs < 1:
        raise MatrixError(f"--jobs must be >= 1; got {jobs}")
    out.mkdir(parents=True, exist_ok=True)
    work = [(c, False) for c in shard.cells] + [(c, True) for c in shard.exports]
    records: list[dict[str, Any]] = []
    if jobs == 1 or len(work) <= 1:
        for cell, export_only in work:
            records.append(run_cell(cell, out, from_dir, export_only=export_only))
            if on_cell:
                on_cell(records[-1])
    else:
        args = [(str(matrix.path), c.id, str(out), str(from_dir) if from_dir else None, e)
                for c, e in work]
        context = multiprocessing.get_context("spawn")
        with concurrent.futures.ProcessPoolExecutor(jobs, mp_context=context) as pool:
            futures = {pool.submit(_job, a): (a[1], a[4]) for a in args}
            by_key = {}
            for future in concurrent.futures.as_completed(futures):
                try:
                    rec = future.result()
                except Exception as exc:  # noqa: BLE001  (a worker that died: that cell)
                    rec = {"id": futures[future][0], "status": "error", "outputs": {},
                           "message": f"worker failed: {type(exc).__name__}: {exc}"}
                by_key[futures[future]] = rec
                if on_cell:
                    on_cell(rec)
        records = [by_key[(c.id, e)] for c, e in work]
    manifest = {"schema": RUN_SCHEMA, "matrix": str(matrix.path), "runner": shard.runner,
                "shard": shard.name, "planned": [c.id for c in matrix.cells()],
                "cells": records}
    (out / manifest_name(shard)).write_text(json.dumps(manifest, indent=2) + "\n")
    return manifest


def read_manifests(dirs: Sequence[Path]) -> list[dict[str, Any]]:
    """Every manifest under ``dirs``; a folder without one is one line (exit 2)."""
    manifests = []
    for d in dirs:
        found = sorted(Path(d).glob("manifest-*.json")) if Path(d).is_dir() else []
        if not found:
            raise MatrixError(f"{d} holds no gatex matrix manifest (manifest-*.json): was its "
                              "shard run, and its output downloaded?")
        manifests += [_read_manifest(p) for p in found]
    return manifests
