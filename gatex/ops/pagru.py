"""PaGRUCell (upstream guglxni/paGating ``paGating/paGRU.py``): a GRU cell with scaled gates.

r = sigmoid(a_r (gi_r + gh_r)); z = sigmoid(a_z (gi_z + gh_z));
n = tanh(a_h (gi_n + r * gh_n)); h' = (1 - z) * n + z * h
with gi = W_ih x + b_ih, gh = W_hh h + b_hh (nn.GRUCell layout, gate order r, z, n).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from gatex.ops._torch import compute_in_fp32, publish
from gatex.ops.spec import REDUCTION_TOLERANCES, OpSpec, Param, TensorrtLowering


def pagru_cell_reference(x: torch.Tensor, h: torch.Tensor, weight_ih: torch.Tensor,
                         weight_hh: torch.Tensor, bias_ih: torch.Tensor | None = None,
                         bias_hh: torch.Tensor | None = None, *,
                         alpha_r: torch.Tensor | float = 1.0, alpha_z: torch.Tensor | float = 1.0,
                         alpha_h: torch.Tensor | float = 1.0) -> torch.Tensor:
    gi_r, gi_z, gi_n = F.linear(x, weight_ih, bias_ih).chunk(3, -1)
    gh_r, gh_z, gh_n = F.linear(h, weight_hh, bias_hh).chunk(3, -1)
    r = torch.sigmoid(alpha_r * (gi_r + gh_r))
    z = torch.sigmoid(alpha_z * (gi_z + gh_z))
    n = torch.tanh(alpha_h * (gi_n + r * gh_n))
    return (1 - z) * n + z * h


def _fake(x, h, weight_ih, weight_hh, bias_ih, bias_hh, alpha_r, alpha_z, alpha_h):
    # gates have x's leading dims and H = weight_hh.shape[1] features; they broadcast with h
    # (and the alphas); the dtype is x's, as `compute_in_fp32` returns it
    gates = (*x.shape[:-1], weight_hh.shape[1])
    shape = torch.broadcast_shapes(gates, h.shape, alpha_r.shape, alpha_z.shape, alpha_h.shape)
    return x.new_empty(shape)


def _alpha(name: str, gate: str) -> Param:
    return Param(name, 1.0, f"scale of the {gate} gate's pre-activation (1 gives nn.GRUCell)",
                 learnable=True)


PAGRU_CELL = publish(OpSpec(
    name="PaGRUCell", torch_name="pagru_cell", family="pagru",
    summary="GRU cell whose reset, update and candidate pre-activations are scaled by alphas; "
            "one step, hidden state in and out.",
    formula="r = sig(a_r(gi_r+gh_r)); z = sig(a_z(gi_z+gh_z)); n = tanh(a_h(gi_n + r*gh_n)); "
            "h' = (1-z)*n + z*h",
    source="https://github.com/guglxni/paGating paGating/paGRU.py (PaGRUCell)",
    inputs=("x", "h", "weight_ih", "weight_hh", "bias_ih", "bias_hh"),
    optional_inputs=("bias_ih", "bias_hh"),
    params=(_alpha("alpha_r", "reset"), _alpha("alpha_z", "update"), _alpha("alpha_h", "candidate")),
    reference=pagru_cell_reference, impl=compute_in_fp32(pagru_cell_reference),
    elementwise=False, tolerances=REDUCTION_TOLERANCES,
), "(Tensor x, Tensor h, Tensor weight_ih, Tensor weight_hh, Tensor? bias_ih, Tensor? bias_hh, "
   "Tensor alpha_r, Tensor alpha_z, Tensor alpha_h) -> Tensor", fake=_fake)


@PAGRU_CELL.lowering("onnx")
def _pagru_cell_onnx(b, x: str, h: str, weight_ih: str, weight_hh: str, bias_ih: str = "",
                     bias_hh: str = "", *, alpha_r: float = 1.0, alpha_z: float = 1.0,
                     alpha_h: float = 1.0) -> str:
    # one step; the hidden state is an input and the output; absent biases arrive as ""
    gi = b.op("Gemm", x, weight_ih, *([bias_ih] if bias_ih else []), transB=1)
    gh = b.op("Gemm", h, weight_hh, *([bias_hh] if bias_hh else []), transB=1)
    gi_r, gi_z, gi_n = b.op("Split", gi, n_out=3, axis=-1, num_outputs=3)
    gh_r, gh_z, gh_n = b.op("Split", gh, n_out=3, axis=-1, num_outputs=3)
    r = b.op("Sigmoid", b.mul(b.op("Add", gi_r, gh_r), alpha_r))
    z = b.op("Sigmoid", b.mul(b.op("Add", gi_z, gh_z), alpha_z))
    n = b.op("Tanh", b.mul(b.op("Add", gi_n, b.op("Mul", r, gh_n)), alpha_h))
    return b.op("Add", n, b.op("Mul", z, b.op("Sub", h, n)))   # (1 - z) n + z h


@PAGRU_CELL.lowering("coreml")
def _pagru_cell_coreml(m, x, h, weight_ih, weight_hh, bias_ih=None, bias_hh=None, *,
                       alpha_r=1.0, alpha_z=1.0, alpha_h=1.0):
    # One step, as ONNX: the hidden state is an input and the output; alpha = 1 is no op.
    # (Folding the alphas into the weight rows saves three ops per step but, measured on the zoo
    # GRU in fp16, raised the atol needed at rtol 1e-2 from 5.8e-3 to 8.2e-3: not done.)
    def affine(t, weight, bias):
        if m.value(weight) is not None and (bias is None or m.value(bias) is not None):
            return m.linear(x=t, weight=weight, **({"bias": bias} if bias is not None else {}))
        y = m.matmul(x=t, y=weight, transpose_y=True)
        return y if bias is None else m.add(y, bias)

    gi_r, gi_z, gi_n = m.split(x=affine(x, weight_ih, bias_ih), num_splits=3, axis=-1)
    gh_r, gh_z, gh_n = m.split(x=affine(h, weight_hh, bias_hh), num_splits=3, axis=-1)
    r = m.sigmoid(x=m.mul(m.add(gi_r, gh_r), alpha_r))
    z = m.sigmoid(x=m.mul(m.add(gi_z, gh_z), alpha_z))
    n = m.tanh(x=m.mul(m.add(gi_n, m.mul(r, gh_n)), alpha_h))
    return m.add(n, m.mul(z, m.sub(h, n)))   # (1 - z) n + z h


# TensorRT: the ONNX decomposition (a matmul/convolution TensorRT runs natively; no plugin)
PAGRU_CELL.lowering("tensorrt")(TensorrtLowering(note="not elementwise: no Triton kernel"))
