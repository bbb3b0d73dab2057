"""GatedDense (upstream royk1/gated-bert-pruning, Keras): y = act(x (K * G) + b).

K is the kernel in Keras layout (in, out), the transpose of torch ``Linear.weight``; G is a
frozen 0/1 tensor of K's shape written by the pruning method. Inference folds W = K * G.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from types import MappingProxyType

import torch
import torch.nn.functional as F

from gatex.ops._torch import compute_in_fp32, publish
from gatex.ops.spec import REDUCTION_TOLERANCES, OpSpec, Param, TensorrtLowering

# the CoreML lowering's folded weight W.T = (K * G).T is the const "<kernel var>_folded"
COREML_WEIGHT_SUFFIX = "_folded"

ACTIVATIONS: Mapping[str, Callable[[torch.Tensor], torch.Tensor]] = MappingProxyType({
    "linear": lambda t: t,
    "relu": torch.relu,
    "gelu": lambda t: F.gelu(t),          # keras.activations.gelu(approximate=False)
    "tanh": torch.tanh,
    "sigmoid": torch.sigmoid,
    "swish": F.silu,
})


def gated_dense_reference(x: torch.Tensor, kernel: torch.Tensor, gates: torch.Tensor,
                          bias: torch.Tensor | None = None, *,
                          activation: str = "linear") -> torch.Tensor:
    y = x @ (kernel * gates)
    if bias is not None:
        y = y + bias
    return ACTIVATIONS[activation](y)


def _fake(x, kernel, gates, bias=None, activation="linear"):  # defaults: torch omits them
    return x.new_empty((*x.shape[:-1], kernel.shape[1]))


GATED_DENSE = publish(OpSpec(
    name="GatedDense", torch_name="gated_dense", family="gated_dense",
    summary="Dense layer whose kernel is multiplied by a frozen 0/1 pruning gate tensor.",
    formula="act(x @ (kernel * gates) + bias)   (kernel, gates: (in, out), Keras layout)",
    source="https://github.com/royk1/gated-bert-pruning (GatedDense)",
    inputs=("x", "kernel", "gates", "bias"), optional_inputs=("bias",),
    params=(Param("activation", "linear", "Keras activation name", choices=tuple(ACTIVATIONS),
                  kind=str),),
    reference=gated_dense_reference, impl=compute_in_fp32(gated_dense_reference),
    elementwise=False, tolerances=REDUCTION_TOLERANCES,
), "(Tensor x, Tensor kernel, Tensor gates, Tensor? bias, str activation='linear') -> Tensor",
   fake=_fake)


@GATED_DENSE.lowering("onnx")
def _gated_dense_onnx(b, x: str, kernel: str, gates: str, bias: str = "", *,
                      activation: str = "linear") -> str:
    # kernel * gates is a product of initializers: onnxruntime folds it once at load
    y = b.op("MatMul", x, b.op("Mul", kernel, gates))
    y = b.op("Add", y, bias) if bias else y
    if activation == "swish":
        return b.op("Mul", y, b.op("Sigmoid", y))
    if activation == "gelu":
        return b.gelu(y)
    native = {"relu": "Relu", "tanh": "Tanh", "sigmoid": "Sigmoid"}
    return b.op(native[activation], y) if activation in native else y


@GATED_DENSE.lowering("coreml")
def _gated_dense_coreml(m, x, kernel, gates, bias=None, *, activation: str = "linear"):
    # W = K * G folded to one constant (Keras (in, out) layout: linear takes its transpose)
    # named after the kernel's variable (torch.export's placeholder, e.g. p_dense1_kernel) so
    # the pruned-weights check can find the layer's weight in the saved program
    k, g = m.value(kernel), m.value(gates)
    if k is not None and g is not None and (bias is None or m.value(bias) is not None):
        weight = m.mb.const(val=(k * g).T.astype(m.np_dtype(x)),
                            name=f"{kernel.name}{COREML_WEIGHT_SUFFIX}")
        y = m.linear(x=x, weight=weight, **({"bias": bias} if bias is not None else {}))
    else:
        y = m.matmul(x=x, y=m.mul(kernel, gates))
        y = y if bias is None else m.add(y, bias)
    if activation == "swish":
        return m.silu(x=y)
    if activation == "gelu":
        return m.gelu(x=y, mode="EXACT")
    if activation in ("relu", "tanh", "sigmoid"):
        return getattr(m, activation)(x=y)
    return y


# TensorRT: the ONNX decomposition (a matmul/convolution TensorRT runs natively; no plugin)
GATED_DENSE.lowering("tensorrt")(TensorrtLowering(note="not elementwise: no Triton kernel"))
