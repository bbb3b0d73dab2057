"""The precision floor of low-precision artifacts: an fp16 (or bf16) artifact's atol is at least
``FLOOR_FACTOR`` x the atol torch's own run in that precision needs, measured in the same run,
shown in every report, and only when the artifact computes in that precision; a wrong lowering
still fails.

Measured on the zoo (CoreML emulator, all 450 held-out digits, fp16 spec rtol 0.01): PaGRUCell
needs atol 0.00579 against torch's own fp16 0.00335 (spec atol 0.005 fails it: 3 of 4500 logits
outside); the hand-built fp16 GoLU ONNX graph with its GoLU lowering scaled by 1.01 (logits 2 %
off) needs atol 0.36 against a floor of 0.011.
"""

from __future__ import annotations

import copy
import json
import re
import xml.etree.ElementTree as ET

import numpy as np
import pytest
import torch
from onnx import TensorProto
from torch import nn
from typer.testing import CliRunner

import runtime_cases as cases
from gatex.cli import app
from gatex.models import GoLU, zoo
from gatex.ops import Tolerance
from gatex.pipeline import check
from gatex.pipeline.check import compare_runtimes
from gatex.runtimes.onnxruntime_runtime import OrtRuntime
from gatex.comparison import (
    FLOOR_FACTOR,
    PrecisionFloor,
    ToleranceChoice,
    compare,
    tolerance_for,
)
from gatex.comparison.report import to_json, to_junit, to_markdown
from gatex.runtimes.torch_runtime import TorchRuntime

FLOOR_TEXT = f"{FLOOR_FACTOR:g} x torch's own fp16 error"


def parity_cli(*args: object):
    return CliRunner().invoke(app, ["parity", *map(str, args)], env={"COLUMNS": "200"})


def torch_fp16_error(model: nn.Module, x: torch.Tensor, rtol: float) -> tuple[float, float]:
    """(max_abs, the atol needed at ``rtol``) of model.half()(x.half()) against model(x),
    computed here independently of gatex."""
    with torch.no_grad():
        ref = model(x).double()
        half = copy.deepcopy(model).half()(x.half()).double()
    diff = (half - ref).abs()
    return float(diff.max()), max(0.0, float((diff - rtol * ref.abs()).max()))


# -- the rule itself, on arrays -------------------------------------------------------------------

SPEC = ToleranceChoice(Tolerance(1e-2, 5e-3), "float16", "spec", ("GoLU",), ("addmm",))


def floor_of(torch_atol: float, max_abs: float = 0.09) -> PrecisionFloor:
    return PrecisionFloor("float16", max_abs, torch_atol, SPEC.rtol)


def test_a_floor_above_the_spec_atol_raises_it_and_says_by_how_much():
    choice = SPEC.with_floors({"logits": floor_of(0.0055)})
    (name, floor), = choice.floors
    assert name == "logits" and floor.raised and floor.atol == pytest.approx(0.011)
    assert choice.origin == "spec+floor" and choice.tolerance == SPEC.tolerance
    assert "atol raised to 0.011 = 2 x torch's own fp16 error (atol 0.0055 at rtol=0.01; " \
           "max_abs 0.09)" in choice.describe()
    expected = np.zeros((4, 10))
    expected[:, 0] = 50.0     # |e| = 50: rtol covers 0.5 there; the zeros rely on atol alone
    inside, outside = expected.copy(), expected.copy()
    inside[1, 3], outside[1, 3] = 0.0105, 0.0115
    assert not compare(inside, expected, SPEC.tolerance)            # spec alone: 0.0105 > 0.005
    ok = compare(inside, expected, SPEC.tolerance, floor=floor)
    assert ok and ok.tolerance == Tolerance(1e-2, 0.011) and ok.floor is floor
    bad = compare(outside, expected, SPEC.tolerance, floor=floor)
    assert not bad and f"atol=0.011 (atol = {FLOOR_TEXT} (atol 0.0055" in bad.message


def test_a_floor_below_the_spec_atol_or_a_user_atol_is_only_reported():
    low = SPEC.with_floors({"logits": floor_of(0.001, 0.03)})
    assert low.origin == "spec" and not low.floors[0][1].raised
    assert "precision floor 0.002 = 2 x torch's own fp16 error (atol 0.001 at rtol=0.01; " \
           "max_abs 0.03), not above this atol" in low.describe()
    result = compare(np.float32([0.004]), np.float32([0.0]), low.tolerance,
                     floor=low.floors[0][1])
    assert result and result.tolerance == SPEC.tolerance
    assert "torch's own fp16 error: max_abs 0.03, needs atol 0.001" in result.message
    user = ToleranceChoice(Tolerance(1e-2, 1e-3), "float16", "user").with_floors(
        {"logits": floor_of(0.1)}, may_raise=False)
    assert user.origin == "user" and not user.floors[0][1].raised
    assert "not applied: the atol is the user's" in user.describe()


# -- a wrong lowering still fails; a right one passes ---------------------------------------------

@pytest.fixture(scope="module")
def golu_fp16(tmp_path_factory) -> dict[str, object]:
    """The zoo GoLU network as an fp16 portable ONNX graph, correct and with its GoLU lowering
    scaled by 1.01 (both GoLU nodes: the logits 2 % off), each with ``gatex.unit`` = GoLU."""
    directory = tmp_path_factory.mktemp("floor")
    good = cases.zoo_golu_onnx(dtype=TensorProto.FLOAT16)
    broken = cases.zoo_golu_onnx(dtype=TensorProto.FLOAT16)
    cases._scale_function_output(broken.functions[0], 1.01, TensorProto.FLOAT16)
    return {"good": cases.save(good, directory / "GoLU-fp16.onnx"),
            "broken": cases.save(broken, directory / "GoLU-broken-fp16.onnx")}


def test_a_lowering_wrong_by_more_than_the_floor_fails_and_names_the_floor(golu_fp16, tmp_path):
    x = zoo.held_out("GoLU")[0].numpy().astype(np.float16)
    with OrtRuntime(golu_fp16["good"]) as good, OrtRuntime(golu_fp16["broken"]) as broken:
        (good_out,), (broken_out,) = good.run({"x": x}).values(), broken.run({"x": x}).values()
    rtol = tolerance_for(["GoLU"], "float16", reductions=("addmm",)).rtol
    _, torch_atol = torch_fp16_error(zoo.load("GoLU"), torch.from_numpy(x).float(), rtol)
    floor = FLOOR_FACTOR * torch_atol
    # what the perturbation adds, beyond rtol, against the correct artifact's own output
    good64 = good_out.astype(np.float64)
    wrong_by = float(np.max(np.abs(broken_out - good64) - rtol * np.abs(good64)))
    assert wrong_by > 10 * floor      # measured: 0.36 against a floor of 0.011

    path = tmp_path / "v.json"
    result = parity_cli(golu_fp16["good"], golu_fp16["broken"], "--json", path)
    assert result.exit_code == 1, result.output
    good_v, broken_v = json.loads(path.read_text())["results"]
    assert good_v["passed"] and not broken_v["passed"]
    for verdict in (good_v, broken_v):
        assert verdict["tolerance"]["origin"] == "spec+floor"
        out = verdict["outputs"][0]
        assert out["floor"]["raised"] and out["floor"]["atol"] == pytest.approx(floor, rel=1e-12)
    message = broken_v["outputs"][0]["message"]
    assert f"atol={floor:.3g} (atol = {FLOOR_TEXT}" in message
    assert broken_v["outputs"][0]["needed"]["atol"] > 10 * floor
    assert result.output.strip().splitlines()[-1].startswith("error: parity failed: FAIL")


def test_every_report_shows_the_floor(golu_fp16, tmp_path):
    files = {"--json": tmp_path / "v.json", "--junit": tmp_path / "v.xml",
             "--markdown": tmp_path / "v.md"}
    result = parity_cli(golu_fp16["good"], *(x for kv in files.items() for x in kv))
    assert result.exit_code == 0, result.output
    doc = json.loads(files["--json"].read_text())
    floor = doc["results"][0]["outputs"][0]["floor"]
    assert set(floor) == {"dtype", "torch_max_abs", "torch_atol", "rtol", "factor", "atol",
                          "raised"}
    assert floor["dtype"] == "float16" and floor["factor"] == FLOOR_FACTOR
    assert floor["atol"] == pytest.approx(FLOOR_FACTOR * floor["torch_atol"])
    assert floor["rtol"] == doc["results"][0]["tolerance"]["rtol"]
    raised = f"atol raised to {floor['atol']:.3g} = {FLOOR_TEXT} (atol " \
             f"{floor['torch_atol']:.3g} at rtol={floor['rtol']:.3g}; max_abs " \
             f"{floor['torch_max_abs']:.3g})"
    assert raised in doc["results"][0]["tolerance"]["text"]
    # the terminal table has torch's own fp16 error beside the artifact's, and the floor below
    header = next(ln for ln in result.output.splitlines() if "max abs" in ln).split()
    assert header[header.index("abs") - 1:][:5] == ["max", "abs", "torch", "fp16", "max"]
    assert raised in " ".join(result.output.split())
    props = {p.get("name"): p.get("value") for p in ET.parse(files["--junit"]).iter("property")}
    assert props["tolerance_origin"] == "spec+floor" and raised in props["tolerance"]
    assert props["precision_floor.logits"].endswith(", raised the atol")
    markdown = files["--markdown"].read_text()
    assert "| max abs | torch fp16 | max rel |" in markdown and raised in markdown
    assert f"| {floor['torch_max_abs']:.3g} |" in markdown


def test_a_correct_coreml_fp16_export_passes_on_the_floor_and_fails_without_it(tmp_path):
    pytest.importorskip("coremltools")
    import gatex
    from gatex.exporters import coreml as coreml_export

    result = gatex.export("PaGRUCell", to="coreml", precision="fp16", out_dir=tmp_path)
    parity = result.parity
    (out,) = parity.outputs
    x, _ = zoo.held_out("PaGRUCell")
    max_abs, torch_atol = torch_fp16_error(zoo.load("PaGRUCell"), x, parity.tolerance.rtol)
    assert out.floor is not None and out.floor.raised
    assert out.floor.torch_max_abs == pytest.approx(max_abs, rel=1e-12)
    assert out.floor.torch_atol == pytest.approx(torch_atol, rel=1e-9)
    assert out.floor.atol == pytest.approx(2 * torch_atol, rel=1e-9)
    assert out.floor.atol < max_abs   # tighter than a floor of 2 x max_abs would be
    assert parity and parity.tolerance.origin == "spec+floor", parity.summary()
    assert out.max_abs > parity.tolerance.atol   # beyond the spec's fp16 atol: failed before
    stored = json.loads(coreml_export.read_metadata(result.path)["gatex.parity"])
    assert stored["passed"] and stored["outputs"][0]["floor"]["raised"]

    path = tmp_path / "old.json"
    old = parity_cli(result.path, "--no-precision-floor", "--json", path)
    assert old.exit_code == 1, old.output
    (verdict,) = json.loads(path.read_text())["results"]
    spec = tolerance_for(["PaGRUCell"], "float16", reductions=("addmm", "linear"))
    assert verdict["tolerance"]["origin"] == "spec"
    assert (verdict["tolerance"]["rtol"], verdict["tolerance"]["atol"]) == (spec.rtol, spec.atol)
    old_out = verdict["outputs"][0]
    assert old_out["floor"] is None and not old_out["passed"]
    assert old_out["max_abs"] == pytest.approx(out.max_abs, rel=1e-12)
    assert "torch fp16" not in old.output and "raised" not in old.output


# -- where no floor applies -----------------------------------------------------------------------

def test_fp32_artifacts_measure_no_floor(tmp_path, monkeypatch):
    def never(*_args, **_kw):
        raise AssertionError("a floor was measured for an fp32 artifact")

    monkeypatch.setattr(check, "measure_torch_error", never)
    path = cases.save(cases.zoo_golu_onnx(), tmp_path / "GoLU.onnx")
    result = check.check_artifact(path)
    assert result and result.tolerance.origin == "spec" and not result.tolerance.floors
    assert result.outputs[0].floor is None
    assert "torch fp16" not in to_markdown([result])
    assert json.loads(to_json([result]))["results"][0]["outputs"][0]["floor"] is None
    assert "precision_floor" not in to_junit([result])


class RefusesHalf(nn.Module):
    """GoLU, with a kernel that (like some CPU kernels) has no fp16 version."""

    def __init__(self) -> None:
        super().__init__()
        self.act = GoLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dtype == torch.float16:
            raise RuntimeError('"golu_cpu" not implemented for \'Half\'')
        return self.act(x)


def test_a_reference_that_cannot_run_in_fp16_falls_back_to_the_spec_and_says_so():
    x = np.random.default_rng(0).normal(0, 3, (64, 8)).astype(np.float16)
    with TorchRuntime(GoLU().half()) as artifact, TorchRuntime(RefusesHalf()) as reference:
        result = compare_runtimes(artifact, reference, {"x": x})
    assert result.dtype == "float16" and result.tolerance.origin == "spec"
    assert not result.tolerance.floors and result.outputs[0].floor is None
    assert any("no fp16 precision floor: torch cannot run this model in float16 on CPU "
               "(RuntimeError: \"golu_cpu\" not implemented for 'Half')" in n
               for n in result.notes), result.notes
    assert result, result.summary()   # GoLU alone in fp16 is within the op's own fp16 spec


def test_a_reference_that_is_not_torch_gets_no_floor_and_a_note(golu_fp16):
    x = zoo.held_out("GoLU")[0].numpy().astype(np.float16)
    fp32 = cases.zoo_golu_onnx()
    with OrtRuntime(golu_fp16["good"]) as artifact, OrtRuntime(fp32) as reference:
        result = compare_runtimes(artifact, reference, {"x": x})
    assert result.outputs[0].floor is None and result.tolerance.origin == "spec"
    assert any("not a torch model" in n for n in result.notes), result.notes


def test_bf16_gets_its_own_floor():
    # an artifact that is torch's own bf16 model: exactly on its yardstick, floor = 2x it
    model = zoo.load("GoLU")
    x = zoo.held_out("GoLU")[0][:128]
    feeds = {"x": x.to(torch.bfloat16).view(torch.int16).numpy()}
    import ml_dtypes

    feeds["x"] = feeds["x"].view(ml_dtypes.bfloat16)
    with TorchRuntime(copy.deepcopy(model).bfloat16()) as artifact, \
            TorchRuntime(model) as reference:
        result = compare_runtimes(artifact, reference, feeds)
    (out,) = result.outputs
    with torch.no_grad():
        ref = model(x.bfloat16().float()).double()
        diff = (copy.deepcopy(model).bfloat16()(x.bfloat16()).double() - ref).abs()
    needs = float((diff - result.tolerance.rtol * ref.abs()).max())
    assert result.dtype == "bfloat16" and out.floor is not None
    assert out.floor.dtype == "bfloat16" and out.floor.torch_max_abs == float(diff.max())
    assert out.floor.torch_atol == pytest.approx(max(needs, 0.0))
    assert out.max_abs == float(diff.max()) and result, result.summary()
    assert "2 x torch's own bf16 error" in result.tolerance.describe()


def test_assert_parity_takes_the_floor_and_can_turn_it_off(golu_fp16):
    from gatex.testing import assert_parity

    x = zoo.held_out("GoLU")[0].numpy().astype(np.float16)
    model = zoo.load("GoLU")
    result = assert_parity(golu_fp16["good"], model, x)
    assert result.outputs[0].floor is not None and result.outputs[0].floor.raised
    plain = assert_parity(golu_fp16["good"], model, x, precision_floor=False)
    assert plain.outputs[0].floor is None and plain.tolerance.origin == "spec"
    assert plain.outputs[0].max_abs == result.outputs[0].max_abs
    with pytest.raises(AssertionError, match=re.escape(FLOOR_TEXT)):
        assert_parity(golu_fp16["broken"], model, x)
