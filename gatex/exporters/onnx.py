"""ONNX export: one ``gatex``-domain node per gated op, in three flavors.

- ``portable``: custom nodes plus model-local functions holding each op's decomposition into
  standard ops; runs on plain onnxruntime and ``onnx.reference`` without gatex.
- ``plugin``: custom nodes with ``plugin_namespace``/``plugin_version`` and no functions (the
  TensorRT ONNX parser prefers a local function over a plugin).
- ``inline``: standard ops only.

Pipeline: ``torch.onnx.export(dynamo=True)`` with a translation per gatex op, then a pass over
the proto that folds learnable parameters (alpha, sigma, the PaGRUCell alphas) into float
attributes, writes the functions (one per op type, specialised to the attribute values and
dtype most of its nodes use; nodes with other values are inlined in place, since
``onnx.reference`` does not tell function overloads apart), sets the IR version onnxruntime
accepts, checks the model and saves it atomically. `trace_onnx` is the first part (seconds),
`write_onnx` the rest (milliseconds): writing several flavors or files costs one trace.

Bad input is one `BadInputError` line: an opset outside 20..(the installed onnx's newest), an op
with no lowering (named, with the module and source line that call it), a model torch.export
cannot trace (its root cause), an unwritable directory. torch's log chatter during the export
(``torchvision is not installed...``) is held back (`gatex.torch_logs`).
"""

from __future__ import annotations

import collections
import contextlib
import io
import json
import re
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import torch
from onnx import helper, numpy_helper
from torch import nn

from gatex import _io
from gatex._version import __version__
from gatex.artifacts.onnx_nodes import gatex_spec as _spec
from gatex.artifacts.onnx_nodes import node_params
from gatex.errors import BadInputError, GatexError
from gatex.exporters import dynamic
from gatex.exporters.compact import sparsify_initializers
from gatex.exporters.dynamic import STATIC, DynamicAxes
from gatex.ops import REGISTRY, OpSpec, keep_ops
from gatex.ops.lowering import onnx as onnx_build
from gatex.torch_logs import held_torch_logs

FLAVORS = ("portable", "plugin", "inline")
DTYPES = {"fp32": torch.float32, "fp16": torch.float16}
DEFAULT_OPSET = 21          # Gelu needs 20; onnxruntime 1.31 runs 21 with every EP
MIN_OPSET = 20
IR_VERSION = 10             # onnxruntime 1.31 rejects IR 14, which the exporter may emit
PLUGIN_VERSION = "1"
EXTERNAL_DATA_BYTES = 2_000_000_000  # protobuf's 2 GiB limit, with room for the graph


class ExportError(BadInputError):
    """The model cannot be exported as asked (an op gatex cannot lower, a callable alpha, ...)."""


@dataclass(frozen=True)
class OnnxArtifact:
    """What an ONNX export wrote."""
    path: Path
    flavor: str
    dtype: str
    opset: int
    ops: tuple[str, ...]                 # gatex op types in the graph (before inlining)
    inlined_variants: tuple[str, ...]    # nodes written inline: a second attribute variant
    input_names: tuple[str, ...]
    output_names: tuple[str, ...]
    external_data: bool


def export_onnx(model: nn.Module, example_inputs: Sequence[torch.Tensor], path: str | Path, *,
                flavor: str = "portable", dtype: str = "fp32", opset: int = DEFAULT_OPSET,
                dynamic_batch: bool = True, unit: str | None = None) -> OnnxArtifact:
    """Export ``model`` to ``path``; see the module docstring for the flavors.

    The same as ``write_onnx(trace_onnx(model, ...), path, flavor=...)``.
    """
    check_flavor(flavor)
    traced = trace_onnx(model, example_inputs, dtype=dtype, opset=opset,
                        dynamic_batch=dynamic_batch)
    return write_onnx(traced, path, flavor=flavor, unit=unit)


@dataclass(frozen=True)
class TracedOnnx:
    """A model traced to ONNX once, with its parameters folded: each flavor is written from it
    (`write_onnx`), so several flavors cost one trace."""
    proto: onnx.ModelProto   # gatex nodes with every parameter as an attribute; no functions
    dtype: str
    opset: int
    ops: tuple[str, ...]     # gatex op types in the graph
    dynamic: DynamicAxes = STATIC  # the dimensions that stayed dynamic, by the user's names


def trace_onnx(model: nn.Module, example_inputs: Sequence[torch.Tensor], *, dtype: str = "fp32",
               opset: int = DEFAULT_OPSET, dynamic_batch: bool = True,
               dynamic_shapes: Any = None) -> TracedOnnx:
    """Trace ``model`` with ``torch.onnx.export`` (a translation per gatex op) and fold its
    learnable parameters into node attributes.

    The dynamic dimensions: ``dynamic_shapes`` (torch's form or a `DynamicAxes`) or, without
    it, the batch (``dynamic_batch``); each keeps its name as the ONNX ``dim_param``. One that
    torch.export cannot keep dynamic is exported static with a `GatexWarning`
    (`gatex.exporters.dynamic.export_adapting`)."""
    if dtype not in DTYPES:
        raise BadInputError(f"unknown dtype {dtype!r}; choose one of {', '.join(DTYPES)}")
    newest = onnx.defs.onnx_opset_version()
    if isinstance(opset, bool) or not isinstance(opset, int) or not MIN_OPSET <= opset <= newest:
        raise BadInputError(f"opset {opset} is not supported: gatex lowerings need opset "
                            f"{MIN_OPSET} or newer, and the installed onnx {onnx.__version__} "
                            f"knows opsets up to {newest}; use --opset {MIN_OPSET}..{newest}")
    _reject_unexportable(model)
    model = model.eval()
    inputs = tuple(example_inputs)
    if dtype != "fp32":
        import copy

        try:
            model = copy.deepcopy(model)
            _fold_batchnorms(model)
            model = model.to(DTYPES[dtype])
        except Exception as exc:  # noqa: BLE001  (a module holding something uncopyable)
            raise ExportError(f"cannot make the {dtype} copy of the model to export: "
                              f"copy.deepcopy failed ({type(exc).__name__}: "
                              f"{_first_line(str(exc))}); export fp32, or convert the model "
                              f"to {dtype} yourself") from None
        inputs = tuple(t.to(DTYPES[dtype]) if t.is_floating_point() else t for t in inputs)
    axes = dynamic.resolve(inputs, dynamic_batch=dynamic_batch, dynamic_shapes=dynamic_shapes,
                           forward=model.forward)
    proto, axes = dynamic.export_adapting(lambda a: _torch_export(model, inputs, opset, a),
                                          axes, inputs)
    dynamic.rename_onnx_dims(proto, axes)
    ops = tuple(sorted({n.op_type for n in proto.graph.node if n.domain == onnx_build.DOMAIN}))
    _fold_parameters(proto)
    return TracedOnnx(proto, dtype, opset, ops, axes)


_CONV_BN = ((nn.Conv1d, nn.BatchNorm1d), (nn.Conv2d, nn.BatchNorm2d), (nn.Conv3d, nn.BatchNorm3d))


def _foldable(conv: nn.Module, bn: nn.Module) -> bool:
    return any(type(conv) is c and type(bn) is n for c, n in _CONV_BN) and not bn.training \
        and bn.running_mean is not None and not conv.training


def _fold_batchnorms(model: nn.Module) -> int:
    """Fold each eval-mode BatchNorm that directly follows a Conv into that conv, in fp32,
    before the low-precision copy is made; returns how many were folded.

    torch.onnx's optimizer folds Conv + BatchNorm too, but on the fp16 copy: its numpy fold of
    fp16 parameters rounds at every step (measured on the CGConv2d zoo model: 67 of 144 stem
    weights differ from the fp32 fold rounded once, which flips hard gates downstream and costs
    a logit 0.58 where torch's own fp16 run loses 0.17). Folding here rounds each weight once.

    The pairs are found on a ``torch.fx`` trace (gatex modules kept whole): a conv module called
    once whose output only feeds a BatchNorm module called once, wherever they sit (``self.bn1
    (self.conv1(x))`` in a ResNet block as well as adjacent in an ``nn.Sequential``). A model
    fx cannot trace falls back to adjacent pairs inside ``nn.Sequential`` containers; anything
    else is left to torch.onnx's fold."""
    from torch.nn.utils.fusion import fuse_conv_bn_eval

    pairs = _conv_bn_pairs(model)
    for conv_name, bn_name in pairs:
        conv, bn = model.get_submodule(conv_name), model.get_submodule(bn_name)
        model.set_submodule(conv_name, fuse_conv_bn_eval(conv, bn))
        model.set_submodule(bn_name, nn.Identity())
    return len(pairs)


def _conv_bn_pairs(model: nn.Module) -> list[tuple[str, str]]:
    """(conv path, batchnorm path) of every foldable pair (see `_fold_batchnorms`)."""
    class Leaves(torch.fx.Tracer):   # gatex's own modules whole: their insides are not convs
        def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
            return type(m).__module__.startswith("gatex.") or \
                super().is_leaf_module(m, qualname)

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            graph = Leaves().trace(model)
    except Exception:  # noqa: BLE001  (data-dependent control flow, untraceable calls)
        return _sequential_pairs(model)
    calls: dict[str, int] = collections.Counter(
        str(n.target) for n in graph.nodes if n.op == "call_module")
    found = []
    for node in graph.nodes:
        if node.op != "call_module" or calls[str(node.target)] != 1 or len(node.users) != 1:
            continue
        (user,) = node.users
        if user.op != "call_module" or calls[str(user.target)] != 1 or user.args[:1] != (node,):
            continue
        conv, bn = model.get_submodule(str(node.target)), model.get_submodule(str(user.target))
        if _foldable(conv, bn):
            found.append((str(node.target), str(user.target)))
    return found


def _sequential_pairs(model: nn.Module) -> list[tuple[str, str]]:
    found = []
    for path, seq in model.named_modules():
        if not isinstance(seq, nn.Sequential):
            continue
        names = list(seq._modules)
        for a, b in zip(names, names[1:]):
            if _foldable(seq._modules[a], seq._modules[b]):
                prefix = f"{path}." if path else ""
                found.append((prefix + a, prefix + b))
    return found


def write_onnx(traced: TracedOnnx, path: str | Path, *, flavor: str = "portable",
               unit: str | None = None, sparse_weights: bool = False,
               metadata: dict[str, str] | None = None) -> OnnxArtifact:
    """Write ``traced`` as ``flavor`` to ``path``: functions (or plugin attributes, or inline
    decompositions), IR version, metadata, the checker, then an atomic save. With
    ``sparse_weights`` mostly-zero initializers go to ``graph.sparse_initializer`` where that
    is smaller (`gatex.exporters.compact.sparsify_initializers`). ``metadata`` is added to the
    model's metadata_props."""
    check_flavor(flavor)
    proto = onnx.ModelProto()
    proto.CopyFrom(traced.proto)
    elem = onnx_build.onnx_dtype(torch.empty(0, dtype=DTYPES[traced.dtype]).numpy().dtype)
    inlined = _write_functions(proto, flavor, elem, traced.opset)
    _finish(proto, flavor, traced.dtype, traced.opset, traced.ops, unit, metadata)
    external = proto.ByteSize() > EXTERNAL_DATA_BYTES
    if not external:  # a proto past 2 GB cannot be checked in memory: checked on disk instead
        _check(proto, flavor)
    if sparse_weights:  # after the full check: its strict type inference rejects sparse inputs

        sparsify_initializers(proto)
        external = proto.ByteSize() > EXTERNAL_DATA_BYTES
        if not external:
            onnx.checker.check_model(proto)
    _save_atomic(proto, Path(path), external=external, flavor=flavor)
    return OnnxArtifact(Path(path), flavor, traced.dtype, traced.opset, traced.ops, inlined,
                        tuple(i.name for i in proto.graph.input),
                        tuple(o.name for o in proto.graph.output), external)


def check_flavor(flavor: str) -> None:
    """Raise `BadInputError` unless ``flavor`` is one of `FLAVORS`."""
    if flavor not in FLAVORS:
        raise BadInputError(f"unknown ONNX flavor {flavor!r}; choose one of {', '.join(FLAVORS)}")


def _reject_unexportable(model: nn.Module) -> None:
    for name, module in model.named_modules():
        if getattr(module, "alpha_kind", None) == "callable":
            raise ExportError(f"module {name or '<root>'} ({type(module).__name__}) takes alpha "
                              "from a callable of its input: it cannot be folded into a constant; "
                              "give it a float or 'learnable' alpha to export")


def _torch_export(model: nn.Module, inputs: tuple[torch.Tensor, ...], opset: int,
                  axes: DynamicAxes) -> onnx.ModelProto:
    onnx_build.register_schemas()
    shapes = None
    if axes:
        # keyed by tensor, not by argument position: any forward signature (*args too) works;
        # a size-1 dynamic axis is traced at 2 (torch.export would specialise 1)
        inputs = axes.trace_sizes(inputs)
        shapes = torch.export.ShapesCollection()
        for t, per in zip(inputs, axes.torch_dynamic_shapes()):
            if per:
                shapes[t] = per
    chatter = io.StringIO()
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(chatter), held_torch_logs(), \
                keep_ops():
            warnings.simplefilter("ignore")
            program = torch.onnx.export(model, inputs, dynamo=True, opset_version=opset,
                                        custom_translation_table=onnx_build.translation_table(),
                                        dynamic_shapes=shapes, optimize=True, verbose=False)
    except GatexError:
        raise
    except Exception as exc:  # torch.onnx wraps everything in its own error types
        raise ExportError(_explain(exc, model, inputs)) from None
    return program.model_proto


def _explain(exc: BaseException, model: nn.Module, inputs: tuple[torch.Tensor, ...]) -> str:
    """One line for a failed ``torch.onnx.export``: the op it could not lower and where the
    model calls it, or the root cause torch.onnx wrapped (a shape error, ...)."""
    chain = _chain(exc)
    text = "\n".join(str(c) for c in chain)
    target = re.search(r"call_function\[target=([\w.:]+)\]", text)
    # the explicit causes (raise ... from ...) lead to the root; an implicit context is
    # usually an unrelated error met while torch handled the real one
    causes = [exc]
    while causes[-1].__cause__ is not None and causes[-1].__cause__ not in causes:
        causes.append(causes[-1].__cause__)
    root = next((c for c in reversed(causes) if str(c).strip()), exc)
    if target:
        op = target.group(1).removeprefix("torch.ops.")
        no_translation = any(type(c).__name__ == "DispatchError" for c in chain)
        reason = ("torch.onnx has no translation for it, and it is not a gatex op"
                  if no_translation else f"{type(root).__name__}: {_first_line(str(root))}")
        where = _where_called(model, inputs, op)
        return f"cannot lower op {_op_label(op)}{where} to ONNX: {reason}"
    shapes = ", ".join(str(tuple(t.shape)) for t in inputs)
    step = ("torch.export cannot trace the model" if type(exc).__name__ == "TorchExportError"
            else "ONNX export failed")
    hint = ""
    if "Constraints violated" in str(root) and hasattr(model, "gatex_name"):
        hint = ("; the .pt2 program was exported with a fixed batch size, so export it with "
                "--static (dynamic_batch=False)")
    return (f"{step} on inputs of shape {shapes}: {type(root).__name__}: "
            f"{_first_line(str(root))}{hint}")


def _op_label(target: str) -> str:
    """``userlib.wobble.default`` -> ``userlib::wobble``; aten ops likewise."""
    parts = target.split(".")
    return f"{parts[0]}::{parts[1]}" if len(parts) >= 2 else target


def _where_called(model: nn.Module, inputs: tuple[torch.Tensor, ...], target: str) -> str:
    """`` (in module 'net' (Net), called at file.py:12 in forward)`` for the first node calling
    ``target``, from a fresh ``torch.export`` (the failure path only); '' if it cannot tell."""
    try:
        with warnings.catch_warnings(), held_torch_logs(), keep_ops():
            warnings.simplefilter("ignore")
            program = torch.export.export(model, inputs, strict=False)
    except Exception:  # noqa: BLE001  (the location is a courtesy; the error stands without it)
        return ""
    for node in program.graph.nodes:
        if node.op != "call_function" or str(node.target) != target:
            continue
        parts = []
        stack = node.meta.get("nn_module_stack") or {}
        if stack:
            path, cls = list(stack.values())[-1]
            name = getattr(cls, "__name__", str(cls).rpartition(".")[2])
            parts.append(f"in module {path or '<root>'!r} ({name})")
        frames = re.findall(r'File "([^"]+)", line (\d+), in (\w+)',
                            node.meta.get("stack_trace") or "")
        if frames:
            file, line, func = frames[-1]
            parts.append(f"called at {file}:{line} in {func}")
        return f" ({', '.join(parts)})" if parts else ""
    return ""


def _chain(exc: BaseException) -> list[BaseException]:
    out, seen = [], set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        out.append(exc)
        exc = exc.__cause__ or exc.__context__
    return out


def _first_line(text: str) -> str:
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return lines[0] if lines else "unknown error"


def _constants(proto: onnx.ModelProto) -> dict[str, np.ndarray]:
    values = {i.name: numpy_helper.to_array(i) for i in proto.graph.initializer}
    for n in proto.graph.node:
        if n.op_type == "Constant" and n.domain == "" and n.attribute and n.attribute[0].name == "value":
            values[n.output[0]] = numpy_helper.to_array(n.attribute[0].t)
    return values


def _fold_parameters(proto: onnx.ModelProto) -> None:
    """Learnable inputs -> float attributes; every parameter written out as an attribute."""
    constants = _constants(proto)
    for node in proto.graph.node:
        if node.domain != onnx_build.DOMAIN:
            continue
        spec = _spec(node)
        n_data = len(spec.inputs)
        extra = list(node.input[n_data:])
        learnable = [p for p in spec.params if p.learnable]
        given = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        for p, name in zip(learnable, extra):
            if name not in constants:
                raise ExportError(f"{spec.name} node {node.name}: parameter {p.name} is computed "
                                  "from the input, not a constant; it cannot be folded")
            value = constants[name]
            if value.size != 1:
                raise ExportError(f"{spec.name} node {node.name}: parameter {p.name} has shape "
                                  f"{list(value.shape)}; the ONNX lowering takes scalars only")
            given[p.name] = float(value.reshape(()))
        del node.input[n_data:]
        while node.input and node.input[-1] == "":
            del node.input[-1]
        del node.attribute[:]
        for p in spec.params:
            value = given.get(p.name, p.default)
            if value is None:
                continue
            if isinstance(value, bytes):
                value = value.decode()
            if p.kind is tuple:
                value = [int(v) for v in value]
            elif p.learnable or p.kind is float:
                value = float(value)
            node.attribute.append(helper.make_attribute(p.name, value))
    _drop_unused_initializers(proto)


def _present(spec: OpSpec, node: onnx.NodeProto) -> tuple[bool, ...]:
    return tuple(i < len(node.input) and node.input[i] != "" for i in range(len(spec.inputs)))


def _write_functions(proto: onnx.ModelProto, flavor: str, elem: int, opset: int) -> tuple[str, ...]:
    gated = [n for n in proto.graph.node if n.domain == onnx_build.DOMAIN]
    if flavor == "plugin":
        for n in gated:
            n.attribute.extend([helper.make_attribute("plugin_namespace", onnx_build.DOMAIN),
                                helper.make_attribute("plugin_version", PLUGIN_VERSION)])
        return ()

    def floats(spec: OpSpec) -> set[str]:
        return {p.name for p in spec.params if p.learnable or p.kind is float}

    def structure(n: onnx.NodeProto) -> str:
        """What a function body's shape depends on: every non-float parameter, which optional
        inputs are present, which float parameters are set."""
        spec, params = _spec(n), node_params(n)
        fixed = sorted((k, v) for k, v in params.items() if k not in floats(spec))
        return repr((fixed, _present(spec, n), sorted(k for k in params if k in floats(spec))))

    chosen: dict[str, str] = {}
    generic: dict[str, list[str]] = {}
    if flavor == "portable":
        groups: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
        for n in gated:
            groups[n.op_type][structure(n)] += 1
        for op_type, counts in groups.items():
            chosen[op_type] = counts.most_common(1)[0][0]
            members = [node_params(n) for n in gated
                       if n.op_type == op_type and structure(n) == chosen[op_type]]
            varying = floats(REGISTRY.get(op_type))
            generic[op_type] = sorted(k for k in members[0]
                                      if k in varying and len({m[k] for m in members}) > 1)
    inlined: list[str] = []
    decided: list[dict[str, Any]] = []
    new_nodes: list[onnx.NodeProto] = []
    functions: dict[str, onnx.FunctionProto] = {}
    for n in proto.graph.node:
        if n.domain != onnx_build.DOMAIN:
            new_nodes.append(n)
            continue
        spec, params = _spec(n), node_params(n)
        if chosen.get(n.op_type) == structure(n):
            if n.op_type not in functions:
                functions[n.op_type] = onnx_build.build_function(
                    spec, params, elem, opset, _present(spec, n), generic[n.op_type])
            new_nodes.append(n)
        else:
            if flavor == "portable":
                inlined.append(n.name or n.output[0])
            new_nodes.extend(onnx_build.inline_recording(spec, n, params, elem, decided))
    del proto.graph.node[:]
    proto.graph.node.extend(new_nodes)
    if decided:
        proto.metadata_props.append(onnx.StringStringEntryProto(
            key=onnx_build.DECISIONS_KEY, value=json.dumps(decided)))
    del proto.functions[:]
    proto.functions.extend(functions.values())
    return tuple(inlined)


def _drop_unused_initializers(proto: onnx.ModelProto) -> None:
    used = {i for n in proto.graph.node for i in n.input} | {o.name for o in proto.graph.output}
    keep = [i for i in proto.graph.initializer if i.name in used]
    del proto.graph.initializer[:]
    proto.graph.initializer.extend(keep)


def _finish(proto: onnx.ModelProto, flavor: str, dtype: str, opset: int, ops: tuple[str, ...],
            unit: str | None, extra: dict[str, str] | None = None) -> None:
    proto.ir_version = IR_VERSION
    has_custom = any(n.domain == onnx_build.DOMAIN for n in proto.graph.node)
    del proto.opset_import[:]
    proto.opset_import.append(helper.make_opsetid("", opset))
    if has_custom:
        proto.opset_import.append(helper.make_opsetid(onnx_build.DOMAIN,
                                                      onnx_build.DOMAIN_VERSION))
    proto.producer_name = "gatex"
    proto.producer_version = __version__
    meta = {"gatex.version": __version__, "gatex.flavor": flavor, "gatex.dtype": dtype,
            "gatex.ops": ",".join(REGISTRY.get(o).id for o in ops)}
    if unit:
        meta["gatex.unit"] = unit
    meta.update(extra or {})
    existing = {p.key for p in proto.metadata_props}
    for k, v in meta.items():
        if k not in existing:
            proto.metadata_props.append(onnx.StringStringEntryProto(key=k, value=v))


def _check(proto: onnx.ModelProto | str, flavor: str) -> None:
    try:
        onnx.checker.check_model(proto, full_check=True)
    except Exception as exc:  # a gatex bug: the lowering produced an invalid model
        raise RuntimeError(f"exported {flavor} model fails onnx.checker: {_first_line(str(exc))}") \
            from exc


def remove_artifact(path: Path) -> None:
    """Remove an ONNX file this module wrote and its external data file, if any."""
    path = Path(path)
    path.unlink(missing_ok=True)
    (path.parent / (path.name + ".data")).unlink(missing_ok=True)


def _save_atomic(proto: onnx.ModelProto, path: Path, *, external: bool, flavor: str) -> None:
    """Write to a temporary file beside ``path``, then rename; external data over 2 GB.

    The external data file's name is recorded in the model, so it is written under its final
    name; it is removed again if anything fails (interrupts included) before the model, checked,
    is renamed into place.
    """
    if not external:
        with _io.staged_file(path) as tmp:
            onnx.save_model(proto, tmp)
        return
    with _io.registered(path.parent / (path.name + ".data"), keep_on_success=True) as data, \
            _io.staged_file(path) as tmp:
        onnx.save_model(proto, tmp, save_as_external_data=True, all_tensors_to_one_file=True,
                        location=data.name, size_threshold=1024)
        _check(tmp, flavor)
