"""load_state_dict: duplicate keys on either side are accepted; misfits are one clear line."""

from __future__ import annotations

import io

import pytest
import torch
from model_cases import F64, gen, randn
from torch import nn

from gatex import models
from gatex.errors import CheckpointError
from gatex.models import load_state_dict


class Net(nn.Module):
    def __init__(self, share: bool = False) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Linear(3, 4), models.ZiLU(), nn.Linear(4, 2))
        if share:
            self.again = self.body[1]  # one module, two names

    def forward(self, x):
        return self.body(x)


def state(net: nn.Module) -> dict[str, torch.Tensor]:
    g = gen(1)
    return {k: randn(*v.shape, g=g) if v.is_floating_point() else v.clone()
            for k, v in net.state_dict().items()}


def roundtrip(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """torch.save + torch.load, which keeps two keys of one tensor sharing storage."""
    buffer = io.BytesIO()
    torch.save(sd, buffer)
    buffer.seek(0)
    return torch.load(buffer, weights_only=True)


def test_exact_fit_loads_every_value() -> None:
    net = Net().double()
    sd = state(net)
    result = load_state_dict(net, sd)
    assert set(result.loaded) == set(sd) and result.aliased == () and result.shared == ()
    for k, v in net.state_dict().items():
        assert torch.equal(v, sd[k]), k


def test_model_registering_a_module_twice_needs_one_name_only() -> None:
    net = Net(share=True).double()
    assert "again.arctan.sigma" in net.state_dict()
    sd = {k: v for k, v in state(Net().double()).items()}
    result = load_state_dict(net, sd)
    assert result.shared == ("again.arctan.sigma",)
    assert torch.equal(net.again.arctan.sigma, sd["body.1.arctan.sigma"])


def test_checkpoint_with_a_shared_duplicate_key_loads() -> None:
    source = Net(share=True).double()
    sd = roundtrip(source.state_dict())
    assert sd["again.arctan.sigma"].data_ptr() == sd["body.1.arctan.sigma"].data_ptr()
    result = load_state_dict(Net().double(), sd)
    assert result.aliased == ("again.arctan.sigma",)


def test_checkpoint_giving_two_values_for_one_model_tensor_is_refused() -> None:
    net = Net(share=True).double()
    sd = state(net)
    sd["again.arctan.sigma"] = sd["body.1.arctan.sigma"] + 1
    with pytest.raises(CheckpointError, match="different values for one tensor of Net: "
                                              "again.arctan.sigma != body.1.arctan.sigma"):
        load_state_dict(net, sd)


def test_an_extra_module_that_is_not_a_copy_is_refused() -> None:
    sd = state(Net().double())
    # equal to body.0.weight, but its module's bias differs from body.0.bias
    sd["extra.weight"] = sd["body.0.weight"].clone()
    sd["extra.bias"] = sd["body.0.bias"] + 1
    with pytest.raises(CheckpointError, match="unexpected keys extra.weight, extra.bias"):
        load_state_dict(Net().double(), sd)


def test_missing_unexpected_and_shape_errors_are_one_line_naming_keys() -> None:
    net = Net().double()
    sd = state(net)
    del sd["body.0.weight"], sd["body.0.bias"], sd["body.2.weight"], sd["body.2.bias"]
    sd["head.weight"] = torch.zeros(2)
    with pytest.raises(CheckpointError) as info:
        load_state_dict(net, sd)
    text = str(info.value)
    assert "\n" not in text
    assert text.startswith("checkpoint does not fit Net: missing keys ")
    assert "(+1 more)" in text and "unexpected keys head.weight" in text
    sd = state(net)
    sd["body.2.weight"] = torch.zeros(5, 5, dtype=F64)
    with pytest.raises(CheckpointError, match=r"shape mismatch \(checkpoint vs model\) for "
                                              r"body.2.weight \(5, 5\) vs \(2, 4\)"):
        load_state_dict(net, sd)


def test_non_strict_reports_leftovers_but_not_shape_mismatches() -> None:
    net = Net().double()
    sd = state(net)
    del sd["body.2.bias"]
    sd["unused"] = torch.ones(1)
    result = load_state_dict(net, sd, strict=False)
    assert result.missing == ("body.2.bias",) and result.unexpected == ("unused",)
    assert torch.equal(net.body[0].weight, sd["body.0.weight"])
    sd["body.0.weight"] = torch.zeros(1)
    with pytest.raises(CheckpointError, match="shape mismatch"):
        load_state_dict(net, sd, strict=False)


def test_data_parallel_prefix_and_non_tensor_values() -> None:
    net = Net().double()
    sd = state(net)
    load_state_dict(net, {f"module.{k}": v for k, v in sd.items()})
    assert torch.equal(net.body[2].bias, sd["body.2.bias"])
    with pytest.raises(CheckpointError, match="values must be tensors; not for epoch"):
        load_state_dict(net, {**sd, "epoch": 3})
