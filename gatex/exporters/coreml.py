"""CoreML export: a model with gated units as an ML Program ``.mlpackage``.

Pipeline (DESIGN.md, "Backend facts"): ``torch.export.export`` keeps every ``gatex::`` op as
one node; ``ep.run_decompositions({})``; ``coremltools.convert(convert_to="mlprogram")``,
with each gatex op converted by a composite of MIL ops that its op file registers as
``@SPEC.lowering("coreml")``. The composites are registered here, lazily, with coremltools'
``register_torch_op`` under the op's torch name (``gatex::golu`` -> ``gatex_golu``), so that
``import gatex.ops`` never imports coremltools.

A lowering is called as ``lower(m, *inputs, **params)``: ``m`` is a `Mil` (coremltools' MIL
builder with typed constants and folding), ``inputs`` are MIL variables (None for an absent
optional input) and ``params`` are Python values. A learnable parameter (alpha, sigma) is a
float when the graph holds it as a scalar constant, an ``np.ndarray`` when it is a constant
of more elements, and a MIL variable when it is computed from the input.

The package is written atomically: converted into a temporary directory beside the target,
checked there (the ``check`` callback measures parity on the saved package), stamped with
metadata including that verdict, saved again, and only then renamed into place.
"""

from __future__ import annotations

import functools
import json
import re
import shutil
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from gatex import _io
from gatex._version import __version__
from gatex.artifacts.mlpackage import check_blob_paths, check_package

# one quiet, lazy coremltools import for the exporter, the emulator and the runtime
from gatex.artifacts.mlprogram import constexpr_values, import_coremltools
from gatex.artifacts.mlprogram import quiet_coremltools as quiet
from gatex.comparison.report import result_record
from gatex.errors import BadInputError, CoremlExportError, GatexError, require_choice
from gatex.exporters import dynamic
from gatex.exporters.coreml_aten import register_aten_composites
from gatex.exporters.dynamic import DynamicAxes
from gatex.ops import REGISTRY, keep_ops
from gatex.ops.gated_dense import COREML_WEIGHT_SUFFIX
from gatex.ops.lowering.mil import Mil
from gatex.ops.lowering.mil import is_var as _is_var

PRECISIONS = ("fp16", "fp32")
COMPUTE_UNITS = {"all": "ALL", "cpu": "CPU_ONLY", "cpu_gpu": "CPU_AND_GPU", "cpu_ne": "CPU_AND_NE"}
DEFAULT_TARGET = "iOS17"
# Deployment targets by platform, oldest first. An ML Program needs the first generation listed
# for each platform (iOS15 / macOS12 / watchOS8 / tvOS15, Core ML 5); older ones are refused.
PLATFORM_TARGETS = {
    "iOS": ("iOS15", "iOS16", "iOS17", "iOS18", "iOS26"),
    "macOS": ("macOS12", "macOS13", "macOS14", "macOS15", "macOS26"),
    "watchOS": ("watchOS8", "watchOS9", "watchOS10", "watchOS11", "watchOS26"),
    "tvOS": ("tvOS15", "tvOS16", "tvOS17", "tvOS18", "tvOS26"),
}
TARGETS = tuple(t for names in PLATFORM_TARGETS.values() for t in names)
PRE_MLPROGRAM_TARGETS = ("iOS13", "iOS14", "macOS10_15", "macOS10_16", "macOS11", "watchOS6",
                         "watchOS7", "tvOS13", "tvOS14")
METADATA_PREFIX = "gatex."
PARITY_KEY = "gatex.parity"
# {GatedDense layer: the MIL var of its folded weight (K * G).T}, for the pruned-weights check
GATED_WEIGHTS_KEY = "gatex.gated_weights"
# Sparse weights are constexpr_sparse_to_dense, an iOS16 / macOS13 op: the first ML Program
# generation cannot hold them.
SPARSE_TOO_OLD = ("iOS15", "macOS12", "watchOS8", "tvOS15")


@dataclass(frozen=True)
class CoremlArtifact:
    """What a CoreML export wrote."""
    path: Path
    precision: str                        # "fp16" or "fp32" compute precision
    target: str                           # minimum deployment target, e.g. "iOS17"
    compute_units: str                    # "all", "cpu", "cpu_gpu", "cpu_ne"
    ops: tuple[str, ...]                  # gatex ops the model held (spec names)
    mil_ops: tuple[str, ...]              # MIL op types of the converted program
    input_names: tuple[str, ...]
    output_names: tuple[str, ...]
    metadata: dict[str, str]


# -- options -------------------------------------------------------------------------------------

def canonical_target(name: str) -> str:
    """``name`` as coremltools spells it (case-insensitive); unknown or too old: one line."""
    by_lower = {t.lower(): t for t in (*TARGETS, *PRE_MLPROGRAM_TARGETS)}
    found = by_lower.get(str(name).strip().lower())
    if found is None:
        raise BadInputError(f"unknown deployment target {name!r}; choose one of "
                            f"{', '.join(TARGETS)}")
    if found in PRE_MLPROGRAM_TARGETS:
        raise BadInputError(f"deployment target {found} is too old for an ML Program (gatex "
                            "exports ML Programs, which need iOS15 / macOS12 / watchOS8 / tvOS15 "
                            "or newer); use e.g. --target iOS17")
    return found


def check_options(precision: str, target: str, compute_units: str,
                  sparse_weights: bool = False) -> str:
    """Validate the export options before any work; returns the canonical target name."""
    require_choice(precision, PRECISIONS, "precision")
    require_choice(compute_units, COMPUTE_UNITS, "compute units")
    target = canonical_target(target)
    if sparse_weights and target in SPARSE_TOO_OLD:
        raise BadInputError(f"--sparse-weights needs deployment target iOS16 / macOS13 / "
                            f"watchOS9 / tvOS16 or newer (sparse weights are "
                            f"constexpr_sparse_to_dense); got --target {target}")
    return target


# -- binding a torch node to a lowering -----------------------------------------------------------

def _param_value(raw: Any) -> Any:
    """A learnable parameter: float for a scalar constant, ndarray for a larger constant, else
    the variable."""
    if not _is_var(raw):
        return raw
    if raw.val is None:
        return raw
    value = np.asarray(raw.val, dtype=np.float64)
    return float(value.reshape(())) if value.size == 1 else value


def _resolve(context: Any, raw: Any, type_text: str) -> Any:
    """One argument of a gatex node (``type_text`` as torch prints the schema type: ``Tensor``,
    ``Optional[Tensor]``, ``List[int]``, ``float``, ``str``, ...): a variable for a tensor, a
    Python value otherwise."""
    if raw is None:
        return None
    kind = type_text[len("Optional["):-1] if type_text.startswith("Optional[") else type_text
    if kind == "Tensor":
        return context[raw]
    if kind == "str":           # a literal: never looked up (a node could be named "golu")
        return raw
    if isinstance(raw, str):    # a scalar computed in the graph
        value = context[raw].val
        if value is None:
            raise CoremlExportError(f"a {kind} argument of a gatex op is computed from the "
                                    "input; CoreML needs it constant")
        raw = value.item() if np.ndim(value) == 0 else value.tolist()
    if kind == "List[int]":
        return tuple(int(v) for v in (raw if isinstance(raw, (list, tuple)) else [raw]))
    if kind == "int":
        return int(raw)
    if kind == "float":
        return float(raw)
    return raw


def bind(spec: Any, context: Any, node: Any) -> tuple[list[Any], dict[str, Any]]:
    """(inputs, params) of ``node`` for ``spec``'s lowering, by the op's torch schema: positional
    arguments, then keyword arguments, then the spec's defaults (torch.export leaves arguments
    equal to their default out of the call)."""
    schema = spec.torch_op.default._schema
    positional = list(node.inputs or ())
    keywords = dict(node.kwinputs or {})
    defaults = spec.defaults()
    values: dict[str, Any] = {}
    for i, arg in enumerate(schema.arguments):
        if i < len(positional):
            raw = positional[i]
        elif arg.name in keywords:
            raw = keywords[arg.name][0]
        else:
            values[arg.name] = defaults.get(arg.name)
            continue
        values[arg.name] = _resolve(context, raw, str(arg.type))
    inputs = [values.get(name) for name in spec.inputs]
    params = {}
    for p in spec.params:
        value = values.get(p.name, p.default)
        params[p.name] = _param_value(value) if p.learnable else value
    return inputs, params


_REGISTERED: set[str] = set()


def composite_name(spec: Any) -> str:
    """The MIL frontend's name for the op's composite: ``gatex::golu`` -> ``gatex_golu``."""
    return f"gatex_{spec.torch_name}"


def register_lowerings(registry: Any = None) -> tuple[str, ...]:
    """Register every op's CoreML lowering with coremltools' torch frontend (once per process);
    returns the op names registered. An op without one is refused at conversion with its
    ``unsupported`` reason."""
    import_coremltools()
    from coremltools.converters.mil.frontend.torch.torch_op_registry import register_torch_op


    register_aten_composites()
    done = []
    for spec in registry or REGISTRY:
        if "coreml" not in spec.lowerings:
            continue
        done.append(spec.name)
        if spec.name in _REGISTERED:
            continue

        def convert(context: Any, node: Any, spec: Any = spec) -> None:
            inputs, params = bind(spec, context, node)
            out = spec.lowerings["coreml"](Mil(), *inputs, **params)   # looked up per call
            context.add(out, torch_name=node.name)

        convert.__name__ = composite_name(spec)
        convert.__qualname__ = convert.__name__
        # override: a second registration in one process (tests build several exports) replaces
        # gatex's own composite; the names are gatex's, so nothing else is overridden
        register_torch_op(convert, torch_alias=[spec.torch_qualname], override=True)
        _REGISTERED.add(spec.name)
    return tuple(done)


# -- export ---------------------------------------------------------------------------------------

def export_coreml(model: nn.Module, example_inputs: Sequence[torch.Tensor], path: str | Path, *,
                  precision: str = "fp16", target: str = DEFAULT_TARGET,
                  compute_units: str = "all", unit: str | None = None,
                  dynamic_batch: bool = True, dynamic_shapes: Any = None,
                  sparse_weights: bool = False,
                  extra_metadata: dict[str, str] | None = None,
                  check: Callable[[Path, str, DynamicAxes], Any] | None = None
                  ) -> tuple[CoremlArtifact, Any]:
    """Convert ``model`` to an ML Program at ``path`` (a ``.mlpackage`` directory).

    ``precision`` is the compute precision (fp16: every op in fp16, the usual form for the GPU
    and Neural Engine; inputs stay fp32, outputs are fp16 from iOS16 / macOS13 on, as coremltools
    writes them, fp32 for older targets); ``target`` the minimum deployment target;
    ``compute_units`` the units the model loads with. ``sparse_weights`` stores every weight of
    more than 2048 elements that is at least half exact zeros sparse (`sparsify_weights`; the
    model should hold K * G already: `gatex.exporters.compact.fold_gates`); ``extra_metadata``
    is added to the package's user metadata. ``check(package, precision, dynamic)``, when given,
    runs on the saved package before it is renamed into place and returns a parity verdict
    (``ParityResult``), stored as JSON in the metadata under ``gatex.comparison``; the package is
    renamed into place whatever the verdict (the caller decides what a failure means).

    Returns the artifact and the verdict (None without ``check``).
    """
    target = check_options(precision, target, compute_units, sparse_weights)
    path = Path(path)
    if path.suffix != ".mlpackage":
        raise BadInputError(f"{path}: a CoreML ML Program is saved as a .mlpackage directory")
    if path.exists() and not path.is_dir():
        raise BadInputError(f"{path} exists and is not a .mlpackage directory; remove it first")
    _reject_unexportable(model)
    ct = import_coremltools()
    register_lowerings()
    model = model.eval()
    inputs = tuple(example_inputs)
    axes = dynamic.resolve(inputs, dynamic_batch=dynamic_batch, dynamic_shapes=dynamic_shapes,
                           forward=model.forward)
    program, used = dynamic.export_adapting(lambda a: _torch_export(model, inputs, a), axes,
                                            inputs)
    ops = _gatex_ops(program)
    if check is not None and not ops:
        raise CoremlExportError("the model holds no gatex op (no gated unit was found or "
                                "adapted), so no op spec gives the parity tolerance; export it "
                                "with --no-check (check=False), or check it with gatex parity "
                                "--rtol/--atol")
    with _io.private_tempdir("gatex-coreml-"):  # coremltools' own temporary packages go here
        return _convert_and_save(ct, program, path, ops, precision=precision, target=target,
                                 compute_units=compute_units, unit=unit,
                                 sparse_weights=sparse_weights, extra_metadata=extra_metadata,
                                 check=None if check is None else
                                 functools.partial(_check_with_axes, check, used))


def _check_with_axes(check: Callable[[Path, str, DynamicAxes], Any], axes: DynamicAxes,
                     package: Path, precision: str) -> Any:
    return check(package, precision, axes)


def _convert_and_save(ct: Any, program: Any, path: Path, ops: tuple[str, ...], *,
                      precision: str, target: str, compute_units: str, unit: str | None,
                      sparse_weights: bool, extra_metadata: dict[str, str] | None,
                      check: Callable[[Path, str], Any] | None) -> tuple[CoremlArtifact, Any]:
    mlmodel = _convert(ct, program, precision, target, compute_units)
    if sparse_weights:
        mlmodel, _ = sparsify_weights(mlmodel)
    mil_ops = _mil_op_types(mlmodel._mil_program)
    leftover = sorted(o for o in mil_ops if o.startswith("gatex"))
    if leftover:  # a gatex bug: a composite did not replace its op
        raise RuntimeError(f"CoreML program still holds gatex ops: {', '.join(leftover)}")
    metadata = _metadata(ops, unit, precision, target, compute_units)
    weights = gated_weight_vars(mlmodel._mil_program, _kernel_placeholders(program))
    if weights:
        metadata[GATED_WEIGHTS_KEY] = json.dumps(weights, separators=(",", ":"))
    metadata.update(extra_metadata or {})
    spec = mlmodel.get_spec()
    input_names = tuple(i.name for i in spec.description.input)
    output_names = tuple(o.name for o in spec.description.output)
    verdict = _save_atomic(mlmodel, path, metadata, check, precision)
    if verdict is not None:
        metadata[PARITY_KEY] = parity_json(verdict)
    artifact = CoremlArtifact(path, precision, target, compute_units, ops, mil_ops, input_names,
                              output_names, metadata)
    return artifact, verdict


def _reject_unexportable(model: nn.Module) -> None:
    for name, module in model.named_modules():
        if getattr(module, "alpha_kind", None) == "callable":
            raise CoremlExportError(
                f"module {name or '<root>'} ({type(module).__name__}) takes alpha from a "
                "callable of its input: it cannot be folded into a constant; give it a float "
                "or 'learnable' alpha to export")


def _torch_export(model: nn.Module, inputs: tuple[torch.Tensor, ...],
                  axes: DynamicAxes) -> Any:
    # a size-1 dynamic axis is traced at 2 (torch.export would specialise 1); the program
    # still takes 1 (coremltools' RangeDim starts at 1)
    traced_inputs = axes.trace_sizes(inputs) if axes else inputs
    try:
        with warnings.catch_warnings(), keep_ops():
            warnings.simplefilter("ignore")
            program = torch.export.export(model, traced_inputs,
                                          dynamic_shapes=axes.torch_dynamic_shapes())
            return program.run_decompositions({})
    except GatexError:
        raise
    except Exception as exc:  # torch.export's own error types: the model cannot be traced
        raise CoremlExportError(f"torch.export failed: {_first_line(str(exc))}") from None


def _kernel_placeholders(program: Any) -> dict[str, str]:
    """{module path: torch.export's placeholder name} for every ``<module>.kernel`` parameter
    (the GatedDense lowering names its folded weight after that placeholder)."""
    found = {}
    for placeholder, target in program.graph_signature.inputs_to_parameters.items():
        if target.endswith(".kernel"):
            found[target.removesuffix(".kernel")] = placeholder
    return found


def gated_weight_vars(program: Any, placeholders: dict[str, str]) -> dict[str, str]:
    """{layer: name of the var a linear op reads as its weight} for each layer whose folded
    weight const (``<placeholder>_folded``, renamed by later passes only by suffixes such as
    ``_to_fp16`` and ``_sparsified``) feeds a linear op of ``program``'s main function."""
    bases = {f"{p}{COREML_WEIGHT_SUFFIX}": layer for layer, p in placeholders.items()}
    found: dict[str, str] = {}
    for function in program.functions.values():
        for op in function.operations:
            if op.op_type != "linear":
                continue
            name = op.weight.name
            for base, layer in bases.items():
                if name == base or name.startswith(base + "_"):
                    found[layer] = name
    return found


# -- sparse weights -------------------------------------------------------------------------------

# coremltools' threshold pruner zeroes |w| <= threshold: 0.0 touches exact zeros only (and -0.0,
# which equals 0); a weight goes sparse when it has more than 2048 elements and at least half of
# them are zero (its "mostly zero"; below that the bit mask barely pays)
SPARSE_MIN_ELEMENTS = 2048
SPARSE_MIN_FRACTION = 0.5


def sparsify_weights(mlmodel: Any) -> tuple[Any, dict[str, int]]:
    """``mlmodel`` with mostly-zero weights stored sparse (coremltools'
    ``optimize.coreml.prune_weights`` with an ``OpThresholdPrunerConfig`` of threshold 0:
    ``constexpr_sparse_to_dense``, a bit mask plus the non-zeros), and {weight: non-zeros} of
    what went sparse. Every sparse weight is materialised again and compared with the dense
    const it replaced: any changed value is a RuntimeError (a coremltools or gatex bug), so no
    non-zero weight can change."""
    import_coremltools()
    import coremltools.optimize as cto

    dense = {op.outputs[0].name: op.outputs[0].val
             for op in _walk_ops(mlmodel._mil_program) if op.op_type == "const"}
    config = cto.coreml.OptimizationConfig(global_config=cto.coreml.OpThresholdPrunerConfig(
        threshold=0.0, minimum_sparsity_percentile=SPARSE_MIN_FRACTION,
        weight_threshold=SPARSE_MIN_ELEMENTS))
    with quiet():
        sparse = cto.coreml.prune_weights(mlmodel, config)
    stored: dict[str, int] = {}
    for op in _walk_ops(sparse._mil_program):
        if op.op_type != "constexpr_sparse_to_dense":
            continue
        original = op.name.removesuffix("_sparsified")
        (value,) = constexpr_values(op).values()
        before = dense.get(original)
        if before is None or value.dtype != before.dtype or value.shape != before.shape or \
                not np.array_equal(value, before, equal_nan=value.dtype.kind == "f"):
            raise RuntimeError(f"sparse weight {op.name} does not equal the dense weight "
                               f"{original} it replaced")
        stored[original] = int(np.count_nonzero(value))
    return sparse, stored


def _walk_ops(program: Any) -> list[Any]:
    """Every op of the program's functions, nested blocks included."""
    found: list[Any] = []

    def walk(block: Any) -> None:
        for op in block.operations:
            found.append(op)
            for inner in getattr(op, "blocks", ()):
                walk(inner)

    for function in program.functions.values():
        walk(function)
    return found


def _gatex_ops(program: Any) -> tuple[str, ...]:

    found = set()
    for node in program.graph.nodes:
        target = getattr(node.target, "namespace", None)
        if node.op == "call_function" and target == "gatex":
            found.add(REGISTRY.get(node.target._schema.name).name)
    return tuple(sorted(found))


def _convert(ct: Any, program: Any, precision: str, target: str, compute_units: str) -> Any:

    for name in _gatex_ops(program):
        spec = REGISTRY.get(name)
        if "coreml" not in spec.lowerings:
            reason = spec.unsupported_reasons.get("coreml", "it has no CoreML lowering")
            raise CoremlExportError(f"cannot convert {spec.id} to CoreML: {reason}")
    compute_precision = ct.precision.FLOAT16 if precision == "fp16" else ct.precision.FLOAT32
    try:
        with quiet():
            return ct.convert(program, convert_to="mlprogram",
                              compute_precision=compute_precision,
                              minimum_deployment_target=getattr(ct.target, target),
                              compute_units=getattr(ct.ComputeUnit, COMPUTE_UNITS[compute_units]),
                              skip_model_load=True)
    except GatexError:
        raise
    except Exception as exc:  # coremltools raises ValueError/NotImplementedError/RuntimeError
        raise CoremlExportError(_explain(exc, target)) from None


def _explain(exc: BaseException, target: str) -> str:
    text = " ".join(str(exc).split())
    op = re.search(r"[Cc]onvert function for op '([^']+)' not implemented", text) or \
        re.search(r"Unsupported fx node .*?kind ([\w.:]+)", text)
    if op:
        return (f"cannot convert op {op.group(1)} to CoreML: coremltools has no conversion for "
                "it (replace it in the model, or register one with register_torch_op)")
    needs = re.search(r"(iOS|macOS|watchOS|tvOS)\s?(\d+)", text)
    if needs and ("target" in text.lower() or "opset" in text.lower()):
        return f"the model needs a newer deployment target than {target}: {text[:300]}"
    return f"CoreML conversion failed: {text[:300] or type(exc).__name__}"


def _first_line(text: str) -> str:
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return lines[0] if lines else "unknown error"


def _mil_op_types(program: Any) -> tuple[str, ...]:
    """Every op type in the program's functions, nested blocks included."""
    return tuple(sorted({op.op_type for op in _walk_ops(program)}))


def _metadata(ops: tuple[str, ...], unit: str | None, precision: str, target: str,
              compute_units: str) -> dict[str, str]:
    meta = {"gatex.version": __version__,
            "gatex.ops": ",".join(REGISTRY.get(o).id for o in ops),
            "gatex.precision": precision, "gatex.target": target,
            "gatex.compute_units": compute_units}
    if unit:
        meta["gatex.unit"] = unit
    return meta


def parity_json(verdict: Any) -> str:
    """A parity verdict as the compact JSON stored in the package's metadata (the record of
    one result in ``gatex.parity/1``, see gatex.comparison.report)."""
    record = result_record(verdict)
    record["artifact"] = Path(record["artifact"]).name
    return json.dumps(record, separators=(",", ":"), allow_nan=False)


def _save_atomic(mlmodel: Any, path: Path, metadata: dict[str, str],
                 check: Callable[[Path, str], Any] | None, precision: str) -> Any:
    """Save into a staging directory beside ``path``, check, stamp, save again, rename
    (`gatex._io.staged_dir`: the old package stays until the new one replaces it)."""
    with _io.staged_dir(path) as staged:
        for key, value in metadata.items():
            mlmodel.user_defined_metadata[key] = value
        with quiet():
            mlmodel.save(str(staged))
        verdict = None
        if check is not None:
            verdict = check(staged, precision)
            mlmodel.user_defined_metadata[PARITY_KEY] = parity_json(verdict)
            shutil.rmtree(staged)
            with quiet():
                mlmodel.save(str(staged))
    return verdict


# -- reading a package back -----------------------------------------------------------------------

def read_metadata(path: str | Path) -> dict[str, str]:
    """The user-defined metadata of a saved ``.mlpackage`` (no model load; works on Linux)."""
    check_package(path)
    ct = import_coremltools()
    with quiet():
        model = ct.models.MLModel(str(path), skip_model_load=True)
    return dict(model.user_defined_metadata)


def load_program(path: str | Path) -> Any:
    """The MIL program of a saved ``.mlpackage``, through coremltools' milproto frontend."""
    check_package(path)
    ct = import_coremltools()
    from coremltools.converters.mil.frontend.milproto.load import load

    with quiet():
        model = ct.models.MLModel(str(path), skip_model_load=True)
        spec = model.get_spec()
        check_blob_paths(path, spec, model.weights_dir)
        return load(spec, spec.specificationVersion, model.weights_dir)


def program_op_types(path: str | Path) -> tuple[str, ...]:
    """The MIL op types of a saved package's program."""
    return _mil_op_types(load_program(path))


__all__ = ["COMPUTE_UNITS", "DEFAULT_TARGET", "PRECISIONS", "TARGETS", "CoremlArtifact",
           "CoremlExportError", "Mil", "bind", "canonical_target", "check_options",
           "export_coreml", "import_coremltools", "load_program", "parity_json",
           "program_op_types", "read_metadata", "register_lowerings"]
