"""GatedDense: Keras-layout weights, frozen gates, folding into nn.Linear."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from model_cases import F64, assert_close_to_spec, gen, randn
from torch import nn

from gatex.errors import BadInputError, ParameterRangeError
from gatex.models import GatedDense, load_state_dict
from gatex.ops.gated_dense import ACTIVATIONS

ACTS = {"linear": lambda t: t, "relu": torch.relu, "gelu": F.gelu, "tanh": torch.tanh,
        "sigmoid": torch.sigmoid, "swish": lambda t: t * torch.sigmoid(t)}


def keras_state(i: int, o: int, g: torch.Generator, bias: bool = True) -> dict[str, torch.Tensor]:
    sd = {"kernel": randn(i, o, g=g), "gates": (torch.rand(i, o, generator=g) > 0.6).to(F64)}
    if bias:
        sd["bias"] = randn(o, g=g, scale=0.5)
    return sd


def formula(x, sd, act):
    y = x @ (sd["kernel"] * sd["gates"])
    return ACTS[act](y + sd["bias"] if "bias" in sd else y)


@pytest.mark.parametrize("activation", sorted(ACTIVATIONS))
@pytest.mark.parametrize("bias", [True, False])
def test_keras_layout_state_dict_loads_and_matches_formula(activation: str, bias: bool) -> None:
    g = gen(1)
    sd = keras_state(6, 4, g, bias)
    layer = GatedDense(6, 4, activation=activation, bias=bias).double()
    assert set(layer.state_dict()) == set(sd)
    assert not any(name == "gates" for name, _ in layer.named_parameters())  # frozen buffer
    load_state_dict(layer, sd)
    x = randn(5, 6, g=g, scale=2.0)
    assert_close_to_spec(layer(x), formula(x, sd, activation), "GatedDense")
    folded = layer.fold()
    assert isinstance(folded, nn.Linear if activation == "linear" else nn.Sequential)
    assert_close_to_spec(folded(x), formula(x, sd, activation), "GatedDense")


def test_fold_weight_is_the_gated_kernel_transposed() -> None:
    layer = GatedDense(5, 3).double()
    load_state_dict(layer, keras_state(5, 3, gen(2)))
    linear = layer.fold()
    assert torch.equal(linear.weight, (layer.kernel * layer.gates).T)
    assert layer.sparsity == float((layer.gates == 0).double().mean())


def test_only_the_kernel_trains() -> None:
    layer = GatedDense(4, 2, activation="tanh").double()
    load_state_dict(layer, keras_state(4, 2, gen(3)))
    layer(randn(3, 4, g=gen(4))).sum().backward()
    closed = layer.gates == 0
    assert float(layer.kernel.grad[closed].abs().sum()) == 0.0  # no gradient through a closed gate
    assert float(layer.kernel.grad[~closed].abs().sum()) > 0.0


def test_from_keras_arrays() -> None:
    g = gen(5)
    sd = keras_state(3, 2, g)
    layer = GatedDense.from_keras({f"encoder/dense/{k}:0": v.numpy() for k, v in sd.items()},
                                  activation="relu")
    assert layer.activation == "relu" and layer.kernel.shape == (3, 2)
    x = randn(4, 3, g=g)
    torch.testing.assert_close(layer.double()(x), formula(x, sd, "relu"), rtol=1e-6, atol=1e-6)
    ungated = GatedDense.from_keras({"kernel": np.ones((2, 2))})
    assert ungated.bias is None and ungated.sparsity == 0.0


@pytest.mark.parametrize("weights, message", [
    ({"bias": np.zeros(2)}, "needs a 'kernel'"),
    ({"kernel": np.ones(3)}, "must be 2-D"),
    ({"kernel": np.ones((3, 2)), "gates": np.full((3, 2), 0.5)}, "must be 0/1"),
    ({"kernel": np.ones((3, 2)), "gates": np.ones((2, 3))}, "kernel's shape"),
    ({"kernel": np.ones((3, 2)), "bias": np.ones(3)}, r"bias must have shape \(2,\)"),
])
def test_from_keras_bad_arrays(weights, message: str) -> None:
    with pytest.raises(BadInputError, match=message):
        GatedDense.from_keras(weights)


def test_bad_arguments() -> None:
    with pytest.raises(ParameterRangeError, match="activation' must be one of"):
        GatedDense(3, 2, activation="softmax")
    with pytest.raises(BadInputError, match="out_features must be a positive integer"):
        GatedDense(3, 0)


@settings(max_examples=20, deadline=None)
@given(i=st.integers(1, 8), o=st.integers(1, 8), lead=st.lists(st.integers(1, 3), max_size=2),
       act=st.sampled_from(sorted(ACTIVATIONS)), seed=st.integers(0, 999))
def test_any_shape_matches_the_formula(i, o, lead, act, seed) -> None:
    g = gen(seed)
    sd = keras_state(i, o, g)
    layer = GatedDense(i, o, activation=act).double()
    load_state_dict(layer, sd)
    x = randn(*lead, i, g=g)
    assert_close_to_spec(layer(x), formula(x, sd, act), "GatedDense")
