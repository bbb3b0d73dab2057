"""The ops with structure (recurrent cell, dense, convolutions) against torch's own layers and the
upstream unfolded forms, written out here in float64.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from ops_cases import assert_within, gelu_erf, sigmoid

from gatex.ops import REGISTRY
from gatex.ops.conv_gating import fold_cg_threshold, pg_weight, quantize, truncate

F64 = torch.float64


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# --- PaGRUCell -----------------------------------------------------------------------------

@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("batch", [(5,), ()], ids=["batched", "unbatched"])
def test_pagru_cell_with_unit_alphas_is_nn_grucell(bias: bool, batch: tuple[int, ...]) -> None:
    torch.manual_seed(0)
    cell = torch.nn.GRUCell(3, 4, bias=bias, dtype=F64)
    x = torch.randn(*batch, 3, dtype=F64)
    h = torch.randn(*batch, 4, dtype=F64)
    one = torch.tensor(1.0, dtype=F64)
    out = torch.ops.gatex.pagru_cell(x, h, cell.weight_ih, cell.weight_hh, cell.bias_ih,
                                     cell.bias_hh, one, one, one)
    assert out.shape == h.shape
    assert_within(out, cell(x, h), REGISTRY.get("PaGRUCell").tolerance("float64"), "GRUCell")


def test_pagru_cell_scaled_gates_match_numpy() -> None:
    g = gen(1)
    x, h = torch.randn(4, 3, generator=g, dtype=F64), torch.randn(4, 5, generator=g, dtype=F64)
    w_ih = torch.randn(15, 3, generator=g, dtype=F64)
    w_hh = torch.randn(15, 5, generator=g, dtype=F64)
    b_ih, b_hh = torch.randn(15, generator=g, dtype=F64), torch.randn(15, generator=g, dtype=F64)
    a_r, a_z, a_h = 0.4, 1.7, 2.5
    # OPS.md: r = sig(a_r(gi_r + gh_r)); z = sig(a_z(gi_z + gh_z)); n = tanh(a_h(gi_n + r gh_n))
    gi = x.numpy() @ w_ih.numpy().T + b_ih.numpy()
    gh = h.numpy() @ w_hh.numpy().T + b_hh.numpy()
    r = sigmoid(a_r * (gi[:, :5] + gh[:, :5]))
    z = sigmoid(a_z * (gi[:, 5:10] + gh[:, 5:10]))
    n = np.tanh(a_h * (gi[:, 10:] + r * gh[:, 10:]))
    expected = (1 - z) * n + z * h.numpy()
    out = torch.ops.gatex.pagru_cell(x, h, w_ih, w_hh, b_ih, b_hh,
                                     *(torch.tensor(a, dtype=F64) for a in (a_r, a_z, a_h)))
    assert_within(out, torch.from_numpy(expected), REGISTRY.get("PaGRUCell").tolerance("float64"),
                  "PaGRUCell alphas")


# --- GatedDense ----------------------------------------------------------------------------

NUMPY_ACTIVATIONS = {
    "linear": lambda t: t,
    "relu": lambda t: np.maximum(t, 0.0),
    "gelu": gelu_erf,
    "tanh": np.tanh,
    "sigmoid": sigmoid,
    "swish": lambda t: t * sigmoid(t),
}


def test_activation_tables_agree() -> None:
    from gatex.ops.gated_dense import ACTIVATIONS
    assert set(ACTIVATIONS) == set(NUMPY_ACTIVATIONS)


@pytest.mark.parametrize("with_bias", [True, False])
@pytest.mark.parametrize("activation", sorted(NUMPY_ACTIVATIONS))
def test_gated_dense_is_masked_matmul_then_activation(activation: str, with_bias: bool) -> None:
    g = gen(2)
    x = torch.randn(2, 3, 6, generator=g, dtype=F64)
    kernel = torch.randn(6, 4, generator=g, dtype=F64)
    gates = (torch.rand(6, 4, generator=g) < 0.4).to(F64)
    bias = torch.randn(4, generator=g, dtype=F64) if with_bias else None
    pre = x.numpy() @ (kernel.numpy() * gates.numpy())
    if bias is not None:
        pre = pre + bias.numpy()
    expected = torch.from_numpy(NUMPY_ACTIVATIONS[activation](pre))
    out = torch.ops.gatex.gated_dense(x, kernel, gates, bias, activation)
    assert out.shape == (2, 3, 4)
    assert_within(out, expected, REGISTRY.get("GatedDense").tolerance("float64"), activation)


def test_gated_dense_with_open_gates_is_linear_with_transposed_kernel() -> None:
    g = gen(3)
    x = torch.randn(7, 5, generator=g, dtype=F64)
    kernel = torch.randn(5, 3, generator=g, dtype=F64)           # Keras layout (in, out)
    bias = torch.randn(3, generator=g, dtype=F64)
    linear = torch.nn.Linear(5, 3, dtype=F64)
    with torch.no_grad():
        linear.weight.copy_(kernel.T)                           # torch layout (out, in)
        linear.bias.copy_(bias)
    out = torch.ops.gatex.gated_dense(x, kernel, torch.ones_like(kernel), bias, "linear")
    assert_within(out, linear(x), REGISTRY.get("GatedDense").tolerance("float64"), "Linear")


def test_gated_dense_closed_gates_cut_inputs_and_outputs() -> None:
    g = gen(4)
    x = torch.randn(6, 4, generator=g, dtype=F64)
    kernel = torch.randn(4, 3, generator=g, dtype=F64)
    bias = torch.randn(3, generator=g, dtype=F64)
    gates = torch.ones(4, 3, dtype=F64)
    gates[:, 1] = 0.0                                           # output 1 sees nothing
    gates[2, :] = 0.0                                           # input 2 is ignored
    out = torch.ops.gatex.gated_dense(x, kernel, gates, bias, "relu")
    assert torch.equal(out[:, 1], torch.relu(bias[1]).expand(6))
    x2 = x.clone()
    x2[:, 2] = 1e6
    assert torch.equal(torch.ops.gatex.gated_dense(x2, kernel, gates, bias, "relu"), out)


# --- CGConv2d ------------------------------------------------------------------------------

def cg_mask(c_out: int, c_in_per_group: int, k: int, p: int, use_group: bool) -> torch.Tensor:
    """Upstream's mask: ones on the first floor(C_in/p) input channels, or block-diagonal."""
    mask = torch.zeros(c_out, c_in_per_group, k, k, dtype=F64)
    in_chunk, out_chunk = c_in_per_group // p, c_out // p
    if use_group:
        for i in range(p):
            mask[i * out_chunk:(i + 1) * out_chunk, i * in_chunk:(i + 1) * in_chunk] = 1.0
    else:
        mask[:, :in_chunk] = 1.0
    return mask


CONV_GEOMETRY = [
    dict(stride=(1, 1), padding=(0, 0), dilation=(1, 1), groups=1),
    dict(stride=(2, 1), padding=(1, 2), dilation=(1, 1), groups=1),
    dict(stride=(1, 1), padding=(2, 2), dilation=(2, 2), groups=1),
    dict(stride=(1, 2), padding=(1, 1), dilation=(1, 1), groups=2),
]


@pytest.mark.parametrize("use_group", [False, True])
@pytest.mark.parametrize("geometry", CONV_GEOMETRY, ids=lambda g: "-".join(
    f"{k[0]}{'x'.join(map(str, v)) if isinstance(v, tuple) else v}" for k, v in g.items()))
def test_cg_conv2d_equals_upstream_unfolded_form(geometry: dict, use_group: bool) -> None:
    g = gen(5)
    c_in, c_out, k, p = 8, 8, 3, 4
    groups = geometry["groups"]
    x = torch.randn(3, c_in, 9, 10, generator=g, dtype=F64)
    weight = torch.randn(c_out, c_in // groups, k, k, generator=g, dtype=F64)
    mask = cg_mask(c_out, c_in // groups, k, p, use_group)
    threshold = 0.5 * torch.randn(1, c_out, 1, 1, generator=g, dtype=F64)
    bn = torch.nn.BatchNorm2d(c_out, affine=False, eps=1e-5, dtype=F64).eval()
    bn.running_mean.copy_(torch.randn(c_out, generator=g, dtype=F64))
    bn.running_var.copy_(0.5 + 2 * torch.rand(c_out, generator=g, dtype=F64))

    conv = lambda w: F.conv2d(x, w, None, **geometry)  # noqa: E731
    y, y_partial = conv(weight), conv(weight * mask)
    d = (bn(y_partial) > threshold).to(F64)          # upstream: sigmoid(alpha(bn - th)) > 0.5
    expected = y * d + y_partial * (1 - d)
    assert 0.2 < d.mean() < 0.8, "both gate branches must be exercised"

    folded = fold_cg_threshold(threshold, bn.running_mean, bn.running_var)
    assert folded.shape == (c_out,)
    out = torch.ops.gatex.cg_conv2d(x, weight, mask, folded, list(geometry["stride"]),
                                    list(geometry["padding"]), list(geometry["dilation"]), groups)
    assert_within(out, expected, REGISTRY.get("CGConv2d").tolerance("float64"), "CGConv2d")


def test_fold_cg_threshold_formula() -> None:
    th = torch.tensor([[[[-6.0]], [[0.5]]]], dtype=F64)
    mean, var = torch.tensor([1.0, -2.0], dtype=F64), torch.tensor([4.0, 0.25], dtype=F64)
    expected = [1.0 - 6.0 * math.sqrt(4.0 + 1e-5), -2.0 + 0.5 * math.sqrt(0.25 + 1e-5)]
    assert fold_cg_threshold(th, mean, var).tolist() == pytest.approx(expected, rel=1e-15)


# --- PGConv2d: quantiser and truncation against NumPy ----------------------------------------

def np_quantize(t: np.ndarray, bits: int, scale: float | None = None) -> np.ndarray:
    """OPS.md: Q_b(t) = sign(t) s round(clamp(|t|/s, 0, 1)(2^b - 1)) / (2^b - 1), s = max|t| + 1e-7
    (np.round is round-half-to-even); 1 bit: binarise to {-1, +1}; 0 bits: identity."""
    if bits == 0:
        return t
    if bits == 1:
        return np.round((np.clip(t, -1.0, 1.0) + 1.0) / 2.0) * 2.0 - 1.0
    s = np.abs(t).max() + 1e-7 if scale is None else scale
    levels = 2.0 ** bits - 1
    return np.sign(t) * s * np.round(np.clip(np.abs(t) / s, 0.0, 1.0) * levels) / levels


def np_truncate(t: np.ndarray, bits: int, msb: int, scale: float | None = None) -> np.ndarray:
    """T(t): the ``msb`` most significant of the ``bits`` magnitude bits (floor of the rest)."""
    s = np.abs(t).max() + 1e-7 if scale is None else scale
    levels = 2.0 ** bits - 1
    q = np.round(np.clip(np.abs(t) / s, 0.0, 1.0) * levels)
    step = 2.0 ** (bits - msb)
    return np.sign(t) * s * (np.floor(q / step) * step) / levels


def test_quantize_rounds_half_to_even_with_fixed_scale() -> None:
    # s = 3, 2 bits: |t|/s * 3 = |t|, so t = 0.5, 1.5, 2.5 sit exactly on ties
    t = torch.tensor([0.5, 1.5, 2.5, -0.5, -1.5, -2.5, 3.7, 1.2, 0.0], dtype=F64)
    assert quantize(t, 2, scale=3.0).tolist() == [0.0, 2.0, 2.0, 0.0, -2.0, -2.0, 3.0, 1.0, 0.0]
    assert np.array_equal(np_quantize(t.numpy(), 2, 3.0), quantize(t, 2, scale=3.0).numpy())


def test_quantize_one_and_zero_bits() -> None:
    t = torch.tensor([-2.0, -0.3, 0.0, 0.2, 0.5, 3.0], dtype=F64)
    # (0 + 1) / 2 = 0.5 rounds to 0 (half to even), so 0 binarises to -1, as upstream
    assert quantize(t, 1).tolist() == [-1.0, -1.0, -1.0, 1.0, 1.0, 1.0]
    assert torch.equal(quantize(t, 0), t)
    w = torch.randn(4, 3, 5, 5, generator=gen(6), dtype=F64)
    expected = np_quantize(w.numpy(), 1) * math.sqrt(1.0 / (5 ** 2 * 3))   # McDonnell rescale
    assert np.array_equal(pg_weight(w, 1).numpy(), expected)
    assert torch.equal(pg_weight(w, 0), w)


def test_truncate_keeps_most_significant_bits_with_fixed_scale() -> None:
    # s = 15, 4 bits: q = round(|t|); keep 2 MSBs -> floor(q / 4) * 4
    t = torch.tensor([7.0, 8.0, -7.5, 6.5, 15.0, 3.9, 20.0], dtype=F64)
    assert truncate(t, 4, 2, scale=15.0).tolist() == [4.0, 8.0, -8.0, 4.0, 12.0, 4.0, 12.0]


@pytest.mark.parametrize("bits", [2, 3, 4, 8])
def test_quantize_and_truncate_match_numpy(bits: int) -> None:
    t = 3 * torch.randn(2, 3, 7, 7, generator=gen(bits), dtype=F64)
    assert np.array_equal(quantize(t, bits).numpy(), np_quantize(t.numpy(), bits))
    for msb in range(1, bits):
        assert np.array_equal(truncate(t, bits, msb).numpy(), np_truncate(t.numpy(), bits, msb))
    assert np.array_equal(quantize(t, bits, scale=1.5).numpy(), np_quantize(t.numpy(), bits, 1.5))
    assert np.array_equal(truncate(t, bits, 1, scale=1.5).numpy(),
                          np_truncate(t.numpy(), bits, 1, 1.5))


# --- PGConv2d op ---------------------------------------------------------------------------

def pg_call(x: torch.Tensor, w: torch.Tensor, threshold: torch.Tensor, wbits: int, abits: int,
            pred_bits: int, act_scale: float | None = None, **geometry) -> torch.Tensor:
    geo = dict(stride=(1, 1), padding=(1, 1), dilation=(1, 1), groups=1) | geometry
    return torch.ops.gatex.pg_conv2d(x, w, threshold, wbits, abits, pred_bits, act_scale,
                                     list(geo["stride"]), list(geo["padding"]),
                                     list(geo["dilation"]), geo["groups"])


def np_qw(w: torch.Tensor, wbits: int) -> torch.Tensor:
    q = np_quantize(w.numpy(), wbits)
    if wbits == 1:
        q = q * math.sqrt(1.0 / (w.shape[-1] ** 2 * w.shape[1]))
    return torch.from_numpy(q)


@pytest.mark.parametrize("wbits,abits,pred_bits", [(8, 8, 4), (4, 4, 2), (1, 8, 1), (0, 3, 2),
                                                    (2, 6, 5)])
def test_pg_conv2d_threshold_extremes(wbits: int, abits: int, pred_bits: int) -> None:
    g = gen(7)
    x = torch.relu(torch.randn(2, 4, 8, 8, generator=g, dtype=F64))   # PACT-clipped, >= 0
    w = torch.randn(6, 4, 3, 3, generator=g, dtype=F64)
    qw = np_qw(w, wbits)
    qa = torch.from_numpy(np_quantize(x.numpy(), abits))
    tx = torch.from_numpy(np_truncate(x.numpy(), abits, pred_bits))
    tol = REGISTRY.get("PGConv2d").tolerance("float64")
    conv = lambda a: F.conv2d(a, qw, None, 1, 1)  # noqa: E731
    # threshold -inf: every gate on, out = conv(Q_a(x), Q_w(W))
    all_on = pg_call(x, w, torch.full((6,), -math.inf, dtype=F64), wbits, abits, pred_bits)
    assert_within(all_on, conv(qa), tol, "PG threshold -inf")
    # threshold +inf: every gate off, out = conv(T(x), Q_w(W))
    all_off = pg_call(x, w, torch.full((6,), math.inf, dtype=F64), wbits, abits, pred_bits)
    assert_within(all_off, conv(tx), tol, "PG threshold +inf")
    assert not torch.allclose(all_on, all_off), "truncation must lose something here"
    # a finite per-channel threshold mixes the two per output element
    th = torch.linspace(-1.0, 1.0, 6, dtype=F64)
    msb = conv(tx)
    gate = (msb > th.reshape(1, -1, 1, 1)).to(F64)
    assert 0.1 < gate.mean() < 0.9
    mixed = pg_call(x, w, th, wbits, abits, pred_bits)
    assert_within(mixed, msb + gate * conv(qa - tx), tol, "PG finite threshold")


def test_pg_conv2d_geometry_and_groups() -> None:
    g = gen(8)
    x = torch.randn(2, 4, 9, 7, generator=g, dtype=F64)
    w = torch.randn(4, 2, 3, 3, generator=g, dtype=F64)
    th = torch.full((4,), -math.inf, dtype=F64)
    geo = dict(stride=(2, 1), padding=(0, 2), dilation=(1, 2), groups=2)
    out = pg_call(x, w, th, 8, 8, 4, **geo)
    expected = F.conv2d(torch.from_numpy(np_quantize(x.numpy(), 8)), np_qw(w, 8), None, **geo)
    assert_within(out, expected, REGISTRY.get("PGConv2d").tolerance("float64"), "PG geometry")


def test_pg_conv2d_fixed_act_scale_makes_samples_independent() -> None:
    g = gen(9)
    sample = torch.rand(1, 3, 6, 6, generator=g, dtype=F64)           # max |x| < 1
    loud = 10.0 * torch.rand(1, 3, 6, 6, generator=g, dtype=F64)      # max |x| up to 10
    w = torch.randn(5, 3, 3, 3, generator=g, dtype=F64)
    th = torch.zeros(5, dtype=F64)
    batch = torch.cat([sample, loud])
    # fixed (calibrated) scale: sample 0's output does not depend on the rest of the batch
    alone = pg_call(sample, w, th, 8, 8, 4, act_scale=10.0)
    together = pg_call(batch, w, th, 8, 8, 4, act_scale=10.0)
    assert torch.equal(together[:1], alone)
    # dynamic scale (upstream): max|x| over the whole batch changes sample 0's quantisation
    alone = pg_call(sample, w, th, 8, 8, 4, act_scale=None)
    together = pg_call(batch, w, th, 8, 8, 4, act_scale=None)
    assert (together[:1] - alone).abs().max() > 1e-3
