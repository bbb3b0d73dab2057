"""Running a parity check: an artifact runtime and a reference runtime on the same inputs.

`compare_runtimes` is the engine every caller shares (``gatex parity``, `gatex.testing`, the
exporters' post-export check). `check_artifact` adds what the command needs around it: the
reference model (the zoo unit the ONNX metadata names, ``--unit``, or ``--model``), the inputs
(the zoo's held-out digits, or an ``.npz``), and ``--locate``.

Inputs go to the artifact exactly as it declares them; the reference gets the same values, with
fp16/bf16 widened to fp32 (exact) for a torch model. An artifact with a fixed batch size runs in
chunks of it and the reference runs the same chunks: a model whose samples interact (PGConv2d's
batch-wide activation scale) is then compared like for like.

Precision floor: where the artifact computes in fp16/bf16 and the reference is a torch model,
a deep copy of the model also runs in that precision on the same chunks (inputs cast to it), and
each output's atol is raised to ``FLOOR_FACTOR`` x the atol torch's own run there needs at the
same rtol (parity.py says why), unless the user fixed atol. ``precision_floor=False``
(``--no-precision-floor``) turns it off.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from gatex.artifacts.npz import read_npz
from gatex.artifacts.onnx_file import read_onnx as read_onnx_file
from gatex.comparison import (
    ParityResult,
    PrecisionFloor,
    ToleranceChoice,
    choose_tolerance,
    compare,
    compare_outputs,
)
from gatex.comparison.decisions import DecisionReport
from gatex.comparison.metrics import LOW_PRECISIONS, dtype_name, float_dtype_of
from gatex.comparison.report import check_verdict_paths, print_results, write_verdicts
from gatex.errors import (
    BackendUnavailableError,
    BadInputError,
    CheckFailedError,
    CheckpointError,
    require_choice,
)
from gatex.exporters.compact import (
    COMPACTION_KEY,
    CompactionReport,
    check_pruned_weights,
    has_gated_dense,
)
from gatex.loading import load_model
from gatex.models import zoo
from gatex.ops import REGISTRY
from gatex.ops.spec import Tolerance
from gatex.pipeline.batches import (
    _pair_names,
    _run_batches,
    _widen_for_reference,
    split_batches,
)
from gatex.pipeline.forced import MODES, ForcedRun, forced_run
from gatex.runtimes.base import Runtime, TensorSpec
from gatex.runtimes.coreml_runtime import CoremlRuntime, coreml_can_predict, parse_compute_units
from gatex.runtimes.decisions import deciding_ops
from gatex.runtimes.locate import import_onnx
from gatex.runtimes.locate import locate as locate_ops
from gatex.runtimes.onnxruntime_runtime import OrtRuntime, PluginStandInRuntime, has_plugin_nodes
from gatex.runtimes.openvino_runtime import OpenvinoRuntime
from gatex.runtimes.tensorrt_runtime import TensorrtRuntime
from gatex.runtimes.torch_runtime import TorchRuntime

UNIT_METADATA_KEY = "gatex.unit"   # written by the exporters (ONNX metadata_props, CoreML
                                   # user_defined_metadata)

# Artifacts other backends will read, and the issue that brings each (README, "Roadmap").
NOT_YET = {
    ".mlmodel": "CoreML neural-network (.mlmodel) files are not supported by gatex parity: it "
                "checks ML Programs (.mlpackage), which gatex export --to coreml writes",
}
ARTIFACT_SUFFIXES = (".onnx", ".mlpackage", ".engine", ".plan")


# -- the engine -----------------------------------------------------------------------------------

# ONNX ops with a reduction inside (see parity.tolerance_for)
ONNX_REDUCTIONS = frozenset({"MatMul", "Gemm", "Conv", "ConvTranspose", "Einsum",
                             "MatMulInteger", "ConvInteger", "QLinearMatMul", "QLinearConv"})


def model_ops(runtime: Runtime) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(gatex ops, standard reduction ops) a runtime's model holds or last ran; empty when it
    cannot tell."""
    if isinstance(runtime, TorchRuntime):
        return tuple(c.op for c in runtime.last_op_calls), runtime.last_reductions
    if isinstance(runtime, OrtRuntime):
        return onnx_ops(runtime.model)

    if isinstance(runtime, CoremlRuntime):
        return runtime.gatex_ops, runtime.reductions
    return (), ()


def onnx_ops(model: Any) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(spec names of the ``gatex`` nodes, standard reduction op types) of an ONNX model, over
    the main graph and control-flow bodies (not inside the gatex ops' own functions)."""
    try:
        proto = read_onnx(model, external_data=False)
    except BackendUnavailableError:  # no onnx package: the reference's ops still count
        return (), ()
    gatex: list[str] = []
    reductions: set[str] = set()

    def walk(graph: Any) -> None:
        for node in graph.node:
            if node.domain == "gatex":
                gatex.append(REGISTRY.get(node.op_type).name)
            elif node.domain in ("", "ai.onnx") and node.op_type in ONNX_REDUCTIONS:
                reductions.add(node.op_type)
            for attr in node.attribute:
                if attr.HasField("g"):
                    walk(attr.g)
                for sub in attr.graphs:
                    walk(sub)

    walk(proto.graph)
    return tuple(gatex), tuple(sorted(reductions))


def read_onnx(model: Any, *, external_data: bool = True) -> Any:
    """An ``onnx.ModelProto`` from a path, bytes, or a ModelProto; bad files are one line."""
    onnx = import_onnx()
    if isinstance(model, onnx.ModelProto):
        return model
    if not isinstance(model, bytes):
        return read_onnx_file(model, external_data=external_data)
    try:
        return onnx.load_from_string(model)
    except Exception as exc:  # noqa: BLE001  (protobuf DecodeError, OSError, ...)
        raise CheckpointError(f"{model} is not a readable ONNX model: {type(exc).__name__}: "
                              f"{' '.join(str(exc).split())[:300]}") from None


def compare_runtimes(artifact: Runtime, reference: Runtime,
                     feeds: Mapping[str, Any] | Sequence[Mapping[str, Any]], *,
                     artifact_name: str = "", dtype: object | None = None,
                     tolerance: Tolerance | None = None, rtol: float | None = None,
                     atol: float | None = None, inputs_note: str = "",
                     extra_ops: Iterable[str] = (), precision_floor: bool = True,
                     decisions: str = "forced", max_outliers: float | None = None
                     ) -> ParityResult:
    """Run both runtimes on ``feeds`` (a mapping, or a list of batches) and compare every output.

    The tolerance is ``tolerance`` (reported as the user's), else `choose_tolerance` over the
    gatex ops and standard reductions both models hold, in ``dtype`` (default: the dtype the
    artifact computes in where it says (``compute_dtype``: an fp16 CoreML program with fp32 I/O),
    else its first float output's dtype) with the user's ``rtol``/``atol`` where given.

    ``precision_floor``: when that dtype is fp16/bf16 and ``reference`` is a `TorchRuntime`, run
    the reference model in that dtype too and raise each output's atol (unless the user gave
    it) to `FLOOR_FACTOR` x the atol torch's own run needs at the chosen rtol
    (`measure_torch_error`, `PrecisionFloor`); every result reports it. Not under
    decision-forced parity: that judges fp16 against torch's fp32 run with the artifact's
    decisions, at the spec tolerance.

    ``decisions``: "forced" (default) judges a model with hard-decision ops (`OpSpec.decisions`)
    by decision-forced parity (`gatex.pipeline.forced`): the decisions compared layer by layer,
    the outputs against torch run with the artifact's decisions, no precision floor; where the
    artifact's decisions cannot be read, a note says why and the strict judgement applies.
    "strict" compares the outputs elementwise with torch's own. ``max_outliers``: the user's
    share in [0, 1) of each output's elements that may lie outside the tolerance (None: none).
    """
    if isinstance(feeds, Mapping):
        specs = artifact.input_specs
        batch = next((s.static_batch for s in specs or () if s.static_batch), None)
        batches, note = split_batches({k: np.asarray(v) for k, v in feeds.items()}, batch)
    else:
        batches, note = [dict(f) for f in feeds], ""
    require_choice(decisions, MODES, "--decisions")
    ref_batches = [_widen_for_reference(artifact.validate_feeds(b), reference.input_specs)
                   for b in batches]
    computes = getattr(artifact, "compute_dtype", None)

    def judged(outputs: Mapping[str, np.ndarray]) -> tuple[str | None, str]:
        produced = next((d for a in outputs.values() if (d := float_dtype_of(a))), None)
        return produced, dtype_name(dtype or computes or produced or "float32")

    ops_a, red_a = model_ops(artifact)   # read once (an ONNX artifact's file is parsed)
    run = None if decisions == "strict" else forced_run(
        artifact, reference, ops_a, batches, ref_batches, lambda outputs: judged(outputs)[1])
    report = run.report if isinstance(run, ForcedRun) else run
    if isinstance(run, ForcedRun):
        actual, expected, nans = run.actual, run.expected, run.input_nans
    else:
        actual, nans = _run_batches(artifact, batches)
        expected, _ = _run_batches(reference, ref_batches)
        if report is None and decisions == "forced" and deciding_ops(model_ops(reference)[0]):
            # the artifact does not say it holds deciding ops (a TensorRT engine): torch does
            report = DecisionReport(reason=f"{artifact.label} does not expose its decisions")
    expected = _pair_names(actual, expected)
    produced, dtype = judged(actual)

    notes = [*artifact.notes, *([note] if note else [])]
    if report is not None and not report.forced:
        notes.append(f"{report.summary()}; the outputs are compared elementwise (strict)")
    if computes is not None and produced is not None and dtype_name(dtype) == computes != produced:
        notes.append(f"the artifact computes in {computes} and outputs {produced}: the "
                     f"{computes} tolerances apply")
    elif produced is not None and dtype_name(dtype) != produced:  # the user's choice: say so
        notes.append(f"tolerances are the {dtype_name(dtype)} ones, as asked (--dtype); the "
                     f"artifact outputs {produced}")
    ops_r, red_r = model_ops(reference)
    ops, reductions = (*ops_a, *ops_r, *extra_ops), (*red_a, *red_r)
    if tolerance is not None:
        choice = ToleranceChoice(tolerance, dtype_name(dtype), "user", tuple(sorted(set(ops))),
                                 tuple(sorted(set(reductions))))
    else:
        choice = choose_tolerance(ops, dtype, rtol=rtol, atol=atol, reductions=reductions)
    choice = choice.with_outliers(max_outliers)
    if report is not None and report.forced and choice.dtype in LOW_PRECISIONS:
        notes.append(f"{choice.dtype} judged against torch's float32 run with the artifact's "
                     "decisions forced: no precision floor")
    elif precision_floor and choice.dtype in LOW_PRECISIONS:
        measured, floor_notes = measure_torch_error(reference, ref_batches, expected,
                                                    choice.dtype, rtol=choice.rtol)
        notes += floor_notes
        if measured:
            choice = choice.with_floors(measured, may_raise=tolerance is None and atol is None)
    samples = next((int(np.shape(a)[0]) for a in batches[0].values() if np.ndim(a)), None)
    if samples is not None:
        samples *= len(batches)
    return ParityResult(
        artifact=artifact_name or _artifact_name(artifact),
        runtime=artifact.label, reference=reference.label, dtype=choice.dtype, tolerance=choice,
        outputs=compare_outputs(actual, expected, choice.tolerance, floors=choice.floor_map,
                                outliers=choice.outliers),
        emulated=artifact.emulated,
        inputs=inputs_note, samples=samples, input_nans=nans, notes=tuple(notes),
        decisions=report)


def measure_torch_error(reference: Runtime, batches: Sequence[dict[str, np.ndarray]],
                        expected: Mapping[str, np.ndarray], dtype: str, *, rtol: float
                        ) -> tuple[dict[str, PrecisionFloor], list[str]]:
    """Torch's own error in ``dtype`` per output, as a `PrecisionFloor` (not yet ``raised``):
    torch_dtype, a deep copy of the reference model ``.to(dtype)`` run on ``batches`` (the
    feeds the reference ran on) cast to ``dtype``, against ``expected``: its max_abs and the
    atol it needs at ``rtol``, over the elements finite on both sides; and notes (why nothing
    was measured, or where torch's own low-precision run overflowed).

    Empty when the reference is not a torch model or cannot run in ``dtype`` (a note says so:
    the spec tolerance alone then applies).
    """
    import copy

    import torch


    short = {"float16": "fp16", "bfloat16": "bf16"}[dtype]
    if not isinstance(reference, TorchRuntime):
        return {}, [f"no {short} precision floor: the reference ({reference.label}) is not a "
                    "torch model; the spec tolerance alone applies"]
    torch_dtype = getattr(torch, dtype)
    try:
        model = copy.deepcopy(reference.model).to(torch_dtype)
        # no input specs: the reference's declare fp32, these feeds are ``dtype``
        with TorchRuntime(model, output_names=reference.output_names,
                          device=reference.device) as low:
            outputs, _ = _run_batches(low, [_lower(b, dtype) for b in batches])
        outputs = _pair_names(dict(expected), outputs)
    except Exception as err:  # noqa: BLE001  (a kernel without fp16 on this device, deepcopy)
        exc = err.__cause__ if isinstance(err, BadInputError) and err.__cause__ else err
        reason = " ".join(str(exc).split())[:200]
        return {}, [f"no {short} precision floor: torch cannot run this model in {dtype} on "
                    f"{reference.device.upper()} ({type(exc).__name__}: {reason}); the spec "
                    "tolerance alone applies"]
    measured, notes = {}, []
    for name, e in expected.items():
        if name not in outputs or float_dtype_of(np.asarray(e)) is None:
            continue
        own = compare(outputs[name], e, Tolerance(rtol, 0.0), name=name)
        if own.shape != own.expected_shape:
            continue
        t, e64 = outputs[name].astype(np.float64), np.asarray(e, np.float64)
        finite = np.isfinite(t) & np.isfinite(e64)
        excess = np.abs(t[finite] - e64[finite]) - rtol * np.abs(e64[finite])
        needs = max(0.0, float(excess.max())) if excess.size else 0.0
        measured[name] = PrecisionFloor(dtype, float(own.max_abs or 0.0), needs, rtol)
        if own.nan_mismatch or own.inf_mismatch:
            notes.append(f"torch's own {short} run of {name} gives NaN/inf at "
                         f"{own.nan_mismatch + own.inf_mismatch} positions where {dtype} "
                         "rounding overflows; its floor is measured over the rest")
    return measured, notes


def _lower(feeds: Mapping[str, np.ndarray], dtype: str) -> dict[str, np.ndarray]:
    """Float inputs cast to ``dtype`` (fp16, or ml_dtypes' bf16); others unchanged."""
    return {k: _cast(a, dtype) if float_dtype_of(a) else a for k, a in feeds.items()}


def _artifact_name(runtime: Runtime) -> str:
    model = getattr(runtime, "model", None)
    if isinstance(model, (str, Path)):
        return str(model)
    if isinstance(model, bytes) or hasattr(model, "SerializeToString"):
        return "<in-memory ONNX model>"
    return type(model).__name__ if model is not None else runtime.label


# -- the command's pieces -------------------------------------------------------------------------

def check_suffix(path: Path) -> None:
    """Refuse, with the reason, artifacts gatex parity cannot read (yet)."""
    suffix = path.suffix.lower()
    if suffix in NOT_YET:
        raise BackendUnavailableError(f"{path}: {NOT_YET[suffix]}")
    if suffix not in ARTIFACT_SUFFIXES:
        raise BadInputError(f"{path}: gatex parity reads {', '.join(ARTIFACT_SUFFIXES)} "
                            f"artifacts; got {suffix or 'no suffix'}")
    if not path.exists():
        raise BadInputError(f"artifact {path} does not exist")


def load_npz(path: Path) -> dict[str, np.ndarray]:
    """Arrays by input name from ``path`` (.npz, no pickles, sizes checked before loading)."""
    return read_npz(path)


def zoo_inputs(unit: str | None, specs: tuple[TensorSpec, ...]
               ) -> tuple[dict[str, np.ndarray], str]:
    """The zoo's held-out digits, shaped for ``unit`` (or the artifact's input) and its dtype."""
    if len(specs) != 1:
        raise BadInputError(f"the artifact takes {len(specs)} inputs "
                            f"({', '.join(s.name for s in specs)}); the zoo's digits fill one: "
                            "pass --inputs F.npz with an array per input name")
    spec = specs[0]
    x, _ = zoo.held_out(unit)
    x = x.numpy()
    what = f"zoo held-out digits for {unit}" if unit else "zoo held-out digits"
    if unit is None:
        per_sample = spec.shape[1:] if spec.shape else None
        if not per_sample or not all(isinstance(d, int) for d in per_sample) or \
                int(np.prod(per_sample)) != x.shape[1]:
            raise BadInputError(f"input {spec.name!r} is {spec.describe()}, which the 64-pixel "
                                "digits cannot fill; pass --unit NAME or --inputs F.npz")
        x = x.reshape(-1, *per_sample)
    if float_dtype_of(x) and spec.dtype in ("float16", "bfloat16", "float64"):
        x = _cast(x, spec.dtype)
        what += f", cast to {spec.dtype}"
    return {spec.name: x}, what


def _cast(x: np.ndarray, dtype: str) -> np.ndarray:
    if dtype == "bfloat16":
        import ml_dtypes

        return x.astype(ml_dtypes.bfloat16)
    return x.astype(dtype)


def reference_model(*, unit: str | None, model: str | None, weights: Path | None,
                    trust_checkpoint: bool) -> tuple[Any, str]:
    """The torch reference and a description: ``--model`` (+ ``--weights``) or the zoo unit."""
    if model is not None:
        return load_model(model, weights=weights, trust_checkpoint=trust_checkpoint), model
    if weights is not None:
        raise BadInputError("--weights goes with --model module:attr; zoo units ship theirs")
    assert unit is not None
    return zoo.load(unit), f"zoo {zoo.entry(unit).unit}"


ONNX_BACKENDS = ("auto", "onnxruntime", "openvino")


def artifact_runtime(path: Path, *, device: str = "cpu", threads: int | None = None,
                     compute_units: str = "all", backend: str = "auto") -> Runtime:
    """The runtime for ``path`` by its kind: onnxruntime for .onnx (``backend="openvino"``:
    OpenVINO CPU on its standard-op form, `OpenvinoRuntime`); for .mlpackage, Core ML on macOS
    and the MIL emulator elsewhere (its results say emulated); TensorRT for .engine and .plan
    (exit 3 where TensorRT is not installed)."""
    require_choice(backend, ONNX_BACKENDS, "--backend")
    if backend == "openvino":
        if path.suffix.lower() != ".onnx":
            raise BadInputError(f"{path}: --backend openvino runs .onnx artifacts")
        return OpenvinoRuntime(path, threads=threads)
    if path.suffix.lower() in (".engine", ".plan"):
        return TensorrtRuntime(path)
    if path.suffix.lower() == ".mlpackage":
        return CoremlRuntime(path, compute_units=compute_units)

    if path.is_file() and has_plugin_nodes(path):   # no TensorRT needed to check the graph
        return PluginStandInRuntime(path, device=device, threads=threads)
    return OrtRuntime(path, device=device, threads=threads)


def check_artifact(path: Path, *, unit: str | None = None, model: str | None = None,
                   weights: Path | None = None, trust_checkpoint: bool = False,
                   inputs: Path | None = None, dtype: str | None = None,
                   rtol: float | None = None, atol: float | None = None, locate: bool = False,
                   device: str = "cpu", threads: int | None = None,
                   compute_units: str = "all", precision_floor: bool = True,
                   decisions: str = "forced", max_outliers: float | None = None,
                   backend: str = "auto") -> ParityResult:
    """Parity of one ONNX or CoreML artifact against its torch reference (see
    `run_parity_command`); ``compute_units`` applies to Core ML on macOS, ``precision_floor``
    ``decisions`` and ``max_outliers`` as `compare_runtimes`."""
    path = Path(path)
    check_suffix(path)
    if locate and path.suffix.lower() != ".onnx":
        raise BadInputError(f"{path}: --locate pairs ONNX nodes with torch ops; it works on "
                            ".onnx artifacts (export the model to ONNX to locate a divergence)")
    with artifact_runtime(path, device=device, threads=threads, compute_units=compute_units,
                          backend=backend) as artifact:
        recorded = artifact.metadata.get(UNIT_METADATA_KEY)
        if unit is None and model is None:
            if recorded is None:
                raise BadInputError(f"{path} records no {UNIT_METADATA_KEY} in its metadata; "
                                    "pass --unit NAME or --model module:attr")
            unit = recorded
        if unit is not None:
            unit = zoo.entry(unit).unit
        ref_model, ref_what = reference_model(unit=unit, model=model, weights=weights,
                                              trust_checkpoint=trust_checkpoint)
        specs = artifact.input_specs or ()
        if inputs is not None:
            feeds, what = load_npz(Path(inputs)), f"{inputs}"
            empty = [k for k, v in feeds.items() if v.size == 0]
            if empty:
                raise BadInputError(f"--inputs {inputs} holds no samples for "
                                    f"{', '.join(map(repr, empty))}: "
                                    "an empty check would pass without comparing anything")
        else:
            feeds, what = zoo_inputs(unit, specs)
        with TorchRuntime(ref_model) as reference:
            result = compare_runtimes(artifact, reference, feeds, artifact_name=str(path),
                                      dtype=dtype, rtol=rtol, atol=atol, inputs_note=what,
                                      precision_floor=precision_floor,
                                      decisions=decisions, max_outliers=max_outliers)
        result = replace(result, reference=f"{reference.label}: {ref_what}",
                         pruned=pruned_weights(path, ref_model, artifact.metadata))
        if recorded is not None and unit is not None and model is None and \
                zoo.entry(recorded).unit != unit:
            result = replace(result, notes=(*result.notes, (
                f"the artifact records {UNIT_METADATA_KEY}={recorded}; compared with the zoo "
                f"{unit} model as asked (--unit)")))
        if locate:
            batch = next((s.static_batch for s in specs if s.static_batch), None)
            batches, _ = split_batches(artifact.validate_feeds(feeds), batch)
            found = locate_ops(read_onnx(path), ref_model, batches,
                               [_widen_for_reference(b, None) for b in batches],
                               result.tolerance.tolerance, device=device, threads=threads)
            first = result.decisions.first_beyond if result.decisions else None
            if first is not None:   # a wrong decision comes before any op output it moves
                found = replace(found, decision=f"{first.where()}: {first.describe()}")
            result = replace(result, locate=found)
    return result


def pruned_weights(path: Path, model: Any, metadata: Mapping[str, str]) -> Any:
    """The pruned-weights check of an ONNX or CoreML artifact against a reference ``model``
    with GatedDense layers (`gatex.exporters.compact.check_pruned_weights`), with the
    compaction the artifact records (``gatex.compaction``); None for other models and for
    TensorRT engines (their weights are not readable as tensors)."""
    from torch import nn

    if not isinstance(model, nn.Module) or path.suffix.lower() not in (".onnx", ".mlpackage"):
        return None

    if not has_gated_dense(model):
        return None
    recorded = metadata.get(COMPACTION_KEY)
    compaction = CompactionReport.from_json(recorded) if recorded else None
    return check_pruned_weights(model, path, compaction=compaction)


def run_parity_command(artifacts: Sequence[str | Path], *, reference: str = "torch",
                       unit: str | None = None, model: str | None = None,
                       weights: Path | None = None, trust_checkpoint: bool = False,
                       inputs: Path | None = None, dtype: str | None = None,
                       rtol: float | None = None, atol: float | None = None,
                       json_path: Path | None = None, junit_path: Path | None = None,
                       markdown_path: Path | None = None, locate: bool = False,
                       device: str = "cpu", threads: int | None = None,
                       compute_units: str = "all", precision_floor: bool = True,
                       decisions: str = "forced", max_outliers: float | None = None,
                       backend: str = "auto", console: Any = None) -> list[ParityResult]:
    """``gatex parity``: check every artifact, print the table, write the verdicts.

    A ``.mlpackage`` runs on Core ML once per compute unit in ``compute_units`` ("all", or a
    comma-separated list such as "cpu,cpu_ne") on macOS; elsewhere once, in the MIL emulator.
    ``precision_floor`` (fp16/bf16 artifacts only), ``decisions`` and ``max_outliers`` as
    `compare_runtimes`.

    Everything the user named is checked before any model runs (artifact suffixes and
    existence, the reference kind, the dtype, the verdict paths), so a bad argument costs no
    time and leaves no file. Raises `CheckFailedError` (exit 1) naming the first failing output
    when any artifact fails; verdict files are written first either way.
    """
    from rich.console import Console


    if not artifacts:
        raise BadInputError("give at least one artifact (an .onnx file or a .mlpackage)")
    if reference != "torch":
        raise BadInputError(f"unknown reference {reference!r}; gatex parity compares against "
                            "torch (eager)")
    if dtype is not None and dtype_name(dtype) not in ("float32", "float16"):
        raise BadInputError(f"--dtype must be fp32 or fp16; got {dtype}")
    require_choice(decisions, MODES, "--decisions")
    paths = [Path(a) for a in artifacts]
    for p in paths:
        check_suffix(p)
    require_choice(backend, ONNX_BACKENDS, "--backend")
    if backend == "openvino" and any(p.suffix.lower() != ".onnx" for p in paths):
        raise BadInputError("--backend openvino runs .onnx artifacts only")

    units = parse_compute_units(compute_units)
    if locate and any(p.suffix.lower() != ".onnx" for p in paths):
        raise BadInputError("--locate works on .onnx artifacts only (it pairs ONNX nodes with "
                            "torch ops); leave it out for .mlpackage")
    check_verdict_paths((json_path, junit_path, markdown_path),
                        [*paths, *([Path(inputs)] if inputs is not None else [])])
    if inputs is not None and not Path(inputs).is_file():
        raise BadInputError(f"inputs file {inputs} does not exist")

    def runs(p: Path) -> tuple[str, ...]:  # the emulator has one way to run: once is enough
        if p.suffix.lower() != ".mlpackage":
            return ("all",)
        return units if coreml_can_predict()[0] else units[:1]

    results = [check_artifact(p, unit=unit, model=model, weights=weights,
                              trust_checkpoint=trust_checkpoint, inputs=inputs, dtype=dtype,
                              rtol=rtol, atol=atol, locate=locate, device=device,
                              threads=threads, compute_units=u,
                              precision_floor=precision_floor,
                              decisions=decisions, max_outliers=max_outliers,
                              backend=backend)
               for p in paths for u in runs(p)]
    console = console or Console()
    print_results(results, console)
    for r in results:
        if r.pruned is not None:
            console.print(r.pruned.summary(), markup=False)
    write_verdicts(results, json_path=json_path, junit_path=junit_path,
                   markdown_path=markdown_path)
    failed = [r for r in results if not r]
    if failed:
        more = f" (and {len(failed) - 1} more artifacts)" if len(failed) > 1 else ""
        raise CheckFailedError(f"parity failed: {failed[0].summary()}{more}")
    return results
