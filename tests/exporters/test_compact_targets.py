"""--compact and --sparse-weights beyond ONNX: CoreML (sparse weights through coremltools'
prune_weights, the pruned-weights check reading an .mlpackage) and the TensorRT bundle's ONNX.

Models are small seeded GatedDense chains (90 % of the gates off, some whole columns off so
compaction removes units), converted without the parity check where a test only reads weights.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from torch import nn
from typer.testing import CliRunner

import gatex
from gatex.errors import BackendUnavailableError, BadInputError
from gatex.exporters import coreml as coreml_export
from gatex.exporters.compact import (
    COMPACTION_KEY,
    CompactionReport,
    check_pruned_weights,
    compact_model,
    effective_weight,
    fold_gates,
)
from gatex.models import GatedDense

try:
    coreml_export.import_coremltools()
except BackendUnavailableError as exc:
    pytest.skip(f"coremltools is not importable ({exc})", allow_module_level=True)

from gatex.cli import app  # noqa: E402


class PrunedNet(nn.Module):
    """64 -> GatedDense(relu) 96 -> GatedDense(tanh) 80 -> nn.Linear 10; 90 % gates off, and
    whole gate columns off in the hidden layers (compaction removes those units)."""

    def __init__(self, seed: int = 0) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.inner = nn.Sequential(GatedDense(64, 96, "relu"), GatedDense(96, 80, "tanh"))
        self.out = nn.Linear(80, 10)
        with torch.no_grad():
            for layer in self.inner:
                layer.kernel.copy_(torch.randn(layer.kernel.shape, generator=g) * 0.3)
                layer.bias.copy_(torch.randn(layer.bias.shape, generator=g) * 0.1)
                gates = (torch.rand(layer.gates.shape, generator=g) > 0.9).float()
                gates[:, ::7] = 0
                layer.gates.copy_(gates)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(self.inner(x))


def _inputs(n: int = 64) -> torch.Tensor:
    return torch.randn(n, 64, generator=torch.Generator().manual_seed(1))


def _program_weights(path: Path) -> dict[str, np.ndarray]:
    """Every const and constexpr output of the package's program, materialised, by var name."""
    program = coreml_export.load_program(path)
    out = {}
    for op in program.functions["main"].operations:
        if op.op_type.startswith("constexpr_"):
            out[op.outputs[0].name] = op.materialized_val_inference()
        elif op.op_type == "const":
            out[op.outputs[0].name] = op.outputs[0].val
    return out


# -- CoreML: sparse weights -----------------------------------------------------------------------

@pytest.mark.parametrize(("precision", "target", "form"), [
    ("fp16", "iOS17", "iOS16"),   # constexpr_sparse_to_dense(nonzero_data, mask uint8, shape)
    ("fp32", "iOS17", "iOS16"),
    ("fp16", "iOS18", "iOS18"),   # constexpr_sparse_to_dense(nonzero_data, mask uint1)
])
def test_sparse_weights_change_no_value(tmp_path, precision, target, form):
    model, x = PrunedNet().eval(), _inputs()
    dense = gatex.export(fold_gates(model), (x[:4],), to="coreml", out_dir=tmp_path / "d",
                         precision=precision, deployment_target=target, check=False)
    sparse = gatex.export(model, (x[:4],), to="coreml", out_dir=tmp_path / "s",
                          precision=precision, deployment_target=target, check=False,
                          sparse_weights=True)
    assert "constexpr_sparse_to_dense" in sparse.artifact.mil_ops
    program = coreml_export.load_program(sparse.path)
    ops = [op for op in program.functions["main"].operations
           if op.op_type == "constexpr_sparse_to_dense"]
    names = {op.name for op in ops}
    want = "_to_fp16" if precision == "fp16" else ""
    assert names == {f"p_inner_{i}_kernel_folded{want}_sparsified" for i in (0, 1)}
    for op in ops:
        assert ("shape" in op.inputs) == (form == "iOS16")
    before, after = _program_weights(dense.path), _program_weights(sparse.path)
    for op in ops:
        original = op.name.removesuffix("_sparsified")
        value = after[op.name]
        # bit for bit: same dtype and shape, every non-zero where it was, zeros only where
        # the dense weight was exactly zero
        assert value.dtype == before[original].dtype == np.dtype(
            "float16" if precision == "fp16" else "float32")
        assert np.array_equal(value, before[original])
        assert np.count_nonzero(value) == op.nonzero_data.val.size
    # the folded weights are K * G exactly (fp32) or its fp16 rounding
    layer = model.inner[1]
    w = after[f"p_inner_1_kernel_folded{want}_sparsified"].astype(np.float32).T
    ref = effective_weight(layer).numpy()
    assert np.array_equal(w, ref.astype(w.dtype if precision == "fp32" else np.float16))
    # the dense weights that stayed dense (nn.Linear's 800 elements: under coremltools' 2048)
    assert not any(k.startswith("p_out_weight") and k.endswith("_sparsified") for k in after)


def test_sparse_package_emulates_equal_to_the_dense_export(tmp_path):
    from gatex.runtimes.coreml_emulator import emulate

    model, x = PrunedNet(1).eval(), _inputs()
    dense = gatex.export(model, (x[:4],), to="coreml", out_dir=tmp_path / "d",
                         precision="fp16", check_inputs=(x,))
    sparse = gatex.export(model, (x[:4],), to="coreml", out_dir=tmp_path / "s",
                          precision="fp16", check_inputs=(x,), sparse_weights=True)
    assert dense.passed and sparse.passed and sparse.parity and sparse.pruned
    feeds = {"x": x.numpy()}
    a, b = emulate(dense.path, feeds), emulate(sparse.path, feeds)
    assert a.keys() == b.keys()
    for k in a:
        assert np.array_equal(a[k], b[k])
    size = {p: sum(f.stat().st_size for f in r.path.rglob("weight.bin"))
            for p, r in (("dense", dense), ("sparse", sparse))}
    assert size["sparse"] < 0.5 * size["dense"]


@pytest.mark.parametrize("target", ["iOS15", "macOS12", "watchOS8", "tvOS15"])
def test_sparse_weights_need_an_ios16_target(tmp_path, target):
    with pytest.raises(BadInputError, match=f"--sparse-weights needs deployment target iOS16 "
                                            f".*got --target {target}"):
        gatex.export(PrunedNet(), (_inputs(4),), to="coreml", out_dir=tmp_path,
                     deployment_target=target, sparse_weights=True)
    assert list(tmp_path.iterdir()) == []


def test_cli_sparse_weights_with_an_old_target_is_one_line_exit_2(tmp_path):
    from cli_checks import one_error_line

    result = CliRunner().invoke(app, ["export", "--unit", "GatedDense", "--to", "coreml",
                                      "--target", "iOS15", "--sparse-weights", "-o",
                                      str(tmp_path)], env={"COLUMNS": "200"})
    assert result.exit_code == 2, result.output
    assert "--sparse-weights needs deployment target iOS16" in one_error_line(result)
    assert list(tmp_path.iterdir()) == []


def test_cli_sparse_weights_for_trt_is_refused(tmp_path):
    from cli_checks import one_error_line

    result = CliRunner().invoke(app, ["export", "--unit", "GatedDense", "--to", "trt",
                                      "--sparse-weights", "-o", str(tmp_path)],
                                env={"COLUMNS": "200"})
    assert result.exit_code == 2, result.output
    assert "--sparse-weights is not for --to trt" in one_error_line(result)
    assert list(tmp_path.iterdir()) == []


# -- CoreML: compaction and the pruned-weights check ------------------------------------------

def test_coreml_compact_sparse_export_of_the_zoo_model(tmp_path):
    result = gatex.export("GatedDense", to="coreml", out_dir=tmp_path, precision="fp16",
                          compact=True, sparse_weights=True)
    assert result.passed and result.parity and result.pruned
    units = {x.name: (x.units_before, x.units_after) for x in result.compaction.layers}
    assert units["dense1"][1] < 128 and units["dense2"][1] < 64 and units["head"] == (10, 10)
    assert sum(x.removed for x in result.pruned.layers) > 0
    weights = _program_weights(result.path)
    shapes = {k.split("_kernel")[0]: v.shape for k, v in weights.items()
              if "_kernel_folded" in k and v.ndim == 2}
    assert shapes["p_dense1"] == (units["dense1"][1], 64)
    assert shapes["p_dense2"] == (units["dense2"][1], units["dense1"][1])
    assert shapes["p_head"] == (10, units["dense2"][1])
    meta = coreml_export.read_metadata(result.path)
    recorded = CompactionReport.from_json(meta[COMPACTION_KEY])
    assert recorded == result.compaction
    assert json.loads(meta[coreml_export.GATED_WEIGHTS_KEY]).keys() == {"dense1", "dense2",
                                                                        "head"}


def _corrupt_one_pruned_weight(package: Path, weight: np.ndarray, at: tuple[int, int]) -> None:
    """Write a non-zero into the stored (dense, fp32, (out, in)) weight at (in, out) ``at``:
    find the weight's bytes in the package's blob file and change one element."""
    (blob,) = package.rglob("weight.bin")
    data = bytearray(blob.read_bytes())
    stored = np.ascontiguousarray(weight.T.astype(np.float32))
    offset = bytes(data).find(stored.tobytes())
    assert offset >= 0 and bytes(data).find(stored.tobytes(), offset + 1) < 0
    flat = at[1] * stored.shape[1] + at[0]
    data[offset + 4 * flat: offset + 4 * flat + 4] = np.float32(0.5).tobytes()
    blob.write_bytes(bytes(data))


def test_coreml_pruned_weights_check_catches_an_unzeroed_weight(tmp_path):
    model = PrunedNet(2).eval()
    result = gatex.export(model, (_inputs(4),), to="coreml", out_dir=tmp_path,
                          precision="fp32", check=False)
    good = check_pruned_weights(model, result.path)
    assert good and [x.name for x in good.layers] == ["inner.0", "inner.1"]
    assert good.layers[1].pruned == int((effective_weight(model.inner[1]) == 0).sum())
    w = effective_weight(model.inner[1]).numpy()
    i, j = map(int, np.argwhere(w == 0)[5])
    _corrupt_one_pruned_weight(result.path, w, (i, j))
    bad = check_pruned_weights(model, result.path)
    assert not bad
    layer = next(x for x in bad.layers if x.name == "inner.1")
    assert (layer.violations, layer.first) == (1, (i, j))
    assert "inner.1: 1 weights pruned in the source are non-zero" in bad.summary()
    assert bad.layers[0].passed


def test_coreml_pruned_weights_check_names_a_layer_it_cannot_find(tmp_path):
    model = PrunedNet(3).eval()
    result = gatex.export(model, (_inputs(4),), to="coreml", out_dir=tmp_path,
                          precision="fp32", check=False)
    other = nn.Sequential(model.inner[0], nn.Identity(), model.inner[1])   # other names
    check = check_pruned_weights(other, result.path)
    assert not check
    assert [x.note for x in check.layers] == [
        "no weight for layer 0 in the CoreML program", "no weight for layer 2 in the CoreML "
        "program"]
    assert "pruned weights: FAILED" in check.summary()


def test_coreml_pruned_weights_check_works_without_the_recorded_names(tmp_path):
    import coremltools as ct

    model = PrunedNet(4).eval()
    result = gatex.export(model, (_inputs(4),), to="coreml", out_dir=tmp_path,
                          precision="fp16", check=False, sparse_weights=True)
    mlmodel = ct.models.MLModel(str(result.path), skip_model_load=True)
    del mlmodel.user_defined_metadata[coreml_export.GATED_WEIGHTS_KEY]
    mlmodel.save(str(tmp_path / "bare.mlpackage"))
    check = check_pruned_weights(model, tmp_path / "bare.mlpackage")
    assert check and check.layers[1].pruned > 0


def test_compaction_record_round_trips_and_refuses_garbage():
    report = compact_model(PrunedNet())[1]
    assert CompactionReport.from_json(report.to_json()) == report
    with pytest.raises(BadInputError, match="is not a compaction record"):
        CompactionReport.from_json('{"layers": [{"name": 1}]}')


# -- TensorRT: the bundle's ONNX is compacted -----------------------------------------------------

def test_trt_compact_writes_a_compacted_bundle_then_exits_3(tmp_path):
    import importlib.util

    if importlib.util.find_spec("tensorrt") is not None:
        pytest.skip("TensorRT is installed: the engine would be built")
    result = CliRunner().invoke(app, ["export", "--unit", "GatedDense", "--to", "trt",
                                      "--precision", "fp32", "--plugins", "none", "--compact",
                                      "-o", str(tmp_path)], env={"COLUMNS": "200"})
    assert result.exit_code == 3, result.output
    assert "error: TensorRT is not installed here" in result.stderr
    assert "compacted 2 of 3 GatedDense layers: 192 -> " in result.stdout
    assert "pruned weights: ok" in result.stdout
    bundle = tmp_path / "GatedDense-trt-fp32"
    proto = onnx.load(bundle / "GatedDense-trt-fp32.onnx")
    meta = {p.key: p.value for p in proto.metadata_props}
    report = CompactionReport.from_json(meta[COMPACTION_KEY])
    kept = {x.name: x.units_after for x in report.layers}
    shapes = {i.name: list(i.dims) for i in proto.graph.initializer}
    assert shapes["dense1.kernel"] == [64, kept["dense1"]] and kept["dense1"] < 128
    assert shapes["dense2.kernel"] == [kept["dense1"], kept["dense2"]] and kept["dense2"] < 64
    assert shapes["head.kernel"] == [kept["dense2"], 10]


def test_cli_coreml_compact_sparse_prints_the_compaction_and_the_check(tmp_path):
    result = CliRunner().invoke(app, ["export", "--unit", "GatedDense", "--to", "coreml",
                                      "--compact", "--sparse-weights", "-o", str(tmp_path)],
                                env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert "compact dense1: 128 -> " in result.stdout
    assert "compact head: not compacted: its output is the model's output" in result.stdout
    assert "compacted 2 of 3 GatedDense layers: 192 -> " in result.stdout
    assert "pruned weights: ok" in result.stdout and "GatedDense-fp16.mlpackage" in result.stdout
    assert "emulated" in result.stdout   # the parity table of the MIL emulator run
