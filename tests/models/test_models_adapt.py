"""adapt(): upstream modules inside any model become gatex modules with the same outputs."""

from __future__ import annotations

import pytest
import torch
import upstream as up
from model_cases import F64, gen, randn
from torch import nn

from gatex import models
from gatex.models import AdaptReport, adapt


class Mixer(nn.Module):
    """Not a known unit, but it has a gate projection: adapt must report it."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.gate_proj = nn.Linear(dim, dim)

    def forward(self, x):
        return x * torch.sigmoid(self.gate_proj(x))


class UpstreamNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(up.paGLU(6, 8, alpha="learnable"),
                                  up.GoLUCUDA(alpha=0.9, beta=0.5, gamma=1.2))
        self.wrapped = up.PrePostNormWrapper(up.paSwishU(8, 8, beta=1.5, use_gate_norm=True),
                                             8, 8, pre_norm=True, post_norm=True)
        self.units = nn.ModuleList([
            up.paGTU(8, 8, use_gate_norm=True), up.paReGLU(8, 8, alpha=0.25), up.paGELU(8, 8),
            up.paMishU(8, 8, alpha="learnable"), up.paSiLU(8, 8, alpha=1.0),
            up.paUnit(8, 8, torch.sigmoid), up.paUnit(8, 8, lambda u: u * u / (1 + u * u)),
            up.paUnit(8, 8, up.GoLU(beta=2.0), alpha=0.6)])
        shared = up.ZiLU()  # registered twice, as upstream ResNets do
        self.acts = nn.Sequential(shared, up.GELU_s(), up.SiLU_s(2.0), up.ZiLU_Approx(),
                                  up.ArcTan(), up.ArcTan_Approx(1.3), up.GoLU())
        self.again = shared
        self.cell = up.PaGRUCell(8, 8)
        self.static_cell = up.PaGRUCell(8, 8, alpha_mode=0.7)
        self.dense = up.GatedDense(8, 8, "relu")
        self.odd = up.ZiLU_Old()
        self.mixer = Mixer(8)
        self.img = up.paGating2D(up.paGLU, 2, 3, alpha=0.35)

    def forward(self, x, image):
        y = self.wrapped(self.stem(x))
        for unit in self.units:
            y = unit(y)
        y = self.acts[1:](self.again(y))
        y = self.static_cell(self.cell(y), y)
        y = self.mixer(self.odd(self.dense(y)))
        return y, self.img(image)


def randomise(model: nn.Module, seed: int = 0) -> None:
    """Move every trainable value off its init so a dropped or mis-copied one shows."""
    g = gen(seed)
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad:
                p.copy_(0.5 + torch.rand(p.shape, generator=g, dtype=F64) if p.dim() == 0
                        else randn(*p.shape, g=g, scale=0.5))


def test_adapted_model_gives_the_same_outputs_and_a_full_report() -> None:
    model = UpstreamNet().double().eval()
    randomise(model)
    x, image = randn(5, 6, g=gen(1)), randn(2, 2, 3, 4, g=gen(2))
    want = model(x, image)

    adapted, report = adapt(model)
    assert adapted is model and isinstance(report, AdaptReport)
    got = adapted(x, image)
    for a, b in zip(got, want, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)

    replaced = {path: new for path, _old, new in report.replaced}
    assert replaced == {
        "stem.0": "paGLU", "stem.1": "GoLU", "wrapped.module": "paSwishU",
        "wrapped": "PrePostNormWrapper", "units.0": "paGTU", "units.1": "paReGLU",
        "units.2": "paGELU", "units.3": "paMishU", "units.4": "paSiLU", "units.5": "paUnit",
        "units.6": "paUnit", "units.7.activation_fn": "GoLU", "units.7": "paUnit",
        "acts.0": "ZiLU", "acts.1": "GELU_s", "acts.2": "SiLU_s", "acts.3": "ZiLU_Approx",
        "acts.4": "ArcTan", "acts.5": "ArcTan_Approx", "acts.6": "GoLU", "cell": "PaGRUCell",
        "static_cell": "PaGRUCell", "dense": "GatedDense", "img.pa_unit": "paGLU",
        "img": "paGating2D"}
    assert all(old.startswith("upstream.") for _p, old, _n in report.replaced)
    assert {(p, why) for p, _c, why in report.unknown} == {
        ("odd", "class name contains 'zilu'"), ("mixer", "has attribute 'gate_proj'")}
    assert report.aliases == (("again", "acts.0"),)
    assert model.again is model.acts[0] and isinstance(model.again, models.ZiLU)

    # the gatex modules are the fused ops, with upstream's parameters carried over
    assert model.stem[1].alpha == 0.9 and model.stem[1].beta == 0.5 and model.stem[1].gamma == 1.2
    assert model.units[5].gate == "sigmoid" and model.units[6].gate is None
    assert model.acts[2].sigma == 2.0 and model.static_cell._alpha_r_static == 0.7
    assert isinstance(model.odd, up.ZiLU_Old) and isinstance(model.mixer, Mixer)  # left alone
    text = str(report)
    assert text.splitlines()[0] == "adapt: replaced 25 module(s), 2 unknown gated module(s)"
    assert "  replaced acts.0: upstream.ZiLU -> gatex ZiLU (also at again)" in text
    assert "  unknown  mixer: test_models_adapt.Mixer: has attribute 'gate_proj'" in text


def test_adapting_twice_changes_nothing() -> None:
    model = UpstreamNet().double().eval()
    adapt(model)
    before = dict(model.named_modules())
    _, report = adapt(model)
    assert report.replaced == () and report.aliases == ()
    assert [p for p, _c, _w in report.unknown] == ["odd", "mixer"]
    after = dict(model.named_modules())
    assert before.keys() == after.keys() and all(before[k] is after[k] for k in before)


def test_gatex_modules_are_left_alone() -> None:
    model = nn.Sequential(models.paGLU(3, 3), models.ZiLU(), models.CGConv2d(4, 4, 3))
    modules = list(model)
    _, report = adapt(model)
    assert report == AdaptReport() and list(model) == modules


def test_conv_gating_model_is_adapted_in_eval_and_training_mode() -> None:
    def build() -> nn.Module:
        torch.manual_seed(0)
        pg = up.PGConv2d(8, 4, 3, padding=1, wbits=4, abits=6, pred_bits=3)
        return nn.Sequential(up.CGConv2d(8, 8, 3, padding=1, th=0.1, sparse_bp=True),
                             nn.BatchNorm2d(8), up.PactReLU(3.0), pg).double()

    reference, model = build(), build()
    with torch.no_grad():
        for m in (reference, model):
            m[0].bn.running_var.fill_(1.7)
            m[0].bn.running_mean.fill_(0.2)
            m[3].threshold.fill_(0.05)
    x = randn(2, 8, 6, 6, g=gen(3))
    adapted, report = adapt(model)
    assert [new for _p, _o, new in report.replaced] == ["CGConv2d", "PactReLU", "PGConv2d"]
    assert adapted[0].sparse_bp and (adapted[3].wbits, adapted[3].abits, adapted[3].pred_bits) \
        == (4, 6, 3)
    for mode in ("eval", "train"):
        getattr(reference, mode)(), getattr(adapted, mode)()
        torch.testing.assert_close(adapted(x), reference(x), rtol=1e-9, atol=1e-10)


def test_layout_mismatches_are_reported_not_replaced() -> None:
    class paGLU(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.proj = nn.Linear(4, 8)

    biased = up.CGConv2d(4, 4, 3, bias=True)
    model = nn.Sequential(paGLU(), biased)
    _, report = adapt(model)
    assert report.replaced == ()
    reasons = {p: why for p, _c, why in report.unknown}
    assert reasons["0"] == "no 'value_proj' (Linear): not upstream's layout"
    assert reasons["1"].startswith("CGConv2d(bias=True) is not supported")
    assert model[1] is biased


def test_root_module_device_dtype_flags_are_carried_over() -> None:
    golu, report = adapt(up.GoLU(beta=2.0))
    assert isinstance(golu, models.GoLU) and golu.beta == 2.0
    assert report.replaced == (("", "upstream.GoLU", "GoLU"),) and "<root>" in str(report)

    unit = up.paReGLU(3, 2, alpha="learnable").double().train()
    unit.value_proj.weight.requires_grad_(False)
    new, _ = adapt(unit)
    assert new.training and new.value_proj.weight.dtype == F64
    assert not new.value_proj.weight.requires_grad and new.alpha_param.requires_grad


@pytest.mark.parametrize("name", ["GatedBlock", "SwiGLU", "MyGoLU", "ZiLU_v2"])
def test_gated_looking_names_are_reported(name: str) -> None:
    cls = type(name, (nn.Module,), {})
    _, report = adapt(nn.Sequential(cls(), nn.GLU(), nn.ReLU(), nn.Linear(2, 2)))
    assert [p for p, _c, _w in report.unknown] == ["0"]  # torch's own GLU is not reported
