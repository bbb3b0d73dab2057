"""Gated BERT through the exporters (issue 7): sparse ONNX weights at 99 % sparsity, `--compact`
of pruned FFN units, and CoreML export with the MIL emulator's parity.

The models have tiny's shape (2 layers, hidden 256, 4 heads, FFN 512) with a small vocabulary
so that the token table does not dominate the run time.
"""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import gatex
from gatex.exporters.compact import compact_model, fold_gates
from gatex.exporters.onnx import trace_onnx, write_onnx
from gatex.models import GatedBert, GatedDense
from gatex.artifacts.inspect import inspect_artifact

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "gated_bert_sparse.py"


def bench():
    spec = importlib.util.spec_from_file_location("gated_bert_sparse_bench", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def ort_run(path: Path, ids: torch.Tensor, mask: torch.Tensor) -> np.ndarray:
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    names = [i.name for i in session.get_inputs()]
    return session.run(None, dict(zip(names, (ids.numpy(), mask.numpy()))))[0]


@pytest.fixture(scope="module")
def pruned99():
    """99 % of every GatedDense's gates zero (random, seed 0), as the benchmark builds it."""
    b = bench()
    model = b.build("tiny", 0.99, vocab_size=500, max_len=32)
    return model, b.inputs(model, 4, 32)


def test_sparse_initializers_store_gated_kernels_in_under_5_percent(pruned99, tmp_path):
    model, (ids, mask) = pruned99
    traced = trace_onnx(fold_gates(model), (ids, mask))
    dense = write_onnx(traced, tmp_path / "dense.onnx").path
    sparse = write_onnx(traced, tmp_path / "sparse.onnx", sparse_weights=True).path
    gated = model.gated_layers()
    infos = {k: {w.name: w for w in inspect_artifact(p).weights}
             for k, p in (("dense", dense), ("sparse", sparse))}
    nonzero = {f"{n}.kernel": int(torch.count_nonzero(m.kernel * m.gates))
               for n, m in gated.items()}
    for name, nnz in nonzero.items():
        d, s = infos["dense"][name], infos["sparse"][name]
        assert d.storage == "dense" and d.bytes == 4 * d.elements
        # COO: one fp32 value and one int64 index per non-zero, nothing else
        assert s.storage == "sparse" and s.bytes == 12 * nnz
        assert s.zeros == d.zeros == d.elements - nnz
    dense_bytes = sum(infos["dense"][n].bytes for n in nonzero)
    sparse_bytes = sum(infos["sparse"][n].bytes for n in nonzero)
    assert dense_bytes == 4 * sum(m.kernel.numel() for m in gated.values())
    ratio = sparse_bytes / dense_bytes
    assert 0.025 < ratio <= 0.05      # 12 B per non-zero at 1 % density: 3 %
    assert sparse.stat().st_size < dense.stat().st_size
    out_dense, out_sparse = ort_run(dense, ids, mask), ort_run(sparse, ids, mask)
    np.testing.assert_array_equal(out_sparse, out_dense)   # bit-identical
    with torch.no_grad():
        reference = model(ids, mask).numpy()
    np.testing.assert_allclose(out_dense, reference, rtol=1e-4, atol=1e-5)


@pytest.mark.slow
def test_sparse_benchmark_end_to_end(pruned99, tmp_path):
    """The benchmark's own measurement (gatex.export twice, gatex inspect, onnxruntime)."""
    model, (ids, mask) = pruned99
    result = bench().measure(model, ids[:2], mask[:2], tmp_path)
    assert result["kernel_ratio"] <= 0.05
    assert result["max_abs_diff_sparse_vs_dense"] == 0.0
    assert result["kernel_storage"] == {"dense": ["dense"], "sparse": ["sparse"]}
    assert all(v["passed"] for v in result["parity"].values())
    assert all(result["pruned_check"].values())


def test_sparse_benchmark_bad_options_exit_2(capsys):
    assert bench().main(["--sparsity", "1.5"]) == 2
    assert bench().main(["--seq", "129"]) == 2
    assert capsys.readouterr().err.count("error:") == 2


def ffn_pruned(dtype: torch.dtype = torch.float32, attention: str = "upstream") -> GatedBert:
    """Half of each ffn_layer1's output units pruned whole (all-zero gate columns), biases
    N(0, 0.1) so about half the removed units are non-zero constants relu(b) to fold."""
    torch.manual_seed(0)
    model = GatedBert("tiny", attention=attention, vocab_size=100, max_len=16).eval()
    generator = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for block in model.blocks:
            block.ffn_layer1.bias.normal_(0, 0.1, generator=generator)
            units = torch.randperm(512, generator=generator)[:256]
            block.ffn_layer1.gates[:, units] = 0
    return model.to(dtype)


def bert_inputs(vocab: int = 100, seq: int = 16):
    generator = torch.Generator().manual_seed(1)
    ids = torch.randint(0, vocab, (3, seq), generator=generator)
    mask = torch.ones(3, seq)
    mask[1, seq // 2:] = 0
    return ids, mask


@pytest.mark.parametrize("attention", ["upstream", "corrected"])
def test_compaction_removes_pruned_ffn_units_exactly(attention):
    model = ffn_pruned(attention=attention)
    ids, mask = bert_inputs()
    compact, report = compact_model(model)
    layers = {x.name: x for x in report.layers}
    for i, block in enumerate(model.blocks):
        x = layers[f"blocks.{i}.ffn_layer1"]
        assert x.compacted and x.consumer == f"blocks.{i}.ffn_layer2"
        assert (x.units_before, x.units_after) == (512, 256)
        removed = sorted(set(range(512)) - set(x.kept))
        assert bool((block.ffn_layer1.gates[:, removed] == 0).all())
        assert x.folded == int((block.ffn_layer1.bias[removed] > 0).sum()) > 0
        new = compact.blocks[i]
        shapes = new.ffn_layer1.kernel.shape, new.ffn_layer2.kernel.shape
        assert shapes == (torch.Size([256, 256]), torch.Size([256, 256]))
    # everything else stays, each with the reason the proof stopped
    assert layers["blocks.0.mha.wq"].why_not == "its output is used 3 times"
    assert "add" in layers["blocks.0.ffn_layer2"].why_not
    assert layers["classifier"].why_not == "its output is the model's output"
    assert sum(x.compacted for x in report.layers) == 2
    with torch.no_grad():
        assert float((compact(ids, mask) - model(ids, mask)).abs().max()) <= 1e-5
        model64 = ffn_pruned(torch.float64, attention)
        diff64 = compact_model(model64)[0](ids, mask) - model64(ids, mask)
        assert float(diff64.abs().max()) <= 1e-12


def test_compact_onnx_export_of_bert(tmp_path):
    model = ffn_pruned()
    ids, mask = bert_inputs()
    result = gatex.export(model, (ids, mask), out_dir=tmp_path, name="bert", compact=True)
    assert result.parity and result.pruned, (result.parity.summary(), result.pruned.summary())
    weights = {w.name: w for w in inspect_artifact(result.path).weights}
    assert weights["blocks.0.ffn_layer1.kernel"].shape == [256, 256]
    assert weights["blocks.1.ffn_layer2.kernel"].shape == [256, 256]
    with torch.no_grad():
        reference = model(ids, mask).numpy()
    assert float(np.abs(ort_run(result.path, ids, mask) - reference).max()) <= 1e-5


def test_fx_leaf_length_check_still_rejects_long_sequences():
    model = GatedBert("tiny", vocab_size=100, max_len=16)
    with pytest.raises(gatex.errors.BadInputError, match="exceeds max_len 16"):
        model(torch.zeros(1, 17, dtype=torch.long))


def coreml_case(precision: str, attention: str = "upstream", tmp_path: Path = Path(".")):
    model = fold_gates(bench().build("tiny", 0.99, vocab_size=500, max_len=32))
    model.attention = attention
    ids, mask = bert_inputs(500, 32)
    result = gatex.export(model, (ids, mask), to="coreml", precision=precision,
                          out_dir=tmp_path)
    ops = inspect_artifact(result.path).ops
    return model, result, ops


def test_coreml_fp32_export_and_emulated_parity(tmp_path):
    model, result, ops = coreml_case("fp32", tmp_path=tmp_path)
    assert result.parity.emulated == (sys.platform != "darwin")
    assert result.parity, result.parity.summary()
    out = result.parity.outputs[0]
    assert out.max_abs <= 1e-6 and out.top1 == 1.0
    # token embedding gather, layer norms (embedding + 2 per block), softmax, 13 dense layers
    assert ops["gather"] >= 1 and ops["layer_norm"] == 5 and ops["softmax"] >= 1
    assert ops["linear"] + ops.get("matmul", 0) >= len([m for m in model.modules()
                                                         if isinstance(m, GatedDense)])


@pytest.mark.slow
@pytest.mark.parametrize("precision,attention", [("fp16", "upstream"), ("fp16", "corrected"),
                                                 ("fp32", "corrected")])
def test_coreml_more_precisions_and_attention(precision, attention, tmp_path):
    _, result, _ = coreml_case(precision, attention, tmp_path)
    assert result.parity, result.parity.summary()
    out = result.parity.outputs[0]
    assert out.max_abs <= (1e-6 if precision == "fp32" else 2e-3)
    assert out.top1 == 1.0


@pytest.mark.slow  # 10-25 s: two BERT conversions and an emulated parity run
@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_coreml_sparse_weights_pass_parity_and_emulate_equal_to_dense(precision, tmp_path):
    """--sparse-weights to CoreML at 99 % sparsity: every gated kernel stored as
    constexpr_sparse_to_dense, emulated parity against torch passes, the pruned-weights check
    reads the sparse weights, and the emulated outputs equal the dense export's bit for bit."""
    from gatex.runtimes.coreml_emulator import emulate

    model = bench().build("tiny", 0.99, vocab_size=500, max_len=32)
    ids, mask = bert_inputs(500, 32)
    dense = gatex.export(fold_gates(model), (ids, mask), to="coreml", precision=precision,
                         out_dir=tmp_path / "dense", check=False)
    sparse = gatex.export(model, (ids, mask), to="coreml", precision=precision,
                          out_dir=tmp_path / "sparse", sparse_weights=True)
    assert sparse.parity, sparse.parity.summary()
    assert sparse.parity.emulated == (sys.platform != "darwin")
    gated = model.gated_layers()
    assert sparse.pruned and len(sparse.pruned.layers) == len(gated)
    # every GatedDense kernel over 2048 elements went sparse (the 256 x 2 classifier did not)
    big = sum(1 for layer in gated.values() if layer.kernel.numel() > 2048)
    assert inspect_artifact(sparse.path).ops["constexpr_sparse_to_dense"] >= big > 0
    feeds = dict(zip(dense.artifact.input_names, (ids.numpy().astype(np.int32), mask.numpy())))
    a, b = emulate(dense.path, feeds), emulate(sparse.path, feeds)
    for k in a:
        assert np.array_equal(a[k], b[k]), k


CORE_ML_SCRIPT = SCRIPT.with_name("gated_bert_sparse_coreml.py")


def coreml_bench():
    spec = importlib.util.spec_from_file_location("gated_bert_sparse_coreml", CORE_ML_SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow  # four BERT conversions with emulated parity: about 40 s on 2 cores
def test_coreml_sparse_benchmark_end_to_end(capsys):
    """benchmarks/gated_bert_sparse_coreml.py at vocab 500: the fp16 mask + non-zeros land at
    the documented ~7.3 % of the dense gated bytes, outputs equal, every check passes."""
    assert coreml_bench().main(["--vocab", "500", "--seq", "32", "--json", "-"]) == 0
    out = capsys.readouterr().out
    result = json.loads(out[out.index("{"):])
    # 12 of 13 layers sparse (the 256 x 2 classifier is under coremltools' 2048 elements)
    assert result["sparse_layers"] == {"dense": 0, "sparse": 12, "compact": 0,
                                       "compact+sparse": 12}
    assert 0.07 < result["ratio"]["sparse"] < 0.075
    assert result["ratio"]["compact+sparse"] < result["ratio"]["sparse"]
    assert result["units"]["compact"] < result["units"]["dense"]
    assert result["max_abs_diff_vs_dense"]["sparse"] == 0.0


def test_coreml_sparse_benchmark_bad_options_exit_2(capsys):
    assert coreml_bench().main(["--sparsity", "-0.1"]) == 2
    assert coreml_bench().main(["--vocab", "1"]) == 2
    assert capsys.readouterr().err.count("error:") == 2
