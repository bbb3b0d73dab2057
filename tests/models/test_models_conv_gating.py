"""CGConv2d, PGConv2d, PactReLU: eval = the op (folded BN), training = upstream's semantics."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
import upstream
from hypothesis import given, settings
from hypothesis import strategies as st
from model_cases import F64, assert_close_to_spec, gen, randn

from gatex.errors import BadInputError, ParameterRangeError
from gatex.models import CGConv2d, PactReLU, PGConv2d, load_state_dict

CG_KEYS = {"weight", "mask", "threshold", "bn.running_mean", "bn.running_var",
           "bn.num_batches_tracked"}
CONV = {"stride": 1, "padding": 1, "dilation": 1}


def cg_pair(cin: int, cout: int, g: torch.Generator, **kw) -> tuple[CGConv2d, upstream.CGConv2d]:
    """A gatex and an upstream CGConv2d holding one random upstream-layout state_dict."""
    up = upstream.CGConv2d(cin, cout, 3, **kw).double()
    sd = dict(up.state_dict())
    sd["weight"] = randn(cout, cin, 3, 3, g=g, scale=0.5)
    sd["threshold"] = randn(1, cout, 1, 1, g=g, scale=0.5)
    sd["bn.running_mean"] = randn(cout, g=g, scale=0.3)
    sd["bn.running_var"] = 0.5 + torch.rand(cout, generator=g, dtype=F64)
    up.load_state_dict(sd)
    mine = CGConv2d(cin, cout, 3, **kw).double()
    assert set(mine.state_dict()) == CG_KEYS
    assert torch.equal(mine.mask, up.mask)  # same mask construction
    load_state_dict(mine, sd)
    return mine, up


def cg_unfolded(layer: CGConv2d, x: torch.Tensor) -> torch.Tensor:
    """OPS.md: Yp = conv(x, W*M); d = 1[BN_eval(Yp) > threshold]; out = Yp + d conv(x, W*(1-M))."""
    def conv(w: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, w, None, layer.stride, layer.padding, layer.dilation)

    partial = conv(layer.weight * layer.mask)
    bn = (partial - layer.bn.running_mean.view(1, -1, 1, 1)) / torch.sqrt(
        layer.bn.running_var.view(1, -1, 1, 1) + 1e-5)
    gate = (bn > layer.threshold).to(x.dtype)
    assert 0.1 < float(gate.mean()) < 0.9  # the test exercises both branches of the gate
    return partial + gate * conv(layer.weight * (1 - layer.mask))


@pytest.mark.parametrize("kw", [
    {"padding": 1},
    {"stride": 2, "dilation": 2, "p": 2},
    {"padding": 1, "use_group": True, "p": 2},
    {"padding": 1, "shuffle": True},
])
def test_cg_eval_equals_the_unfolded_upstream_computation(kw) -> None:
    g = gen(1)
    mine, up = cg_pair(8, 6, g, **kw)
    mine.eval(), up.eval()
    x = randn(2, 8, 7, 7, g=g)
    with torch.no_grad():
        out = mine(x)
        assert_close_to_spec(out, up(x), "CGConv2d")
        if not kw.get("shuffle"):
            assert_close_to_spec(out, cg_unfolded(mine, x), "CGConv2d")


@pytest.mark.parametrize("sparse_bp", [False, True])
def test_cg_training_mode_matches_upstream_forward_backward_and_bn_stats(sparse_bp) -> None:
    g = gen(2)
    mine, up = cg_pair(8, 4, g, padding=1, sparse_bp=sparse_bp)
    mine.train(), up.train()
    x1 = randn(3, 8, 6, 6, g=g)
    x2 = x1.clone().requires_grad_(True)
    x1.requires_grad_(True)
    out_mine, out_up = mine(x1), up(x2)
    assert_close_to_spec(out_mine, out_up, "CGConv2d")
    upstream_grad = randn(*out_up.shape, g=g)
    out_mine.backward(upstream_grad)
    out_up.backward(upstream_grad)
    for name in ("weight", "threshold"):
        torch.testing.assert_close(getattr(mine, name).grad, getattr(up, name).grad,
                                   rtol=1e-9, atol=1e-10)
    assert float(mine.threshold.grad.abs().sum()) > 0  # the threshold trains
    torch.testing.assert_close(x1.grad, x2.grad, rtol=1e-9, atol=1e-10)
    torch.testing.assert_close(mine.bn.running_mean, up.bn.running_mean, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(mine.bn.running_var, up.bn.running_var, rtol=1e-12, atol=1e-12)


# -- PGConv2d -----------------------------------------------------------------------------------

def q_ops(t: torch.Tensor, b: int) -> torch.Tensor:
    """OPS.md Q_b, sign-magnitude with s = max|t| + 1e-7."""
    s = t.abs().max() + 1e-7
    levels = 2 ** b - 1
    return torch.sign(t) * s * torch.round(torch.clamp(t.abs() / s, 0, 1) * levels) / levels


def t_ops(t: torch.Tensor, b: int, pb: int) -> torch.Tensor:
    """OPS.md truncation: the pb most significant of the b magnitude bits."""
    s = t.abs().max() + 1e-7
    levels, drop = 2 ** b - 1, 2 ** (b - pb)
    q = torch.round(torch.clamp(t.abs() / s, 0, 1) * levels)
    return torch.sign(t) * s * torch.floor(q / drop) * drop / levels


def pg_layer(g: torch.Generator, threshold: torch.Tensor | None = None, **kw) -> PGConv2d:
    layer = PGConv2d(6, 5, 3, **{**CONV, **kw}).double()
    assert set(layer.state_dict()) == {"weight", "threshold"}
    load_state_dict(layer, {"weight": randn(5, 6, 3, 3, g=g, scale=0.4),
                            "threshold": randn(1, 5, 1, 1, g=g) if threshold is None
                            else threshold.expand(1, 5, 1, 1).clone()})
    return layer.eval()


@pytest.mark.parametrize("bits", [(8, 8, 4), (4, 6, 2), (8, 4, 3)])
def test_pg_threshold_minus_inf_is_the_full_precision_conv(bits) -> None:
    wbits, abits, pred = bits
    g = gen(3)
    layer = pg_layer(g, torch.tensor(float("-inf"), dtype=F64), wbits=wbits, abits=abits,
                     pred_bits=pred)
    x = randn(2, 6, 5, 5, g=g)
    want = F.conv2d(q_ops(x, abits), q_ops(layer.weight, wbits), padding=1)
    assert_close_to_spec(layer(x), want, "PGConv2d")


@pytest.mark.parametrize("bits", [(8, 8, 4), (4, 6, 2)])
def test_pg_threshold_plus_inf_is_the_msb_conv(bits) -> None:
    wbits, abits, pred = bits
    g = gen(4)
    layer = pg_layer(g, torch.tensor(float("inf"), dtype=F64), wbits=wbits, abits=abits,
                     pred_bits=pred)
    x = randn(2, 6, 5, 5, g=g)
    want = F.conv2d(t_ops(x, abits, pred), q_ops(layer.weight, wbits), padding=1)
    assert_close_to_spec(layer(x), want, "PGConv2d")


def _pg_pair(g: torch.Generator, **kw) -> tuple[PGConv2d, upstream.PGConv2d]:
    up = upstream.PGConv2d(6, 5, 3, **{**CONV, **kw}).double()
    up.load_state_dict({"weight": randn(5, 6, 3, 3, g=g, scale=0.4),
                        "threshold": randn(1, 5, 1, 1, g=g, scale=0.3)})
    mine = PGConv2d(6, 5, 3, **{**CONV, **kw}).double()
    load_state_dict(mine, up.state_dict())
    return mine, up


@pytest.mark.parametrize("kw", [{}, {"wbits": 1, "abits": 4, "pred_bits": 2},
                                {"wbits": 0, "sparse_bp": True}])
def test_pg_eval_and_training_match_upstream(kw) -> None:
    g = gen(5)
    mine, up = _pg_pair(g, **kw)
    x = randn(2, 6, 5, 5, g=g)
    mine.eval(), up.eval()
    with torch.no_grad():
        assert_close_to_spec(mine(x), up(x), "PGConv2d")
    mine.train(), up.train()
    x1, x2 = x.clone().requires_grad_(True), x.clone().requires_grad_(True)
    out_mine, out_up = mine(x1), up(x2)
    assert_close_to_spec(out_mine, out_up, "PGConv2d")
    grad = randn(*out_up.shape, g=g)
    out_mine.backward(grad)
    out_up.backward(grad)
    for a, b in ((mine.weight.grad, up.weight.grad), (mine.threshold.grad, up.threshold.grad),
                 (x1.grad, x2.grad)):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-10)
    assert float(mine.threshold.grad.abs().sum()) > 0 and float(mine.weight.grad.abs().sum()) > 0


def test_pg_fixed_act_scale_makes_samples_independent_of_the_batch() -> None:
    g = gen(6)
    layer = pg_layer(g)
    x = randn(4, 6, 5, 5, g=g)
    x[3] *= 5  # one loud sample sets upstream's per-batch scale
    alone, batched = layer(x[:1]), layer(x)[:1]
    assert not torch.allclose(alone, batched)  # upstream behaviour: depends on the batch
    layer.act_scale = float(x.abs().max())
    torch.testing.assert_close(layer(x[:1]), layer(x)[:1], rtol=0, atol=0)
    with pytest.raises(ParameterRangeError, match="act_scale must be a finite number > 0"):
        layer.act_scale = -1.0


def test_pact_relu_matches_upstream_forward_and_gradients() -> None:
    g = gen(7)
    mine, up = PactReLU(2.5).double(), upstream.PactReLU(2.5).double()
    assert list(mine.state_dict()) == ["upper_bound"]
    x1 = randn(200, g=g, scale=3.0).requires_grad_(True)
    x2 = x1.detach().clone().requires_grad_(True)
    torch.testing.assert_close(mine(x1), torch.clamp(x1, 0, 2.5), rtol=0, atol=0)
    grad = randn(200, g=g)
    mine(x1).backward(grad)
    up(x2).backward(grad)
    torch.testing.assert_close(x1.grad, x2.grad, rtol=0, atol=0)
    torch.testing.assert_close(mine.upper_bound.grad, grad[x1.detach() > 2.5].sum(), rtol=1e-12,
                               atol=1e-12)


@pytest.mark.parametrize("make, error, message", [
    (lambda: CGConv2d(4, 4, 3, bias=True), BadInputError, r"CGConv2d\(bias=True\)"),
    (lambda: PGConv2d(4, 4, 3, bias=True), BadInputError, r"PGConv2d\(bias=True\)"),
    (lambda: PGConv2d(4, 4, 3, abits=4, pred_bits=4), ParameterRangeError,
     r"pred_bits \(4\) must be smaller than abits \(4\)"),
    (lambda: PGConv2d(4, 4, 3, abits=17), ParameterRangeError, "abits' must be in"),
    (lambda: PGConv2d(4, 4, 3, alpha=0), ParameterRangeError, "alpha must be a finite number > 0"),
    (lambda: CGConv2d(4, 4, 3, alpha=-2.0), ParameterRangeError, "alpha must be"),
    (lambda: CGConv2d(4, 4, 3, p=0), ParameterRangeError, "p must be a positive integer"),
    (lambda: CGConv2d(6, 4, 3, shuffle=True, p=4), ParameterRangeError, "divisible by p"),
    (lambda: CGConv2d(4, 4, 3, padding_mode="reflect"), BadInputError, "padding_mode='zeros'"),
    (lambda: PGConv2d(4, 4, 3, padding="same"), BadInputError, "padding must be"),
    (lambda: PactReLU(-1.0), ParameterRangeError, "upper_bound must be a finite number > 0"),
])
def test_bad_arguments(make, error, message: str) -> None:
    with pytest.raises(error, match=message) as info:
        make()
    assert "\n" not in str(info.value)


@settings(max_examples=15, deadline=None)
@given(cin=st.integers(1, 6), cout=st.integers(1, 5), hw=st.integers(3, 7),
       stride=st.integers(1, 2), padding=st.integers(0, 1), p=st.integers(1, 4),
       seed=st.integers(0, 999))
def test_cg_eval_any_shape(cin, cout, hw, stride, padding, p, seed) -> None:
    g = gen(seed)
    up = upstream.CGConv2d(cin, cout, 3, stride=stride, padding=padding, p=p).double()
    sd = dict(up.state_dict())
    sd.update({"weight": randn(cout, cin, 3, 3, g=g), "threshold": randn(1, cout, 1, 1, g=g),
               "bn.running_mean": randn(cout, g=g),
               "bn.running_var": 0.5 + torch.rand(cout, generator=g, dtype=F64)})
    up.load_state_dict(sd)
    mine = CGConv2d(cin, cout, 3, stride=stride, padding=padding, p=p).double()
    load_state_dict(mine, sd)
    x = randn(2, cin, hw, hw, g=g)
    with torch.no_grad():
        assert_close_to_spec(mine.eval()(x), up.eval()(x), "CGConv2d")
