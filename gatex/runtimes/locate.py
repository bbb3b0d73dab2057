"""``--locate``: the first gatex op whose output in the artifact leaves the tolerance.

The ONNX model is edited in memory so that every ``gatex``-domain node's output is also a graph
output; onnxruntime runs it; the torch reference runs with a dispatch mode recording each
``gatex::`` op's output (`GatexOpRecorder`). Then the two lists are paired.

Matching rule: the k-th gatex node of the ONNX main graph, in the graph's node order, is paired
with the k-th gatex op call torch makes (the exporter writes nodes in torch's execution order).
The pairing is accepted only when both sides have the same number of gatex ops, the same op at
every position, and the same output shapes. Otherwise nothing is compared and the result says
why, rather than guessing: that happens for an ``inline`` export (no gatex nodes), for gatex
ops inside ONNX control flow (Loop/If/Scan bodies cannot be exposed), for a graph whose
independent branches were reordered, and for a model that calls a gatex op a data-dependent
number of times. Every op is compared under the same tolerance as the final outputs.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from torch import nn

from gatex.comparison import LocateResult, OpComparison, compare
from gatex.errors import BackendUnavailableError, BadInputError, UnknownOpError
from gatex.ops import REGISTRY
from gatex.ops.spec import Tolerance
from gatex.runtimes.onnxruntime_runtime import OrtRuntime
from gatex.runtimes.torch_runtime import TorchRuntime

GATEX_DOMAIN = "gatex"


def import_onnx() -> Any:

    try:
        import onnx
    except ImportError as exc:
        raise BackendUnavailableError(f"onnx is not available ({exc}); install it with "
                                      "reinstall gatex (onnx, onnxruntime and onnxscript are core dependencies)") from None
    return onnx


def gatex_nodes(model: Any) -> list[Any]:
    """The ``gatex``-domain nodes of the main graph, in node order."""
    return [n for n in model.graph.node if n.domain == GATEX_DOMAIN]


def nested_gatex_nodes(model: Any) -> int:
    """How many ``gatex`` nodes sit inside control-flow subgraphs (If/Loop/Scan bodies)."""
    onnx = import_onnx()

    def count(graph: Any, nested: bool) -> int:
        total = 0
        for node in graph.node:
            if nested and node.domain == GATEX_DOMAIN:
                total += 1
            for attr in node.attribute:
                if attr.type == onnx.AttributeProto.GRAPH:
                    total += count(attr.g, True)
                for sub in attr.graphs:
                    total += count(sub, True)
        return total

    return count(model.graph, False)


def expose_gatex_outputs(model: Any) -> tuple[Any, list[tuple[Any, str]]]:
    """A copy of ``model`` whose graph also outputs every gatex node's first output.

    Returns the copy and, in node order, (node, output name) pairs. The added outputs carry no
    type: onnxruntime infers it.
    """
    onnx = import_onnx()
    edited = onnx.ModelProto()
    edited.CopyFrom(model)
    present = {o.name for o in edited.graph.output}
    pairs = []
    for node in gatex_nodes(edited):
        name = node.output[0]
        if name not in present:
            edited.graph.output.append(onnx.ValueInfoProto(name=name))
            present.add(name)
        pairs.append((node, name))
    return edited, pairs


def _concat(chunks: Sequence[np.ndarray]) -> np.ndarray:
    if len(chunks) == 1:
        return chunks[0]
    return np.concatenate(chunks, axis=0) if chunks[0].ndim else np.stack(chunks)


def locate(model: Any, reference: nn.Module, artifact_batches: Sequence[dict[str, np.ndarray]],
           reference_batches: Sequence[dict[str, np.ndarray]], tolerance: Tolerance, *,
           device: str = "cpu", threads: int | None = None) -> LocateResult:
    """Compare every gatex op's output between the ONNX ``model`` and torch (module docstring)."""
    nodes = gatex_nodes(model)
    nested = nested_gatex_nodes(model)
    if nested:
        return LocateResult(unmatched_reason=f"{nested} gatex nodes sit inside ONNX control flow "
                            "(Loop/If/Scan), whose values cannot be exposed as graph outputs")
    if not nodes:
        return LocateResult(unmatched_reason="the ONNX graph has no gatex-domain nodes (an inline "
                            "export?); export with --flavor portable to locate")
    try:
        node_ops = [REGISTRY.get(n.op_type).name for n in nodes]
    except UnknownOpError as exc:
        return LocateResult(unmatched_reason=f"the graph holds a gatex node gatex does not know "
                            f"({exc})")
    edited, pairs = expose_gatex_outputs(model)
    try:
        serialized = edited.SerializeToString()
    except ValueError as exc:  # protobuf's 2 GB limit
        raise BadInputError(f"--locate cannot edit this model in memory ({exc}); it works on "
                            "models under 2 GB") from None

    onnx_values: list[list[np.ndarray]] = [[] for _ in pairs]
    with OrtRuntime(serialized, device=device, threads=threads) as ort_rt:
        for feeds in artifact_batches:
            out = ort_rt.run(feeds)
            for i, (_, name) in enumerate(pairs):
                onnx_values[i].append(out[name])

    torch_values: list[list[np.ndarray]] = [[] for _ in pairs]
    calls = ()
    with TorchRuntime(reference, record_values=True) as torch_rt:
        for feeds in reference_batches:
            torch_rt.run(feeds)
            calls = torch_rt.last_op_calls
            if len(calls) != len(nodes):
                return LocateResult(unmatched_reason=(
                    f"torch ran {len(calls)} gatex ops ({_names(c.op for c in calls)}) and the "
                    f"ONNX graph has {len(nodes)} gatex nodes ({_names(node_ops)}): they cannot "
                    "be paired one to one"))
            for i, call in enumerate(calls):
                if call.op != node_ops[i]:
                    return LocateResult(unmatched_reason=(
                        f"gatex op #{i + 1} is {call.op} in torch (module {call.module!r}) but "
                        f"{node_ops[i]} in the ONNX graph (node {nodes[i].name!r})"))
                torch_values[i].append(call.outputs[0])

    comparisons = []
    for i, ((node, name), call) in enumerate(zip(pairs, calls)):
        got, want = _concat(onnx_values[i]), _concat(torch_values[i])
        if got.shape != want.shape:
            return LocateResult(unmatched_reason=(
                f"gatex op #{i + 1} ({call.op}) outputs shape {want.shape} in torch but "
                f"{got.shape} in the ONNX graph (node {node.name!r})"))
        parity = compare(got, want, tolerance, name=name, classifier=False)
        comparisons.append(OpComparison(i, call.op, node.name, call.module, parity))
    return LocateResult(tuple(comparisons))


def _names(ops: Any) -> str:
    return ", ".join(ops) or "none"
