"""GoLU and the ZiLU family: formula, parameters in and out of the state_dict, duplicate keys."""

from __future__ import annotations

import io

import pytest
import torch
import upstream
from hypothesis import given, settings
from hypothesis import strategies as st
from model_cases import F64, assert_close_to_spec, gen, randn
from torch import nn

from gatex import models
from gatex.errors import CheckpointError, ParameterRangeError
from gatex.models import GoLU, GoLUCUDA, load_state_dict
from gatex.ops import REGISTRY

X = torch.tensor([-10, -5, -2, -1, -0.5, 0, 0.5, 1, 2, 5, 10], dtype=F64)
SIGMA_UNITS = ["GELU_s", "SiLU_s", "ArcTan", "ArcTan_Approx", "ZiLU", "ZiLU_Approx"]
SIGMA_KEY = {"ZiLU": "arctan.sigma", "ZiLU_Approx": "arctan_approx.sigma"}


def test_golu_reference_values_from_ops_md() -> None:
    want = torch.tensor([-0.0, -1.753694598e-64, -0.001235957979, -0.06598803585, -0.09614782277,
                         0, 0.2726196059, 0.6922006276, 1.746846037, 4.96642351, 9.999546011],
                        dtype=F64)
    torch.testing.assert_close(GoLU()(X), want, rtol=1e-9, atol=1e-70)


def test_golu_parameters_are_out_of_band() -> None:
    act = GoLU(alpha=0.7, beta=1.3, gamma=0.4)
    assert act.state_dict() == {} and list(act.parameters()) == []
    assert (act.alpha, act.beta, act.gamma) == (0.7, 1.3, 0.4)
    load_state_dict(act, {})  # an upstream checkpoint holds nothing for GoLU
    x = randn(50, g=gen(1), scale=4.0)
    want = REGISTRY.get("GoLU").reference(x, alpha=0.7, beta=1.3, gamma=0.4)
    assert_close_to_spec(act(x), want, "GoLU")
    with pytest.raises(CheckpointError, match="unexpected keys alpha"):
        load_state_dict(act, {"alpha": torch.tensor(0.7)})
    assert GoLUCUDA is GoLU


@pytest.mark.parametrize("kw, name", [({"alpha": -0.1}, "alpha"), ({"beta": -1.0}, "beta"),
                                      ({"gamma": float("nan")}, "gamma"), ({"beta": "1"}, "beta")])
def test_golu_bad_parameters(kw, name: str) -> None:
    with pytest.raises(ParameterRangeError, match=f"GoLU parameter '{name}'") as info:
        GoLU(**kw)
    assert "\n" not in str(info.value)


def test_zilu_reference_values_from_ops_md_with_a_loaded_sigma() -> None:
    want = torch.tensor([-0.3172551743, -0.3141647909, -0.2951672353, -0.25, -0.1762081912, 0,
                         0.3237918088, 0.75, 1.704832765, 4.685835209, 9.682744826], dtype=F64)
    act = models.ZiLU().double()
    load_state_dict(act, {"arctan.sigma": torch.tensor(1.0, dtype=F64)})
    torch.testing.assert_close(act(X), want, rtol=1e-9, atol=1e-12)
    torch.testing.assert_close(models.ZiLU(sigma=1.0)(X), want, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("unit", SIGMA_UNITS)
def test_learnable_sigma_is_the_upstream_key_and_trains(unit: str) -> None:
    act = getattr(models, unit)().double()
    key = SIGMA_KEY.get(unit, "sigma")
    assert list(act.state_dict()) == [key]
    assert float(act.state_dict()[key]) == 5.0  # upstream's init
    load_state_dict(act, {key: torch.tensor(1.9, dtype=F64)})
    x = randn(40, g=gen(2), scale=3.0)
    out = act(x)
    assert_close_to_spec(out, REGISTRY.get(unit).reference(x, sigma=1.9), unit)
    out.sum().backward()
    param = dict(act.named_parameters())[key]
    assert param.grad is not None and float(param.grad.abs()) > 1e-6


@pytest.mark.parametrize("unit", SIGMA_UNITS)
def test_fixed_sigma_is_not_saved_and_zero_means_learnable(unit: str) -> None:
    act = getattr(models, unit)(sigma=1.7)
    assert act.state_dict() == {}
    x = randn(40, g=gen(3), scale=3.0)
    assert_close_to_spec(act(x), REGISTRY.get(unit).reference(x, sigma=1.7), unit)
    assert list(getattr(models, unit)(sigma=0).state_dict()) == [SIGMA_KEY.get(unit, "sigma")]


@pytest.mark.parametrize("unit", SIGMA_UNITS)
def test_same_outputs_as_upstream_module(unit: str) -> None:
    up = getattr(upstream, unit)().double()
    with torch.no_grad():
        next(up.parameters()).fill_(2.3)
    act = getattr(models, unit)().double()
    load_state_dict(act, up.state_dict())
    x = randn(60, g=gen(4), scale=4.0)
    assert_close_to_spec(act(x), up(x), unit)


def test_bad_sigma() -> None:
    with pytest.raises(ParameterRangeError, match="ZiLU parameter 'sigma' must be finite"):
        models.ZiLU(sigma=float("inf"))
    with pytest.raises(ParameterRangeError, match="got a tensor"):
        models.SiLU_s(sigma=torch.tensor(2.0))


def _resnet_block_checkpoint() -> tuple[nn.Module, dict[str, torch.Tensor]]:
    torch.manual_seed(0)
    block = upstream.ResBlock(lambda: upstream.ZiLU(), 3).double()
    with torch.no_grad():
        block.activation1.arctan.sigma.fill_(2.5)
        block.final_activation.arctan.sigma.fill_(0.75)
    buffer = io.BytesIO()
    torch.save(block.state_dict(), buffer)
    buffer.seek(0)
    return block, torch.load(buffer, weights_only=True)


def test_duplicate_keys_of_upstream_resnets_load() -> None:
    block, ckpt = _resnet_block_checkpoint()
    assert {"activation1.arctan.sigma", "layer1.1.arctan.sigma"} <= set(ckpt)

    class Block(nn.Module):  # the same block registering its activation once
        def __init__(self) -> None:
            super().__init__()
            self.activation1 = models.ZiLU()
            self.final_activation = models.ZiLU()
            self.layer1 = nn.Sequential(nn.Conv2d(3, 3, 3, padding=1, bias=False))
            self.layer2 = nn.Sequential(nn.Conv2d(3, 3, 3, padding=1, bias=False))

        def forward(self, x):
            out = self.layer2(self.activation1(self.layer1(x)))
            return self.final_activation(out + x)

    mine = Block().double()
    result = load_state_dict(mine, ckpt)
    assert result.aliased == ("layer1.1.arctan.sigma",)
    x = randn(2, 3, 5, 5, g=gen(5))
    torch.testing.assert_close(mine(x), block(x), rtol=1e-12, atol=1e-12)

    # a copy (not a shared tensor) of the duplicate is accepted while it is equal ...
    copied = {k: v.clone() for k, v in ckpt.items()}
    assert load_state_dict(Block().double(), copied).aliased == ("layer1.1.arctan.sigma",)
    # ... and refused once it differs
    copied["layer1.1.arctan.sigma"] = torch.tensor(9.0, dtype=F64)
    with pytest.raises(CheckpointError, match="unexpected keys layer1.1.arctan.sigma"):
        load_state_dict(Block().double(), copied)


@settings(max_examples=30, deadline=None)
@given(unit=st.sampled_from(SIGMA_UNITS + ["GoLU"]), sigma=st.floats(0.05, 20.0),
       n=st.integers(1, 40), seed=st.integers(0, 999))
def test_any_sigma_matches_the_formula(unit: str, sigma: float, n: int, seed: int) -> None:
    x = randn(n, g=gen(seed), scale=5.0)
    if unit == "GoLU":
        act, params = GoLU(alpha=sigma / 4, beta=sigma, gamma=1 / sigma), \
            {"alpha": sigma / 4, "beta": sigma, "gamma": 1 / sigma}
    else:
        act, params = getattr(models, unit)(sigma=sigma), {"sigma": sigma}
    assert_close_to_spec(act(x), REGISTRY.get(unit).reference(x, **params), unit)


@pytest.mark.parametrize("cls", [models.GoLU, models.ZiLU, models.ZiLU_Approx, models.GELU_s,
                                 models.SiLU_s, models.ArcTan, models.ArcTan_Approx])
def test_activations_take_the_inplace_flag_model_libraries_pass(cls: type) -> None:
    # timm and torchvision build activations as act_layer(inplace=True); the op never writes x
    x = torch.linspace(-4, 4, 17)
    before = x.clone()
    torch.testing.assert_close(cls(inplace=True)(x), cls()(x), rtol=0, atol=0)
    torch.testing.assert_close(x, before, rtol=0, atol=0)
