"""TensorRT export: a plugin-flavor ONNX in the engine's precision, a build bundle, an engine.

``gatex export --to trt --precision fp32|fp16|bf16 --plugins auto|all|none`` writes one bundle
directory, ``<name>-trt-<precision>/``, atomically (built under a temporary name, renamed into
place):

- ``<name>-trt-<precision>.onnx``: precision in the graph (TensorRT 11 builds strongly typed
  networks: the ONNX types decide, no builder fp16 flag). fp16 traces the model in fp16; bf16
  traces it in fp32 and retypes every float tensor to bf16 at opset 22 (the first opset whose
  Conv, HardSigmoid, Softsign, Atan and Mish take bf16). Each gatex node is either a TensorRT
  plugin node (``plugin_namespace="gatex"``, ``plugin_version``, ``aot=1``) or, where the
  policy keeps TensorRT's own fusion, its standard-op decomposition written inline. No local
  functions: TensorRT's parser prefers a function over a plugin.
- ``plan.json``: the per-op decision table with measured reasons (`gatex.ops.kernels.policy`),
  the plugin definitions; also in the ONNX metadata (``gatex.trt.decisions``).
- ``kernels.json``: each plugin node's Triton kernel compiled to PTX (sm_80, PTX ISA 8.0),
  where triton is installed here; else the build compiles them with gatex on the TensorRT machine.
- ``build_engine.py`` (a verbatim copy of `gatex.ops.kernels.trt_bundle`, needing only
  tensorrt) and ``README.md`` (how to build; the ``trtexec`` line for the engine it makes).

Then, where TensorRT is importable, the engine is built in process with a timing cache
(``<name>-trt-<precision>.engine``, ``timing.cache``; the decisions become the engine's name).
Where it is not, `EngineNotBuilt` (exit 3) says what was written and why there is no engine.

Nothing TensorRT-side has ever run (no TensorRT where gatex was written): docs/tensorrt.md.
"""

from __future__ import annotations

import inspect
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from gatex import _io, _optional
from gatex._version import __version__
from gatex.artifacts.onnx_nodes import node_params, plugin_nodes
from gatex.errors import BackendUnavailableError, BadInputError
from gatex.exporters import artifact_name
from gatex.exporters.onnx import DEFAULT_OPSET, IR_VERSION, PLUGIN_VERSION, trace_onnx
from gatex.ops import REGISTRY
from gatex.ops.kernels import trt_bundle
from gatex.ops.kernels.policy import (
    POLICIES,
    PRECISIONS,
    PluginDecision,
    check_choice,
    decision_table,
)
from gatex.ops.kernels.ptx import compile_plugin_kernel
from gatex.ops.kernels.trt_plugins import compile_for_this_gpu, import_tensorrt, plugin_table
from gatex.ops.lowering import onnx as onnx_build

BF16_MIN_OPSET = 22
DEFAULT_BATCH = (1, 32, 512)   # engine optimization profile: min, opt, max batch


class EngineNotBuilt(BackendUnavailableError):
    """The bundle was written, but TensorRT is not importable here to build the engine.

    `export_result` adds what it knows of the bundle's ONNX: ``compaction`` (the
    CompactionReport of a ``compact=True`` export) and ``pruned`` (its pruned-weights check)."""
    def __init__(self, message: str, artifact: TensorrtArtifact) -> None:
        super().__init__(message)
        self.artifact = artifact
        self.compaction: Any = None
        self.pruned: Any = None


@dataclass(frozen=True)
class TensorrtArtifact:
    """What a TensorRT export wrote."""
    bundle: Path                 # the bundle directory
    onnx_path: Path
    engine_path: Path | None     # None where TensorRT was not importable
    precision: str
    policy: str
    opset: int
    ops: tuple[str, ...]         # gatex ops of the model
    plugins: tuple[str, ...]     # the ops that became plugins
    decisions: tuple[PluginDecision, ...]
    kernels_precompiled: bool    # kernels.json written (plugins, and triton installed here)
    files: tuple[str, ...]       # bundle file names

    @property
    def path(self) -> Path:
        """The engine where one was built, else the ONNX."""
        return self.engine_path or self.onnx_path


def bundle_name(stem: str, precision: str) -> str:

    return artifact_name(stem, "trt", precision).removesuffix(".onnx")


def export_tensorrt(model: nn.Module, example_inputs: Sequence[torch.Tensor],
                    out_dir: str | Path, *, name: str, precision: str = "fp16",
                    plugins: str = "auto", unit: str | None = None, dynamic_batch: bool = True,
                    dynamic_shapes: Any = None, opset: int | None = None, build: bool = True,
                    batch: tuple[int, int, int] = DEFAULT_BATCH,
                    metadata: dict[str, str] | None = None) -> TensorrtArtifact:
    """Write the bundle for ``model`` (see the module docstring), then build the engine where
    TensorRT is importable; raises `EngineNotBuilt` (exit 3) after writing the bundle otherwise.
    ``build=False`` writes the bundle only. ``metadata`` goes into the ONNX's metadata_props."""
    check_choice(precision, plugins)

    if opset is None:
        opset = BF16_MIN_OPSET if precision == "bf16" else DEFAULT_OPSET
    elif precision == "bf16" and opset < BF16_MIN_OPSET:
        raise BadInputError(f"--precision bf16 needs opset {BF16_MIN_OPSET} or newer (the first "
                            f"whose Conv, HardSigmoid, Softsign, Atan and Mish take bf16); got "
                            f"--opset {opset}")
    traced = trace_onnx(model, example_inputs, dtype="fp16" if precision == "fp16" else "fp32",
                        opset=opset, dynamic_batch=dynamic_batch,
                        dynamic_shapes=dynamic_shapes)
    decisions = _decide(traced.proto, precision, plugins)
    proto = build_trt_onnx(traced.proto, precision, decisions, ops=traced.ops, unit=unit,
                           opset=opset, policy=plugins, metadata=metadata)
    stem = bundle_name(name, precision)
    out_dir = Path(out_dir)
    kernels = _precompile(proto, precision)
    artifact = _write_bundle(proto, out_dir, stem, precision=precision, policy=plugins,
                             opset=opset, ops=traced.ops, unit=unit, decisions=decisions,
                             kernels=kernels, batch=batch,
                             profiles=shape_profiles(proto, traced.dynamic, example_inputs,
                                                     batch))
    if not build:
        return artifact
    if not _optional.available("tensorrt"):
        raise EngineNotBuilt(
            f"TensorRT is not installed here, so no engine was built; wrote the bundle "
            f"{artifact.bundle}/ (ONNX, plan.json, build_engine.py, README.md): run python "
            f"{artifact.bundle / 'build_engine.py'} on a machine with TensorRT 10.7+", artifact)
    return build_engine(artifact, batch=batch)


def build_engine(artifact: TensorrtArtifact, *, batch: tuple[int, int, int] = DEFAULT_BATCH
                 ) -> TensorrtArtifact:
    """Build and save the bundle's engine in this process (needs TensorRT)."""
    import_tensorrt()
    plan = json.loads((artifact.bundle / "plan.json").read_text())
    kernels = artifact.bundle / "kernels.json"
    kernel_for = trt_bundle.kernels_from_file(kernels) if kernels.is_file() else \
        compile_for_this_gpu
    engine = artifact.onnx_path.with_suffix(".engine")
    try:
        trt_bundle.build_engine(artifact.onnx_path, engine, plugins=plan["plugins"],
                                kernel_for=kernel_for,
                                timing_cache=artifact.bundle / "timing.cache",
                                batch=batch, plan=engine_plan(plan), log=lambda _: None,
                                profiles=plan.get("profiles"))
    except RuntimeError as exc:
        raise BadInputError(f"TensorRT could not build {artifact.onnx_path.name}: {exc}") from None
    return TensorrtArtifact(**{**artifact.__dict__, "engine_path": engine})


def engine_plan(plan: dict[str, Any]) -> dict[str, Any]:
    """The compact plan kept as the engine's name: who built it, the unit, the choices."""
    return {"gatex": plan["gatex"], "unit": plan.get("unit"), "precision": plan["precision"],
            "policy": plan["policy"],
            "decisions": {d["op"]: d["choice"] for d in plan["decisions"]}}


# -- the ONNX ----------------------------------------------------------------------------------

def _variants(proto: Any) -> dict[str, list[dict[str, Any]]]:

    out: dict[str, list[dict[str, Any]]] = {}
    for node in proto.graph.node:
        if node.domain == onnx_build.DOMAIN:
            params = node_params(node)
            seen = out.setdefault(node.op_type, [])
            if params not in seen:
                seen.append(params)
    return out


def _decide(proto: Any, precision: str, policy: str) -> tuple[PluginDecision, ...]:

    return tuple(decision_table(_variants(proto), precision, policy))


def build_trt_onnx(traced: Any, precision: str, decisions: Sequence[PluginDecision], *,
                   ops: tuple[str, ...], unit: str | None, opset: int, policy: str,
                   metadata: dict[str, str] | None = None) -> Any:
    """The bundle's ModelProto from a traced (parameters folded, no functions) model: retyped
    to ``precision``, each gatex node a plugin node or inlined by ``decisions``, checked."""
    import onnx
    from onnx import helper


    proto = onnx.ModelProto()
    proto.CopyFrom(traced)
    if precision == "bf16":
        retype_to_bfloat16(proto)
    elem = {"fp32": onnx.TensorProto.FLOAT, "fp16": onnx.TensorProto.FLOAT16,
            "bf16": onnx.TensorProto.BFLOAT16}[precision]
    as_plugin = {d.op for d in decisions if d.plugin}
    nodes = []
    decided: list[dict[str, Any]] = []
    for node in proto.graph.node:
        if node.domain != onnx_build.DOMAIN:
            nodes.append(node)
        elif node.op_type in as_plugin:
            node.attribute.extend([
                helper.make_attribute("plugin_namespace", onnx_build.DOMAIN),
                helper.make_attribute("plugin_version", PLUGIN_VERSION),
                helper.make_attribute("aot", 1)])
            nodes.append(node)
        else:
            spec = REGISTRY.get(node.op_type)
            nodes.extend(onnx_build.inline_recording(spec, node, node_params(node), elem,
                                                     decided))
    del proto.graph.node[:]
    proto.graph.node.extend(nodes)
    del proto.functions[:]
    del proto.graph.value_info[:]
    proto.ir_version = IR_VERSION
    del proto.opset_import[:]
    proto.opset_import.append(helper.make_opsetid("", opset))
    if as_plugin:
        proto.opset_import.append(helper.make_opsetid(onnx_build.DOMAIN,
                                                      onnx_build.DOMAIN_VERSION))
    proto.producer_name, proto.producer_version = "gatex", __version__
    meta = {"gatex.version": __version__, "gatex.flavor": "plugin",
            "gatex.dtype": precision, "gatex.ops": ",".join(REGISTRY.get(o).id for o in ops),
            "gatex.trt.precision": precision, "gatex.trt.plugins": policy,
            "gatex.trt.decisions": json.dumps([{"op": d.op, "choice": d.choice,
                                                "reason": d.reason} for d in decisions])}
    if unit:
        meta["gatex.unit"] = unit
    if decided:
        meta[onnx_build.DECISIONS_KEY] = json.dumps(decided)
    meta.update(metadata or {})
    del proto.metadata_props[:]
    for k, v in meta.items():
        proto.metadata_props.append(onnx.StringStringEntryProto(key=k, value=v))
    onnx_build.register_schemas()
    try:
        onnx.checker.check_model(proto, full_check=True)
    except Exception as exc:  # noqa: BLE001  (onnx raises several types)
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise BadInputError(f"the {precision} TensorRT ONNX is not a valid model: {first}") \
            from None
    return proto


def retype_to_bfloat16(proto: Any) -> None:
    """Every float32 tensor of ``proto`` becomes bfloat16: graph inputs and outputs,
    initializers, Constant / ConstantOfShape values, Cast targets (in place). Float attributes
    (epsilons, HardSigmoid's alpha, the gatex ops' parameters) stay floats, as ONNX defines."""
    import ml_dtypes
    import numpy as np
    from onnx import AttributeProto, TensorProto, helper, numpy_helper

    def bf16(t: Any) -> Any:
        if t.data_type != TensorProto.FLOAT:
            return t
        return numpy_helper.from_array(numpy_helper.to_array(t).astype(ml_dtypes.bfloat16),
                                       t.name)

    for vi in (*proto.graph.input, *proto.graph.output):
        if vi.type.tensor_type.elem_type == TensorProto.FLOAT:
            vi.type.tensor_type.elem_type = TensorProto.BFLOAT16
    converted = [bf16(t) for t in proto.graph.initializer]
    del proto.graph.initializer[:]
    proto.graph.initializer.extend(converted)
    for node in proto.graph.node:
        for attr in node.attribute:
            if attr.type in (AttributeProto.GRAPH, AttributeProto.GRAPHS):
                raise BadInputError(f"--precision bf16 does not retype control-flow subgraphs "
                                    f"(node {node.name or node.op_type}); export fp16 or fp32")
            if attr.type == AttributeProto.TENSOR:
                attr.t.CopyFrom(bf16(attr.t))
            elif node.op_type == "Cast" and attr.name == "to" and attr.i == TensorProto.FLOAT:
                attr.i = TensorProto.BFLOAT16
            elif node.op_type == "Constant" and attr.name in ("value_float", "value_floats"):
                values = np.asarray(attr.f if attr.name == "value_float" else list(attr.floats),
                                    dtype=np.float32).astype(ml_dtypes.bfloat16)
                attr.CopyFrom(helper.make_attribute("value", numpy_helper.from_array(values)))


# -- the bundle --------------------------------------------------------------------------------

def _plugin_variants(proto: Any) -> list[tuple[str, dict[str, Any]]]:
    """The distinct (op, parameters) of the plugin nodes: one kernel each."""
    seen: list[tuple[str, dict[str, Any]]] = []
    for node in plugin_nodes(proto):
        item = (node.op_type, node_params(node))
        if item not in seen:
            seen.append(item)
    return seen


def _precompile(proto: Any, precision: str) -> list[dict[str, Any]] | None:
    """Every plugin node's kernel as PTX, where triton is installed here (else None)."""
    if not _optional.available("triton"):
        return None

    return [compile_plugin_kernel(op, params, precision).as_json()
            for op, params in _plugin_variants(proto)]


def plan_document(*, unit: str | None, precision: str, policy: str, opset: int,
                  ops: tuple[str, ...], decisions: Sequence[PluginDecision],
                  onnx_name: str) -> dict[str, Any]:
    """plan.json: what the bundle holds and why (schema ``gatex.trt-plan/1``)."""
    plugins = tuple(d.op for d in decisions if d.plugin)
    return {"schema": "gatex.trt-plan/1", "gatex": __version__, "unit": unit,
            "onnx": onnx_name, "precision": precision, "policy": policy, "opset": opset,
            "ops": list(ops), "plugins": plugin_table(plugins),
            "decisions": [d.as_json() for d in decisions]}


SEQ_HEADROOM = 4   # an unbounded named axis' profile goes up to 4x its example size


def shape_profiles(proto: Any, axes: Any, inputs: Sequence[torch.Tensor],
                   batch: tuple[int, int, int]) -> dict[str, Any]:
    """plan.json's ``profiles``: per graph input, each axis' dimension name (None: fixed) and
    its (min, opt, max) for TensorRT's optimization profile: ``batch`` from ``batch``, another
    named axis from 1 over its example size to its torch.export bound (or `SEQ_HEADROOM` x the
    example size)."""
    graph_inputs = [i for i in proto.graph.input
                    if i.name not in {t.name for t in proto.graph.initializer}]
    profiles = {}
    for value, example in zip(graph_inputs, inputs):
        names, triples = [], []
        for axis, d in enumerate(value.type.tensor_type.shape.dim):
            name = d.dim_param or None
            size = int(example.shape[axis]) if axis < example.dim() else 1
            if name is None:
                triple = [d.dim_value] * 3
            elif name == "batch":
                triple = list(batch)
            else:
                _, hi = axes.bound(name)
                triple = [1, size, hi if hi is not None else SEQ_HEADROOM * size]
            names.append(name)
            triples.append(triple)
        if any(names):
            profiles[value.name] = {"names": names, "profile": triples}
    return profiles


def _write_bundle(proto: Any, out_dir: Path, stem: str, *, precision: str, policy: str,
                  opset: int, ops: tuple[str, ...], unit: str | None,
                  decisions: Sequence[PluginDecision], kernels: list[dict[str, Any]] | None,
                  batch: tuple[int, int, int],
                  profiles: dict[str, Any] | None = None) -> TensorrtArtifact:
    import onnx


    final = out_dir / stem
    onnx_name = f"{stem}.onnx"
    plan = plan_document(unit=unit, precision=precision, policy=policy, opset=opset, ops=ops,
                         decisions=decisions, onnx_name=onnx_name)
    if profiles:
        plan["profiles"] = profiles
    files = {
        "plan.json": json.dumps(plan, indent=1, allow_nan=False) + "\n",
        "build_engine.py": inspect.getsource(trt_bundle),
        "README.md": bundle_readme(stem, plan, precompiled=kernels is not None, batch=batch),
    }
    if kernels:  # no plugin node: no kernel to ship
        files["kernels.json"] = json.dumps({"schema": "gatex.trt-kernels/1", "kernels": kernels},
                                           indent=1) + "\n"
    # an older bundle is replaced only once this one is whole
    with _io.staged_dir(final, "the bundle") as tmp:
        tmp.mkdir()
        onnx.save_model(proto, str(tmp / onnx_name))
        for fname, text in files.items():
            (tmp / fname).write_text(text)
        (tmp / "build_engine.py").chmod(0o755)
    return TensorrtArtifact(final, final / onnx_name, None, precision, policy, opset, ops,
                            tuple(d.op for d in decisions if d.plugin), tuple(decisions),
                            bool(kernels), tuple(sorted([onnx_name, *files])))


def bundle_readme(stem: str, plan: dict[str, Any], *, precompiled: bool,
                  batch: tuple[int, int, int]) -> str:
    rows = "\n".join(f"| {d['op']} | {d['choice']} | {d['reason']} |" for d in plan["decisions"])
    kernels = ("No op is a plugin here: every op runs as its standard-op decomposition, so "
               "there is no kernel to compile and the build needs only `tensorrt`."
               if not plan["plugins"] else
               "`kernels.json` holds every plugin kernel as PTX (sm_80, PTX ISA 8.0; the CUDA "
               "driver JIT-compiles it for newer GPUs), so the build needs only `tensorrt`."
               if precompiled else
               "There is no `kernels.json` (triton was not installed where this bundle was "
               "written): the build compiles the plugin kernels with gatex, so install "
               "`gatex[triton]` on the TensorRT machine.")
    lo, opt, hi = batch
    return f"""# {stem}: TensorRT build bundle (gatex {plan['gatex']})

Model: {plan['unit'] or 'user model'}; precision {plan['precision']} (in the ONNX types: TensorRT
builds it strongly typed); plugin policy `{plan['policy']}`; ONNX opset {plan['opset']}.

Build the engine on a machine with an NVIDIA GPU and TensorRT 10.7 or newer (`tensorrt.plugin`):

    python build_engine.py               # writes {stem}.engine and timing.cache here

{kernels}

The plugins have an ahead-of-time implementation only (their kernels are embedded in the engine),
so by TensorRT's documentation the engine runs with plain `trtexec` or the C++ runtime, no Python:

    trtexec --loadEngine={stem}.engine

Building with `trtexec --onnx` directly does not work: the gatex plugins must be defined (by
build_engine.py) when the ONNX is parsed. The batch dimension is dynamic; build_engine.py's
optimization profile covers {lo}..{hi} (optimum {opt}), change it with --min-batch, --opt-batch,
--max-batch. Check the engine against torch where gatex is installed:

    gatex parity {stem}.engine

## Plugin or TensorRT's own decomposition, per op

| op | choice | why |
| --- | --- | --- |
{rows}

Measured by gatex (gatex.ops.kernels.policy): each decomposition run op by op in
{plan['precision']} on hazard inputs against the op in float64, with the op's tolerance. Nothing
in this bundle has been run under TensorRT by gatex's authors (see gatex's docs/tensorrt.md).
"""


__all__ = ["POLICIES", "PRECISIONS", "EngineNotBuilt", "TensorrtArtifact", "build_engine",
           "build_trt_onnx", "bundle_name", "export_tensorrt",
           "retype_to_bfloat16"]
