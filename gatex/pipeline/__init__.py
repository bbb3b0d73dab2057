"""The pipeline: resolve a model and its inputs, export it (`gatex.exporters`), and check the
artifact numerically against torch (`gatex.runtimes` + `gatex.comparison`).

The only layer above both the exporters and the runtimes (`check` runs ``gatex parity``):
exporters write artifacts and never run them, runtimes run artifacts and never write them.
ONNX, CoreML and TensorRT (a build bundle, and the engine where TensorRT is installed).
"""

from __future__ import annotations

import contextlib
import contextvars
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import onnx
import torch
from torch import nn

from gatex.errors import BadInputError, GatexError, GatexWarning, require_choice
from gatex.exporters import TARGETS, artifact_name, coreml_artifact_name, dynamic
from gatex.exporters import onnx as onnx_export
from gatex.exporters.compact import (
    COMPACTION_KEY,
    check_pruned_weights,
    compact_model,
    fold_gates,
    has_gated_dense,
)
from gatex.exporters.coreml import DEFAULT_TARGET, check_options, export_coreml, read_metadata
from gatex.exporters.dynamic import DynamicAxes
from gatex.exporters.tensorrt import EngineNotBuilt, bundle_name, export_tensorrt
from gatex.models import zoo
from gatex.models.calibrate import calibrate_pg_scales
from gatex.ops.kernels.policy import check_choice
from gatex.ops.param_check import check_op_params
from gatex.pipeline.check import compare_runtimes
from gatex.runtimes import OrtRuntime, TorchRuntime
from gatex.runtimes.coreml_runtime import CoremlRuntime
from gatex.runtimes.tensorrt_runtime import TensorrtRuntime
from gatex.runtimes.torch_runtime import to_numpy


@dataclass(frozen=True)
class ExportResult:
    """What `export` wrote, which gatex ops it carries, and the parity verdict measured."""
    path: Path
    target: str
    flavor: str
    dtype: str
    ops: tuple[str, ...]
    unit: str | None
    artifact: Any                 # OnnxArtifact, CoremlArtifact or TensorrtArtifact
    parity: Any | None            # gatex.runtimes.ParityResult, None when the check was skipped
    compaction: Any | None = None  # gatex.exporters.compact.CompactionReport (compact=True)
    pruned: Any | None = None      # gatex.exporters.compact.PrunedWeightsCheck (GatedDense models)
    calibration: Any | None = None  # gatex.models.calibrate.PgCalibration (pg_scale="calibrated")
    timings: dict[str, float] = field(default_factory=dict)  # stage -> seconds (`Stages`)
    warnings: tuple[str, ...] = ()  # GatexWarning lines (a dimension exported static, ...)

    @property
    def passed(self) -> bool:
        return (self.parity is None or bool(self.parity)) and \
            (self.pruned is None or bool(self.pruned))


PG_SCALES = ("dynamic", "calibrated")


def check_pg_scale(pg_scale: str) -> None:
    """PGConv2d's activation scale: ``dynamic`` (upstream) or ``calibrated``."""
    if pg_scale not in PG_SCALES:
        raise BadInputError(f"unknown --pg-scale {pg_scale!r}; choose dynamic or calibrated")


def export(model: nn.Module | str, example_inputs: Sequence[torch.Tensor] | None = None, *,
           to: str = "onnx", out_dir: str | Path = ".", name: str | None = None,
           flavor: str = "portable", dtype: str = "fp32", opset: int | None = None,
           dynamic_batch: bool = True, dynamic_shapes: Any = None, check: bool = True,
           check_inputs: Sequence[torch.Tensor] | None = None, precision: str = "fp16",
           deployment_target: str | None = None, compute_units: str = "all",
           precision_floor: bool = True, plugins: str = "auto", compact: bool = False,
           sparse_weights: bool = False, pg_scale: str = "dynamic",
           calibration: Sequence[torch.Tensor] | torch.Tensor | None = None,
           source_ref: str | None = None, force: bool = False,
           on_stage: Callable[[str], None] | None = None) -> ExportResult:
    """Export ``model`` (an nn.Module, or a zoo unit name) and check the artifact against it.

    ``on_stage(name)`` is called as each stage starts (prepare, trace, write, convert, bundle,
    check); ``result.timings`` holds each stage's seconds.

    The artifact records which model it came from (``gatex.model``: ``source_ref``, default
    ``zoo:<unit>`` or the module's class). An artifact of the same file name from a different
    model is not replaced unless ``force``: give another ``name`` (`BadInputError`, exit 2).

    For a zoo unit the example and check inputs default to its held-out digits. The check runs
    the artifact on onnxruntime and the model in torch on ``check_inputs`` (default: the
    example inputs) and judges them with the op specs' tolerance for ``dtype``.

    ``to="coreml"`` writes ``<name>-<precision>.mlpackage`` (an ML Program; ``precision``,
    ``deployment_target`` and ``compute_units`` as `gatex.exporters.coreml.export_coreml`; the
    ONNX options ``flavor``, ``dtype`` and ``opset`` do not apply) and checks it with the CoreML
    runtime: real prediction on macOS, the MIL emulator elsewhere (results labelled emulated).

    An fp16 artifact (``dtype="fp16"``, or a CoreML ``precision="fp16"`` program) is judged with
    the precision floor unless ``precision_floor=False``: each output's atol is at least 2x the
    atol torch's own fp16 run needs, measured on the same inputs
    (`gatex.pipeline.compare_runtimes`).

    ``to="trt"`` writes a TensorRT bundle ``<name>-trt-<precision>/`` (``precision`` fp32, fp16
    or bf16; ``plugins`` auto, all or none; see `gatex.exporters.tensorrt`) and builds the
    engine where TensorRT is installed, else raises `EngineNotBuilt` (exit 3) once the bundle is
    written. A built engine is checked with the TensorRT runtime.

    ``compact=True`` (every target) removes GatedDense units no consumer needs and the matching
    input rows of the next layer (`gatex.exporters.compact.compact_model`) before the export;
    the parity check still runs against the uncompacted model, ``result.compaction`` says what
    went, and the artifact's metadata records it (``gatex.compaction``) for ``gatex parity``.
    ``sparse_weights=True`` folds the gates into the kernels (``fold_gates``) and stores
    mostly-zero weights sparse: ONNX ``sparse_initializer`` (COO); CoreML
    ``constexpr_sparse_to_dense`` (bit mask + non-zeros, iOS16 / macOS13 targets or newer;
    `gatex.exporters.coreml.sparsify_weights`); refused for TensorRT, whose engine stores its
    weights dense whatever the ONNX holds. For a model with GatedDense layers,
    `gatex.exporters.compact.check_pruned_weights` proves each weight pruned in the source is
    still exactly zero (or removed) in the ONNX or CoreML artifact: ``result.pruned`` (for
    TensorRT: in the bundle's ONNX).

    ``pg_scale="calibrated"`` exports (and checks against) a deep copy whose PGConv2d layers
    have a fixed ``act_scale``: max|x| + 1e-7 per layer over ``calibration`` (default for a zoo
    unit: its held-out digits), `gatex.models.calibrate.calibrate_pg_scales`; a sample's output
    then no longer depends on its batch, and activations beyond the calibrated range saturate.
    ``"dynamic"`` (default) keeps upstream's per-batch scale. ``result.calibration`` says what
    was fixed.

    >>> result = export("paGLU", to="onnx", out_dir="out")
    >>> bool(result.parity)
    True
    """
    stages = Stages(on_stage)
    token = _STAGES.set(stages)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            result = _export(model, example_inputs, to=to, out_dir=Path(out_dir), name=name,
                             flavor=flavor, dtype=dtype, opset=opset, dynamic_batch=dynamic_batch,
                             dynamic_shapes=dynamic_shapes,
                             check=check, check_inputs=check_inputs, precision=precision,
                             deployment_target=deployment_target, compute_units=compute_units,
                             precision_floor=precision_floor, plugins=plugins, compact=compact,
                             sparse_weights=sparse_weights, pg_scale=pg_scale,
                             calibration=calibration, source_ref=source_ref, force=force)
    finally:
        _STAGES.reset(token)
    ours = []
    for w in caught:
        if issubclass(w.category, GatexWarning):
            ours.append(str(w.message))
        else:  # not ours to judge: back through the filters the caller set
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    return replace(result, timings=dict(stages.times), warnings=tuple(dict.fromkeys(ours)))


def _export(model: nn.Module | str, example_inputs: Sequence[torch.Tensor] | None, *, to: str,
            out_dir: Path, name: str | None, flavor: str, dtype: str, opset: int | None,
            dynamic_batch: bool, dynamic_shapes: Any, check: bool,
            check_inputs: Sequence[torch.Tensor] | None,
            precision: str, deployment_target: str | None, compute_units: str,
            precision_floor: bool, plugins: str, compact: bool, sparse_weights: bool,
            pg_scale: str, calibration: Any, source_ref: str | None,
            force: bool) -> ExportResult:
    """`export` inside its stage timer."""
    deployment_target = _check_target_options(to, precision, deployment_target, compute_units,
                                              sparse_weights, plugins, flavor)
    check_pg_scale(pg_scale)
    from_zoo = isinstance(model, str)
    with stage("prepare"):
        model, unit, example_inputs, check_inputs, inputs_note = _resolve(model, example_inputs,
                                                                          check_inputs)
        check_op_params(model, example_inputs)  # values set or loaded after construction too
        axes = dynamic.resolve(example_inputs, dynamic_batch=dynamic_batch,
                               dynamic_shapes=dynamic_shapes, forward=model.forward)
        model, calibrated = _calibrate(model, pg_scale, calibration, unit if from_zoo else None)
    stem = name or unit or getattr(model, "gatex_name", None) or type(model).__name__
    source = model
    source_ref = source_ref or (f"zoo:{unit}" if from_zoo else
                                f"{type(model).__module__}.{type(model).__qualname__}")
    _guard_overwrite(_artifact_path(to, out_dir, stem, flavor, dtype, precision), source_ref,
                     force)
    with stage("prepare"):
        model, compaction, metadata = _compact(model, compact, sparse_weights)
    metadata[MODEL_KEY] = source_ref
    if to == "trt":
        return replace(export_tensorrt_checked(
            model, example_inputs, out_dir, stem, unit=unit, precision=precision,
            plugins=plugins, opset=opset, dynamic=axes, check=check,
            check_inputs=check_inputs, inputs_note=inputs_note, source=source,
            compaction=compaction, metadata=metadata), calibration=calibrated)
    if to == "coreml":
        result = _export_coreml(model, example_inputs, out_dir, stem, unit=unit,
                                precision=precision, deployment_target=deployment_target,
                                compute_units=compute_units, dynamic=axes,
                                check=check, check_inputs=check_inputs,
                                inputs_note=inputs_note, precision_floor=precision_floor,
                                source=source, sparse_weights=sparse_weights,
                                metadata=metadata)
    else:
        result = _export_onnx(model, example_inputs, out_dir / artifact_name(stem, flavor, dtype),
                              unit=unit, flavor=flavor, dtype=dtype, opset=opset,
                              dynamic=axes, check=check, check_inputs=check_inputs,
                              inputs_note=inputs_note, precision_floor=precision_floor,
                              source=source, sparse_weights=sparse_weights, metadata=metadata)
    with stage("check"):
        pruned = _pruned(source, result.path, compaction) if check else None
    return replace(result, compaction=compaction, calibration=calibrated, pruned=pruned)


MODEL_KEY = "gatex.model"   # artifact metadata: the model an artifact was exported from


class Stages:
    """The wall time of an export's stages, each exclusive of the stages inside it (CoreML's
    check runs inside its conversion), reported to ``on_stage`` as each one starts."""

    def __init__(self, on_stage: Callable[[str], None] | None = None) -> None:
        self.times: dict[str, float] = {}
        self.on_stage = on_stage
        self._inner: list[float] = []

    @contextlib.contextmanager
    def __call__(self, name: str) -> Iterator[None]:
        if self.on_stage is not None:
            self.on_stage(name)
        start = time.perf_counter()
        self._inner.append(0.0)
        try:
            yield
        finally:
            took = time.perf_counter() - start
            self.times[name] = self.times.get(name, 0.0) + took - self._inner.pop()
            if self._inner:
                self._inner[-1] += took


_STAGES: contextvars.ContextVar[Stages | None] = contextvars.ContextVar("gatex_stages",
                                                                        default=None)


@contextlib.contextmanager
def stage(name: str) -> Iterator[None]:
    """Time the block as stage ``name`` of the export running in this context (if any)."""
    stages = _STAGES.get()
    if stages is None:
        yield
        return
    with stages(name):
        yield


def _artifact_path(to: str, out_dir: Path, stem: str, flavor: str, dtype: str,
                   precision: str) -> Path:
    """Where the export of ``stem`` goes (a TensorRT bundle: its ONNX file)."""
    if to == "coreml":
        return out_dir / coreml_artifact_name(stem, precision)
    if to == "trt":
        bundle = bundle_name(stem, precision)
        return out_dir / bundle / f"{bundle}.onnx"
    return out_dir / artifact_name(stem, flavor, dtype)


def _recorded_model(path: Path) -> str | None:
    """The ``gatex.model`` an existing artifact records, None when it records none."""
    if path.suffix == ".mlpackage":
        try:
            return read_metadata(path).get(MODEL_KEY)
        except GatexError:
            return None
    try:
        proto = onnx.load(str(path), load_external_data=False)
    except Exception:  # noqa: BLE001  (not an ONNX file we can read: it records nothing)
        return None
    return {p.key: p.value for p in proto.metadata_props}.get(MODEL_KEY)


def _guard_overwrite(path: Path, source_ref: str, force: bool) -> None:
    """Refuse to replace an artifact that another model wrote (or that records no model)."""
    if force or not path.exists():
        return
    recorded = _recorded_model(path)
    if recorded == source_ref:
        return
    shown = path.parent if path.parent.name.endswith(path.stem) else path
    written = f"from {recorded}" if recorded else "by something else (it records no model)"
    raise BadInputError(f"{shown} exists, written {written}, not from {source_ref}; give "
                        "--name NAME for another file, or --force to replace it")


def _check_target_options(to: str, precision: str, deployment_target: str | None,
                          compute_units: str, sparse_weights: bool, plugins: str,
                          flavor: str) -> str | None:
    """Bad option values fail before any model is loaded; the canonical CoreML target."""
    require_choice(to, TARGETS, "export target")
    if to == "trt" and sparse_weights:
        raise BadInputError("--sparse-weights is not for --to trt: TensorRT builds its engine "
                            "with dense weights whatever the ONNX stores (unstructured sparsity "
                            "saves it nothing); use --compact to make pruned layers smaller")
    if to == "coreml":
        return check_options(precision, deployment_target or DEFAULT_TARGET, compute_units,
                             sparse_weights)
    if to == "trt":
        check_choice(precision, plugins)
    if to == "onnx":
        onnx_export.check_flavor(flavor)
    return deployment_target


def _resolve(model: nn.Module | str, example_inputs: Sequence[torch.Tensor] | None,
             check_inputs: Sequence[torch.Tensor] | None) -> tuple[Any, ...]:
    """(the model in eval mode, its zoo unit or None, example inputs, check inputs, what the
    check inputs are); a zoo unit's inputs default to its held-out digits."""
    inputs_note = "the check inputs" if check_inputs else "the example inputs"
    if isinstance(model, str):
        unit = zoo.entry(model).unit
        model = zoo.load(unit)
        x, _ = zoo.held_out(unit)
        example_inputs = example_inputs or (x[:4],)
        if not check_inputs:
            inputs_note = f"zoo held-out digits for {unit}"
        check_inputs = check_inputs or (x,)
    else:
        unit = getattr(model, "gatex_unit", None)
    if not example_inputs:
        raise BadInputError("example inputs are needed to export a model that is not a zoo unit "
                            "(--input-shape on the command line)")
    return model.eval(), unit, example_inputs, check_inputs or example_inputs, inputs_note


def _calibrate(model: nn.Module, pg_scale: str, calibration: Any, zoo_unit: str | None
               ) -> tuple[nn.Module, Any]:
    """``pg_scale="calibrated"``: a copy with fixed PGConv2d scales (a model given as a zoo
    unit name calibrates on its held-out digits by default)."""
    if pg_scale != "calibrated":
        return model, None

    if calibration is None and zoo_unit is not None:
        calibration = zoo.held_out(zoo_unit)[0]
    if calibration is None:
        raise BadInputError("--pg-scale calibrated needs calibration data (--calibration "
                            "F.npz with an array x of model inputs)")
    return calibrate_pg_scales(model, calibration)


def _compact(model: nn.Module, compact: bool, sparse_weights: bool
             ) -> tuple[nn.Module, Any, dict[str, str]]:
    """The model to export (compacted, or with gates folded for sparse weights), the
    compaction report, and the metadata that records it."""
    if not (compact or sparse_weights):
        return model, None, {}

    model, compaction = compact_model(model) if compact else (fold_gates(model), None)
    return model, compaction, {COMPACTION_KEY: compaction.to_json()} if compaction else {}


def _export_onnx(model: nn.Module, example_inputs: Sequence[torch.Tensor], path: Path, *,
                 unit: str | None, flavor: str, dtype: str, opset: int | None,
                 dynamic: DynamicAxes, check: bool, check_inputs: Sequence[torch.Tensor],
                 inputs_note: str, precision_floor: bool, source: nn.Module,
                 sparse_weights: bool, metadata: dict[str, str]) -> ExportResult:
    """Trace and write the ONNX file, then check it against ``source`` (no artifact stays when
    the check cannot run)."""
    with stage("trace"):
        traced = onnx_export.trace_onnx(model, example_inputs, dtype=dtype,
                                        dynamic_shapes=dynamic,
                                        opset=onnx_export.DEFAULT_OPSET if opset is None else opset)
    checking = check and flavor != "plugin"  # a plugin model needs TensorRT's plugins to run
    if checking and not traced.ops:
        raise BadInputError("the model holds no gatex op (no gated unit was found or adapted), "
                            "so no op spec gives the parity tolerance; export it with --no-check "
                            "(check=False), or check it with gatex parity --rtol/--atol")
    with stage("write"):
        artifact = onnx_export.write_onnx(traced, path, flavor=flavor, unit=unit,
                                          sparse_weights=sparse_weights, metadata=metadata)
    parity = None
    if checking:
        try:
            with stage("check"):
                parity = check_sizes(
                    lambda feeds: check_onnx(source, artifact.path, feeds,
                                             inputs_note=inputs_note,
                                             precision_floor=precision_floor),
                    traced.dynamic, example_inputs, check_inputs)
        except GatexError:  # the check could not run (bad inputs, no onnxruntime): no artifact
            onnx_export.remove_artifact(artifact.path)
            raise
    return ExportResult(artifact.path, "onnx", flavor, dtype, artifact.ops, unit, artifact, parity)


def check_sizes(check: Callable[[Sequence[torch.Tensor]], Any], axes: DynamicAxes,
                example_inputs: Sequence[torch.Tensor],
                check_inputs: Sequence[torch.Tensor]) -> Any:
    """``check(check_inputs)``, and for each dynamic dimension the check inputs hold at its
    example size (where the first check proves nothing about other sizes), ``check`` again at a
    second size (`DynamicAxes.resized`). The first failure is the verdict (with a note naming
    the size); else the first verdict, noting the sizes that passed too."""
    parity = check(check_inputs)
    if not parity:
        return parity
    for name in axes.names:
        try:
            if axes.size_of(check_inputs, name) != axes.size_of(example_inputs, name):
                continue
        except KeyError:  # the check inputs do not have that axis
            continue
        other = axes.resized(check_inputs, name)
        size = axes.size_of(other, name)
        result = check(other)
        if not result:
            return replace(result, notes=(*result.notes, f"failed with {name} = {size}; at "
                                          f"the example's {name} it passes"))
        parity = replace(parity, notes=(*parity.notes, f"dynamic {name}: also within "
                                        f"tolerance at {name} = {size}"))
    return parity


def _pruned(source: nn.Module, path: Path, compaction: Any) -> Any:
    """The pruned-weights check of the artifact at ``path`` (ONNX or CoreML) against
    ``source``, None when it holds no GatedDense layer."""
    if not has_gated_dense(source):
        return None
    return check_pruned_weights(source, path, compaction=compaction)


def check_onnx(model: nn.Module, path: Path, inputs: Sequence[torch.Tensor], *,
               inputs_note: str = "the check inputs", precision_floor: bool = True) -> Any:
    """Parity of the ONNX file at ``path`` against ``model`` on ``inputs`` (onnxruntime, CPU).

    Inputs are cast to the artifact's declared dtypes (fp16 for an fp16 export); the torch
    reference runs the fp32 model on the same values (and, for an fp16 export with
    ``precision_floor``, an fp16 copy of it: the floor's yardstick).
    """
    return _check_against_torch(OrtRuntime(path), model, path, inputs, inputs_note=inputs_note,
                                precision_floor=precision_floor)


def _check_against_torch(runtime: Any, model: nn.Module, path: Path,
                         inputs: Sequence[torch.Tensor], **compare: Any) -> Any:
    """`compare_runtimes` of ``runtime`` (the artifact) against ``model`` in torch, the inputs
    cast to the artifact's declared dtypes."""
    with runtime as artifact:
        feeds = {spec.name: t.detach().numpy().astype(spec.dtype)
                 for spec, t in zip(artifact.input_specs, inputs)}
        with TorchRuntime(model) as reference:
            return compare_runtimes(artifact, reference, feeds, artifact_name=path.name,
                                    **compare)


def _export_coreml(model: nn.Module, example_inputs: Sequence[torch.Tensor], out_dir: Path,
                   stem: str, *, unit: str | None, precision: str, deployment_target: str,
                   compute_units: str, dynamic: DynamicAxes, check: bool,
                   check_inputs: Sequence[torch.Tensor], inputs_note: str,
                   precision_floor: bool = True, source: nn.Module | None = None,
                   sparse_weights: bool = False,
                   metadata: dict[str, str] | None = None) -> ExportResult:
    """Export ``model``, checked against ``source`` (default: ``model``; the uncompacted model
    when ``model`` is its compacted copy)."""
    reference = model if source is None else source

    def measure(package: Path, precision: str, used: DynamicAxes) -> Any:
        with stage("check"):
            return check_sizes(
                lambda feeds: check_coreml(reference, package, feeds, precision=precision,
                                           compute_units=compute_units,
                                           inputs_note=inputs_note,
                                           precision_floor=precision_floor),
                used, example_inputs, check_inputs)

    path = out_dir / coreml_artifact_name(stem, precision)
    with stage("convert"):   # torch.export, coremltools, save; the check inside is its own
        artifact, parity = export_coreml(model, example_inputs, path, precision=precision,
                                         target=deployment_target, compute_units=compute_units,
                                         unit=unit, dynamic_shapes=dynamic,
                                         sparse_weights=sparse_weights, extra_metadata=metadata,
                                         check=measure if check else None)
    return ExportResult(artifact.path, "coreml", "mlprogram", precision, artifact.ops, unit,
                        artifact, parity)


def check_coreml(model: nn.Module, path: Path, inputs: Sequence[torch.Tensor], *,
                 precision: str = "fp16", compute_units: str = "all",
                 inputs_note: str = "the check inputs", precision_floor: bool = True) -> Any:
    """Parity of the ``.mlpackage`` at ``path`` against ``model`` on ``inputs``: CoreML's own
    prediction on macOS (on ``compute_units``), the MIL emulator elsewhere (the result says
    which: ``emulated``).

    An fp16 program is judged with the specs' fp16 tolerance whatever its output dtype (its
    outputs may be fp32 while every op ran in fp16), and with the precision floor of torch's
    own fp16 error unless ``precision_floor=False``.
    """
    return _check_against_torch(CoremlRuntime(path, compute_units=compute_units), model, path,
                                inputs, inputs_note=inputs_note,
                                dtype="float16" if precision == "fp16" else "float32",
                                precision_floor=precision_floor)


def export_tensorrt_checked(model: nn.Module, example_inputs: Sequence[torch.Tensor],
                            out_dir: Path, stem: str, *, unit: str | None, precision: str,
                            plugins: str, opset: int | None, dynamic: DynamicAxes, check: bool,
                            check_inputs: Sequence[torch.Tensor], inputs_note: str,
                            source: nn.Module | None = None, compaction: Any = None,
                            metadata: dict[str, str] | None = None) -> Any:
    """`gatex.export` for ``to="trt"``: the bundle, the engine, and the engine's parity against
    ``source`` (default ``model``; the uncompacted model when ``model`` is its compacted copy,
    ``compaction`` its report) when ``check``; with GatedDense layers, the pruned-weights check
    of the bundle's ONNX (also on `EngineNotBuilt`, as its ``pruned``)."""
    source = model if source is None else source
    try:
        with stage("bundle"):
            artifact = export_tensorrt(model, example_inputs, out_dir, name=stem,
                                       precision=precision, plugins=plugins, unit=unit,
                                       dynamic_shapes=dynamic, opset=opset,
                                       metadata=metadata)
    except EngineNotBuilt as exc:
        exc.compaction = compaction
        exc.pruned = _pruned(source, exc.artifact.onnx_path, compaction) if check else None
        raise
    parity = None
    if check and artifact.engine_path is not None:
        with stage("check"):
            parity = check_engine(source, artifact.engine_path, check_inputs,
                                  precision=precision, inputs_note=inputs_note)
    pruned = _pruned(source, artifact.onnx_path, compaction) if check else None
    return ExportResult(artifact.path, "trt", "plugin", precision, artifact.ops, unit, artifact,
                        parity, compaction, pruned)


def check_engine(model: nn.Module, path: Path, inputs: Sequence[torch.Tensor], *,
                 precision: str, inputs_note: str = "the check inputs") -> Any:
    """Parity of the engine at ``path`` against ``model`` on ``inputs`` (TensorRT vs torch),
    judged with the specs' tolerances for ``precision``."""
    dtypes = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
    with TensorrtRuntime(path) as engine:
        feeds = {spec.name: to_numpy(t.detach().to(dtypes[precision]) if t.is_floating_point()
                                     else t) for spec, t in zip(engine.input_specs, inputs)}
        with TorchRuntime(model) as reference:
            return compare_runtimes(engine, reference, feeds, artifact_name=path.name,
                                    inputs_note=inputs_note,
                                    dtype={"fp32": "float32", "fp16": "float16",
                                           "bf16": "bfloat16"}[precision])
