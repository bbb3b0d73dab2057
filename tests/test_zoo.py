"""The reference zoo: one trained digits model per op, shipped weights, held-out split."""

from __future__ import annotations

import importlib.util

import pytest
import torch

from gatex.models import zoo
from gatex.ops import REGISTRY

UNITS = [e.unit for e in zoo.ENTRIES]


def test_every_op_has_a_zoo_model() -> None:
    assert sorted(UNITS) == sorted(REGISTRY.names())


def test_held_out_split() -> None:
    x, y = zoo.held_out()
    assert x.dtype == torch.float32 and x.shape == (450, 64)
    assert 0.0 <= float(x.min()) and float(x.max()) <= 1.0
    assert sorted(torch.unique(y).tolist()) == list(range(10))
    assert torch.bincount(y).min() >= 40  # stratified: 43-46 per class


@pytest.mark.parametrize("unit", UNITS)
def test_zoo_model_accuracy_and_metadata(unit: str) -> None:
    e = zoo.entry(unit)
    meta = zoo.read_metadata(e.weights_path)
    assert meta["unit"] == unit and meta["arch"] == e.arch and meta["config"] == e.config
    for key in ("train_accuracy", "test_accuracy", "test_samples", "seed", "epochs", "dataset",
                "torch_version"):
        assert key in meta, key
    model = zoo.load(unit)
    x, y = zoo.held_out(unit)
    acc = zoo.accuracy(model, x, y)
    assert acc >= 0.90, f"{unit}: {acc:.4f}"
    # the shipped number is what the shipped weights give (one sample of slack for thread order)
    assert abs(acc - meta["test_accuracy"]) <= 1 / len(y) + 1e-9
    assert meta["test_samples"] == len(y)


@pytest.mark.parametrize("unit", UNITS)
def test_zoo_model_uses_its_op(unit: str) -> None:
    model = zoo.load(unit)
    program = torch.export.export(model, zoo.example_inputs(unit, batch=2))
    spec = REGISTRY.get(unit)
    targets = {str(n.target) for n in program.graph.nodes if n.op == "call_function"}
    assert f"gatex.{spec.torch_name}.default" in targets, sorted(targets)


def test_gated_dense_zoo_is_pruned() -> None:
    from gatex.models import GatedDense

    model = zoo.load("GatedDense")
    gates = [m.gates for m in model.modules() if isinstance(m, GatedDense)]
    sparsity = float(sum((g == 0).sum() for g in gates) / sum(g.numel() for g in gates))
    assert 0.79 <= sparsity <= 0.81


@pytest.mark.skipif(importlib.util.find_spec("sklearn") is None,
                    reason="retraining needs scikit-learn (pip install 'gatex[train]')")
def test_retraining_reproduces_shipped_weights(tmp_path) -> None:
    from safetensors.torch import load_file

    from gatex.models.zoo import train

    assert train.main(["--unit", "paGLU", "--out", str(tmp_path), "--data-out",
                       str(tmp_path)]) == 0
    shipped = load_file(str(zoo.entry("paGLU").weights_path))
    fresh = load_file(str(tmp_path / "paGLU.safetensors"))
    assert shipped.keys() == fresh.keys()
    for k in shipped:
        torch.testing.assert_close(fresh[k], shipped[k], rtol=1e-4, atol=1e-5)
    import numpy as np

    with np.load(tmp_path / zoo.DATA_FILE) as fresh_split:
        x, y = zoo.held_out()
        assert np.array_equal(fresh_split["x"], x.numpy())
        assert np.array_equal(fresh_split["y"], y.numpy())


def test_readme_zoo_table_matches_shipped_metadata() -> None:
    from pathlib import Path

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    table = readme.split("<!-- zoo-table -->\n", 1)[1].split("\n<!-- /zoo-table -->", 1)[0]
    assert table == zoo.markdown_table()


def test_weight_files_are_byte_for_byte_reproducible(tmp_path, run_python) -> None:
    """safetensors writes its metadata in hash order (new in every process): `save` sorts the
    header, so saving the same weights twice, in two processes, gives the same bytes, and the
    shipped files are in that form (a retrain that changes nothing changes no file)."""
    import json

    child = ("import sys; from pathlib import Path; from gatex.models import zoo; "
             "from gatex.models.zoo.train import save; e = zoo.entry('paGLU'); "
             "save(zoo.load('paGLU'), e, {'test_accuracy': 1.0}, Path(sys.argv[1]))")
    for name in ("one", "two"):
        (tmp_path / name).mkdir()
        proc = run_python("-c", child, str(tmp_path / name))
        assert proc.returncode == 0, proc.stderr
    one, two = ((tmp_path / n / "paGLU.safetensors").read_bytes() for n in ("one", "two"))
    assert one == two
    for entry in zoo.ENTRIES:
        raw = entry.weights_path.read_bytes()
        header = json.loads(raw[8:8 + int.from_bytes(raw[:8], "little")])
        assert list(header) == sorted(header), entry.unit
        assert list(header["__metadata__"]) == sorted(header["__metadata__"]), entry.unit
