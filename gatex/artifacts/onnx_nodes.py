"""The gatex nodes of an ONNX model: their op specs and parameters, the TensorRT plugin nodes and
their replacement by standard ops (what onnxruntime can run of a plugin-flavor model), and the
initializers as dense arrays. Reads and rewrites models in memory; never exports or runs one.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import onnx
from onnx import helper

from gatex.errors import BadInputError
from gatex.ops.lowering import onnx as onnx_build
from gatex.ops.registry import REGISTRY
from gatex.ops.spec import OpSpec


def gatex_spec(node: onnx.NodeProto) -> OpSpec:
    return REGISTRY.get(node.op_type)


def node_params(node: onnx.NodeProto) -> dict[str, Any]:
    """A gatex node's parameters as Python values (tuple params as tuples)."""
    spec = gatex_spec(node)
    out: dict[str, Any] = {}
    for a in node.attribute:
        if a.name in onnx_build.PLUGIN_ATTRIBUTES:
            continue
        value = helper.get_attribute_value(a)
        if isinstance(value, bytes):
            value = value.decode()
        if spec.param(a.name).kind is tuple:
            value = tuple(value)
        out[a.name] = value
    return out


def plugin_nodes(proto: onnx.ModelProto) -> list[onnx.NodeProto]:
    """The gatex nodes written for TensorRT's plugin registry (``plugin_namespace`` set)."""
    return [n for n in proto.graph.node if n.domain == onnx_build.DOMAIN
            and any(a.name == "plugin_namespace" for a in n.attribute)]


def decompose_plugin_nodes(proto: onnx.ModelProto) -> tuple[str, ...]:
    """Replace, in place, every plugin node of ``proto`` (the ``plugin`` flavor, or a TensorRT
    bundle's ONNX) by the op's standard-op decomposition, computed in the dtype of the node's
    first input, so onnxruntime can run the graph TensorRT would receive. Returns the ops
    replaced (sorted). The plugin kernels themselves are not what runs then.

    ONNX shape inference cannot type a plugin node's output, so the nodes are replaced in
    rounds: each round types the graph and replaces every plugin node whose input it typed."""
    replaced: set[str] = set()
    while nodes := plugin_nodes(proto):
        typed = onnx.shape_inference.infer_shapes(proto)
        elem = {v.name: v.type.tensor_type.elem_type
                for v in [*typed.graph.input, *typed.graph.value_info, *typed.graph.output]}
        elem.update({i.name: i.data_type for i in proto.graph.initializer})
        ready = {id(n): elem[n.input[0]] for n in nodes if elem.get(n.input[0])}
        if not ready:
            n = nodes[0]
            raise BadInputError(f"cannot tell the dtype of plugin node {n.name or n.op_type}'s "
                                f"input {n.input[0]!r}, so it cannot be decomposed")
        new_nodes = []
        for n in proto.graph.node:
            if id(n) not in ready:
                new_nodes.append(n)
                continue
            new_nodes.extend(onnx_build.inline_nodes(gatex_spec(n), n, node_params(n), ready[id(n)]))
            replaced.add(n.op_type)
        del proto.graph.node[:]
        proto.graph.node.extend(new_nodes)
    return tuple(sorted(replaced))


def onnx_weights(proto: Any) -> dict[str, np.ndarray]:
    """Every initializer of ``proto``'s main graph, sparse ones densified, by name."""
    from onnx import numpy_helper

    out = {i.name: numpy_helper.to_array(i) for i in proto.graph.initializer}
    for s in proto.graph.sparse_initializer:
        out[s.values.name] = sparse_to_dense(s)
    return out


def sparse_to_dense(sparse: Any) -> np.ndarray:
    """A SparseTensorProto (COO, [NNZ] linear or [NNZ, rank] indices) as a dense array."""
    from onnx import numpy_helper

    values = numpy_helper.to_array(sparse.values)
    indices = numpy_helper.to_array(sparse.indices).astype(np.int64)
    shape = tuple(sparse.dims)
    dense = np.zeros(int(np.prod(shape)), dtype=values.dtype)
    if indices.ndim == 2:
        indices = np.ravel_multi_index(tuple(indices.T), shape) if indices.size else \
            np.zeros(0, np.int64)
    dense[indices] = values
    return dense.reshape(shape)
