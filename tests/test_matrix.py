"""The parity matrix across CI runners (issue 17): the matrix file, the plan over runner kinds
and shards, running shards, merging, the ratchet baseline and the CI examples.

The end-to-end case runs a small matrix (2 zoo units x ONNX fp32 + CoreML fp16 emulated +
the TensorRT bundle graph) as 3 shards, one with 2 worker processes, and checks that the
merged verdict equals one unsharded run, cell for cell."""

from __future__ import annotations

import importlib.util
import json
import tempfile
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from gatex.cli import app
from gatex.matrix import merge as merging
from gatex.matrix.plan import parse_shard, plan, render
from gatex.matrix.spec import DEFAULT_COST, MatrixError, load_matrix
from gatex.models import zoo

ROOT = Path(__file__).resolve().parents[1]
SMALL = """
[matrix]
runners = ["linux"]
[[matrix.models]]
zoo = ["GoLU", "CGConv2d"]
[[matrix.targets]]
to = "onnx"
dtypes = ["fp32"]
[[matrix.targets]]
to = "coreml"
precisions = ["fp16"]
[[matrix.targets]]
to = "trt"
precisions = ["fp32"]
"""


def gatex(*args):
    return CliRunner().invoke(app, [str(a) for a in args], env={"COLUMNS": "200"})


@pytest.fixture(scope="module")
def small(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("matrix") / "gatex.toml"
    path.write_text(SMALL)
    return path


def test_the_zoo_matrix_of_the_examples_has_every_unit_and_target():
    m = load_matrix(ROOT / "examples" / "ci" / "gatex.toml")
    cells = m.cells()
    assert len(cells) == len(zoo.ZOO) * 4                  # onnx fp32 + fp16, coreml, trt
    assert {c.runner(m.runners) for c in cells} == {"linux", "macos", "gpu"}
    assert {c.id.split("/", 1)[1] for c in cells} == {"onnx-portable/fp32", "onnx-portable/fp16",
                                                      "coreml/fp16", "trt/fp32"}


def test_plan_balances_shards_and_is_the_same_every_time(small):
    m = load_matrix(small)
    shards = plan(m, 3)
    assert [s.name for s in shards] == ["1/3", "2/3", "3/3"]
    ids = sorted(c.id for s in shards for c in s.cells)
    assert ids == sorted(c.id for c in m.cells())            # every cell exactly once
    loads = [s.cost({}) for s in shards]
    assert max(loads) - min(loads) <= max(DEFAULT_COST.values())
    assert [s.cells for s in plan(m, 3)] == [s.cells for s in shards]
    github = json.loads(render(shards, "github", m))
    assert [e["shard"] for e in github["include"]] == ["1/3", "2/3", "3/3"]
    assert yaml.safe_load(render(shards, "gitlab", m))["parallel"]["matrix"][0]["RUNNER"] == \
        "linux"
    # measured costs move cells: a slow cell gets a shard of its own
    slow = plan(m, 3, costs={"GoLU/coreml/fp16": 1000.0})
    alone = next(s for s in slow if any(c.id == "GoLU/coreml/fp16" for c in s.cells))
    assert len(alone.cells) == 1


def test_coreml_goes_to_macos_and_trt_to_gpu_only_where_declared(tmp_path):
    path = tmp_path / "m.toml"
    path.write_text(SMALL.replace('runners = ["linux"]', 'runners = ["linux", "macos"]'))
    m = load_matrix(path)
    kinds = {c.id: c.runner(m.runners) for c in m.cells()}
    assert kinds["GoLU/coreml/fp16"] == "macos" and kinds["GoLU/trt/fp32"] == "linux"
    assert {s.runner for s in plan(m, 2, runner="macos")} == {"macos"}
    # the packages the macOS shards check are converted by the linux shards
    linux = plan(m, 2, runner="linux")
    assert sorted(c.id for s in linux for c in s.exports) == ["CGConv2d/coreml/fp16",
                                                              "GoLU/coreml/fp16"]
    assert not any(c.target.to == "coreml" for s in linux for c in s.cells)


def test_linux_exports_what_macos_checks_with_from(tmp_path):
    """Export on linux, predict on macOS: the linux shard converts the CoreML packages (status
    exported, no verdict), the macos shard checks them with --from (emulated on this Linux
    machine), and the merge counts each cell once; without the macos shard they are missing."""
    path = tmp_path / "m.toml"
    path.write_text("[matrix]\nrunners = ['linux', 'macos']\n"
                    "[[matrix.models]]\nzoo = 'GoLU'\n[[matrix.targets]]\nto = 'onnx'\n"
                    "[[matrix.targets]]\nto = 'coreml'\nprecisions = ['fp16']\n")
    linux = gatex("matrix", "run", path, "--runner", "linux", "--out", tmp_path / "L")
    assert linux.exit_code == 0 and "1 exported for another runner" in linux.stdout, linux.stdout
    mac = gatex("matrix", "run", path, "--runner", "macos", "--from", tmp_path / "L", "--out",
                tmp_path / "M")
    assert mac.exit_code == 0, mac.stdout + mac.stderr
    assert not (tmp_path / "M" / "cells").exists()        # checked, not converted again
    both = gatex("matrix", "merge", tmp_path / "L", tmp_path / "M", "--json", tmp_path / "v.json")
    assert both.exit_code == 0, both.stdout
    doc = json.loads((tmp_path / "v.json").read_text())
    assert [c["id"] for c in doc["cells"]] == ["GoLU/onnx-portable/fp32", "GoLU/coreml/fp16"]
    assert all(c["status"] == "pass" for c in doc["cells"])
    alone = gatex("matrix", "merge", tmp_path / "L")
    assert alone.exit_code == 1 and "GoLU/coreml/fp16`: missing" in alone.stdout


@pytest.mark.parametrize(("text", "message"), [
    ("", "no [matrix] table"),
    ("[matrix]\n", "needs at least one [[matrix.models]] entry"),
    ("[matrix]\nrunners = ['linux', 'tpu']\n", "runners are linux, macos, gpu"),
    ("[matrix]\n[[matrix.models]]\nzoo = 'Nope'\n", "models[0]: no zoo model for unit 'Nope'"),
    ("[matrix]\n[[matrix.models]]\nzoo = 'GoLU'\ncolour = 1\n", "models[0]: unknown key 'colour'"),
    ("[matrix]\n[[matrix.models]]\nname = 'n'\nmodel = 'x.py:build'\n",
     "models[0]: give input_shape"),
    ("[matrix]\n[[matrix.models]]\nzoo = 'GoLU'\n[[matrix.targets]]\nto = 'tflite'\n",
     "targets[0]: to must be one of onnx, openvino, coreml, trt"),
    ("[matrix]\n[[matrix.models]]\nzoo = 'GoLU'\n[[matrix.targets]]\nto = 'onnx'\n"
     "dtypes = ['fp8']\n", "targets[0]: onnx dtypes are fp32, fp16; got 'fp8'"),
    ("[matrix]\n[[matrix.models]]\nzoo = 'GoLU'\n[[matrix.targets]]\nto = 'coreml'\n"
     "dtypes = ['fp16']\n", "targets[0]: coreml targets take precisions, not dtypes"),
    ("[matrix]\n[[matrix.models]]\nzoo = 'GoLU'\n[[matrix.targets]]\nto = 'onnx'\n"
     "options = { colour = 1 }\n", "targets[0]: unknown option 'colour'"),
    ("[matrix\n", "is not valid TOML"),
])
def test_a_bad_matrix_file_is_one_line_naming_the_entry_and_exit_2(tmp_path, text, message):
    path = tmp_path / "m.toml"
    path.write_text(text)
    with pytest.raises(MatrixError, match=None) as info:
        load_matrix(path)
    assert message in str(info.value) and "\n" not in str(info.value)
    result = gatex("matrix", "plan", path)
    assert result.exit_code == 2 and message in result.stderr, result.stderr


def test_bad_shards_and_missing_outputs_are_one_line_and_exit_2(small, tmp_path):
    assert parse_shard("2/3") == (2, 3)
    for bad in ("3", "0/3", "4/3", "a/b"):
        with pytest.raises(MatrixError, match="--shard"):
            parse_shard(bad)
    result = gatex("matrix", "merge", tmp_path)
    assert result.exit_code == 2
    assert "holds no gatex matrix manifest" in result.stderr
    assert gatex("matrix", "run", small, "--out", tmp_path / "o", "--shard", "5/2").exit_code == 2
    assert gatex("matrix", "run", small, "--out", tmp_path / "o", "--runner", "gpu").exit_code == 2


@pytest.fixture(scope="module")
def runs(small, tmp_path_factory):
    """One unsharded run, and the same matrix as 3 shards (the second with --jobs 2)."""
    base = tmp_path_factory.mktemp("runs")
    whole = gatex("matrix", "run", small, "--out", base / "whole")
    assert whole.exit_code == 0, whole.stdout + whole.stderr
    for i in (1, 2, 3):
        jobs = 2 if i == 2 else 1
        r = gatex("matrix", "run", small, "--shard", f"{i}/3", "--jobs", jobs, "--out",
                  base / f"s{i}")
        assert r.exit_code == 0, r.stdout + r.stderr
    return base


def _verdicts(doc: dict) -> dict:
    return {c["id"]: (c["status"], {k: round(v, 12) for k, v in c["outputs"].items()})
            for c in doc["cells"]}


def test_three_shards_merge_to_the_verdict_of_one_run(runs, tmp_path):
    one, three = tmp_path / "one.json", tmp_path / "three.json"
    assert gatex("matrix", "merge", runs / "whole", "--json", one).exit_code == 0
    result = gatex("matrix", "merge", runs / "s1", runs / "s2", runs / "s3", "--json", three,
                   "--junit", tmp_path / "j.xml", "--markdown", tmp_path / "m.md")
    assert result.exit_code == 0, result.stdout + result.stderr
    a, b = json.loads(one.read_text()), json.loads(three.read_text())
    assert len(a["cells"]) == 6 and a["passed"] and b["passed"] and b["missing"] == []
    assert _verdicts(a) == _verdicts(b)
    suites = ET.parse(tmp_path / "j.xml").getroot()
    assert suites.get("tests") == "6" and suites.get("failures") == "0"
    assert {s.get("name") for s in suites} == {"GoLU", "CGConv2d"}
    md = (tmp_path / "m.md").read_text()
    assert md.startswith("## gatex matrix: PASSED")
    assert "| model | onnx-portable/fp32 | coreml/fp16 | trt/fp32 |" in md
    for rec in b["cells"]:   # each cell's artifact and verdict lie in its shard's folder
        assert rec["artifact"] and not Path(rec["artifact"]).is_absolute()
    assert (runs / "s1" / "verdicts").is_dir()


def test_a_shard_never_run_is_missing_and_fails_the_matrix(runs):
    result = gatex("matrix", "merge", runs / "s1", runs / "s2")
    assert result.exit_code == 1
    assert "missing" in result.stdout and "cells failed or missing" in result.stderr


def test_from_checks_the_artifacts_another_run_exported(small, runs, tmp_path):
    result = gatex("matrix", "run", small, "--from", runs / "whole", "--out", tmp_path / "o")
    assert result.exit_code == 0, result.stdout + result.stderr
    (manifest,) = (tmp_path / "o").glob("manifest-*.json")
    records = json.loads(manifest.read_text())["cells"]
    assert not (tmp_path / "o" / "cells").exists()        # nothing exported again
    assert all(Path(r["artifact"]).is_absolute() for r in records)


def test_the_baseline_ratchets(runs, tmp_path):
    baseline = tmp_path / "baseline.json"
    first = gatex("matrix", "merge", runs / "whole", "--baseline", baseline, "--update-baseline")
    assert first.exit_code == 0 and baseline.exists()
    recorded = json.loads(baseline.read_text())["cells"]
    assert set(recorded) == {c.id for c in load_matrix(_matrix(runs)).cells()}
    # a tampered run: one cell's error grown past its record (by 1 x its atol)
    tampered = tmp_path / "tampered"
    tampered.mkdir()
    (manifest,) = (runs / "whole").glob("manifest-*.json")
    doc = json.loads(manifest.read_text())
    cell = next(c for c in doc["cells"] if c["id"] == "GoLU/onnx-portable/fp32")
    (name, error), = cell["outputs"].items()
    cell["outputs"][name] = error + cell["atol"]
    (tampered / manifest.name).write_text(json.dumps(doc))
    bad = gatex("matrix", "merge", tampered, "--baseline", baseline)
    assert bad.exit_code == 1 and "ratchet: " in bad.stdout and "GoLU/onnx-portable/fp32" in \
        bad.stderr
    # an improved run tightens the record; the regression is never written
    cell["outputs"][name] = error / 2
    (tampered / manifest.name).write_text(json.dumps(doc))
    good = gatex("matrix", "merge", tampered, "--baseline", baseline, "--update-baseline")
    assert good.exit_code == 0
    tightened = json.loads(baseline.read_text())["cells"]["GoLU/onnx-portable/fp32"]
    assert tightened["outputs"][name] == pytest.approx(error / 2)
    assert gatex("matrix", "merge", runs / "whole", "--baseline", baseline).exit_code == 1


def _matrix(runs: Path):
    (manifest,) = (runs / "whole").glob("manifest-*.json")
    return json.loads(manifest.read_text())["matrix"]


def test_latency_regressions_fail_past_the_allowed_percent():
    cell = {"id": "a/onnx/fp32", "model": "a", "status": "pass", "outputs": {"y": 1e-6},
            "atol": 1e-5, "latency_ms": 3.0, "message": ""}
    merged = merging.Merged([dict(cell)], [])
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "b.json"
        path.write_text(json.dumps({"schema": merging.BASELINE_SCHEMA, "cells": {
            "a/onnx/fp32": {"outputs": {"y": 1e-6}, "latency_ms": 1.0}}}))
        merging.ratchet(merged, path, max_regression=50)
        assert merged.cells[0]["status"] == "fail" and "latency 3 ms" in merged.cells[0]["message"]
        ok = merging.Merged([dict(cell, latency_ms=1.4)], [])
        merging.ratchet(ok, path, max_regression=50)
        assert ok.passed


def test_the_ci_examples_are_valid_and_run_plan_shards_merge():
    github = yaml.safe_load((ROOT / "examples" / "ci" / "github-actions.yml").read_text())
    jobs = github["jobs"]
    assert set(jobs) == {"plan", "linux", "macos", "gpu", "merge"}
    assert "gatex matrix plan" in jobs["plan"]["steps"][-1]["run"]
    assert any("--from linux-out" in s.get("run", "") for s in jobs["macos"]["steps"])
    for kind in ("linux", "macos", "gpu"):
        assert jobs[kind]["strategy"]["matrix"] == f"${{{{ fromJSON(needs.plan.outputs.{kind}) }}}}"
        assert any("gatex matrix run" in s.get("run", "") and f"--runner {kind}" in s["run"]
                   for s in jobs[kind]["steps"])
    assert jobs["gpu"]["runs-on"] == ["self-hosted", "linux", "gpu"]
    assert any("gatex matrix merge" in s.get("run", "") for s in jobs["merge"]["steps"])
    gitlab = yaml.safe_load((ROOT / "examples" / "ci" / "gitlab-ci.yml").read_text())
    assert gitlab["matrix-linux"]["parallel"]["matrix"][0]["SHARD"] == ["1/3", "2/3", "3/3"]
    assert "gatex matrix merge" in gitlab["merge"]["script"][0]
    assert gitlab["merge"]["artifacts"]["reports"]["junit"] == "matrix.xml"


def test_a_model_of_the_teams_own_and_openvino_cells(tmp_path):
    """A ``model = "file.py:build"`` entry with an input shape, to ONNX and (where OpenVINO is
    installed) OpenVINO; picked up again with --from, checked against the factory's model."""
    (tmp_path / "nets.py").write_text(
        "import torch\nfrom gatex import models\n\n"
        "def build():\n    torch.manual_seed(0)\n"
        "    return torch.nn.Sequential(torch.nn.Linear(8, 16), models.GoLU(), "
        "torch.nn.Linear(16, 4))\n")
    openvino = importlib.util.find_spec("openvino") is not None
    path = tmp_path / "m.toml"
    path.write_text(
        "[matrix]\n[[matrix.models]]\nname = \"mlp\"\n"
        f"model = \"{tmp_path / 'nets.py'}:build\"\ninput_shape = \"2,8\"\n"
        "[[matrix.targets]]\nto = \"onnx\"\n"
        + ("[[matrix.targets]]\nto = \"openvino\"\n" if openvino else ""))
    first = gatex("matrix", "run", path, "--out", tmp_path / "a")
    assert first.exit_code == 0, first.stdout + first.stderr
    again = gatex("matrix", "run", path, "--from", tmp_path / "a", "--out", tmp_path / "b")
    assert again.exit_code == 0, again.stdout + again.stderr
    (manifest,) = (tmp_path / "b").glob("manifest-*.json")
    cells = json.loads(manifest.read_text())["cells"]
    assert [c["id"] for c in cells] == ["mlp/onnx-portable/fp32"] + \
        (["mlp/openvino/fp32"] if openvino else [])
    assert all(c["status"] == "pass" and c["outputs"] for c in cells)
    assert cells[0]["latency_ms"] > 0
