"""The ONNX side of every gatex op: schemas, torch.onnx translations, function bodies.

A lowering is registered on its op spec (``@SPEC.lowering("onnx")``) as a function
``lower(b, *inputs, **params) -> output name`` that writes the op's decomposition into a
`Body`. Bodies are built for one concrete set of attribute values and one dtype, so every
constant is folded (alpha = 1 is no Mul, beta = 1 no Add of log(beta)) and typed exactly.
"""

from __future__ import annotations

import contextlib
import inspect
import json
import math
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np
import onnx
from onnx import defs, helper

from gatex.ops.lowering.sym import Sym
from gatex.ops.registry import REGISTRY
from gatex.ops.spec import OpSpec, Param

DOMAIN = "gatex"
DOMAIN_VERSION = 1
FLOAT_TYPES = ["tensor(float)", "tensor(float16)", "tensor(bfloat16)", "tensor(double)"]
# The attributes TensorRT's ONNX parser reads to map a node to a plugin (plugin flavor); "aot"
# (an int, 1) selects the plugin's ahead-of-time implementation (gatex export --to trt).
PLUGIN_ATTRIBUTES = ("plugin_namespace", "plugin_version", "aot")

_ATTR_TYPES = {float: defs.OpSchema.AttrType.FLOAT, int: defs.OpSchema.AttrType.INT,
               str: defs.OpSchema.AttrType.STRING, tuple: defs.OpSchema.AttrType.INTS}


def attribute_params(spec: OpSpec) -> tuple[Param, ...]:
    """Parameters that become node attributes: all of them (learnable ones are folded)."""
    return spec.params


def node_inputs(spec: OpSpec) -> tuple[str, ...]:
    return spec.inputs


class Body:
    """Nodes of one function body, with constants typed for ``dtype`` and folded where known."""

    def __init__(self, prefix: str, dtype: int) -> None:
        self.prefix = prefix
        self.dtype = dtype
        self.nodes: list[onnx.NodeProto] = []
        self._count = 0
        # hard decisions the lowering made, by name (`decision`): value names in this body
        self.decisions: dict[str, str] = {}

    def fresh(self, hint: str) -> str:
        self._count += 1
        return f"{self.prefix}{hint}_{self._count}"

    @contextlib.contextmanager
    def computing_in(self, dtype: int) -> Iterator[None]:
        """Constants (and `low_precision_max`) for ``dtype`` inside the block: for a lowering
        that casts its inputs to ``dtype``, computes, and casts the result back."""
        saved, self.dtype = self.dtype, dtype
        try:
            yield
        finally:
            self.dtype = saved

    def op(self, op_type: str, *inputs: str, n_out: int = 1, **attrs: Any) -> Any:
        outs = [self.fresh(op_type.lower()) for _ in range(n_out)]
        self.nodes.append(helper.make_node(op_type, list(inputs), outs, **attrs))
        return outs[0] if n_out == 1 else outs

    def const(self, value: float | Sequence[float] | Sym, dtype: int | None = None) -> str:
        if isinstance(value, Sym):
            return self.op("Cast", value.name, to=dtype or self.dtype)
        arr = np.asarray(value, dtype=helper.tensor_dtype_to_np_dtype(dtype or self.dtype))
        name = self.fresh("c")
        self.nodes.append(helper.make_node(
            "Constant", [], [name], value=onnx.numpy_helper.from_array(arr, name)))
        return name

    def decision(self, name: str, value: str, pre: str | None = None) -> None:
        """Mark ``value`` as the op's decision ``name`` (`gatex.ops.decisions`), and ``pre`` as
        the value it thresholds; parity's check-only copy exposes both as graph outputs."""
        self.decisions[name] = value
        if pre is not None:
            self.decisions[f"{name}__pre"] = pre

    def low_precision_max(self) -> float | None:
        """The largest finite value of a 16-bit float dtype; None for fp32/fp64."""
        return {onnx.TensorProto.FLOAT16: 65504.0,
                onnx.TensorProto.BFLOAT16: 3.3895313892515355e38}.get(self.dtype)

    def ints(self, values: Sequence[int]) -> str:
        return self.const(list(values), onnx.TensorProto.INT64)

    def attr(self, name: str) -> Sym:
        """A float attribute of the calling node, read inside the function body."""
        out = self.fresh(name)
        ref = helper.make_attribute_ref("value_float", onnx.AttributeProto.FLOAT)
        ref.ref_attr_name = name
        node = helper.make_node("Constant", [], [out])
        node.attribute.append(ref)
        self.nodes.append(node)
        return Sym(self, out)

    def log(self, s: float | Sym) -> float | Sym:
        return s.log() if isinstance(s, Sym) else (math.log(s) if s > 0 else -math.inf)

    def gelu(self, z: str) -> str:
        """z * 0.5 * (1 + erf(z / sqrt 2)): the pattern onnxruntime fuses into one Gelu kernel
        (onnx.reference cannot run the Gelu op inside a function without type context).
        onnxruntime's GeluFusion wants a Div by sqrt(2), not a Mul by 1/sqrt(2), and z * 0.5
        before the product: with the Mul, or with the 0.5 last where z itself comes from a
        Mul (GELU_s), the five ops ran unfused (2.2x the time of the fused Gelu, 16M fp32)."""
        erf = self.op("Erf", self.op("Div", z, self.const(math.sqrt(2.0))))
        return self.op("Mul", self.mul(z, 0.5), self.add(erf, 1.0))

    def unit_affine(self, x: str, scale: float, shift: float) -> str:
        """scale * x + shift in one pass, as HardSigmoid (which clips to [0, 1]): only for values
        the caller knows lie in [0, 1], e.g. alpha g + (1 - alpha) for a gate g in [0, 1]."""
        return self.op("HardSigmoid", x, alpha=float(scale), beta=float(shift))

    def gelu_tanh(self, z: str) -> str:
        """0.5 z (1 + tanh(sqrt(2/pi) (z + 0.044715 z^3)))."""
        cube = self.op("Mul", self.op("Mul", z, z), z)
        inner = self.mul(self.op("Add", z, self.mul(cube, 0.044715)), math.sqrt(2.0 / math.pi))
        return self.mul(self.op("Mul", z, self.add(self.op("Tanh", inner), 1.0)), 0.5)

    def mul(self, x: str, s: float | str | Sym) -> str:
        """x * s, with s = 1 folded away and s = -1 a Neg."""
        if isinstance(s, str):
            return self.op("Mul", x, s)
        if isinstance(s, Sym):
            return self.op("Mul", x, self.const(s))
        if s == 1.0:
            return x
        if s == -1.0:
            return self.op("Neg", x)
        return self.op("Mul", x, self.const(s))

    def add(self, x: str, s: float | str | Sym) -> str:
        if isinstance(s, str):
            return self.op("Add", x, s)
        if isinstance(s, Sym):
            return self.op("Add", x, self.const(s))
        return x if s == 0.0 else self.op("Add", x, self.const(s))


Lowering = Callable[..., str]
# metadata naming where hard decisions are (`gatex.ops.decisions`): on a model, a JSON list of
# the deciding nodes the exporter inlined; on a function, a JSON map decision -> body value
DECISIONS_KEY = "gatex.decision_values"


def build_function(spec: OpSpec, params: dict[str, Any], dtype: int, opset: int,
                   present: Sequence[bool], generic: Sequence[str] = ()) -> onnx.FunctionProto:
    """The model-local function for ``spec`` specialised to ``params``, ``dtype`` and which
    optional inputs are ``present``; float parameters named in ``generic`` are read from the
    calling node's attributes instead of folded (nodes of the op disagree on them)."""
    lower: Lowering = spec.lowerings["onnx"]
    inputs = list(node_inputs(spec))
    body = Body("", dtype)
    values = {k: body.attr(k) if k in generic else v for k, v in params.items()}
    out = lower(body, *(n if p else "" for n, p in zip(inputs, present)), **values)
    nodes = body.nodes
    if out in inputs or not nodes:  # e.g. alpha = 0: the unit is the identity on v
        nodes = nodes + [helper.make_node("Identity", [out], ["y"])]
    else:
        for n in nodes:
            n.output[:] = ["y" if o == out else o for o in n.output]
    function = helper.make_function(
        DOMAIN, spec.name, inputs, ["y"], nodes, [helper.make_opsetid("", opset)],
        # exactly the attributes the node carries: onnx.reference requires each declared one
        attributes=[p.name for p in attribute_params(spec) if params.get(p.name) is not None],
        doc_string=f"{spec.formula}  ({spec.source})")
    if body.decisions:   # where the body's decisions are, for parity's check-only copy
        marked = {k: "y" if v == out else v for k, v in body.decisions.items()}
        function.metadata_props.append(onnx.StringStringEntryProto(
            key=DECISIONS_KEY, value=json.dumps(marked, sort_keys=True)))
    return function


def inline_nodes(spec: OpSpec, node: onnx.NodeProto, params: dict[str, Any],
                 dtype: int) -> list[onnx.NodeProto]:
    """``node``'s decomposition written straight into the graph (names prefixed by the node's)."""
    return inline_body(spec, node, params, dtype)[0]


def inline_body(spec: OpSpec, node: onnx.NodeProto, params: dict[str, Any], dtype: int
                ) -> tuple[list[onnx.NodeProto], dict[str, str]]:
    """`inline_nodes`, and the value names of the decisions the lowering marked."""
    body = Body(f"{node.name or node.output[0]}__", dtype)
    args = list(node.input) + [""] * (len(node_inputs(spec)) - len(node.input))
    out = spec.lowerings["onnx"](body, *args, **params)
    nodes = list(body.nodes)
    if out in node.input or not nodes:
        nodes.append(helper.make_node("Identity", [out], [node.output[0]]))
    else:
        for n in nodes:
            n.output[:] = [node.output[0] if o == out else o for o in n.output]
    marked = {k: node.output[0] if v == out else v for k, v in body.decisions.items()}
    return nodes, marked




def node_module(node: onnx.NodeProto) -> str:
    """The qualified name of the torch module a node came from (torch.onnx's
    ``pkg.torch.onnx.name_scopes`` metadata, whose last entry is the op itself); "" if none."""
    import ast

    for prop in node.metadata_props:
        if prop.key == "pkg.torch.onnx.name_scopes":
            try:
                scopes = ast.literal_eval(prop.value)
            except (ValueError, SyntaxError):
                return ""
            return str(scopes[-2]) if isinstance(scopes, list) and len(scopes) >= 2 else ""
    return ""


def inline_recording(spec: OpSpec, node: onnx.NodeProto, params: dict[str, Any], dtype: int,
                     record: list[dict[str, Any]]) -> list[onnx.NodeProto]:
    """`inline_nodes`; for an op that makes hard decisions (`OpSpec.decisions`), also appends
    to ``record`` where its decisions are in the graph (op, node, module, value names), which
    the exporters store as ``gatex.decision_values`` so parity can expose them later."""
    nodes, marked = inline_body(spec, node, params, dtype)
    if spec.decisions:
        record.append({"op": spec.name, "node": node.name or node.output[0],
                       "module": node_module(node), "values": marked})
    return nodes


def register_schemas(registry: Any = REGISTRY) -> None:
    """Register an ``onnx.defs.OpSchema`` per op (domain gatex) so checkers and tools know it."""
    for spec in registry:
        if "onnx" not in spec.lowerings or defs.has(spec.name, DOMAIN):
            continue
        optional = defs.OpSchema.FormalParameterOption.Optional
        single = defs.OpSchema.FormalParameterOption.Single
        inputs = [defs.OpSchema.FormalParameter(
            n, "T", param_option=optional if n in spec.optional_inputs else single)
            for n in node_inputs(spec)]
        # learnable parameters may also come as trailing 0-d inputs (what the translation
        # emits); gatex's exporter folds them into attributes
        inputs += [defs.OpSchema.FormalParameter(f"{p.name}_tensor", "T", param_option=optional)
                   for p in spec.params if p.learnable]
        attributes = [defs.OpSchema.Attribute(p.name, _ATTR_TYPES[float if p.learnable else p.kind],
                                              f"{p.doc} (range {p.range_text()})", required=False)
                      for p in attribute_params(spec)]
        attributes += [defs.OpSchema.Attribute(
            a, defs.OpSchema.AttrType.INT if a == "aot" else defs.OpSchema.AttrType.STRING,
            "TensorRT plugin mapping (plugin flavor)", required=False) for a in PLUGIN_ATTRIBUTES]
        defs.register_schema(defs.OpSchema(
            spec.name, DOMAIN, DOMAIN_VERSION, doc=f"{spec.summary}\n\n{spec.formula}\n\n{spec.source}",
            inputs=inputs, outputs=[defs.OpSchema.FormalParameter("y", "T")],
            type_constraints=[("T", FLOAT_TYPES, "floating-point tensors")],
            attributes=attributes))


def translation_table(registry: Any = REGISTRY) -> dict[Any, Callable[..., Any]]:
    """torch op overload -> onnxscript translation emitting one ``gatex`` node per op.

    Learnable parameters arrive as tensors here (inputs after the op's data inputs); the
    exporter folds them into float attributes once they are constants.
    """
    import onnxscript

    opset = onnxscript.values.Opset(DOMAIN, DOMAIN_VERSION)
    table = {}
    for spec in registry:
        if "onnx" in spec.lowerings:
            table[spec.torch_op.default] = _translation(spec, opset)
    return table


def _translation(spec: OpSpec, opset: Any) -> Callable[..., Any]:
    tensor_params = [p.name for p in spec.params if p.learnable]
    attr_params = [p for p in spec.params if not p.learnable]
    kind_of = {float: float, int: int, str: str, tuple: Sequence[int]}
    sig_params = [inspect.Parameter(n, inspect.Parameter.POSITIONAL_OR_KEYWORD,
                                    default=None if n in spec.optional_inputs else
                                    inspect.Parameter.empty)
                  for n in spec.inputs]
    for p in spec.params:
        if p.learnable:
            sig_params.append(inspect.Parameter(p.name, inspect.Parameter.POSITIONAL_OR_KEYWORD,
                                                default=None))
        else:
            sig_params.append(inspect.Parameter(
                p.name, inspect.Parameter.POSITIONAL_OR_KEYWORD,
                default=list(p.default) if isinstance(p.default, tuple) else p.default,
                annotation=kind_of[p.kind] if p.default is not None else float | None))
    signature = inspect.Signature(sig_params)

    def translate(*args: Any, **kwargs: Any) -> Any:
        bound = signature.bind(*args, **kwargs)
        bound.apply_defaults()
        values = bound.arguments
        inputs = [values[n] for n in spec.inputs] + [values[n] for n in tensor_params]
        attrs = {p.name: values[p.name] for p in attr_params if values[p.name] is not None}
        return getattr(opset, spec.name)(*inputs, **attrs)

    translate.__signature__ = signature  # type: ignore[attr-defined]
    translate.__annotations__ = {p.name: sig_params[len(spec.inputs) + i].annotation
                                 for i, p in enumerate(spec.params) if not p.learnable}
    translate.__name__ = f"gatex_{spec.torch_name}"
    return translate


def onnx_dtype(np_or_torch_dtype: Any) -> int:
    return helper.np_dtype_to_tensor_dtype(np.dtype(np_or_torch_dtype))


INV_PI = 1.0 / math.pi
