"""``gatex inspect``: artifact facts and per-layer sparsity, JSON keys, bad files; the export
options --compact / --sparse-weights on the command line."""

from __future__ import annotations

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from gatex.cli import app

WIDE = {"COLUMNS": "200"}
# gatex.artifacts.inspect's docstring: the documented --json keys
TOP_KEYS = {"path", "format", "file_bytes", "ir_version", "opsets", "metadata", "custom_ops",
            "ops", "functions", "weights", "layers", "parameters", "zeros", "sparsity"}
WEIGHT_KEYS = {"name", "shape", "dtype", "elements", "zeros", "sparsity", "bytes", "storage"}
LAYER_KEYS = {"name", "elements", "zeros", "sparsity", "bytes"}


def invoke(*args: str):
    return CliRunner().invoke(app, list(args), env=WIDE)


@pytest.fixture(scope="module")
def gated_dense_onnx(tmp_path_factory):
    """The zoo GatedDense model exported (portable, fp32) without and with sparse weights."""
    from gatex.exporters.compact import fold_gates
    from gatex.exporters.onnx import trace_onnx, write_onnx
    from gatex.models import zoo

    model = zoo.load("GatedDense")
    x, _ = zoo.held_out("GatedDense")
    out = tmp_path_factory.mktemp("inspect")
    dense = write_onnx(trace_onnx(model, (x[:4],)), out / "dense.onnx", unit="GatedDense").path
    sparse = write_onnx(trace_onnx(fold_gates(model), (x[:4],)), out / "sparse.onnx",
                        sparse_weights=True).path
    return model, dense, sparse


def test_inspect_json_reports_keys_ops_and_exact_sparsity(gated_dense_onnx):
    model, dense, _ = gated_dense_onnx
    result = invoke("inspect", str(dense), "--json")
    assert result.exit_code == 0, result.output
    info = json.loads(result.output)
    assert set(info) == TOP_KEYS
    assert all(set(w) == WEIGHT_KEYS for w in info["weights"])
    assert all(set(x) == LAYER_KEYS for x in info["layers"])
    assert info["format"] == "onnx" and info["ir_version"] == 10
    assert info["opsets"] == {"": 21, "gatex": 1}
    assert info["metadata"]["gatex.unit"] == "GatedDense"
    assert info["functions"] == ["gatex::GatedDense"]
    # the head is a second attribute variant (linear), written inline: 2 custom nodes
    assert info["custom_ops"] == {"gatex::GatedDense": 2}
    assert info["file_bytes"] == dense.stat().st_size
    weights = {w["name"]: w for w in info["weights"]}
    for name in ("dense1", "dense2", "head"):
        layer = getattr(model, name)
        gates = weights[f"{name}.gates"]
        assert gates["zeros"] == int((layer.gates == 0).sum())
        assert gates["sparsity"] == pytest.approx(layer.sparsity)
        assert gates["bytes"] == layer.gates.numel() * 4 and gates["storage"] == "dense"
        kernel_zeros = int((layer.kernel == 0).sum())
        assert weights[f"{name}.kernel"]["zeros"] == kernel_zeros
        bias_zeros = int((layer.bias == 0).sum())
        group = next(x for x in info["layers"] if x["name"] == name)
        assert group["zeros"] == gates["zeros"] + kernel_zeros + bias_zeros
    params = sum(p.numel() for p in model.parameters()) + sum(b.numel() for b in model.buffers())
    assert info["parameters"] == params


def test_inspect_sparse_file_counts_stored_bytes(gated_dense_onnx):
    model, _, sparse = gated_dense_onnx
    info = json.loads(invoke("inspect", str(sparse), "--json").output)
    kernel = next(w for w in info["weights"] if w["name"] == "dense1.kernel")
    nonzero = int(((model.dense1.kernel * model.dense1.gates) != 0).sum())
    assert kernel["storage"] == "sparse"
    assert kernel["bytes"] == nonzero * (4 + 8)     # fp32 values + int64 indices
    assert kernel["elements"] - kernel["zeros"] == nonzero


def test_inspect_table_names_layers_and_totals(gated_dense_onnx):
    _, dense, _ = gated_dense_onnx
    result = invoke("inspect", str(dense))
    assert result.exit_code == 0, result.output
    for text in ("IR version 10", "custom ops: gatex::GatedDense x2", "dense1.gates",
                 "weights by layer", "metadata gatex.unit = GatedDense", "exact zeros"):
        assert text in result.output


def test_inspect_reports_external_data_size(tmp_path):
    import onnx
    from onnx import helper, numpy_helper

    w = np.zeros((64, 64), np.float32)
    w[0, :8] = 1
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["y"])], "g",
        [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1, 64])],
        [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1, 64])],
        initializer=[numpy_helper.from_array(w, "w")])
    onnx.save_model(helper.make_model(graph), tmp_path / "m.onnx", save_as_external_data=True,
                    location="m.onnx.data", size_threshold=0)
    info = json.loads(invoke("inspect", str(tmp_path / "m.onnx"), "--json").output)
    assert info["file_bytes"] == sum(p.stat().st_size for p in tmp_path.iterdir())
    assert info["weights"] == [{"name": "w", "shape": [64, 64], "dtype": "float32",
                                "elements": 4096, "zeros": 4088, "sparsity": 4088 / 4096,
                                "bytes": 16384, "storage": "external"}]
    (tmp_path / "m.onnx.data").unlink()
    result = invoke("inspect", str(tmp_path / "m.onnx"))
    assert result.exit_code == 2 and "external data file m.onnx.data is missing" in result.output


@pytest.mark.parametrize("name, content, message", [
    ("garbage.onnx", b"not a protobuf \xff\xfe", "is not a readable ONNX model"),
    ("missing.onnx", None, "does not exist"),
    ("model.txt", b"x", "reads .onnx files and .mlpackage packages"),
    ("empty.mlpackage", None, "does not exist"),
])
def test_inspect_bad_file_is_one_line_exit_2(tmp_path, name, content, message):
    path = tmp_path / name
    if content is not None:
        path.write_bytes(content)
    result = invoke("inspect", str(path))
    assert result.exit_code == 2
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0]


def test_inspect_coreml_package(tmp_path):
    pytest.importorskip("coremltools")
    import gatex

    result = gatex.export("GatedDense", to="coreml", out_dir=tmp_path, check=False)
    info = json.loads(invoke("inspect", str(result.path), "--json").output)
    assert info["format"] == "mlpackage"
    assert info["metadata"]["gatex.unit"] == "GatedDense"
    assert info["ops"]["linear"] == 3
    model = gatex.models.zoo.load("GatedDense")
    # each folded weight (K * G).T in fp16: its zeros are exactly the pruned weights
    weights = sorted((w for w in info["weights"] if len(w["shape"]) == 2),
                     key=lambda w: w["name"])
    for w, layer in zip(weights, (model.dense1, model.dense2, model.head)):
        assert w["shape"] == [layer.out_features, layer.in_features]
        assert w["zeros"] == int(((layer.kernel * layer.gates).half() == 0).sum())
    # stored sparse: each weight still listed once, expanded, with the bytes of mask + non-zeros
    sparse = gatex.export("GatedDense", to="coreml", out_dir=tmp_path / "sparse", check=False,
                          sparse_weights=True)
    info = json.loads(invoke("inspect", str(sparse.path), "--json").output)
    assert info["ops"]["constexpr_sparse_to_dense"] == 2     # the head is below 2048 elements
    packed = sorted((w for w in info["weights"] if len(w["shape"]) == 2),
                    key=lambda w: w["name"])
    assert [w["storage"] for w in packed] == ["sparse", "sparse", "dense"]
    for w, dense in zip(packed, weights):
        assert (w["shape"], w["zeros"], w["elements"]) == \
            (dense["shape"], dense["zeros"], dense["elements"])
    for w in packed[:2]:   # fp16 non-zeros plus a bit per element (rounded up to bytes)
        assert w["bytes"] == 2 * (w["elements"] - w["zeros"]) + -(-w["elements"] // 8) + 8
    assert all("mask" not in w["name"] and "nonzero" not in w["name"] for w in info["weights"])


def test_export_cli_compact_and_sparse_weights(tmp_path):
    result = invoke("export", "--unit", "GatedDense", "-o", str(tmp_path), "--compact",
                    "--sparse-weights")
    assert result.exit_code == 0, result.output
    assert "compact dense1: 128 -> " in result.output
    assert "compact head: not compacted: its output is the model's output" in result.output
    assert "pruned weights: ok" in result.output
    info = json.loads(invoke("inspect", str(tmp_path / "GatedDense-portable-fp32.onnx"),
                             "--json").output)
    assert {w["storage"] for w in info["weights"] if w["name"].endswith(".kernel")} == {"sparse"}


def test_export_cli_sparse_weights_is_refused_for_tensorrt(tmp_path):
    result = invoke("export", "--unit", "GatedDense", "--to", "trt", "--sparse-weights",
                    "-o", str(tmp_path))
    assert result.exit_code == 2
    assert "--sparse-weights is not for --to trt" in result.output
    assert list(tmp_path.iterdir()) == []
