"""paGating modules: upstream state_dicts load and reproduce the formula; alpha modes; wrappers."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from model_cases import F64, assert_close_to_spec, gen, pa_state, randn
from torch import nn

from gatex import models
from gatex.errors import BadInputError, ParameterRangeError
from gatex.models import load_state_dict
from gatex.ops import REGISTRY

UNITS = list(models.pagating.UNITS)  # derived: every paGating unit class
EXTRA = {"paSwishU": {"beta": 1.7}, "paUnit": {"gate": "golu"}}
OP_PARAMS = {"paSwishU": {"beta": 1.7}, "paUnit": {"gate": "golu"}}


def build(unit: str, in_dim: int, out_dim: int, alpha: str | float = 0.5, **kw) -> nn.Module:
    return getattr(models, unit)(in_dim, out_dim, alpha=alpha, **EXTRA.get(unit, {}), **kw).double()


def expected(unit: str, sd: dict[str, torch.Tensor], x: torch.Tensor,
             alpha: torch.Tensor | float) -> torch.Tensor:
    v = F.linear(x, sd["value_proj.weight"], sd["value_proj.bias"])
    u = F.linear(x, sd["gate_proj.weight"], sd["gate_proj.bias"])
    return REGISTRY.get(unit).reference(v, u, alpha=alpha, **OP_PARAMS.get(unit, {}))


@pytest.mark.parametrize("unit", UNITS)
@pytest.mark.parametrize("alpha", [0.3, "learnable", 1.0, 0.0])
def test_upstream_state_dict_loads_and_matches_formula(unit: str, alpha) -> None:
    g = gen(1)
    sd = pa_state(5, 4, g, alpha=alpha, raw_alpha=-0.8)
    module = build(unit, 5, 4, alpha=alpha)
    assert set(module.state_dict()) == set(sd)
    load_state_dict(module, sd)
    x = randn(6, 5, g=g, scale=2.0)
    used = torch.sigmoid(sd["alpha_param"]) if alpha == "learnable" else sd["alpha_fixed"]
    assert_close_to_spec(module(x), expected(unit, sd, x, used), unit)


@pytest.mark.parametrize("unit, values", [
    ("paGLU", [-1.119202922, -0.6344707107, -0.3443851672, 0, 0.4056148328, 0.8655292893,
               1.880797078]),
    ("paReGLU", [-1, -0.5, -0.25, 0, 0.375, 1, 3]),
    ("paSiLU", [-0.761594156, -0.3655292893, -0.2028074164, 0, 0.3278074164, 0.8655292893,
                2.761594156]),
])
def test_reference_values_from_ops_md(unit: str, values: list[float]) -> None:
    # value_proj = gate_proj = identity, alpha = 0.5
    module = build(unit, 7, 7)
    eye = {"weight": torch.eye(7, dtype=F64), "bias": torch.zeros(7, dtype=F64)}
    load_state_dict(module, {**{f"value_proj.{k}": v for k, v in eye.items()},
                             **{f"gate_proj.{k}": v for k, v in eye.items()},
                             "alpha_fixed": torch.tensor(0.5, dtype=F64)})
    x = torch.tensor([[-2, -1, -0.5, 0, 0.5, 1, 2]], dtype=F64)
    torch.testing.assert_close(module(x)[0], torch.tensor(values, dtype=F64), rtol=0, atol=1e-9)


def test_learnable_alpha_is_sigmoid_of_the_raw_parameter_and_trains() -> None:
    module = models.paGLU(3, 2, alpha="learnable").double()
    assert module.alpha_kind == "learnable"
    assert float(module.alpha_param.detach()) == 0.5  # upstream's init: raw 0.5
    assert math.isclose(float(module.get_alpha().detach()), 0.6224593312018546, rel_tol=1e-15)
    x = randn(4, 3, g=gen(2))
    module(x).sum().backward()
    assert module.alpha_param.grad is not None and float(module.alpha_param.grad.abs()) > 1e-6


@pytest.mark.parametrize("unit", [u for u in UNITS if u != "paGTU"])
def test_gate_norm_is_applied_before_the_mix(unit: str) -> None:
    g = gen(3)
    sd = pa_state(4, 6, g, alpha=0.7, gate_norm=True)
    module = build(unit, 4, 6, alpha=0.7, use_gate_norm=True, norm_eps=1e-3)
    load_state_dict(module, sd)
    assert not module.uses_op
    x = randn(5, 4, g=g)
    v = F.linear(x, sd["value_proj.weight"], sd["value_proj.bias"])
    u = F.linear(x, sd["gate_proj.weight"], sd["gate_proj.bias"])
    gate = REGISTRY.get(unit).reference(torch.ones_like(v), u, alpha=1.0, **OP_PARAMS.get(unit, {}))
    mean = gate.mean(-1, keepdim=True)
    var = ((gate - mean) ** 2).mean(-1, keepdim=True)  # biased, as upstream's GateNorm
    normed = (gate - mean) / torch.sqrt(var + 1e-3) * sd["gate_norm.weight"] + sd["gate_norm.bias"]
    assert_close_to_spec(module(x), v * (0.7 * normed + 0.3), unit)


def test_pagtu_builds_gate_norm_but_never_applies_it() -> None:
    g = gen(4)
    sd = pa_state(4, 3, g, alpha=0.6, gate_norm=True)
    module = build("paGTU", 4, 3, alpha=0.6, use_gate_norm=True)
    assert set(module.state_dict()) == set(sd)
    load_state_dict(module, sd)
    assert module.uses_op
    x = randn(5, 4, g=g)
    assert_close_to_spec(module(x), expected("paGTU", sd, x, sd["alpha_fixed"]), "paGTU")


def test_callable_alpha_is_evaluated_on_the_input() -> None:
    def alpha_fn(x: torch.Tensor) -> torch.Tensor:
        return 0.2 + 0.6 * torch.sigmoid(x.mean())

    g = gen(5)
    sd = pa_state(3, 3, g, alpha="callable")
    module = models.paGELU(3, 3, alpha=alpha_fn).double()
    assert module.alpha_kind == "callable" and set(module.state_dict()) == set(sd)
    load_state_dict(module, sd)
    for scale in (0.5, 3.0):
        x = randn(4, 3, g=g, scale=scale) + scale
        assert_close_to_spec(module(x), expected("paGELU", sd, x, alpha_fn(x)), "paGELU")


@pytest.mark.parametrize("fn, name", [(torch.sigmoid, "sigmoid"), (F.silu, "silu"),
                                      (nn.GELU(), "gelu"), (nn.GELU("tanh"), "gelu_tanh"),
                                      (nn.Tanh(), "tanh"), ("arctan_approx", "arctan_approx")])
def test_paunit_maps_torch_gates_to_the_op(fn, name: str) -> None:
    g = gen(6)
    sd = pa_state(4, 4, g, alpha=0.4)
    module = models.paUnit(4, 4, fn, alpha=0.4).double()
    assert module.gate == name and module.uses_op
    load_state_dict(module, sd)
    x = randn(3, 4, g=g, scale=2.0)
    v = F.linear(x, sd["value_proj.weight"], sd["value_proj.bias"])
    u = F.linear(x, sd["gate_proj.weight"], sd["gate_proj.bias"])
    want = REGISTRY.get("paUnit").reference(v, u, alpha=sd["alpha_fixed"], gate=name)
    assert_close_to_spec(module(x), want, "paUnit")


def test_paunit_with_a_custom_callable_runs_plain_torch() -> None:
    def bump(u: torch.Tensor) -> torch.Tensor:
        return u * u / (1 + u * u)

    g = gen(7)
    sd = pa_state(4, 2, g, alpha=0.9)
    module = models.paUnit(4, 2, activation_fn=bump, alpha=0.9).double()
    assert module.gate is None and not module.uses_op
    load_state_dict(module, sd)
    x = randn(3, 4, g=g)
    v = F.linear(x, sd["value_proj.weight"], sd["value_proj.bias"])
    u = F.linear(x, sd["gate_proj.weight"], sd["gate_proj.bias"])
    torch.testing.assert_close(module(x), v * (0.9 * bump(u) + 0.1), rtol=1e-12, atol=1e-12)


def test_fused_linear_splits_value_first() -> None:
    module = models.paMishU(5, 3, alpha=0.5).double()
    x = randn(4, 5, g=gen(8))
    v, u = module.fused_linear()(x).chunk(2, dim=-1)
    # one matmul instead of two: equal up to float64 summation order
    torch.testing.assert_close(v, module.value_proj(x), rtol=1e-14, atol=1e-15)
    torch.testing.assert_close(u, module.gate_proj(x), rtol=1e-14, atol=1e-15)


def test_pre_post_norm_wrapper_keys_forward_and_attribute_forwarding() -> None:
    g = gen(9)
    unit = models.paGLU(4, 3, alpha=0.5).double()
    wrapper = models.PrePostNormWrapper(unit, 4, 3, pre_norm=True, post_norm=True,
                                        norm_eps=1e-4).double()
    inner = pa_state(4, 3, g)
    sd = {**{f"module.{k}": v for k, v in inner.items()},
          "pre_norm_layer.weight": randn(4, g=g), "pre_norm_layer.bias": randn(4, g=g),
          "post_norm_layer.weight": randn(3, g=g), "post_norm_layer.bias": randn(3, g=g)}
    assert set(wrapper.state_dict()) == set(sd)
    load_state_dict(wrapper, sd)
    x = randn(5, 4, g=g)
    pre = F.layer_norm(x, (4,), sd["pre_norm_layer.weight"], sd["pre_norm_layer.bias"], 1e-4)
    mid = expected("paGLU", inner, pre, 0.5)
    want = F.layer_norm(mid, (3,), sd["post_norm_layer.weight"], sd["post_norm_layer.bias"], 1e-4)
    torch.testing.assert_close(wrapper(x), want, rtol=1e-10, atol=1e-12)
    assert wrapper.alpha_kind == "fixed"  # looked up on the wrapped unit, as upstream


def test_pagating_2d_applies_the_unit_per_pixel() -> None:
    g = gen(10)
    layer = models.paGating2D("paSiLU", 3, 5, alpha=torch.tensor(0.25)).double()
    sd = {f"pa_unit.{k}": v for k, v in pa_state(3, 5, g, alpha=0.25).items()}
    assert set(layer.state_dict()) == set(sd)
    load_state_dict(layer, sd)
    x = randn(2, 3, 4, 6, g=g)
    out = layer(x)
    assert out.shape == (2, 5, 4, 6)
    for i, j in [(0, 0), (3, 5), (2, 1)]:
        # a few float64 ulps: the batched matmul may sum in another order (AVX-512 kernels)
        torch.testing.assert_close(out[:, :, i, j], layer.pa_unit(x[:, :, i, j]), rtol=0,
                                   atol=1e-14)
    with pytest.raises(BadInputError, match="NCHW"):
        layer(x[0])


@pytest.mark.parametrize("alpha, message", [
    (1.5, r"must be in \[0, 1\]; got 1.5"),
    (-0.01, r"must be in \[0, 1\]"),
    (1, "integer 1"),
    (True, "integer True"),
    ("fixed", "the string 'fixed'"),
    (None, "got NoneType"),
    (float("nan"), "finite"),
])
def test_bad_alpha_is_a_parameter_range_error(alpha, message: str) -> None:
    for unit in ("paGLU", "paSwishU"):
        with pytest.raises(ParameterRangeError, match=message) as info:
            getattr(models, unit)(3, 3, alpha=alpha)
        assert unit in str(info.value) and "\n" not in str(info.value)


def test_bad_dims_and_gates() -> None:
    with pytest.raises(BadInputError, match="input_dim must be a positive integer"):
        models.paGLU(0, 3)
    with pytest.raises(ParameterRangeError, match="paUnit gate must be"):
        models.paUnit(3, 3, "softmax")
    with pytest.raises(BadInputError, match="not both"):
        models.paUnit(3, 3, torch.sigmoid, gate="tanh")
    with pytest.raises(BadInputError, match="unknown paGating unit"):
        models.paGating2D("paXYZ", 3, 3)


@settings(max_examples=25, deadline=None)
@given(unit=st.sampled_from(UNITS), lead=st.lists(st.integers(1, 3), min_size=1, max_size=3),
       in_dim=st.integers(1, 6), out_dim=st.integers(1, 6),
       alpha=st.floats(0.0, 1.0, allow_nan=False), seed=st.integers(0, 2 ** 16))
def test_any_shape_and_alpha_matches_the_formula(unit, lead, in_dim, out_dim, alpha, seed) -> None:
    g = gen(seed)
    sd = pa_state(in_dim, out_dim, g, alpha=alpha)
    module = build(unit, in_dim, out_dim, alpha=alpha)
    load_state_dict(module, sd)
    x = randn(*lead, in_dim, g=g, scale=3.0)
    out = module(x)
    assert out.shape == (*lead, out_dim)
    assert_close_to_spec(out, expected(unit, sd, x, sd["alpha_fixed"]), unit)


# -- upstream's base signature: (input_dim, output_dim, activation_fn, alpha, use_gate_norm, eps) --

def test_base_takes_upstreams_positional_signature_and_runs_the_paunit_op() -> None:
    import upstream as up

    g = gen(11)
    sd = pa_state(12, 10, g, alpha=0.7)
    mine = models.paGatingBase(12, 10, torch.sigmoid, 0.7).double()
    theirs = up.paGatingBase(12, 10, torch.sigmoid, 0.7).double()
    assert mine.alpha_kind == "fixed" and float(mine.alpha_fixed) == pytest.approx(0.7)
    assert mine.gate == "sigmoid" and mine.uses_op
    load_state_dict(mine, sd)
    theirs.load_state_dict(sd)
    x = randn(5, 12, g=g)
    assert_close_to_spec(mine(x), theirs(x), "paUnit")
    assert mine.get_config()["activation_fn"] == "sigmoid"


def test_an_upstream_style_subclass_of_the_base_works() -> None:
    class TanhUnit(models.paGatingBase):
        def __init__(self, input_dim: int, output_dim: int, alpha: float | str = 0.5) -> None:
            super().__init__(input_dim, output_dim, torch.tanh, alpha)

    unit = TanhUnit(6, 4, alpha="learnable").double()
    assert unit.gate == "tanh" and unit.alpha_kind == "learnable"
    x = randn(3, 6, g=gen(12))
    v, u = unit.value_proj(x), unit.gate_proj(x)
    a = torch.sigmoid(unit.alpha_param)
    assert_close_to_spec(unit(x), v * (a * torch.tanh(u) + (1 - a)), "paUnit")


def test_the_base_without_a_gate_is_one_clear_error() -> None:
    with pytest.raises(BadInputError, match="needs activation_fn"):
        models.paGatingBase(12, 10)
    with pytest.raises(ParameterRangeError, match="gate must be a callable"):
        models.paGatingBase(12, 10, 0.7)


def test_adapt_converts_upstream_base_instances_and_base_forward_subclasses() -> None:
    import upstream as up

    class Custom(up.paGatingBase):  # keeps the base's forward: generic
        def __init__(self) -> None:
            super().__init__(6, 4, F.relu, 0.4)

    class OwnForward(up.paGatingBase):  # its own math: not gatex's to replace
        def __init__(self) -> None:
            super().__init__(6, 4, F.relu, 0.4)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return super().forward(x) * 2

    model = nn.Sequential(up.paGatingBase(6, 6, torch.sigmoid, 0.7), Custom(), OwnForward())
    model = model.double()
    x = randn(4, 6, g=gen(13))
    want = model[1](model[0](x))
    adapted, report = models.adapt(model)
    assert [type(m).__name__ for m in adapted[:2]] == ["paGatingBase", "paGatingBase"]
    assert isinstance(adapted[2], OwnForward) and report.unknown
    assert adapted[0].gate == "sigmoid" and adapted[1].gate == "relu"
    assert_close_to_spec(adapted[1](adapted[0](x)), want, "paUnit")


@pytest.mark.parametrize("make", [
    lambda: models.paGLU(8, 6, alpha=0.6, use_gate_norm=True),
    pytest.param(lambda: models.paSwishU(8, 6, alpha="learnable", beta=1.5, use_gate_norm=True),
                 marks=pytest.mark.slow),
    pytest.param(lambda: models.paUnit(8, 6, activation_fn=lambda u: u * u / (1 + u * u),
                                       alpha=0.7), marks=pytest.mark.slow),
], ids=["gate-norm", "swish-gate-norm", "callable-gate"])
def test_gate_norm_and_callable_gates_still_export_as_a_gatex_op(make, tmp_path) -> None:
    import gatex

    torch.manual_seed(0)
    unit = make()
    assert not unit.uses_op  # the gate cannot go inside the op: only the mix can
    model = nn.Sequential(unit, nn.Linear(6, 3)).eval()
    result = gatex.export(model, (torch.randn(4, 8),), out_dir=tmp_path)
    assert result.ops == ("paUnit",) and result.passed
