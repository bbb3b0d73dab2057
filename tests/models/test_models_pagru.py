"""PaGRUCell: nn.GRUCell equivalence at alpha 1, upstream keys, trainable alphas (the fix)."""

from __future__ import annotations

import pytest
import torch
import upstream
from hypothesis import given, settings
from hypothesis import strategies as st
from model_cases import F64, assert_close_to_spec, gen, randn
from torch import nn

from gatex.errors import BadInputError, ParameterRangeError
from gatex.models import PaGRUCell, load_state_dict
from gatex.ops.pagru import pagru_cell_reference

KEYS = ["weight_ih", "weight_hh", "bias_ih", "bias_hh"]
ALPHAS = ["alpha_r", "alpha_z", "alpha_h"]


def gru_state(i: int, h: int, g: torch.Generator) -> dict[str, torch.Tensor]:
    return {"weight_ih": randn(3 * h, i, g=g, scale=0.5),
            "weight_hh": randn(3 * h, h, g=g, scale=0.5),
            "bias_ih": randn(3 * h, g=g, scale=0.2), "bias_hh": randn(3 * h, g=g, scale=0.2)}


def test_same_seed_initialises_like_gru_cell() -> None:
    torch.manual_seed(123)
    reference = nn.GRUCell(5, 7)
    torch.manual_seed(123)
    cell = PaGRUCell(5, 7)
    for key in KEYS:
        assert torch.equal(getattr(cell, key), getattr(reference, key)), key
    assert [float(getattr(cell, a).detach()) for a in ALPHAS] == [1.0, 1.0, 1.0]


@pytest.mark.parametrize("alpha_mode", ["learnable", 1.0, 1])
def test_alphas_of_one_equal_gru_cell(alpha_mode) -> None:
    g = gen(1)
    sd = gru_state(4, 6, g)
    reference = nn.GRUCell(4, 6).double()
    reference.load_state_dict(sd)
    cell = PaGRUCell(4, 6, alpha_mode=alpha_mode, dtype=F64)
    load_state_dict(cell, {**sd, **({a: torch.tensor(1.0, dtype=F64) for a in ALPHAS}
                                    if alpha_mode == "learnable" else {})})
    x, h = randn(3, 4, g=g), randn(3, 6, g=g)
    # nn.GRUCell is one fused ATen kernel: equal up to float64 summation order
    torch.testing.assert_close(cell(x, h), reference(x, h), rtol=1e-13, atol=1e-14)
    torch.testing.assert_close(cell(x), reference(x), rtol=1e-13, atol=1e-14)


def test_upstream_state_dict_with_learned_alphas_matches_the_formula() -> None:
    g = gen(2)
    alphas = {"alpha_r": 0.6, "alpha_z": 1.7, "alpha_h": 0.35}
    sd = {**gru_state(3, 5, g), **{k: torch.tensor(v, dtype=F64) for k, v in alphas.items()}}
    cell = PaGRUCell(3, 5, dtype=F64)
    assert list(cell.state_dict()) == KEYS + ALPHAS
    load_state_dict(cell, sd)
    x, h = randn(4, 3, g=g, scale=2.0), randn(4, 5, g=g)
    want = pagru_cell_reference(x, h, *(sd[k] for k in KEYS), **alphas)
    assert_close_to_spec(cell(x, h), want, "PaGRUCell")
    # the upstream cell with the same checkpoint computes the same step
    up = upstream.PaGRUCell(3, 5).double()
    up.load_state_dict(sd)
    assert_close_to_spec(cell(x, h), up(x, h), "PaGRUCell")


def test_static_alpha_has_no_alpha_keys_and_matches_the_formula() -> None:
    g = gen(3)
    sd = gru_state(3, 4, g)
    cell = PaGRUCell(3, 4, alpha_mode=0.7, dtype=F64)
    assert list(cell.state_dict()) == KEYS
    assert cell.alpha_r is None and cell._alpha_h_static == 0.7
    load_state_dict(cell, sd)
    x, h = randn(2, 3, g=g), randn(2, 4, g=g)
    want = pagru_cell_reference(x, h, *(sd[k] for k in KEYS), alpha_r=0.7, alpha_z=0.7,
                                alpha_h=0.7)
    assert_close_to_spec(cell(x, h), want, "PaGRUCell")


def test_no_bias() -> None:
    g = gen(4)
    cell = PaGRUCell(3, 4, bias=False, alpha_mode=0.9, dtype=F64)
    assert list(cell.state_dict()) == ["weight_ih", "weight_hh"]
    x, h = randn(2, 3, g=g), randn(2, 4, g=g)
    want = pagru_cell_reference(x, h, cell.weight_ih, cell.weight_hh, alpha_r=0.9, alpha_z=0.9,
                                alpha_h=0.9)
    assert_close_to_spec(cell(x, h), want, "PaGRUCell")


def test_learnable_alphas_get_gradients_unlike_upstream() -> None:
    g = gen(5)
    sd = {**gru_state(3, 4, g), **{a: torch.tensor(0.8, dtype=F64) for a in ALPHAS}}
    cell = PaGRUCell(3, 4, dtype=F64)
    load_state_dict(cell, sd)
    x, h = randn(5, 3, g=g), randn(5, 4, g=g)
    cell(x, h).pow(2).sum().backward()
    for a in ALPHAS:
        grad = getattr(cell, a).grad
        assert grad is not None and float(grad.abs()) > 1e-6, a
    # upstream calls alpha.item(): its alphas never see a gradient
    up = upstream.PaGRUCell(3, 4).double()
    up.load_state_dict(sd)
    up(x, h).pow(2).sum().backward()
    assert all(getattr(up, a).grad is None for a in ALPHAS)
    # ... yet both compute the same forward
    torch.testing.assert_close(cell(x, h), up(x, h), rtol=1e-12, atol=1e-13)


def test_unbatched_input_and_default_hidden_state() -> None:
    g = gen(6)
    cell = PaGRUCell(3, 4, dtype=F64)
    x = randn(3, g=g)
    torch.testing.assert_close(cell(x), cell(x[None], torch.zeros(1, 4, dtype=F64))[0],
                               rtol=0, atol=0)


def test_bad_inputs() -> None:
    with pytest.raises(ParameterRangeError, match="'learnable' or a number"):
        PaGRUCell(3, 4, alpha_mode="fixed")
    with pytest.raises(ParameterRangeError, match="finite"):
        PaGRUCell(3, 4, alpha_mode=float("inf"))
    with pytest.raises(BadInputError, match="hidden_size must be a positive integer"):
        PaGRUCell(3, 0)
    cell = PaGRUCell(3, 4)
    with pytest.raises(BadInputError, match=r"input of shape \(batch, 3\)"):
        cell(torch.zeros(2, 5))
    with pytest.raises(BadInputError, match=r"hidden state must have shape \(2, 4\)"):
        cell(torch.zeros(2, 3), torch.zeros(2, 5))


@settings(max_examples=20, deadline=None)
@given(batch=st.integers(1, 4), i=st.integers(1, 5), h=st.integers(1, 5),
       alphas=st.tuples(*[st.floats(-2.0, 3.0, allow_nan=False)] * 3), seed=st.integers(0, 999))
def test_any_size_and_alphas_match_the_formula(batch, i, h, alphas, seed) -> None:
    g = gen(seed)
    named = dict(zip(ALPHAS, alphas, strict=True))
    sd = {**gru_state(i, h, g), **{a: torch.tensor(v, dtype=F64) for a, v in named.items()}}
    cell = PaGRUCell(i, h, dtype=F64)
    load_state_dict(cell, sd)
    x, hx = randn(batch, i, g=g, scale=2.0), randn(batch, h, g=g)
    want = pagru_cell_reference(x, hx, *(sd[k] for k in KEYS), **named)
    assert_close_to_spec(cell(x, hx), want, "PaGRUCell")
