"""Structural compaction of pruned GatedDense layers, sparse ONNX weights, and the pruned-weights
check (shared/OPS.md section 4).

`compact_model` removes the output units of a `GatedDense` layer that its consumer does not
need, and the matching input rows of the consumer (a `GatedDense` or an ``nn.Linear``):

- a unit j whose effective weight column ``(K * G)[:, j]`` is all zero outputs the constant
  ``c_j = act(b_j)`` (``act(0)`` without bias) whatever the input. It is removed and its
  contribution folded into the consumer's bias: ``b_next += f(c)_j * W_next[j, :]``, where f is
  the chain of elementwise modules between the two layers, evaluated on the constant. A zero
  constant folds to nothing; a non-zero one adds a bias (created if the consumer had none).
- a unit j whose consumer row ``W_next[j, :]`` is all zero is never read: removed, nothing folded.

The consumer relation is proved on a ``torch.fx`` trace (GatedDense and nn.Linear as leaves):
the producer's output must feed only a chain of known elementwise modules or functions, each
used once, ending in exactly one dense consumer's input. Anything else (a model fx cannot
trace, a layer whose output is the model's output or is used twice, a shared module, a
non-elementwise op in between) is left as it is and reported with the reason. One unit is
kept when all would go, so no layer becomes zero-wide. Compaction is exact up to the order of
the consumer's sum and the rounding of the folded bias (measured in fp32: max abs diff 9.5e-7
on the zoo GatedDense model, 2.0e-7 on the 4096-wide benchmark MLP; 1e-12 relative in fp64),
except that a removed unit no longer propagates a non-finite input (0 * inf is NaN in the
original).

Compacted (and `fold_gates`-folded) GatedDense layers hold ``kernel = K * G``: the effective
weight is unchanged (G is 0/1, so ``K * G * G == K * G`` exactly) and the kernel's zeros are
visible to `sparsify_initializers`, which moves mostly-zero initializers into ONNX
``graph.sparse_initializer`` (COO, int64 linear indices) when that makes them smaller.

`check_pruned_weights` proves that every weight pruned in the source (``K * G == 0``) is still
exactly zero in an ONNX or CoreML artifact, or was removed by compaction. An exporter records
the compaction (each layer's kept units) in the artifact's metadata under ``gatex.compaction``
(`CompactionReport.to_json`), so ``gatex parity`` can run the check on a compacted artifact.
"""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from gatex.artifacts.mlprogram import constexpr_values, read_package
from gatex.artifacts.onnx_file import read_onnx
from gatex.artifacts.onnx_nodes import onnx_weights, sparse_to_dense
from gatex.errors import BadInputError
from gatex.exporters.coreml import GATED_WEIGHTS_KEY, gated_weight_vars
from gatex.models.gated_dense import ACTIVATION_MODULES, GatedDense

ELEMENTWISE_MODULES = (nn.ReLU, nn.ReLU6, nn.GELU, nn.Tanh, nn.Sigmoid, nn.SiLU, nn.Identity,
                       nn.LeakyReLU, nn.ELU, nn.Hardtanh, nn.Dropout)
ELEMENTWISE_FUNCTIONS = {torch.relu, F.relu, torch.tanh, torch.sigmoid, F.gelu, F.silu,
                         F.leaky_relu, torch.nn.functional.elu}
ELEMENTWISE_METHODS = {"relu", "tanh", "sigmoid"}
# a sparse initializer costs 4 (fp32 value) + 8 (int64 index) bytes per non-zero, so it only
# pays below about a third non-zero; below this many elements the header dominates
SPARSE_MIN_ELEMENTS = 256
COMPACTION_KEY = "gatex.compaction"   # artifact metadata: CompactionReport.to_json()


@dataclass(frozen=True)
class LayerCompaction:
    """One GatedDense layer: its units before and after, and what was removed or why not."""
    name: str
    units_before: int
    units_after: int
    consumer: str | None             # the layer whose input rows were removed with the units
    folded: int = 0                  # removed constant units folded into the consumer's bias
    kept: tuple[int, ...] = ()       # indices of the producer's kept output units
    why_not: str | None = None       # set when the layer was not compacted

    @property
    def compacted(self) -> bool:
        return self.why_not is None


@dataclass(frozen=True)
class CompactionReport:
    layers: tuple[LayerCompaction, ...]

    def summary(self) -> str:
        done = [x for x in self.layers if x.compacted]
        before = sum(x.units_before for x in done)
        after = sum(x.units_after for x in done)
        return (f"compacted {len(done)} of {len(self.layers)} GatedDense layers: "
                f"{before} -> {after} units")

    def kept_inputs(self, consumer: str) -> tuple[int, ...] | None:
        for x in self.layers:
            if x.compacted and x.consumer == consumer:
                return x.kept
        return None

    def kept_outputs(self, producer: str) -> tuple[int, ...] | None:
        for x in self.layers:
            if x.compacted and x.name == producer:
                return x.kept
        return None

    def to_json(self) -> str:
        """The report as compact JSON (artifact metadata ``gatex.compaction``)."""
        return json.dumps({"layers": [
            {"name": x.name, "units_before": x.units_before, "units_after": x.units_after,
             "consumer": x.consumer, "folded": x.folded, "kept": list(x.kept),
             "why_not": x.why_not} for x in self.layers]}, separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str) -> CompactionReport:
        """The report `to_json` wrote; a malformed record is `BadInputError`."""
        try:
            layers = tuple(LayerCompaction(
                str(x["name"]), int(x["units_before"]), int(x["units_after"]),
                None if x["consumer"] is None else str(x["consumer"]), int(x["folded"]),
                tuple(int(i) for i in x["kept"]),
                None if x["why_not"] is None else str(x["why_not"]))
                for x in json.loads(text)["layers"])
        except (ValueError, TypeError, KeyError) as exc:
            raise BadInputError(f"the artifact's {COMPACTION_KEY} metadata is not a compaction "
                                f"record ({type(exc).__name__}: {exc})") from None
        return cls(layers)


def effective_weight(layer: nn.Module) -> torch.Tensor:
    """The layer's weight in (in, out) layout: K * G for GatedDense, weight.T for nn.Linear."""
    if isinstance(layer, GatedDense):
        return (layer.kernel * layer.gates).detach()
    return layer.weight.detach().T


def fold_gates(model: nn.Module) -> nn.Module:
    """A copy of ``model`` whose GatedDense kernels hold K * G (same outputs, zeros visible)."""
    model = copy.deepcopy(model)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, GatedDense):
                m.kernel.mul_(m.gates)
    return model


class _LeafTracer(torch.fx.Tracer):
    def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
        return isinstance(m, GatedDense) or super().is_leaf_module(m, qualname)


def _elementwise(node: torch.fx.Node, previous: torch.fx.Node,
                 modules: dict[str, nn.Module]) -> Callable[[torch.Tensor], torch.Tensor] | None:
    """A unit-wise function of ``previous`` for ``node``, or None if it is not one."""
    if not node.args or node.args[0] is not previous:
        return None
    rest = list(node.args[1:]) + list(node.kwargs.values())
    if any(isinstance(a, torch.fx.Node) for a in rest):
        return None
    if node.op == "call_module" and isinstance(modules[node.target], ELEMENTWISE_MODULES):
        return modules[node.target] if len(node.args) == 1 and not node.kwargs else None
    if node.op == "call_function" and node.target in ELEMENTWISE_FUNCTIONS:
        return lambda v: node.target(v, *node.args[1:], **node.kwargs)
    if node.op == "call_method" and node.target in ELEMENTWISE_METHODS and len(node.args) == 1:
        return lambda v: getattr(v, node.target)()
    return None


def _consumers(model: nn.Module) -> tuple[list[tuple[str, list, str]], dict[str, str]]:
    """(producer, elementwise chain, consumer) triples proved on an fx trace, and why not for
    every other GatedDense layer."""
    names = [n for n, m in model.named_modules() if isinstance(m, GatedDense)]
    try:
        graph = _LeafTracer().trace(model)
    except Exception as exc:  # noqa: BLE001  (fx cannot trace data-dependent control flow)
        why = (f"torch.fx cannot trace the model ({type(exc).__name__}), so its consumers are "
               "unproved")
        return [], dict.fromkeys(names, why)
    modules = dict(model.named_modules())
    calls: dict[str, int] = {}
    for node in graph.nodes:
        if node.op == "call_module":
            calls[node.target] = calls.get(node.target, 0) + 1
    pairs, why_not = [], {}
    for node in graph.nodes:
        if node.op != "call_module" or not isinstance(modules[node.target], GatedDense):
            continue
        name = node.target
        if calls[name] > 1:
            why_not[name] = f"called {calls[name]} times (a shared module)"
            continue
        chain, current = [], node
        while True:
            users = list(current.users)
            if len(users) != 1:
                why_not[name] = ("its output is used by no layer" if not users else
                                 f"its output is used {len(users)} times")
                break
            user = users[0]
            if user.op == "output":
                why_not[name] = "its output is the model's output"
                break
            target = modules.get(user.target) if user.op == "call_module" else None
            if isinstance(target, (GatedDense, nn.Linear)):
                if calls[user.target] > 1 or user.args[0] is not current or len(user.args) != 1 \
                        or user.kwargs:
                    why_not[name] = f"its consumer {user.target} is shared or takes other inputs"
                else:
                    pairs.append((name, chain, user.target))
                break
            fn = _elementwise(user, current, modules)
            if fn is None:
                why_not[name] = (f"{user.op} {getattr(user.target, '__name__', user.target)} "
                                 "between it and the next layer is not known to be elementwise")
                break
            chain.append(fn)
            current = user
    return pairs, why_not


def _activation(layer: GatedDense, v: torch.Tensor) -> torch.Tensor:
    if layer.activation == "linear":
        return v

    return ACTIVATION_MODULES[layer.activation]()(v)


def compact_model(model: nn.Module) -> tuple[nn.Module, CompactionReport]:
    """A compacted copy of ``model`` (kernels hold K * G) and the per-layer report; see the
    module docstring for what is removed and when that preserves the outputs."""
    model = fold_gates(model).eval()
    pairs, why_not = _consumers(model)
    if not pairs and not why_not:
        raise BadInputError("the model holds no GatedDense layer, so there is nothing to compact")
    modules = dict(model.named_modules())
    keep_in: dict[str, torch.Tensor] = {}
    reports: dict[str, LayerCompaction] = {}
    with torch.no_grad():
        for producer_name, chain, consumer_name in pairs:  # graph order: producers first
            producer, consumer = modules[producer_name], modules[consumer_name]
            w_p, w_c = effective_weight(producer), effective_weight(consumer)
            if producer_name in keep_in:  # rows its own producer removed no longer count
                w_p = w_p[keep_in[producer_name]]
            constant = (w_p == 0).all(dim=0)
            unused = (w_c == 0).all(dim=1)
            remove = constant | unused
            if bool(remove.all()):
                remove[0] = False  # never zero-wide
            folding = constant & remove & ~unused
            value = producer.bias.detach() if producer.bias is not None \
                else torch.zeros(producer.out_features, dtype=w_p.dtype)
            value = _activation(producer, value.unsqueeze(0))
            for fn in chain:
                value = fn(value)
            value = torch.where(folding, value.squeeze(0), torch.zeros(()))
            shift = value @ w_c
            if bool((shift != 0).any()):
                if consumer.bias is None:
                    _add_bias(consumer)
                consumer.bias.add_(shift.to(consumer.bias.dtype))
            kept = torch.nonzero(~remove).flatten()
            keep_in[consumer_name] = kept
            reports[producer_name] = LayerCompaction(
                producer_name, producer.out_features, len(kept), consumer_name,
                folded=int((folding & (value != 0)).sum()), kept=tuple(kept.tolist()))
        for name, layer in list(modules.items()):
            if isinstance(layer, (GatedDense, nn.Linear)) and \
                    (name in keep_in or name in reports):
                rows = keep_in.get(name)
                cols = torch.tensor(reports[name].kept) if name in reports else None
                model.set_submodule(name, _sliced(layer, rows, cols))
    layers = []
    for name, m in modules.items():
        if not isinstance(m, GatedDense):
            continue
        layers.append(reports.get(name) or LayerCompaction(
            name, m.out_features, m.out_features, None, why_not=why_not.get(name, "not reached")))
    return model, CompactionReport(tuple(layers))


def _add_bias(layer: nn.Module) -> None:
    out = layer.out_features
    layer.bias = nn.Parameter(torch.zeros(out, dtype=effective_weight(layer).dtype))


def _sliced(layer: nn.Module, rows: torch.Tensor | None, cols: torch.Tensor | None) -> nn.Module:
    """``layer`` keeping input features ``rows`` and output units ``cols`` (None: all)."""
    w = effective_weight(layer)
    rows = torch.arange(w.shape[0]) if rows is None else rows
    cols = torch.arange(w.shape[1]) if cols is None else cols
    bias = None if layer.bias is None else layer.bias.detach()[cols]
    if isinstance(layer, GatedDense):
        new = GatedDense(len(rows), len(cols), activation=layer.activation,
                         bias=bias is not None).to(w.dtype)
        with torch.no_grad():
            new.kernel.copy_(layer.kernel.detach()[rows][:, cols])
            new.gates.copy_(layer.gates[rows][:, cols])
    else:
        new = nn.Linear(len(rows), len(cols), bias=bias is not None, dtype=w.dtype)
        with torch.no_grad():
            new.weight.copy_(layer.weight.detach()[cols][:, rows])
    if bias is not None:
        with torch.no_grad():
            new.bias.copy_(bias)
    return new.train(layer.training)


# -- ONNX sparse initializers ----------------------------------------------------------------


def sparsify_initializers(proto: Any, min_elements: int = SPARSE_MIN_ELEMENTS) -> list[str]:
    """Move each initializer that a COO SparseTensorProto stores in fewer bytes into
    ``graph.sparse_initializer``; returns the names moved. Values keep their dtype; indices are
    int64 positions in the flattened tensor (the [NNZ] layout of the ONNX spec)."""
    from onnx import helper, numpy_helper

    moved, keep = [], []
    for init in proto.graph.initializer:
        array = numpy_helper.to_array(init)
        if array.size < min_elements or array.dtype.kind != "f":
            keep.append(init)
            continue
        flat = array.reshape(-1)
        idx = np.flatnonzero(flat).astype(np.int64)
        sparse_bytes = idx.size * (8 + flat.itemsize)
        if sparse_bytes >= flat.nbytes:
            keep.append(init)
            continue
        values = numpy_helper.from_array(flat[idx], init.name)
        indices = numpy_helper.from_array(idx, f"{init.name}.indices")
        proto.graph.sparse_initializer.append(
            helper.make_sparse_tensor(values, indices, list(array.shape)))
        moved.append(init.name)
    del proto.graph.initializer[:]
    proto.graph.initializer.extend(keep)
    return moved


# -- pruned-weights check --------------------------------------------------------------------


@dataclass(frozen=True)
class PrunedLayer:
    name: str
    pruned: int          # weights with K * G == 0 in the source (kept part, after compaction)
    removed: int         # source weights compaction removed
    violations: int      # pruned in the source, non-zero in the artifact
    first: tuple[int, int] | None = None   # (in, out) index of the first violation
    note: str | None = None                # why the layer could not be checked

    @property
    def passed(self) -> bool:
        return self.violations == 0 and self.note is None


@dataclass(frozen=True)
class PrunedWeightsCheck:
    artifact: str
    layers: tuple[PrunedLayer, ...] = field(default_factory=tuple)

    def __bool__(self) -> bool:
        return all(x.passed for x in self.layers)

    def summary(self) -> str:
        bad = [x for x in self.layers if not x.passed]
        if not bad:
            pruned = sum(x.pruned for x in self.layers)
            removed = sum(x.removed for x in self.layers)
            return (f"pruned weights: ok, {pruned} pruned weights still exactly zero and "
                    f"{removed} removed in {self.artifact} ({len(self.layers)} GatedDense layers)")
        parts = []
        for x in bad:
            parts.append(f"{x.name}: {x.note}" if x.note else
                         f"{x.name}: {x.violations} weights pruned in the source are non-zero "
                         f"in the artifact (first at [in {x.first[0]}, out {x.first[1]}])")
        return f"pruned weights: FAILED in {self.artifact}: " + "; ".join(parts)


def check_pruned_weights(model: nn.Module, artifact: str | Path, *,
                         compaction: CompactionReport | None = None) -> PrunedWeightsCheck:
    """For every GatedDense layer of the source ``model``: each weight with K * G == 0 must be
    exactly 0 in the artifact's effective weight, or removed by ``compaction``. The artifact is
    an ONNX file (``<layer>.kernel * <layer>.gates``, sparse initializers included) or a CoreML
    ``.mlpackage`` (the weight its linear op reads, constexpr weights materialised: see
    `coreml_layer_weights`). A layer whose weight is missing or shaped otherwise fails with the
    reason."""
    path = Path(artifact)
    names = [name for name, m in model.named_modules() if isinstance(m, GatedDense)]
    read = coreml_layer_weights if path.suffix.lower() == ".mlpackage" else onnx_layer_weights
    found = read(path, names)
    layers = []
    for name, layer in model.named_modules():
        if not isinstance(layer, GatedDense):
            continue
        source = effective_weight(layer).numpy()
        rows = cols = None
        if compaction is not None:
            rows, cols = compaction.kept_inputs(name), compaction.kept_outputs(name)
        kept = source[list(rows) if rows is not None else slice(None)]
        kept = kept[:, list(cols) if cols is not None else slice(None)]
        removed = int(source.size - kept.size)
        actual = found[name]
        if isinstance(actual, str):
            layers.append(PrunedLayer(name, int((kept == 0).sum()), removed, 0, note=actual))
            continue
        if actual.shape != kept.shape:
            layers.append(PrunedLayer(name, int((kept == 0).sum()), removed, 0,
                                      note=f"artifact weight shape {list(actual.shape)}, source "
                                           f"{list(kept.shape)} after compaction"))
            continue
        bad = np.argwhere((kept == 0) & (actual != 0))
        first = tuple(int(i) for i in bad[0]) if len(bad) else None
        layers.append(PrunedLayer(name, int((kept == 0).sum()), removed, len(bad), first))
    return PrunedWeightsCheck(path.name, tuple(layers))


def onnx_layer_weights(path: Path, names: list[str]) -> dict[str, np.ndarray | str]:
    """{layer: effective weight (in, out), ``<layer>.kernel * <layer>.gates`` in fp32, or why
    there is none} from an ONNX file."""


    proto = read_onnx(path, external_data=True)
    weights = onnx_weights(proto)
    found: dict[str, np.ndarray | str] = {}
    for name in names:
        kernel = weights.get(f"{name}.kernel")
        if kernel is None:
            found[name] = f"no initializer {name}.kernel in the artifact"
            continue
        gates = weights.get(f"{name}.gates")
        found[name] = kernel.astype(np.float32) * \
            (1 if gates is None else gates.astype(np.float32))
    return found


def coreml_layer_weights(path: Path, names: list[str]) -> dict[str, np.ndarray | str]:
    """{layer: effective weight (in, out), or why there is none} from a CoreML ``.mlpackage``.

    The GatedDense lowering folds W = K * G into one const that a ``linear`` op reads as
    ``weight`` (out, in), named after torch.export's placeholder for ``<layer>.kernel``
    (``p_dense1_kernel_folded``; later passes add ``_to_fp16``, ``_sparsified``). The exporter
    records {layer: that var} in the package metadata (``gatex.gated_weights``); without that
    record the var is looked up by torch.export's naming rule. The weight is read as stored:
    a const's value, or a ``constexpr_`` op (sparse, palettized, quantized) materialised by
    coremltools' own ``materialized_val_inference``."""
    package = read_package(path)
    program = package.program()
    recorded = package.metadata.get(GATED_WEIGHTS_KEY)
    try:
        by_layer = json.loads(recorded) if recorded else None
    except ValueError:
        by_layer = None
    if not isinstance(by_layer, dict):
        by_layer = gated_weight_vars(program, {name: _export_placeholder(name + ".kernel")
                                               for name in names})
    producers = {}
    for function in program.functions.values():
        for op in function.operations:
            for out in op.outputs:
                producers[out.name] = op
    found: dict[str, np.ndarray | str] = {}
    for name in names:
        var = by_layer.get(name)
        op = producers.get(var) if var else None
        if op is None:
            found[name] = (f"no weight for layer {name} in the CoreML program"
                           + (f" (the recorded var {var} is absent)" if var else ""))
            continue
        value = constexpr_values(op)[var] if op.op_type.startswith("constexpr_") else \
            op.outputs[0].val
        if value is None or np.ndim(value) != 2:
            found[name] = f"the weight {var} of layer {name} is not a constant matrix"
            continue
        found[name] = np.asarray(value, dtype=np.float32).T
    return found


def _export_placeholder(target: str) -> str:
    """torch.export's placeholder name for parameter ``target`` (``encoder.0.kernel`` ->
    ``p_encoder_0_kernel``); torch adds a suffix only on a name collision."""
    return "p_" + re.sub(r"[^a-zA-Z0-9]", "_", target.lower())


def has_gated_dense(model: nn.Module) -> bool:
    """Whether ``model`` holds a GatedDense layer."""
    return any(isinstance(m, GatedDense) for m in model.modules())


__all__ = ["COMPACTION_KEY", "CompactionReport", "LayerCompaction", "PrunedLayer",
           "PrunedWeightsCheck", "check_pruned_weights", "compact_model", "coreml_layer_weights",
           "effective_weight", "fold_gates", "has_gated_dense", "onnx_layer_weights",
           "onnx_weights", "sparse_to_dense", "sparsify_initializers"]
