"""The ONNX files gatex writes, op x flavor x dtype, for every zoo model: valid, one ``gatex``
node per gated-op call with its registered schema, the flavor's shape (functions, plugin
attributes, standard ops only), parameters folded to constants, IR version and metadata."""

from __future__ import annotations

import json
import math

import numpy as np
import onnx
import pytest
import torch
from export_cases import DTYPES, FLAVORS, UNITS, ZooExports, matrix_param
from onnx import helper, numpy_helper
from torch.utils._python_dispatch import TorchDispatchMode

import gatex
from gatex.exporters import onnx as onnx_exporter
from gatex.ops import REGISTRY

MATRIX = [matrix_param(u, f, dtype=d) for d in DTYPES for u in UNITS for f in FLAVORS]
ELEM = {"fp32": onnx.TensorProto.FLOAT, "fp16": onnx.TensorProto.FLOAT16}


class GatexCalls(TorchDispatchMode):
    """The gatex ops one eager forward calls, in order (spec names)."""

    def __init__(self) -> None:
        super().__init__()
        self.ops: list[str] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # noqa: ANN001, ANN201
        if getattr(func, "namespace", None) == "gatex":
            self.ops.append(REGISTRY.get(func._schema.name).name)
        return func(*args, **(kwargs or {}))


def eager_gatex_calls(zoo_exports: ZooExports, unit: str) -> list[str]:
    with torch.no_grad(), GatexCalls() as calls:
        zoo_exports.model(unit)(zoo_exports.digits(unit)[:2])
    return calls.ops


def all_nodes(model: onnx.ModelProto) -> list[onnx.NodeProto]:
    """Nodes of the main graph and of every local function."""
    return [*model.graph.node, *(n for f in model.functions for n in f.node)]


@pytest.mark.parametrize("unit, flavor, dtype", MATRIX)
def test_zoo_export_structure(zoo_exports: ZooExports, unit: str, flavor: str,
                              dtype: str) -> None:
    artifact = zoo_exports.artifact(unit, flavor, dtype)
    model = onnx.load(str(artifact.path))
    onnx.checker.check_model(model, full_check=True)
    assert model.ir_version == 10  # onnxruntime 1.31 rejects the IR 14 the exporter may emit
    opsets = {o.domain: o.version for o in model.opset_import}
    assert opsets[""] == 21

    calls = eager_gatex_calls(zoo_exports, unit)
    assert calls and set(calls) == {unit}, calls
    gated = [n for n in model.graph.node if n.domain == "gatex"]
    spec = REGISTRY.get(unit)
    if flavor == "inline":
        assert gated == [] and "gatex" not in opsets and not model.functions
        assert {n.domain for n in all_nodes(model)} <= {"", "ai.onnx"}
    else:
        # one node per call of the op in the torch model, nothing else in the domain; the
        # portable flavor writes a call whose structure differs from the op's function (another
        # activation, optional input) inline, since onnx.reference cannot pick among function
        # overloads, and names it
        inlined = artifact.inlined_variants
        assert [n.op_type for n in gated] == calls[:len(gated)]
        assert len(gated) + len(inlined) == len(calls)
        if flavor == "plugin":
            assert not inlined
        assert opsets["gatex"] == 1
        schema = onnx.defs.get_schema(unit, 1, "gatex")
        assert schema.domain == "gatex" and schema.name == unit
        for node in gated:
            # learnable parameters folded: exactly the op's data inputs, no trailing tensors
            assert 1 <= len(node.input) <= len(spec.inputs)
            attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
            assert set(attrs) <= set(schema.attributes)
            for p in spec.params:
                if p.name in attrs and p.kind is float:
                    p.validate(attrs[p.name], op=unit)   # within the spec's range
    if flavor == "portable":
        assert [(f.domain, f.name) for f in model.functions] == [("gatex", unit)]
        body = model.functions[0]
        assert body.node and {n.domain for n in body.node} <= {""}
        assert list(body.input) == list(spec.inputs)
    if flavor == "plugin":
        assert not model.functions
        for node in gated:
            attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
            assert attrs["plugin_namespace"] == b"gatex" and attrs["plugin_version"] == b"1"

    # inputs and outputs in the export dtype, batch dimension symbolic
    for value in [*model.graph.input, *model.graph.output]:
        tensor = value.type.tensor_type
        assert tensor.elem_type == ELEM[dtype], value.name
        assert tensor.shape.dim[0].dim_param, f"{value.name}: batch is not dynamic"
    assert [i.name for i in model.graph.input] == ["x"]
    # weights (the float initializers of 2 or more dimensions) in the export dtype; a scalar
    # may stay fp32 where torch compares in fp32 (PactReLU's clip in the PGConv2d model)
    weights = [i for i in model.graph.initializer if len(i.dims) >= 2 and i.data_type in
               (onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16, onnx.TensorProto.DOUBLE)]
    assert weights and {i.data_type for i in weights} == {ELEM[dtype]}

    meta = {p.key: p.value for p in model.metadata_props}
    decided = meta.pop("gatex.decision_values", None)
    assert meta == {"gatex.version": gatex.__version__, "gatex.flavor": flavor,
                    "gatex.dtype": dtype, "gatex.ops": f"gatex::{unit}", "gatex.unit": unit}
    # a deciding op's nodes inlined at export: where their decisions are, for parity
    inlined_deciders = REGISTRY.get(unit).decisions and \
        (flavor == "inline" or artifact.inlined_variants)
    assert (decided is not None) == bool(inlined_deciders), decided
    if decided is not None:
        produced = {o for n in model.graph.node for o in n.output}
        for entry in json.loads(decided):
            assert entry["op"] == unit and set(entry["values"]) >= set(REGISTRY.get(unit).decisions)
            assert set(entry["values"].values()) <= produced and entry["module"]
    assert model.producer_name == "gatex"


def _learned(module: torch.nn.Module) -> dict[str, set[float]]:
    """The effective value of every learnable op parameter: sigmoid(alpha_param) for the
    paGating alpha (upstream stores it pre-sigmoid), the raw value for sigma and the GRU alphas."""
    values: dict[str, set[float]] = {}
    for name, p in module.named_parameters():
        leaf = name.rpartition(".")[2]
        if leaf == "alpha_param":
            values.setdefault("alpha", set()).add(float(torch.sigmoid(p.detach())))
        elif leaf in ("sigma", "alpha_r", "alpha_z", "alpha_h"):
            values.setdefault(leaf, set()).add(float(p.detach()))
    return values


LEARNABLE_UNITS = [u for u in UNITS if any(p.learnable for p in REGISTRY.get(u).params)]


@pytest.mark.parametrize("unit", LEARNABLE_UNITS)
def test_learnable_parameters_fold_to_the_values_torch_uses(zoo_exports: ZooExports,
                                                            unit: str) -> None:
    model = onnx.load(str(zoo_exports.artifact(unit, "plugin", "fp32").path))
    learned = _learned(zoo_exports.model(unit))
    found: dict[str, set[float]] = {}
    for node in model.graph.node:
        if node.domain == "gatex":
            for a in node.attribute:
                if a.name in learned:
                    found.setdefault(a.name, set()).add(a.f)
    expected = {k: {float(np.float32(v)) for v in vs} for k, vs in learned.items()}
    if expected:  # a zoo model with trained (not fixed) parameters: they are in the graph
        assert found == expected
    else:  # fixed parameters only: the spec's learnable ones are plain float attributes
        assert all(not math.isnan(v) for vs in found.values() for v in vs)
    # nothing trainable is left as a graph input or a gatex node input
    assert [i.name for i in model.graph.input] == ["x"]


def test_trace_once_write_each_flavor_equals_export_onnx(tmp_path, zoo_exports) -> None:
    # export_onnx traces and writes in one go; the cached trace written per flavor is the same
    # file, byte for byte (ZiLU: a learnable sigma, folded once for every flavor)
    unit = "ZiLU"
    direct = onnx_exporter.export_onnx(zoo_exports.model(unit), (zoo_exports.digits(unit)[:4],),
                                       tmp_path / "direct.onnx", flavor="portable", unit=unit)
    cached = zoo_exports.artifact(unit, "portable", "fp32")
    assert direct.path.read_bytes() == cached.path.read_bytes()
    assert (direct.ops, direct.inlined_variants) == (cached.ops, cached.inlined_variants)


def test_pagru_cell_exports_with_the_hidden_state_as_input_and_output(tmp_path) -> None:
    import onnxruntime as ort

    from gatex.models import PaGRUCell

    torch.manual_seed(0)
    cell = PaGRUCell(5, 7, alpha_mode="learnable").eval()
    with torch.no_grad():
        cell.alpha_r.fill_(0.8)
        cell.alpha_z.fill_(1.3)
        cell.alpha_h.fill_(1.1)
    x, h = torch.randn(3, 5), torch.randn(3, 7)
    art = onnx_exporter.export_onnx(cell, (x, h), tmp_path / "cell.onnx")
    model = onnx.load(str(art.path))
    assert [i.name for i in model.graph.input] == list(art.input_names) and \
        len(art.input_names) == 2 and len(art.output_names) == 1
    h_in = model.graph.input[1].type.tensor_type.shape
    h_out = model.graph.output[0].type.tensor_type.shape
    assert [d.dim_value for d in h_in.dim[1:]] == [7] == [d.dim_value for d in h_out.dim[1:]]
    (node,) = [n for n in model.graph.node if n.domain == "gatex"]
    assert {a.name: round(a.f, 6) for a in node.attribute} == \
        {"alpha_r": 0.8, "alpha_z": 1.3, "alpha_h": 1.1}
    session = ort.InferenceSession(str(art.path), providers=["CPUExecutionProvider"])
    # a sequence: the exported cell fed its own output reproduces torch's recurrence
    xs = torch.randn(6, 9, 5)
    h_onnx = np.zeros((9, 7), np.float32)
    h_torch = torch.zeros(9, 7)
    for step in xs:
        (h_onnx,) = session.run(None, {art.input_names[0]: step.numpy(),
                                       art.input_names[1]: h_onnx})
        with torch.no_grad():
            h_torch = cell(step, h_torch)
    np.testing.assert_allclose(h_onnx, h_torch.numpy(), rtol=1e-4, atol=1e-5)
    assert float(np.abs(h_onnx).max()) > 0.1  # a state that actually moved


def test_pagru_cell_with_unit_alphas_is_torch_gru_cell(tmp_path) -> None:
    import onnxruntime as ort

    from gatex.models import PaGRUCell

    torch.manual_seed(1)
    gru = torch.nn.GRUCell(4, 6).eval()
    cell = PaGRUCell(4, 6, alpha_mode=1.0).eval()
    cell.load_state_dict(gru.state_dict(), strict=False)
    x, h = torch.randn(5, 4), torch.randn(5, 6)
    art = onnx_exporter.export_onnx(cell, (x, h), tmp_path / "gru.onnx", flavor="inline")
    session = ort.InferenceSession(str(art.path), providers=["CPUExecutionProvider"])
    (out,) = session.run(None, dict(zip(art.input_names, (x.numpy(), h.numpy()))))
    with torch.no_grad():
        np.testing.assert_allclose(out, gru(x, h).numpy(), rtol=1e-5, atol=1e-6)


def _constant_inputs(body: onnx.FunctionProto) -> dict[str, np.ndarray]:
    return {n.output[0]: numpy_helper.to_array(n.attribute[0].t) for n in body.node
            if n.op_type == "Constant" and n.attribute[0].name == "value"}


@pytest.mark.parametrize("unit", ["paGLU", "GoLU", "SiLU_s"])
def test_portable_functions_fold_constants(zoo_exports: ZooExports, unit: str) -> None:
    # one parameter variant per op in a zoo model: every parameter is folded into the body
    # (nothing read from the node's attributes at run time), and a factor of 1 (GoLU's alpha,
    # beta and gamma) costs no Mul
    body = onnx.load(str(zoo_exports.artifact(unit, "portable", "fp32").path)).functions[0]
    assert not any(a.ref_attr_name for n in body.node for a in n.attribute)
    consts = _constant_inputs(body)
    multiplies_by_one = [n for n in body.node if n.op_type == "Mul" and any(
        i in consts and np.all(consts[i] == 1.0) for i in n.input)]
    assert not multiplies_by_one
