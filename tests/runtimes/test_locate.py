"""``--locate``: with one gatex op deliberately broken (its node runs a copy of the function whose
output is scaled), locate names exactly that op (index, op, node, torch module), not another;
on a correct artifact every op agrees; where ops cannot be paired it says why."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
from runtime_cases import break_gatex_node, golu_mlp_onnx, save, zoo_golu_onnx
from typer.testing import CliRunner

from gatex.cli import app
from gatex.models import zoo
from gatex.ops import Tolerance
from gatex.pipeline.check import check_artifact
from gatex.runtimes.locate import locate


def locate_json(path, tmp_path) -> tuple[int, dict]:
    out = tmp_path / "v.json"
    result = CliRunner().invoke(app, ["parity", str(path), "--locate", "--json", str(out)],
                                env={"COLUMNS": "200"})
    assert result.exit_code in (0, 1), result.output
    return result.exit_code, json.loads(out.read_text())["results"][0]["locate"]


@pytest.mark.parametrize("broken, node, module", [(1, "golu1", "act2"), (0, "golu0", "act1")])
def test_locate_names_the_broken_op_and_not_another(broken, node, module, tmp_path):
    path = save(break_gatex_node(zoo_golu_onnx(), broken), tmp_path / "broken.onnx")
    code, loc = locate_json(path, tmp_path)
    assert code == 1 and loc["matched"]
    assert loc["first_divergence"] == {"index": broken, "op": "GoLU", "node": node,
                                       "module": module}
    assert [(o["index"], o["node"], o["module"]) for o in loc["ops"]] == [
        (0, "golu0", "act1"), (1, "golu1", "act2")]
    # the ops before the broken one agree; the broken one is off by its 1.25 scale
    assert [o["passed"] for o in loc["ops"]][:broken + 1] == [True] * broken + [False]
    assert loc["ops"][broken]["max_rel"] == pytest.approx(0.25, rel=1e-3)  # + fp32 rounding
    assert loc["summary"].startswith(f"first diverging gatex op: #{broken + 1} of 2, GoLU "
                                     f"(node '{node}', torch module '{module}'): ")


def test_locate_on_a_correct_artifact_says_all_ops_agree(zoo_golu, tmp_path):
    code, loc = locate_json(zoo_golu, tmp_path)
    assert code == 0 and loc["first_divergence"] is None and loc["reason"] == ""
    assert [o["passed"] for o in loc["ops"]] == [True, True]
    assert loc["summary"] == ("all 2 gatex ops agree within tolerance; any difference arises in "
                              "standard ops")


def test_locate_on_a_real_export_names_the_second_paglu(pa_glu_export, tmp_path):
    broken = save(break_gatex_node(onnx.load(str(pa_glu_export.path)), 1, scale=1.01),
                  tmp_path / "paGLU-broken.onnx")
    good = check_artifact(pa_glu_export.path, locate=True)
    bad = check_artifact(broken, locate=True)
    assert good and good.locate.first_divergence is None
    assert [(c.op, c.node, c.module) for c in good.locate.comparisons] == [
        ("paGLU", "node_paglu", "unit1"), ("paGLU", "node_paglu_1", "unit2")]
    assert not bad
    first = bad.locate.first_divergence
    assert (first.index, first.op, first.node, first.module) == (1, "paGLU", "node_paglu_1",
                                                                 "unit2")
    assert bad.locate.comparisons[0].parity.passed
    assert first.parity.max_rel == pytest.approx(0.01, rel=0.05)  # + fp32 rounding near 0


def test_locate_says_why_when_ops_cannot_be_paired(tiny):
    from runtime_cases import tiny_torch

    model = tiny_torch(tiny.weights)
    feeds = [{"x": tiny.x}]
    tol = Tolerance(1e-4, 1e-5)
    linears = [(tiny.weights["fc1.weight"], tiny.weights["fc1.bias"]),
               (tiny.weights["fc2.weight"], tiny.weights["fc2.bias"])]
    inline = golu_mlp_onnx(linears, [False, False])  # no gatex nodes, as an inline export
    assert "no gatex-domain nodes" in locate(inline, model, feeds, feeds, tol).unmatched_reason
    one_op = golu_mlp_onnx(linears, [True, False])   # torch runs two GoLUs, the graph has one
    reason = locate(one_op, model, feeds, feeds, tol).unmatched_reason
    assert reason == ("torch ran 2 gatex ops (GoLU, GoLU) and the ONNX graph has 1 gatex nodes "
                      "(GoLU): they cannot be paired one to one")


def test_locate_compares_the_values_torch_computes(zoo_golu):
    # op #2's torch value, recomputed here from the zoo model's layers, is what locate compared
    import torch

    model = zoo.load("GoLU")
    x = zoo.held_out("GoLU")[0]
    result = check_artifact(zoo_golu, locate=True)
    with torch.no_grad():
        h2 = model.act2(model.fc2(model.act1(model.fc1(x)))).numpy()
    second = result.locate.comparisons[1].parity
    assert second.shape == h2.shape == (450, 32)
    assert second.max_abs < 1e-5 and np.isfinite(h2).all()
