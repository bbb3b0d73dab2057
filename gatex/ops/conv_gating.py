"""Channel gating (CGConv2d) and precision gating (PGConv2d), upstream cornell-zhang/dnn-gating.

Both compute a cheap partial convolution, gate each output element on it, and add a second
convolution where the gate is on. No standard runtime skips the gated-off work: a dense
lowering costs two convolutions (real savings need a custom kernel).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from gatex.errors import CoremlExportError
from gatex.ops import decisions
from gatex.ops._torch import compute_in_fp32, publish
from gatex.ops.spec import REDUCTION_TOLERANCES, OpSpec, Param, TensorrtLowering

SOURCE = "https://github.com/cornell-zhang/dnn-gating utils/"
BN_EPS = 1e-5
PG_EPS = 1e-7

CONV_PARAMS = (
    Param("stride", (1, 1), "convolution stride (h, w)", kind=tuple),
    Param("padding", (0, 0), "zero padding (h, w)", kind=tuple),
    Param("dilation", (1, 1), "dilation (h, w)", kind=tuple),
    Param("groups", 1, "convolution groups", lo=1, kind=int),
)


def _conv(x: torch.Tensor, w: torch.Tensor, stride: Sequence[int], padding: Sequence[int],
          dilation: Sequence[int], groups: int) -> torch.Tensor:
    return F.conv2d(x, w, None, tuple(stride), tuple(padding), tuple(dilation), groups)


def _conv_fake(x: torch.Tensor, weight: torch.Tensor, stride: Sequence[int],
               padding: Sequence[int], dilation: Sequence[int]) -> torch.Tensor:
    k = weight.shape[-2:]
    hw = [(x.shape[2 + i] + 2 * padding[i] - dilation[i] * (k[i] - 1) - 1) // stride[i] + 1
          for i in range(2)]
    return x.new_empty((x.shape[0], weight.shape[0], *hw))


def fold_cg_threshold(threshold: torch.Tensor, running_mean: torch.Tensor,
                      running_var: torch.Tensor, eps: float = BN_EPS) -> torch.Tensor:
    """Per-channel raw threshold T_c = mean_c + threshold_c * sqrt(var_c + eps), shape (C,).

    BN_eval(Yp) > threshold  <=>  Yp > T  (BatchNorm2d affine=False, running statistics).
    """
    return running_mean + threshold.reshape(-1) * torch.sqrt(running_var + eps)


def cg_conv2d_reference(x: torch.Tensor, weight: torch.Tensor, mask: torch.Tensor,
                        threshold: torch.Tensor, *, stride=(1, 1), padding=(0, 0),
                        dilation=(1, 1), groups: int = 1) -> torch.Tensor:
    """Yp = conv(x, W*M); out = Yp + 1[Yp > T] * conv(x, W*(1-M)), T the folded threshold (C,)."""
    partial_w = weight * mask
    partial = _conv(x, partial_w, stride, padding, dilation, groups)
    rest = _conv(x, weight * (1 - mask), stride, padding, dilation, groups)
    gate = decisions.threshold_decision(
        decisions.begin("CGConv2d"), "gate", partial, threshold.reshape(1, -1, 1, 1),
        lambda: _conv(x.abs(), partial_w.abs(), stride, padding, dilation, groups),
        k=weight[0].numel())
    return partial + gate * rest


# torch leaves arguments equal to their schema default out of the call to a fake: give defaults
def _cg_fake(x, weight, mask, threshold, stride=(1, 1), padding=(0, 0), dilation=(1, 1),
             groups=1):
    return _conv_fake(x, weight, stride, padding, dilation)


CG_CONV2D = publish(OpSpec(
    name="CGConv2d", torch_name="cg_conv2d", family="conv_gating",
    summary="Channel gating: a partial sum over the first C_in/p input channels decides per "
            "output element whether the rest of the channels are added.",
    formula="Yp = conv(x, W*M); out = Yp + 1[Yp > T] * conv(x, W*(1-M)); "
            "T = bn_mean + threshold * sqrt(bn_var + 1e-5)",
    source=SOURCE + "cg_utils.py (CGConv2d)",
    inputs=("x", "weight", "mask", "threshold"), params=CONV_PARAMS,
    reference=cg_conv2d_reference, impl=compute_in_fp32(cg_conv2d_reference),
    elementwise=False, tolerances=REDUCTION_TOLERANCES,
    hazards="The gate is a hard threshold: an output within rounding of T may flip between "
            "backends (the element then differs by the whole ungated term), so parity compares "
            "the gates themselves (a flip must lie within the rounding bound of the partial "
            "sum) and judges the outputs against torch run with the artifact's gates.",
    decisions=("gate",),
), "(Tensor x, Tensor weight, Tensor mask, Tensor threshold, int[2] stride=[1, 1], "
   "int[2] padding=[0, 0], int[2] dilation=[1, 1], int groups=1) -> Tensor", fake=_cg_fake)


def _scale(t: torch.Tensor, scale: float | None) -> torch.Tensor:
    # upstream: max|t| over the whole tensor (so over the batch) + 1e-7, recomputed per call
    # torch.max, not torch.amax: the same value, and torch.onnx's aten.amax translation needs a
    # dim (plain torch.onnx.export of a PGConv2d model fails on amax() of the whole tensor)
    return torch.max(torch.abs(t)) + PG_EPS if scale is None else t.new_tensor(scale)


def _levels(t: torch.Tensor, bits: int, scale: float | None,
            entry: decisions.OpDecisions | None = None, name: str = "levels"
            ) -> tuple[torch.Tensor, torch.Tensor, float]:
    """(s, round(clamp(|t|/s, 0, 1) (2^b - 1)), 2^b - 1): the magnitude in integer levels,
    whose rounding is the decision ``name`` the tape records or forces when ``entry`` is
    given (`gatex.ops.decisions.round_decision`; plain ``torch.round`` otherwise)."""
    s = _scale(t, scale)
    levels = 2.0 ** bits - 1.0
    q = decisions.round_decision(entry, name, torch.clamp(torch.abs(t) / s, 0.0, 1.0) * levels,
                                 levels, s)
    return s, q, levels


def quantize(t: torch.Tensor, bits: int, scale: float | None = None,
             entry: decisions.OpDecisions | None = None, name: str = "levels") -> torch.Tensor:
    """Upstream TorchQuantize: identity at 0 bits, sign at 1 bit, else sign-magnitude Q_b.

    Q_b(t) = sign(t) s round(clamp(|t|/s, 0, 1) (2^b - 1)) / (2^b - 1), s = max|t| + 1e-7;
    with a tape's ``entry`` the rounding is its decision ``name`` (`_levels`).
    """
    if bits == 0:
        return t
    if bits == 1:
        return torch.round((torch.clamp(t, -1.0, 1.0) + 1.0) / 2.0) * 2.0 - 1.0
    s, q, levels = _levels(t, bits, scale, entry, name)
    return torch.sign(t) * s * q / levels


def truncate(t: torch.Tensor, bits: int, msb_bits: int, scale: float | None = None) -> torch.Tensor:
    """Upstream TorchTruncate: quantise to ``bits`` then keep the ``msb_bits`` most significant."""
    return _split_activation(t, bits, msb_bits, scale, None)[0]


def _split_activation(x: torch.Tensor, bits: int, msb_bits: int, scale: float | None,
                      entry: decisions.OpDecisions | None) -> tuple[torch.Tensor, torch.Tensor]:
    """(T(x), Q_a(x)): truncate and quantize of one activation with one rounding to levels,
    the decision the tape records or forces (the same values as the two upstream calls)."""
    s, q, levels = _levels(x, bits, scale, entry)
    drop = 2.0 ** (bits - msb_bits)
    sign_s = torch.sign(x) * s
    return sign_s * (torch.floor(q / drop) * drop) / levels, sign_s * q / levels


def pg_weight(weight: torch.Tensor, wbits: int, groups: int = 1,
              entry: decisions.OpDecisions | None = None) -> torch.Tensor:
    """Q_w(W) with upstream's binary rescale sqrt(1 / (k^2 C_in)) at 1 bit.

    Upstream uses the layer's in_channels, which is the weight's C_in/groups times groups.
    With a decision tape's ``entry``, the weight levels are the decision ``wlevels``.
    """
    q = quantize(weight, wbits, entry=entry, name="wlevels")
    if wbits == 1:
        q = q * math.sqrt(1.0 / (weight.shape[-1] ** 2 * weight.shape[1] * groups))
    return q


def pg_conv2d_reference(x: torch.Tensor, weight: torch.Tensor, threshold: torch.Tensor, *,
                        wbits: int = 8, abits: int = 8, pred_bits: int = 4,
                        act_scale: float | None = None, stride=(1, 1), padding=(0, 0),
                        dilation=(1, 1), groups: int = 1) -> torch.Tensor:
    """O_msb = conv(T(x), Q_w(W)); out = O_msb + 1[O_msb > threshold] conv(Q_a(x) - T(x), Q_w(W))."""
    entry = decisions.begin("PGConv2d")
    w = pg_weight(weight, wbits, groups, entry)
    msb, full = _split_activation(x, abits, pred_bits, act_scale, entry)
    out_msb = _conv(x=msb, w=w, stride=stride, padding=padding, dilation=dilation, groups=groups)
    gate = decisions.threshold_decision(
        entry, "gate", out_msb, threshold.reshape(1, -1, 1, 1),
        lambda: _conv(msb.abs(), w.abs(), stride, padding, dilation, groups), k=w[0].numel())
    lsb = full - msb
    return out_msb + gate * _conv(lsb, w, stride, padding, dilation, groups)


def _pg_fake(x, weight, threshold, wbits=8, abits=8, pred_bits=4, act_scale=None,
             stride=(1, 1), padding=(0, 0), dilation=(1, 1), groups=1):
    return _conv_fake(x, weight, stride, padding, dilation)


PG_CONV2D = publish(OpSpec(
    name="PGConv2d", torch_name="pg_conv2d", family="conv_gating",
    summary="Precision gating: a convolution on the pred_bits most significant activation bits "
            "decides per output element whether the low bits are added.",
    formula="O_msb = conv(T(x), Q_w(W)); out = O_msb + 1[O_msb > threshold] * "
            "conv(Q_a(x) - T(x), Q_w(W))",
    source=SOURCE + "pg_utils.py (PGConv2d)",
    inputs=("x", "weight", "threshold"),
    params=(
        Param("wbits", 8, "weight bits (0: float, 1: binary)", lo=0, hi=16, kind=int),
        Param("abits", 8, "activation bits", lo=2, hi=16, kind=int),
        Param("pred_bits", 4, "most significant activation bits used to predict", lo=1, hi=15,
              kind=int),
        Param("act_scale", None, "fixed activation scale (calibrated); None: max|x| of the "
              "batch, as upstream", lo=0.0),
        *CONV_PARAMS,
    ),
    reference=pg_conv2d_reference, impl=compute_in_fp32(pg_conv2d_reference),
    elementwise=False, tolerances=REDUCTION_TOLERANCES,
    hazards="The activation scale is max|x| over the whole batch: one sample's output depends "
            "on the others unless act_scale is fixed (calibrated) or the batch is 1. Rounding "
            "to levels and the hard gate can flip between backends near a boundary (measured: "
            "1 of 230k activation levels in the zoo model's second layer on CoreML fp32, 10 of "
            "4500 logits off by up to 3e-3), so parity compares the levels and gates themselves "
            "(each flip within its rounding bound) and judges the outputs against torch run "
            "with the artifact's decisions.",
    decisions=("wlevels", "levels", "gate"),
), "(Tensor x, Tensor weight, Tensor threshold, int wbits=8, int abits=8, int pred_bits=4, "
   "float? act_scale=None, int[2] stride=[1, 1], int[2] padding=[0, 0], int[2] dilation=[1, 1], "
   "int groups=1) -> Tensor", fake=_pg_fake)


def _conv_attrs(stride, padding, dilation, groups) -> dict:
    return {"strides": list(stride), "pads": [*padding, *padding], "dilations": list(dilation),
            "group": groups}


def _gated_sum(b, base: str, threshold: str, extra: str) -> str:
    """base + 1[base > threshold] * extra, threshold per output channel: the torch impl's own
    arithmetic (a 0/1 gate times extra), not a Where, which onnxruntime's CPU EP runs at about
    16x the time of an elementwise pass (benchmarks/README.md, zilu_sigma_forms)."""
    t = b.op("Reshape", threshold, b.ints([1, -1, 1, 1]))
    decided = b.op("Greater", base, t)
    b.decision("gate", decided, pre=base)
    gate = b.op("Cast", decided, to=b.dtype)
    return b.op("Add", base, b.op("Mul", gate, extra))


@CG_CONV2D.lowering("onnx")
def _cg_conv2d_onnx(b, x: str, weight: str, mask: str, threshold: str, *, stride=(1, 1),
                    padding=(0, 0), dilation=(1, 1), groups: int = 1) -> str:
    attrs = _conv_attrs(stride, padding, dilation, groups)
    partial = b.op("Conv", x, b.op("Mul", weight, mask), **attrs)
    rest = b.op("Conv", x, b.op("Mul", weight, b.op("Sub", b.const(1.0), mask)), **attrs)
    return _gated_sum(b, partial, threshold, rest)


def _pg_scale(b, x: str, act_scale: float | None) -> str:
    if act_scale is not None:
        return b.const(act_scale)
    return b.add(b.op("ReduceMax", b.op("Abs", x), keepdims=0), PG_EPS)


def _pg_levels(b, t: str, s: str, bits: int) -> str:
    """round(clamp(|t| / s, 0, 1) (2^b - 1)): the magnitude in integer levels."""
    unit = b.op("Clip", b.op("Div", b.op("Abs", t), s), b.const(0.0), b.const(1.0))
    return b.op("Round", b.mul(unit, 2.0 ** bits - 1.0))


def _pg_from_levels(b, t: str, s: str, levels: str, bits: int) -> str:
    return b.op("Mul", b.op("Mul", b.op("Sign", t), s), b.mul(levels, 1.0 / (2.0 ** bits - 1.0)))


def _pg_quantize(b, t: str, bits: int, act_scale: float | None) -> str:
    if bits == 0:
        return t
    if bits == 1:
        clipped = b.op("Clip", t, b.const(-1.0), b.const(1.0))
        return b.add(b.mul(b.op("Round", b.mul(b.add(clipped, 1.0), 0.5)), 2.0), -1.0)
    s = _pg_scale(b, t, act_scale)
    return _pg_from_levels(b, t, s, _pg_levels(b, t, s, bits), bits)


@PG_CONV2D.lowering("onnx")
def _pg_conv2d_onnx(b, x: str, weight: str, threshold: str, *, wbits: int = 8, abits: int = 8,
                    pred_bits: int = 4, act_scale: float | None = None, stride=(1, 1),
                    padding=(0, 0), dilation=(1, 1), groups: int = 1) -> str:
    attrs = _conv_attrs(stride, padding, dilation, groups)
    if wbits >= 2:  # a function of initializers, folded at load; its levels are a decision
        s_w = _pg_scale(b, weight, None)
        w_levels = _pg_levels(b, weight, s_w, wbits)
        b.decision("wlevels", w_levels)
        w = _pg_from_levels(b, weight, s_w, w_levels, wbits)
    else:
        w = _pg_quantize(b, weight, wbits, None)
    if wbits == 1:
        w = b.op("Mul", w, b.op("Sqrt", b.op("Reciprocal", b.op("Cast", b.op(
            "Mul", b.op("ReduceProd", b.op("Shape", weight, start=1), keepdims=0),
            b.ints([groups])), to=b.dtype))))
    s = _pg_scale(b, x, act_scale)
    levels = _pg_levels(b, x, s, abits)
    b.decision("levels", levels)
    drop = 2.0 ** (abits - pred_bits)
    msb_levels = b.mul(b.op("Floor", b.mul(levels, 1.0 / drop)), drop)
    msb = _pg_from_levels(b, x, s, msb_levels, abits)
    lsb = b.op("Sub", _pg_from_levels(b, x, s, levels, abits), msb)
    out_msb = b.op("Conv", msb, w, **attrs)
    return _gated_sum(b, out_msb, threshold, b.op("Conv", lsb, w, **attrs))


# CoreML: two dense convolutions and a select, as ONNX. Constant weights are folded here with
# the torch reference's own code (W * M, W * (1 - M), Q_w(W)), so the program holds the very
# weights torch uses; the activation quantiser runs as MIL ops.
def _conv_coreml(m, x, weight, stride, padding, dilation, groups, **name):
    w = m.value(weight)
    w = m.const(w, x) if w is not None else weight
    return m.conv(x=x, weight=w, strides=list(stride), pad_type="custom",
                  pad=[padding[0], padding[0], padding[1], padding[1]], dilations=list(dilation),
                  groups=groups, **name)


def _where_gated_coreml(m, base, threshold, extra, prefix: str):
    """base + 1[base > threshold] * extra, threshold per output channel; the comparison is
    named ``prefix + "gate"`` (the decision parity reads back, `gatex.ops.decisions`)."""
    t = m.value(threshold)
    t = m.const(np.reshape(t, (1, -1, 1, 1)), base) if t is not None else \
        m.reshape(x=threshold, shape=[1, -1, 1, 1])
    return m.select(m.greater(base, t, name=prefix + "gate"), m.add(base, extra), base)


@CG_CONV2D.lowering("coreml")
def _cg_conv2d_coreml(m, x, weight, mask, threshold, *, stride=(1, 1), padding=(0, 0),
                      dilation=(1, 1), groups: int = 1):
    w, k = m.value(weight), m.value(mask)
    if w is not None and k is not None:
        partial_w, rest_w = w * k, w * (1 - k)
    else:
        partial_w, rest_w = m.mul(weight, mask), m.mul(weight, m.sub(1.0, mask))
    conv = (stride, padding, dilation, groups)
    prefix = decisions.mil_prefix("CGConv2d")
    partial = _conv_coreml(m, x, partial_w, *conv, name=prefix + "gate__pre")
    return _where_gated_coreml(m, partial, threshold, _conv_coreml(m, x, rest_w, *conv), prefix)


def _pg_scale_coreml(m, x, act_scale):
    if act_scale is not None:
        return act_scale
    return m.add(m.reduce_max(x=m.abs(x=x), keep_dims=False), PG_EPS)


def _pg_from_levels_coreml(m, t, s, levels, bits: int):
    return m.mul(m.mul(m.sign(x=t), s), m.mul(levels, 1.0 / (2.0 ** bits - 1.0)))


@PG_CONV2D.lowering("coreml")
def _pg_conv2d_coreml(m, x, weight, threshold, *, wbits: int = 8, abits: int = 8,
                      pred_bits: int = 4, act_scale=None, stride=(1, 1), padding=(0, 0),
                      dilation=(1, 1), groups: int = 1):
    w = m.value(weight)
    if w is None:  # torch.export lifts parameters to constants; a computed weight is refused

        raise CoremlExportError("PGConv2d: the weight is computed from the input; CoreML export "
                                "quantises it once at export and needs it constant")
    w = pg_weight(torch.from_numpy(np.asarray(w, np.float32)), wbits, groups).numpy()
    s = _pg_scale_coreml(m, x, act_scale)
    unit = m.clip(m.div(m.abs(x=x), s), 0.0, 1.0)
    prefix = decisions.mil_prefix("PGConv2d")
    levels = m.round(x=m.mul(unit, 2.0 ** abits - 1.0), name=prefix + "levels")
    drop = 2.0 ** (abits - pred_bits)
    msb_levels = m.mul(m.floor(x=m.mul(levels, 1.0 / drop)), drop)
    msb = _pg_from_levels_coreml(m, x, s, msb_levels, abits)
    lsb = m.sub(_pg_from_levels_coreml(m, x, s, levels, abits), msb)
    conv = (stride, padding, dilation, groups)
    out_msb = _conv_coreml(m, msb, w, *conv, name=prefix + "gate__pre")
    return _where_gated_coreml(m, out_msb, threshold, _conv_coreml(m, lsb, w, *conv), prefix)


# TensorRT: the ONNX decomposition (a matmul/convolution TensorRT runs natively; no plugin)
CG_CONV2D.lowering("tensorrt")(TensorrtLowering(note="not elementwise: no Triton kernel"))
PG_CONV2D.lowering("tensorrt")(TensorrtLowering(note="not elementwise: no Triton kernel"))
