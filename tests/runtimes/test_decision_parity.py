"""Decision-forced parity (issue 15): CGConv2d's gates and PGConv2d's levels are compared with
torch's layer by layer, every flip must lie within its rounding bound, and the outputs are
judged against torch run with the artifact's decisions at the specs' tolerance (no allowance,
no floor). The bound itself is tested here; the zoo models on onnxruntime and CoreML (emulated)
pass; tampered copies (a threshold moved by 1e-2, a weight scaled by 1.01, the gate inverted)
fail with exit 1 and name the layer. ResNet-20 CG/PG run through every target in
tests/realmodels; benchmarks/decisions_resnet20.py prints their flips per layer.
"""

from __future__ import annotations

import copy
import json

import numpy as np
import onnx
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from onnx import numpy_helper
from typer.testing import CliRunner

from gatex.cli import app
from gatex.comparison.decisions import DecisionReport, LayerDecisions, rule_violations
from gatex.models import zoo
from gatex.ops import decisions
from gatex.ops.conv_gating import cg_conv2d_reference, pg_conv2d_reference
from gatex.ops.spec import REDUCTION_TOLERANCES
from gatex.pipeline import export
from gatex.pipeline.check import check_artifact, compare_runtimes
from gatex.runtimes.onnxruntime_runtime import OrtRuntime
from gatex.runtimes.torch_runtime import TorchRuntime

SLOW = pytest.mark.slow


# -- the bound -----------------------------------------------------------------------------------

def test_gamma_is_the_classic_forward_error_bound():
    u = 2.0 ** -24
    assert decisions.gamma(576, "float32") == pytest.approx(576 * u / (1 - 576 * u))
    assert decisions.gamma(9, "float16") == pytest.approx(9 * 2 ** -11 / (1 - 9 * 2 ** -11))
    assert decisions.gamma(10 ** 9, "float16") == 1.0   # ku >= 1: no bound below 100 %


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 10 ** 6), cin=st.sampled_from([1, 4, 16, 64]),
       scale=st.floats(1e-3, 1e3))
def test_fp32_convolution_error_stays_within_gamma_k_times_the_magnitude_sum(seed, cin, scale):
    """|conv32 - conv64| <= gamma_k(u32) * conv(|x|, |W|): the rounding part of the bound holds
    for any input scale and reduction length (k = 9 cin), and the recorded bound adds the
    reduction tolerance on top: (gamma_k + rtol) S + atol."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(2, cin, 6, 6, generator=g) * scale
    w = torch.randn(3, cin, 3, 3, generator=g)
    mask = torch.ones_like(w)
    with decisions.recording("float32") as tape:
        cg_conv2d_reference(x, w, mask, torch.zeros(3), padding=(1, 1))
    (call,) = tape.calls
    d = call.decisions["gate"]
    pre64 = F.conv2d(x.double(), w.double(), padding=1).numpy()
    pre32 = F.conv2d(x, w, padding=1).double().numpy()
    s = F.conv2d(x.double().abs(), w.double().abs(), padding=1).numpy()
    k = 9 * cin
    assert np.all(np.abs(pre32 - pre64) <= decisions.gamma(k, "float32") * s + 1e-300)
    tol = REDUCTION_TOLERANCES["float32"]
    np.testing.assert_allclose(d.bound, (decisions.gamma(k, "float32") + tol.rtol) * s + tol.atol,
                               rtol=1e-5)
    np.testing.assert_allclose(d.margin, np.abs(pre32), rtol=1e-6, atol=1e-6)
    assert d.value.dtype == bool and (d.value == (pre32 > 0)).all()


def test_round_decisions_measure_the_distance_to_the_nearest_half_integer():
    x = torch.tensor([[[[0.0, 0.5, 1.0, 2.5 / 255, 3.0 / 255, 0.25]]]])
    with decisions.recording("float32") as tape:
        pg_conv2d_reference(x, torch.ones(1, 1, 1, 1), torch.zeros(1), wbits=0, abits=8,
                            pred_bits=4, act_scale=1.0)
    levels = tape.calls[0].decisions["levels"]
    np.testing.assert_allclose(levels.value.ravel(), [0, 128, 255, 2, 3, 64], atol=0)
    # q = 0, 127.5, 255, 2.5, 3, 63.75: margins 0.5, 0, 0.5, 0, 0.5, 0.25 (in levels)
    np.testing.assert_allclose(levels.margin.ravel(), [0.5, 0, 0.5, 0, 0.5, 0.25], atol=1e-4)
    tol = REDUCTION_TOLERANCES["float32"]
    q = np.array([0, 127.5, 255, 2.5, 3, 63.75])
    np.testing.assert_allclose(levels.bound.ravel(), 2 * tol.rtol * q + 255 * tol.atol,
                               rtol=1e-4)


def test_the_gate_rule_allows_an_artifacts_own_rounding_of_t_and_no_more():
    t = np.array([1.0], np.float32)
    pre = np.array([1.0, 1.0 + 2e-7, 1.0 + 1e-3, 0.9], np.float32)
    assert not rule_violations(pre > t, pre, t).any()
    assert rule_violations(np.array([True, True, False, True]), pre, t).tolist() == \
        [False, False, True, True]
    # fp16: 4 ulps of T = 1 is 4e-3; a threshold moved by 1e-2 is outside it
    pre16, t16 = np.array([1.003, 1.006], np.float16), np.array([1.0], np.float32)
    moved = pre16.astype(np.float32) > 1.01
    assert rule_violations(moved, pre16, t16).tolist() == [False, True]


# -- forcing -------------------------------------------------------------------------------------

def test_forced_gates_replace_torchs_own_and_torchs_are_still_recorded():
    g = torch.Generator().manual_seed(0)
    x, w = torch.randn(1, 4, 5, 5, generator=g), torch.randn(2, 4, 3, 3, generator=g)
    mask = torch.zeros_like(w)
    mask[:, :2] = 1
    full, partial = F.conv2d(x, w), F.conv2d(x, w * mask)
    for gate, expected in ((True, full), (False, partial)):
        forced = [{"gate": np.full((1, 2, 3, 3), gate)}]
        with decisions.recording("float32", forced=forced) as tape:
            out = cg_conv2d_reference(x, w, mask, torch.full((2,), 1e9 if gate else -1e9))
        torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-5)
        assert (tape.calls[0].decisions["gate"].value == (not gate)).all()  # torch's own


class TwoGated(torch.nn.Module):
    def __init__(self):
        super().__init__()
        from gatex import models

        self.a = models.CGConv2d(2, 2, 3, padding=1, p=2)
        self.b = models.CGConv2d(2, 2, 3, padding=1, p=2)

    def forward(self, x):
        return self.b(self.a(x))


def test_forcing_keyed_by_module_reaches_each_module_whatever_the_order():
    model = TwoGated().eval()
    x = torch.randn(1, 2, 4, 4).numpy()
    with TorchRuntime(model) as runtime:
        on, off = np.ones((1, 2, 4, 4), bool), np.zeros((1, 2, 4, 4), bool)
        forced = {("b", 0): {"gate": off}, ("a", 0): {"gate": on}}
        with decisions.recording("float32", forced=forced,
                                 where=runtime.current_module) as tape:
            out = runtime.run({"x": x})["output"]
    assert [c.module for c in tape.calls] == ["a", "b"]
    a = model.a.weight.detach()
    b_partial = (model.b.weight * model.b.mask).detach()
    with torch.no_grad():
        expected = F.conv2d(F.conv2d(torch.from_numpy(x), a, padding=1), b_partial, padding=1)
    np.testing.assert_allclose(out, expected.numpy(), rtol=1e-5, atol=1e-5)


def test_a_wrong_shaped_forced_decision_is_one_line():
    x, w = torch.randn(1, 1, 3, 3), torch.randn(1, 1, 3, 3)
    with decisions.recording("float32", forced=[{"gate": np.ones((2, 2), bool)}]), \
            pytest.raises(decisions.ForcingError, match="has shape"):
        cg_conv2d_reference(x, w, torch.ones_like(w), torch.zeros(1))


# -- the zoo models pass; tampering fails and names the layer ------------------------------------

DECIDING = ["CGConv2d", "PGConv2d"]


@pytest.fixture(scope="module")
def onnx_zoo(tmp_path_factory):
    out = tmp_path_factory.mktemp("decisions")
    return {(u, d): export(u, to="onnx", dtype=d, out_dir=out, check=False).path
            for u in DECIDING for d in ("fp32", "fp16")}


def _judged_by_forcing(result):
    report = result.decisions
    assert report is not None and report.forced, result.notes
    assert report.passed, report.summary()
    (out,) = result.outputs
    assert out.floor is None and out.outliers_allowed == 0 and out.outside == 0, out.message
    assert result.tolerance.origin == "spec"
    return report


@pytest.mark.parametrize("dtype", ["fp32", "fp16"])
@pytest.mark.parametrize("unit", DECIDING)
def test_zoo_onnx_passes_decision_forced_parity(onnx_zoo, unit, dtype):
    result = check_artifact(onnx_zoo[unit, dtype])
    report = _judged_by_forcing(result)
    names = {"CGConv2d": ["gate"], "PGConv2d": ["wlevels", "levels", "gate"]}[unit]
    assert [layer.name for layer in report.layers] == names * 2
    assert [layer.module for layer in report.layers] == \
        [m for m in ("conv1", "conv2") for _ in names]
    assert all(layer.worst_ratio <= 1 for layer in report.layers)
    if dtype == "fp16":
        assert any("no precision floor" in n for n in result.notes)
        assert sum(layer.flips for layer in report.layers) > 0   # fp16 flips, all proved


@pytest.mark.parametrize("precision", ["fp16", pytest.param("fp32", marks=SLOW)])
@pytest.mark.parametrize("unit", DECIDING)
def test_zoo_coreml_emulated_passes_decision_forced_parity(tmp_path, unit, precision):
    pytest.importorskip("coremltools")
    path = export(unit, to="coreml", precision=precision, out_dir=tmp_path, check=False).path
    result = check_artifact(path)
    assert result.emulated
    report = _judged_by_forcing(result)
    # CoreML folds the constant weight levels with torch's own code: gates and levels only
    assert {layer.name for layer in report.layers} <= {"gate", "levels"}
    assert len({layer.index for layer in report.layers}) == 2


def _gatex_nodes(proto):
    return [n for n in proto.graph.node if n.domain == "gatex"]


def _tampered(path, out, how: str, layer: int = 1):
    """A copy of the ONNX at ``path``: layer ``layer``'s threshold moved by +1e-2, its weight
    scaled by 1.01, or every gate inverted (the function's Greater with its inputs swapped)."""
    proto = onnx.load(path)
    node = _gatex_nodes(proto)[layer]
    if how == "inverted":
        for function in proto.functions:
            for n in function.node:
                if n.op_type == "Greater":
                    n.input[:] = [n.input[1], n.input[0]]
    else:
        name = node.input[-1] if how == "threshold" else node.input[1]
        init = next(i for i in proto.graph.initializer if i.name == name)
        value = numpy_helper.to_array(init)
        value = value + np.asarray(1e-2, value.dtype) if how == "threshold" else \
            value * np.asarray(1.01, value.dtype)
        init.CopyFrom(numpy_helper.from_array(value.astype(init_dtype(init)), name))
    onnx.save(proto, out)
    return out


def init_dtype(init):
    return numpy_helper.to_array(init).dtype


def parity_cli(*args):
    return CliRunner().invoke(app, ["parity", *map(str, args)], env={"COLUMNS": "200"})


@pytest.mark.parametrize(("unit", "dtype", "how", "layer", "module"), [
    ("PGConv2d", "fp32", "threshold", 1, "conv2"),
    ("CGConv2d", "fp32", "threshold", 1, "conv2"),
    ("CGConv2d", "fp16", "threshold", 1, "conv2"),
    pytest.param("PGConv2d", "fp16", "threshold", 1, "conv2", marks=SLOW),
    ("PGConv2d", "fp32", "weight", 0, "conv1"),
    ("CGConv2d", "fp32", "weight", 1, "conv2"),
    # not fp16: a weight scaled by 1.01 moves a pre-decision value by 1 %, inside fp16's own
    # rounding bound (gamma_k(2^-11) = 0.16 for k = 288) and its spec rtol (1e-2) on the logits
    ("CGConv2d", "fp32", "inverted", 0, "conv1"),
    pytest.param("PGConv2d", "fp16", "inverted", 0, "conv1", marks=SLOW),
])
def test_tampered_onnx_fails_and_names_the_layer(onnx_zoo, tmp_path, unit, dtype, how, layer,
                                                 module):
    bad = _tampered(onnx_zoo[unit, dtype], tmp_path / f"{unit}-{how}.onnx", how, layer)
    json_path = tmp_path / "v.json"
    result = parity_cli(bad, "--json", json_path, "--junit", tmp_path / "j.xml")
    assert result.exit_code == 1, result.stdout
    doc = json.loads(json_path.read_text())["results"][0]
    first = doc["decisions"]["first_beyond"]
    assert first is not None and first["module"] == module, doc["decisions"]["summary"]
    assert f"in '{module}'" in result.stdout
    junit = (tmp_path / "j.xml").read_text()
    assert 'name="decisions"' in junit and "DecisionFailure" in junit


def test_locate_points_at_the_first_layer_whose_decisions_differ(onnx_zoo, tmp_path):
    bad = _tampered(onnx_zoo["PGConv2d", "fp32"], tmp_path / "pg.onnx", "threshold", 1)
    result = check_artifact(bad, locate=True)
    assert not result
    assert result.locate.decision.startswith("#2 PGConv2d gate in 'conv2'"), result.locate
    assert "first layer whose decisions differ beyond the rounding bound: #2" in \
        result.locate.summary()
    good = check_artifact(onnx_zoo["PGConv2d", "fp32"], locate=True)
    assert good and good.locate.decision == ""


@pytest.mark.parametrize(("how", "module"), [("threshold", "conv2"), ("weight", "conv2")])
def test_a_coreml_program_of_a_tampered_model_fails_and_names_the_layer(tmp_path, how, module):
    """The program of a copy of the zoo PGConv2d model with conv2's threshold moved by 1e-2 (or
    its weight scaled by 1.01), checked against the original model, in the emulator."""
    pytest.importorskip("coremltools")
    from gatex.runtimes.coreml_runtime import CoremlRuntime

    original = zoo.load("PGConv2d")
    tampered = copy.deepcopy(original)
    with torch.no_grad():
        if how == "threshold":
            tampered.conv2.threshold += 1e-2
        else:
            tampered.conv2.weight *= 1.01
    x, _ = zoo.held_out("PGConv2d")
    x = x[:64].reshape(-1, 1, 8, 8)
    path = export(tampered, (x,), to="coreml", precision="fp32", out_dir=tmp_path,
                  check=False).path
    with CoremlRuntime(path) as artifact, TorchRuntime(original) as reference:
        name = artifact.input_specs[0].name
        result = compare_runtimes(artifact, reference, {name: x.numpy()})
    assert not result
    assert result.decisions.forced
    assert result.decisions.first_beyond.module == module, result.decisions.summary()


def test_strict_mode_judges_elementwise_without_decisions(onnx_zoo):
    result = check_artifact(onnx_zoo["CGConv2d", "fp32"], decisions="strict")
    assert result.decisions is None and result.outputs[0].floor is None


def test_a_report_that_could_not_force_says_why_and_fails_nothing_itself():
    report = DecisionReport(reason="Core ML does not return intermediate values")
    assert report.passed and not report.forced
    assert report.summary().startswith("decisions not forced: Core ML")
    layer = LayerDecisions(2, "PGConv2d", "levels", "blocks.0.conv2", "n", 100, 3, 2)
    assert not layer.passed and layer.beyond == 1
    assert layer.where() == "#3 PGConv2d levels in 'blocks.0.conv2'"
    assert layer.describe().startswith("3 of 100 flipped, 2 within the bound")


def test_an_ort_check_only_copy_exposes_every_deciding_node(onnx_zoo):
    from gatex.runtimes.decisions import exposed_onnx

    proto = onnx.load(onnx_zoo["PGConv2d", "fp32"])
    copied, layout = exposed_onnx(proto)
    assert [(op, module) for op, _, module, _ in layout] == [("PGConv2d", "conv1"),
                                                             ("PGConv2d", "conv2")]
    outputs = {o.name for o in copied.graph.output}
    assert all(set(names.values()) <= outputs for *_, names in layout)
    with OrtRuntime(copied.SerializeToString()) as runtime:
        assert set(runtime.output_names) == outputs
    assert len(proto.graph.output) == 1        # the artifact itself is untouched
