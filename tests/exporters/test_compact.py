"""Compaction of pruned GatedDense layers, sparse ONNX initializers, the pruned-weights check."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch
from onnx import numpy_helper
from torch import nn

from gatex.errors import BadInputError
from gatex.exporters.compact import (
    check_pruned_weights,
    compact_model,
    effective_weight,
    fold_gates,
    onnx_weights,
    sparse_to_dense,
    sparsify_initializers,
)
from gatex.models import GatedDense

ACTIVATIONS = ("linear", "relu", "tanh", "sigmoid", "gelu", "swish")
BETWEEN = (nn.Identity, nn.ReLU, nn.Tanh, nn.GELU, nn.Dropout)


def _pruned_chain(seed: int):
    """A random chain of 2-4 GatedDense layers (random activations, biases, elementwise modules
    between), optionally ending in nn.Linear; hidden units pruned as whole gate columns (A) or
    whole consumer rows (B). Returns the model and the units each producer must keep."""
    g = torch.Generator().manual_seed(seed)
    rng = np.random.default_rng(seed)
    n = int(rng.integers(2, 5))
    sizes = [int(s) for s in rng.integers(3, 24, size=n + 1)]
    layers: list[nn.Module] = []
    for i in range(n):
        last = i == n - 1
        if last and rng.random() < 0.5:
            layer = nn.Linear(sizes[i], sizes[i + 1], bias=bool(rng.random() < 0.7))
        else:
            layer = GatedDense(sizes[i], sizes[i + 1], str(rng.choice(ACTIVATIONS)),
                               bias=bool(rng.random() < 0.8))
            with torch.no_grad():
                layer.kernel.copy_(torch.randn(layer.kernel.shape, generator=g))
                if layer.bias is not None:
                    layer.bias.copy_(torch.randn(layer.bias.shape, generator=g))
                layer.gates.copy_((torch.rand(layer.gates.shape, generator=g) > 0.3).float())
        layers.append(layer)
        if not last:
            layers.append(BETWEEN[int(rng.integers(len(BETWEEN)))]())
    dense = [m for m in layers if isinstance(m, (GatedDense, nn.Linear))]
    with torch.no_grad():
        for producer, consumer in zip(dense, dense[1:]):
            units = producer.out_features
            cols = torch.from_numpy(rng.random(units) < 0.4)   # A: constant units
            rows = torch.from_numpy(rng.random(units) < 0.3)   # B: units never read
            producer.gates[:, cols] = 0
            if isinstance(consumer, GatedDense):
                consumer.gates[rows] = 0
            else:
                consumer.weight[:, rows] = 0
    # expected widths: a unit goes when its weight column over the inputs still present is zero
    # (A, or a column whose only non-zeros sat in rows the previous step removed) or when its
    # consumer's row is zero (B); at least one unit stays
    expected, kept_rows = [], None
    for producer, consumer in zip(dense, dense[1:]):
        w = (producer.kernel * producer.gates).detach().numpy()
        w = w if kept_rows is None else w[kept_rows]
        w_next = (consumer.kernel * consumer.gates).detach().numpy() \
            if isinstance(consumer, GatedDense) else consumer.weight.detach().numpy().T
        removed = (w == 0).all(axis=0) | (w_next == 0).all(axis=1)
        if removed.all():
            removed[0] = False
        kept_rows = np.flatnonzero(~removed)
        expected.append(len(kept_rows))
    return nn.Sequential(*layers).eval(), expected


@pytest.mark.parametrize("seed", range(40))
def test_compaction_is_exact_on_random_pruned_chains(seed):
    model, expected = _pruned_chain(seed)
    x = torch.randn(64, model[0].in_features, generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        # float64: the same function up to rounding (the bias fold reorders one sum)
        compact, _ = compact_model(model.double())
        y, y_compact = model(x.double()), compact(x.double())
        assert y_compact.shape == y.shape
        assert (y_compact - y).abs().max().item() <= 1e-12 * max(1.0, y.abs().max().item())
        # float32, weights N(0, 1) (intermediates in the tens): within fp32 rounding of the sums
        compact, report = compact_model(model.float())
        y, y_compact = model(x), compact(x)
        assert (y_compact - y).abs().max().item() <= 4e-6 * max(1.0, y.abs().max().item())
    done = [x for x in report.layers if x.compacted]
    assert [x.units_after for x in done] == expected
    # the layers really are smaller: the compacted modules hold the kept units only
    widths = [m.out_features for m in compact if isinstance(m, (GatedDense, nn.Linear))]
    assert widths[:len(expected)] == expected
    last = report.layers[-1]
    if isinstance(model[-1], GatedDense):
        assert last.why_not == "its output is the model's output"


def _constant_units_model(consumer_bias: bool) -> nn.Sequential:
    torch.manual_seed(0)
    first = GatedDense(6, 8, "sigmoid")
    second = GatedDense(8, 5, "relu", bias=consumer_bias)
    with torch.no_grad():
        first.bias.copy_(torch.linspace(-1, 1, 8))
        first.gates[:, [1, 4, 6]] = 0          # outputs sigmoid(b): constants, not zero
    return nn.Sequential(first, nn.Tanh(), second, nn.Linear(5, 3)).eval()


@pytest.mark.parametrize("consumer_bias", [True, False])
def test_nonzero_constant_units_are_folded_into_the_next_bias(consumer_bias):
    model = _constant_units_model(consumer_bias)
    compact, report = compact_model(model)
    first = report.layers[0]
    assert (first.units_before, first.units_after, first.folded) == (8, 5, 3)
    assert first.kept == (0, 2, 3, 5, 7)
    assert compact[2].bias is not None       # created when the consumer had none
    x = torch.randn(32, 6) * 100              # extreme inputs saturate the sigmoid units too
    with torch.no_grad():
        assert (compact(x) - model(x)).abs().max().item() <= 1e-6


def test_removing_constant_units_without_folding_would_be_wrong():
    """The fold is what makes removal exact: zeroing the removed units' constants instead
    changes the output, so the equality above is not vacuous."""
    model = _constant_units_model(True)
    compact, _ = compact_model(model)
    with torch.no_grad():
        wrong = fold_gates(model)
        wrong[2].gates[[1, 4, 6]] = 0          # drop the constants' contribution
        x = torch.randn(16, 6)
        assert (wrong(x) - model(x)).abs().max().item() > 1e-3
        assert (compact(x) - model(x)).abs().max().item() <= 1e-6


class _Skip(nn.Module):
    def __init__(self):
        super().__init__()
        self.a = GatedDense(4, 4, "relu")
        self.b = GatedDense(4, 4)

    def forward(self, x):
        h = self.a(x)
        return self.b(h) + h


class _Branchy(nn.Module):
    def __init__(self):
        super().__init__()
        self.a = GatedDense(4, 4, "relu")
        self.b = GatedDense(4, 4)

    def forward(self, x):
        if x.sum() > 0:        # data-dependent: fx cannot trace it
            return self.b(self.a(x))
        return x


class _Norm(nn.Module):
    def __init__(self):
        super().__init__()
        self.a = GatedDense(4, 4, "relu")
        self.norm = nn.LayerNorm(4)
        self.b = GatedDense(4, 4)

    def forward(self, x):
        return self.b(self.norm(self.a(x)))


@pytest.mark.parametrize("cls, why", [
    (_Skip, "its output is used 2 times"),
    (_Branchy, "torch.fx cannot trace the model"),
    (_Norm, "call_module norm between it and the next layer is not known to be elementwise"),
])
def test_unprovable_consumers_are_left_alone_with_the_reason(cls, why):
    model = cls().eval()
    with torch.no_grad():
        model.a.gates[:, :2] = 0
    compact, report = compact_model(model)
    a = next(x for x in report.layers if x.name == "a")
    assert not a.compacted and a.why_not.startswith(why)
    assert a.units_after == a.units_before == 4
    assert compact.a.out_features == 4
    x = torch.ones(3, 4)
    with torch.no_grad():
        assert torch.equal(compact(x), model(x))


def test_compaction_of_a_model_without_gated_dense_is_bad_input():
    with pytest.raises(BadInputError, match="no GatedDense"):
        compact_model(nn.Sequential(nn.Linear(3, 3)))


# -- ONNX: sparse initializers and the pruned-weights check ---------------------------------


@pytest.fixture(scope="module")
def zoo_dense():
    from gatex.exporters.onnx import trace_onnx
    from gatex.models import zoo

    model = zoo.load("GatedDense")
    x, _ = zoo.held_out("GatedDense")
    return model, x, trace_onnx(fold_gates(model), (x[:4],))


def _ort(path, x):
    import onnxruntime as ort

    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return sess.run(None, {sess.get_inputs()[0].name: x.numpy()})[0]


def test_sparse_initializers_round_trip_on_onnxruntime(zoo_dense, tmp_path):
    from gatex.exporters.onnx import write_onnx

    model, x, traced = zoo_dense
    write_onnx(traced, tmp_path / "dense.onnx")
    write_onnx(traced, tmp_path / "sparse.onnx", sparse_weights=True)
    dense_size = (tmp_path / "dense.onnx").stat().st_size
    sparse_size = (tmp_path / "sparse.onnx").stat().st_size
    assert sparse_size < 0.75 * dense_size    # the zoo model is 80 % pruned
    proto = onnx.load(tmp_path / "sparse.onnx")
    names = {s.values.name for s in proto.graph.sparse_initializer}
    assert {"dense1.kernel", "dense1.gates", "head.gates"} <= names
    assert "dense1.bias" not in names          # dense biases would grow: kept dense
    # onnxruntime densifies them at load: bit-identical outputs
    assert np.array_equal(_ort(tmp_path / "sparse.onnx", x), _ort(tmp_path / "dense.onnx", x))
    # and the stored values are the model's K * G exactly
    weights = onnx_weights(proto)
    assert np.array_equal(weights["dense2.kernel"], effective_weight(model.dense2).numpy())


def test_sparsify_keeps_initializers_that_would_grow():
    from onnx import helper

    dense = np.arange(1, 1001, dtype=np.float32).reshape(10, 100)
    half = dense.copy()
    half[:, ::2] = 0                          # 50 % zeros: 12 B per non-zero > 4 B per element
    sparse = np.zeros((40, 40), np.float32)
    sparse[3, 7], sparse[39, 0] = 2.5, -1.0
    graph = helper.make_graph([], "g", [], [], initializer=[
        numpy_helper.from_array(a, n) for a, n in ((dense, "d"), (half, "h"), (sparse, "s"))])
    proto = helper.make_model(graph)
    assert sparsify_initializers(proto) == ["s"]
    assert [i.name for i in proto.graph.initializer] == ["d", "h"]
    assert np.array_equal(sparse_to_dense(proto.graph.sparse_initializer[0]), sparse)
    assert list(numpy_helper.to_array(proto.graph.sparse_initializer[0].indices)) == [127, 1560]


def test_sparse_to_dense_reads_coordinate_indices():
    from onnx import helper

    values = numpy_helper.from_array(np.array([1.5, -2.0], np.float32), "w")
    indices = numpy_helper.from_array(np.array([[0, 2], [1, 0]], np.int64), "w.indices")
    dense = sparse_to_dense(helper.make_sparse_tensor(values, indices, [2, 3]))
    assert np.array_equal(dense, np.array([[0, 0, 1.5], [-2.0, 0, 0]], np.float32))


def test_pruned_weights_check_catches_an_unzeroed_weight(zoo_dense, tmp_path):
    from gatex.exporters.onnx import trace_onnx, write_onnx

    model, x, _ = zoo_dense
    path = write_onnx(trace_onnx(model, (x[:4],)), tmp_path / "m.onnx").path  # gates unfolded
    result = check_pruned_weights(model, path)
    assert result, result.summary()
    pruned = int((effective_weight(model.dense2) == 0).sum())
    assert next(x for x in result.layers if x.name == "dense2").pruned == pruned
    # switch one pruned weight back on in the file: its kernel value is non-zero, its gate 0
    proto = onnx.load(path)
    kernel = model.dense2.kernel.detach().numpy()
    i, j = map(int, np.argwhere((model.dense2.gates.numpy() == 0) & (kernel != 0))[0])
    for init in proto.graph.initializer:
        if init.name == "dense2.gates":
            gates = numpy_helper.to_array(init).copy()
            gates[i, j] = 1.0
            init.CopyFrom(numpy_helper.from_array(gates, init.name))
    onnx.save(proto, tmp_path / "bad.onnx")
    bad = check_pruned_weights(model, tmp_path / "bad.onnx")
    assert not bad
    layer = next(x for x in bad.layers if x.name == "dense2")
    assert (layer.violations, layer.first) == (1, (i, j))
    assert "dense2: 1 weights pruned in the source are non-zero" in bad.summary()
    assert all(x.passed for x in bad.layers if x.name != "dense2")


def test_export_compact_and_sparse_weights_end_to_end(tmp_path):
    import gatex

    result = gatex.export("GatedDense", to="onnx", out_dir=tmp_path, compact=True,
                          sparse_weights=True)
    assert result.passed and result.parity and result.pruned
    units = {x.name: (x.units_before, x.units_after) for x in result.compaction.layers}
    assert units["head"] == (10, 10)
    assert units["dense1"][1] < 128 and units["dense2"][1] < 64
    removed = sum(x.removed for x in result.pruned.layers)
    assert removed > 0
    proto = onnx.load(result.path)
    shapes = {i.values.name: list(i.dims) for i in proto.graph.sparse_initializer}
    assert shapes["dense1.kernel"] == [64, units["dense1"][1]]
    assert shapes["dense2.kernel"] == [units["dense1"][1], units["dense2"][1]]


def test_compact_benchmark_runs_at_a_tiny_size(tmp_path, capsys):
    """benchmarks/compact_mlp.py end to end at hidden 64: units removed as documented, outputs
    equal within its bound, numbers written; a bad option exits 2."""
    import importlib.util
    import json
    from pathlib import Path

    script = Path(__file__).resolve().parents[2] / "benchmarks" / "compact_mlp.py"
    spec = importlib.util.spec_from_file_location("compact_mlp_bench", script)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    out = tmp_path / "numbers.json"
    assert bench.main(["--hidden", "64", "--batch", "4", "--repeats", "2", "--json",
                       str(out)]) == 0
    numbers = json.loads(out.read_text())
    assert numbers["units"] == {"dense1": [64, 6], "dense2": [64, 6], "head": [10, 10]}
    assert max(numbers["max_abs_diff"].values()) <= 1e-5
    assert numbers["max_abs_diff"]["sparse_vs_dense"] == 0
    assert numbers["file_bytes"]["compact"] < numbers["file_bytes"]["dense"]
    assert bench.main(["--pruned", "1.5"]) == 2
    assert "--pruned must be in [0, 1)" in capsys.readouterr().err
