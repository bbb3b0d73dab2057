"""OpenVINO as a runtime (issue 14, part 4): gatex parity and gatex bench --backend openvino.

OpenVINO refuses a portable ONNX as written ("No conversion rule found for operations:
gatex.GoLU"); gatex hands it the artifact with its local functions inlined, and says so.
"""

from __future__ import annotations

import json

import pytest
from cli_checks import one_error_line
from runtime_cases import break_gatex_node, save, zoo_golu_onnx
from typer.testing import CliRunner

from gatex.cli import app

pytest.importorskip("openvino", reason="OpenVINO is the openvino extra")


def cli(*args: object):
    return CliRunner().invoke(app, [*map(str, args)], env={"COLUMNS": "200"})


def test_openvino_itself_refuses_the_portable_flavor(zoo_golu) -> None:
    import openvino

    with pytest.raises(Exception, match="gatex"):
        openvino.Core().read_model(str(zoo_golu))


def test_parity_on_openvino_runs_the_inlined_graph_and_says_so(zoo_golu, tmp_path) -> None:
    result = cli("parity", zoo_golu, "--backend", "openvino", "--json", tmp_path / "v.json")
    assert result.exit_code == 0, result.output
    (r,) = json.loads((tmp_path / "v.json").read_text())["results"]
    assert r["runtime"] == "openvino (CPU)" and r["passed"]
    assert any("inlined by gatex" in n and "GoLU" in n for n in r["notes"])
    assert r["inputs"]["samples"] == 450


def test_parity_on_openvino_catches_a_broken_op(tmp_path) -> None:
    broken = save(break_gatex_node(zoo_golu_onnx(), 1), tmp_path / "GoLU-broken.onnx")
    result = cli("parity", broken, "--backend", "openvino")
    assert result.exit_code == 1
    assert "FAIL" in result.output


def test_openvino_backend_takes_onnx_only_in_one_line(tmp_path) -> None:
    package = tmp_path / "m.mlpackage"
    package.mkdir()
    result = cli("parity", package, "--backend", "openvino", "--unit", "GoLU")
    assert result.exit_code == 2
    assert "openvino runs .onnx" in one_error_line(result)


@pytest.mark.slow
def test_bench_times_openvino_beside_onnxruntime_on_one_file(zoo_golu, tmp_path) -> None:
    from gatex.benchmarking.run import bench

    result = bench([zoo_golu], backends="torch,ort,openvino", iterations=5, warmup=1)
    rows = {r.backend: r for r in result.rows}
    assert set(rows) == {"torch", "ort", "openvino"}
    assert rows["openvino"].status == "ok", rows["openvino"].reason
    assert rows["openvino"].artifact == zoo_golu.name == rows["ort"].artifact
