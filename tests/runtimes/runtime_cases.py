"""Tiny models for the runtime and parity tests, built in the test (no exporter, no downloads).

`tiny_onnx` is a portable-flavor ONNX graph of x -> Linear -> GoLU -> Linear -> GoLU, its two
GoLU nodes in domain ``gatex`` with a model-local function (x * exp(-exp(-x))), as the exporter
writes them; `TINY_MODEL_SOURCE` is the same network in torch with gatex's GoLU modules, whose
weights `write_tiny_reference` saves as safetensors.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import torch
from onnx import TensorProto, helper, numpy_helper

IR_VERSION = 10   # onnxruntime 1.31 rejects IR 14
OPSET = 21

TINY_MODEL_SOURCE = '''
from torch import nn

from gatex.models import GoLU


class Tiny(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(64, 16)
        self.act1 = GoLU()
        self.fc2 = nn.Linear(16, 10)
        self.act2 = GoLU()

    def forward(self, x):
        return self.act2(self.fc2(self.act1(self.fc1(x))))
'''


def tiny_weights(seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {
        "fc1.weight": rng.normal(0, 0.3, (16, 64)).astype(np.float32),
        "fc1.bias": rng.normal(0, 0.1, 16).astype(np.float32),
        "fc2.weight": rng.normal(0, 0.3, (10, 16)).astype(np.float32),
        "fc2.bias": rng.normal(0, 0.1, 10).astype(np.float32),
    }


def golu_function() -> onnx.FunctionProto:
    """GoLU(alpha=beta=gamma=1) = x * exp(-exp(-x)), as a model-local function."""
    nodes = [helper.make_node("Neg", ["X"], ["n1"]), helper.make_node("Exp", ["n1"], ["e1"]),
             helper.make_node("Neg", ["e1"], ["n2"]), helper.make_node("Exp", ["n2"], ["gate"]),
             helper.make_node("Mul", ["X", "gate"], ["Y"])]
    return helper.make_function("gatex", "GoLU", ["X"], ["Y"], nodes,
                                [helper.make_opsetid("", OPSET)])


def golu_mlp_onnx(linears: list[tuple[np.ndarray, np.ndarray]], golu_after: list[bool], *,
                  unit: str | None = None, batch: int | str = "N",
                  dtype: int = TensorProto.FLOAT) -> onnx.ModelProto:
    """x -> [Linear (torch layout weight (out, in), bias) -> optional gatex GoLU] ... -> logits."""
    np_dtype = helper.tensor_dtype_to_np_dtype(dtype)
    nodes, inits, value = [], [], "x"
    for i, ((weight, bias), golu) in enumerate(zip(linears, golu_after)):
        inits += [numpy_helper.from_array(weight.T.astype(np_dtype), f"W{i}"),
                  numpy_helper.from_array(bias.astype(np_dtype), f"B{i}")]
        nodes += [helper.make_node("MatMul", [value, f"W{i}"], [f"m{i}"], name=f"fc{i}_matmul"),
                  helper.make_node("Add", [f"m{i}", f"B{i}"], [f"h{i}"], name=f"fc{i}_add")]
        value = f"h{i}"
        if golu:
            nodes.append(helper.make_node("GoLU", [value], [f"a{i}"], domain="gatex",
                                          name=f"golu{i}"))
            value = f"a{i}"
    nodes[-1].output[0] = "logits"
    width = linears[-1][0].shape[0]
    graph = helper.make_graph(
        nodes, "golu_mlp", [helper.make_tensor_value_info("x", dtype, [batch, 64])],
        [helper.make_tensor_value_info("logits", dtype, [batch, width])], inits)
    functions = [golu_function()] if any(golu_after) else []
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET),
                                                    helper.make_opsetid("gatex", 1)],
                              functions=functions, ir_version=IR_VERSION)
    if unit is not None:
        model.metadata_props.add(key="gatex.unit", value=unit)
    return model


def tiny_onnx(weights: dict[str, np.ndarray], *, perturb: dict[str, float] | None = None,
              **kw) -> onnx.ModelProto:
    """The tiny network; ``perturb`` adds a constant to named weights (a broken export)."""
    w = {k: v + np.float32((perturb or {}).get(k, 0.0)) for k, v in weights.items()}
    linears = [(w["fc1.weight"], w["fc1.bias"]), (w["fc2.weight"], w["fc2.bias"])]
    return golu_mlp_onnx(linears, [True, True], **kw)


def zoo_golu_onnx(**kw) -> onnx.ModelProto:
    """The zoo's GoLU model (ActivationMLP: fc1, GoLU, fc2, GoLU, head) built by hand."""
    from gatex.models import zoo

    model = zoo.load("GoLU")
    linears = [(m.weight.detach().numpy(), m.bias.detach().numpy())
               for m in (model.fc1, model.fc2, model.head)]
    return golu_mlp_onnx(linears, [True, True, False], unit="GoLU", **kw)


def save(model: onnx.ModelProto, path: Path) -> Path:
    onnx.save(model, str(path))
    return path


def write_tiny_reference(directory: Path, weights: dict[str, np.ndarray]) -> tuple[str, Path]:
    """The torch reference as ``file.py:Tiny`` plus its safetensors weights."""
    from safetensors.torch import save_file

    source = directory / "tiny_model.py"
    source.write_text(TINY_MODEL_SOURCE)
    weights_path = directory / "tiny.safetensors"
    save_file({k: torch.from_numpy(v.copy()) for k, v in weights.items()}, str(weights_path))
    return f"{source}:Tiny", weights_path


def tiny_torch(weights: dict[str, np.ndarray]) -> torch.nn.Module:
    """The same network as a live module (for in-process tests)."""
    namespace: dict = {}
    exec(compile(TINY_MODEL_SOURCE, "tiny_model.py", "exec"), namespace)  # noqa: S102  (our text)
    model = namespace["Tiny"]()
    model.load_state_dict({k: torch.from_numpy(v.copy()) for k, v in weights.items()})
    return model.eval()


def golu_only_onnx(*, dtype: int = TensorProto.FLOAT, scale: float = 1.0) -> onnx.ModelProto:
    """x -> one gatex GoLU node, no reduction anywhere; ``scale`` != 1 multiplies the function's
    output (a broken lowering). Its torch reference is `gatex.models.GoLU()`."""
    model = helper.make_model(
        helper.make_graph([helper.make_node("GoLU", ["x"], ["y"], domain="gatex", name="golu0")],
                          "golu_only", [helper.make_tensor_value_info("x", dtype, ["N", 64])],
                          [helper.make_tensor_value_info("y", dtype, ["N", 64])]),
        opset_imports=[helper.make_opsetid("", OPSET), helper.make_opsetid("gatex", 1)],
        functions=[golu_function()], ir_version=IR_VERSION)
    if scale != 1.0:
        _scale_function_output(model.functions[0], scale, dtype)
    return model


def _scale_function_output(function: onnx.FunctionProto, scale: float, dtype: int) -> None:
    # Y = Mul(X, gate) becomes Y = Mul(Mul(X, gate), scale)
    last = function.node[-1]
    last.output[0] = "unscaled"
    value = numpy_helper.from_array(np.array(scale, dtype=helper.tensor_dtype_to_np_dtype(dtype)),
                                    "scale")
    function.node.extend([
        helper.make_node("Constant", [], ["scale"], value=value),
        helper.make_node("Mul", ["unscaled", "scale"], [function.output[0]])])


def break_gatex_node(model: onnx.ModelProto, index: int, scale: float = 1.25) -> onnx.ModelProto:
    """A copy of ``model`` whose ``index``-th gatex node (node order) runs a broken copy of its
    function: an overload (IR >= 10) whose output is multiplied by ``scale``. The other gatex
    nodes keep the original function, so exactly one op diverges."""
    broken = onnx.ModelProto()
    broken.CopyFrom(model)
    node = [n for n in broken.graph.node if n.domain == "gatex"][index]
    original = next(f for f in broken.functions
                    if f.domain == node.domain and f.name == node.op_type and not f.overload)
    function = onnx.FunctionProto()
    function.CopyFrom(original)
    function.overload = "broken"
    out_type = next(o.type.tensor_type.elem_type for o in broken.graph.output)
    _scale_function_output(function, scale, out_type)
    broken.functions.append(function)
    node.overload = "broken"
    return broken
