"""The artifact's hard decisions, read back for decision-forced parity (`gatex.ops.decisions`).

- ONNX (any flavor, and the graph a TensorRT bundle ships; onnxruntime or OpenVINO): a
  check-only copy in memory whose deciding ops (`OpSpec.decisions`) pass the values their
  lowering marked (``Body.decision``) out as extra graph outputs: the file's own function
  bodies, the nodes the exporter inlined (``gatex.decision_values`` metadata), and only for a
  TensorRT plugin node, which has no body in the file, gatex's decomposition. The copy's own
  outputs are the ones parity judges (`DecisionReader`).
- CoreML, emulated: the MIL emulator keeps every value; the lowerings name the decision ops
  ``gatex_decision_NNNNN_<op>_gate`` (and ``..._gate__pre``, ``..._levels``), NNNNN increasing
  in conversion order, which is the order torch calls the ops.
- Core ML on macOS (no intermediate values) and TensorRT engines: not readable here; `expose`
  says why, and parity falls back to the strict elementwise judgement.

Each op call's decisions come back as one mapping ``{"gate": ..., "gate__pre": ..., ...}``,
in call order, with the op's spec name and the node (or MIL op) it came from.
"""

from __future__ import annotations

import json
import re
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from gatex.artifacts.onnx_file import read_onnx
from gatex.artifacts.onnx_nodes import decompose_plugin_nodes, gatex_spec, node_params
from gatex.errors import BadInputError, UnknownOpError
from gatex.ops import REGISTRY
from gatex.ops.decisions import MIL_PREFIX
from gatex.ops.lowering import onnx as onnx_build
from gatex.runtimes.base import Runtime
from gatex.runtimes.coreml_runtime import CoremlRuntime
from gatex.runtimes.onnxruntime_runtime import OrtRuntime
from gatex.runtimes.openvino_runtime import OpenvinoRuntime


def deciding_ops(op_names: Sequence[str]) -> tuple[str, ...]:
    """The spec names among ``op_names`` (names or ids; unknown ones are skipped) whose ops
    make hard decisions, sorted."""
    found = set()
    for name in op_names:
        try:
            spec = REGISTRY.get(name.strip())
        except UnknownOpError:
            continue
        if spec.decisions:
            found.add(spec.name)
    return tuple(sorted(found))


@dataclass(frozen=True)
class ArtifactCall:
    """One deciding op call in the artifact: its spec name, where it is (the node or MIL op
    prefix, and the torch module it came from where the artifact records it), its values."""

    op: str
    node: str
    module: str
    values: dict[str, np.ndarray]


class DecisionReader:
    """Runs an artifact's check-only form: per batch, its outputs and its deciding op calls.

    Build it with `expose`; ``run(feeds)`` gives one batch's outputs (by the artifact's output
    names) and calls (in call order). The outputs are the check-only form's: the same graph or
    program, but onnxruntime may fuse an ONNX graph otherwise once intermediate values are
    outputs (fp16 casts it elides), so its decisions may differ in the last bit from the
    shipped file's; judging the outputs that go with the decisions read keeps the two paired.
    """

    def __init__(self, run: Any, layout: Sequence[tuple[str, str, str, dict[str, str]]], *,
                 close: Any = None) -> None:
        self._run = run   # feeds -> (outputs by name, every value by name)
        self.layout = tuple(layout)   # (op, node, module, {decision: value name}) per call
        self._close = close

    def close(self) -> None:
        if self._close is not None:
            self._close()
            self._close = None

    def run(self, feeds: Mapping[str, np.ndarray]
            ) -> tuple[dict[str, np.ndarray], list[ArtifactCall]]:
        outputs, values = self._run(dict(feeds))
        return outputs, [ArtifactCall(op, node, module, {k: np.asarray(values[v])
                                                         for k, v in names.items()})
                         for op, node, module, names in self.layout]


def expose(artifact: Runtime) -> tuple[DecisionReader | None, str]:
    """A `DecisionReader` for ``artifact`` (loaded), or None and the reason it has none."""
    if isinstance(artifact, CoremlRuntime):
        if not artifact.emulated:
            return None, ("Core ML does not return intermediate values, so its decisions "
                          "cannot be read (run with the emulator to prove them)")
        return _coreml_reader(artifact)
    if isinstance(artifact, OrtRuntime):
        return _onnx_reader(artifact)
    if isinstance(artifact, OpenvinoRuntime):
        return _onnx_reader(artifact, openvino=True)
    return None, f"{artifact.label} does not expose intermediate values"


# -- ONNX ----------------------------------------------------------------------------------------

def exposed_onnx(proto: Any) -> tuple[Any, list[tuple[str, str, str, dict[str, str]]]]:
    """A copy of ``proto`` with every deciding op's decisions as extra graph outputs, and the
    layout: (op, node name, torch module, {decision: output name}) per deciding op. The values
    are the artifact's own: a gatex node's function gets its marked body values (its
    ``gatex.decision_values`` metadata) as extra outputs, which each calling node passes on;
    nodes the exporter inlined are found through the model's ``gatex.decision_values``. Only a
    TensorRT plugin node, which has no body in the file, runs as gatex's decomposition (as the
    plugin stand-in runs it)."""
    copy = onnx.ModelProto()
    copy.CopyFrom(proto)
    elem: dict[str, int] = {}   # value -> element type, inferred once a plugin node needs it
    meta = {p.key: p.value for p in copy.metadata_props}
    produced = {o for n in copy.graph.node for o in n.output}
    layout: list[tuple[str, str, str, dict[str, str]]] = []
    try:
        recorded = json.loads(meta.get(onnx_build.DECISIONS_KEY, "[]"))
    except ValueError:
        raise BadInputError(f"the model's {onnx_build.DECISIONS_KEY} metadata is not JSON") \
            from None
    for entry in recorded if isinstance(recorded, list) else ():
        values = entry.get("values") if isinstance(entry, dict) else None
        if not isinstance(values, dict) or not all(v in produced for v in values.values()):
            continue   # a graph rewritten since export: these names are gone
        layout.append((str(entry.get("op", "")), str(entry.get("node", "")),
                       str(entry.get("module", "")), {str(k): str(v) for k, v in values.items()}))
    functions = {(f.domain, f.name): f for f in copy.functions}
    extended: dict[int, list[str]] = {}   # function -> the decisions its outputs now carry
    nodes = []
    for n in copy.graph.node:
        spec = gatex_spec(n) if n.domain == onnx_build.DOMAIN else None
        if spec is None or not spec.decisions:
            nodes.append(n)
            continue
        where = n.name or n.output[0]
        function = functions.get((n.domain, n.op_type))
        if function is not None and not _is_plugin(n):
            marks = _function_marks(function)
            if marks is None:
                raise BadInputError(f"the artifact's {spec.name} function names no decisions "
                                    "(exported by an older gatex): re-export it, or check it "
                                    "with --decisions strict")
            if id(function) not in extended:
                extended[id(function)] = [k for k, v in marks.items() if v != "y"]
                function.output.extend(marks[k] for k in extended[id(function)])
            names = {k: n.output[0] for k, v in marks.items() if v == "y"}
            for k in extended[id(function)]:
                names[k] = f"{where}__decision_{k}"
            n.output.extend(names[k] for k in extended[id(function)])
            nodes.append(n)
            layout.append((spec.name, where, onnx_build.node_module(n), names))
            continue
        # a TensorRT plugin node: its decomposition, as the plugin stand-in runs it
        if not elem:
            elem = _elem_types(copy)
        if not elem.get(n.input[0]):
            raise BadInputError(f"cannot tell the dtype of {where}'s input {n.input[0]!r}, so "
                                "its decisions cannot be exposed")
        inlined, marked = onnx_build.inline_body(spec, n, node_params(n), elem[n.input[0]])
        nodes.extend(inlined)
        layout.append((spec.name, where, onnx_build.node_module(n), marked))
    del copy.graph.node[:]
    copy.graph.node.extend(nodes)
    outputs = {o.name for o in copy.graph.output}
    for *_, marked in layout:
        for value in marked.values():
            if value not in outputs:
                copy.graph.output.append(onnx.ValueInfoProto(name=value))
                outputs.add(value)
    typed = onnx.shape_inference.infer_shapes(copy)
    types = {v.name: v.type for v in [*typed.graph.value_info, *typed.graph.output]}
    for o in copy.graph.output:
        if not o.type.HasField("tensor_type") and o.name in types:
            o.type.CopyFrom(types[o.name])
    return copy, layout


def _elem_types(proto: Any) -> dict[str, int]:
    typed = onnx.shape_inference.infer_shapes(proto)
    elem = {v.name: v.type.tensor_type.elem_type
            for v in [*typed.graph.input, *typed.graph.value_info, *typed.graph.output]}
    elem.update({i.name: i.data_type for i in proto.graph.initializer})
    return elem


def _is_plugin(node: Any) -> bool:
    return any(a.name == "plugin_namespace" for a in node.attribute)


def _function_marks(function: Any) -> dict[str, str] | None:
    """The function's marked decision values (its ``gatex.decision_values``), or None."""
    for prop in function.metadata_props:
        if prop.key == onnx_build.DECISIONS_KEY:
            try:
                marks = json.loads(prop.value)
            except ValueError:
                return None
            produced = {o for node in function.node for o in node.output}
            if isinstance(marks, dict) and all(v in produced for v in marks.values()):
                return {str(k): str(v) for k, v in marks.items()}
    return None


def _onnx_reader(artifact: Any, *, openvino: bool = False
                 ) -> tuple[DecisionReader | None, str]:
    model = getattr(artifact, "path", None) or artifact.model   # a plugin stand-in: its file
    if isinstance(model, bytes):
        proto = onnx.load_from_string(model)
    elif isinstance(model, onnx.ModelProto):
        proto = model
    else:
        proto = read_onnx(model)
    copy, layout = exposed_onnx(proto)
    if not layout:
        return None, ("the graph names no decisions (no gatex node of a deciding op, and no "
                      f"{onnx_build.DECISIONS_KEY} metadata), so they cannot be read back")
    decompose_plugin_nodes(copy)   # a plugin-flavor graph: what onnxruntime can run of it
    if openvino:   # OpenVINO reads files: the copy goes to a private temporary folder
        folder = tempfile.TemporaryDirectory(prefix="gatex-decisions-")
        path = Path(folder.name) / "decisions.onnx"
        onnx.save(copy, path)
        runtime: Any = OpenvinoRuntime(path, threads=artifact.threads).load()

        def close() -> None:
            runtime.close()
            folder.cleanup()
    else:
        runtime = OrtRuntime(copy.SerializeToString(), device=artifact.device,
                             threads=artifact.threads).load()
        close = runtime.close
    names = artifact.output_names

    def run(feeds: dict[str, np.ndarray]) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
        values = runtime.run(feeds)
        return {k: values[k] for k in names}, values

    return DecisionReader(run, layout, close=close), ""


def _coreml_reader(artifact: Any) -> tuple[DecisionReader | None, str]:
    emulator = artifact.emulator
    program = emulator.program
    pattern = re.compile(re.escape(MIL_PREFIX) + r"(\d+)_([A-Za-z0-9]+)_(gate|levels)(__pre)?")
    found: dict[int, dict[str, str]] = {}
    ops: dict[int, str] = {}
    for step in program.steps:
        for out in step.outputs:
            m = pattern.match(out.name)
            if m is None:
                continue
            key = m.group(3) + (m.group(4) or "")
            # coremltools' fp16 pass renames a value it casts (``..._cast_fp16``): the first
            # (the op's own output) wins
            ops[int(m.group(1))] = m.group(2)
            found.setdefault(int(m.group(1)), {}).setdefault(key, out.name)
    if not found:
        return None, "the CoreML program names no decisions (exported by an older gatex?)"
    layout = [(ops[seq], f"{MIL_PREFIX}{seq:05d}_{ops[seq]}", "", found[seq])
              for seq in sorted(found)]

    def run(feeds: dict[str, np.ndarray]) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
        return emulator.run_keeping_all(artifact.validate_feeds(feeds))

    return DecisionReader(run, layout), ""
