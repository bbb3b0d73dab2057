"""`load_gated_bert` on weight files that Keras itself wrote, checked against Keras' own forward.

tests/models/keras_upstream.py re-expresses upstream's layers with keras.ops (Keras 3, torch
backend: no TensorFlow); Keras saves them as a Keras 3 ``.weights.h5`` and as a legacy
``.h5`` (``model.save``), gatex loads each file with h5py, and the two models must give the same
logits on the same token ids and padding mask, upstream's double-negated mask included. This
is what the h5py-built files in test_keras_weights.py cannot show: that the layouts we read are
the ones Keras writes (variable order, non-trainable gates listed after the trainables, layer
dedup suffixes, the nested positional embedding, pruning-state variables).
"""

from __future__ import annotations

import os
import warnings

import numpy as np
import pytest
import torch

os.environ.setdefault("KERAS_BACKEND", "torch")
pytest.importorskip("h5py")
keras = pytest.importorskip("keras", reason="keras 3 not installed (pip install keras): the "
                                              "check against Keras-written files is skipped")
if keras.backend.backend() != "torch":
    pytest.skip(f"Keras backend is {keras.backend.backend()!r}; these tests need "
                "KERAS_BACKEND=torch", allow_module_level=True)

from gatex.models.keras_weights import load_gated_bert  # noqa: E402

import keras_upstream  # noqa: E402

MAX_LEN, VOCAB, CLASSES = 12, 50, 3
PRUNING_STATE = {"": set(), "spt_": {"reward_buffer", "reward_count"},
                 "movement_": {"movement_scores"}}


def randomise(model: "keras.Model", sparsity: float, seed: int) -> None:
    """Random kernels, biases, norms and embeddings; 0/1 gates about ``sparsity`` zero, with a
    whole input row and a whole output column pruned in every gated layer."""
    rng = np.random.default_rng(seed)
    for v in model.weights:
        shape, name = tuple(v.shape), v.path.rsplit("/", 1)[-1]
        if name == "gates":
            g = (rng.random(shape) >= sparsity).astype(np.float32)
            g[0, :] = 0.0
            g[:, -1] = 0.0
            v.assign(g)
        elif name in ("gamma",):
            v.assign((1 + rng.normal(0, 0.2, shape)).astype(np.float32))
        elif name in PRUNING_STATE["spt_"] | PRUNING_STATE["movement_"]:
            v.assign(rng.normal(0, 1, shape).astype(np.float32))   # must be dropped, not used
        else:
            scale = 0.5 if name == "embeddings" else 0.1 if name in ("bias", "beta") else None
            scale = scale or np.sqrt(2.0 / sum(shape))
            v.assign(rng.normal(0, scale, shape).astype(np.float32))


def inputs(seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    ids = rng.integers(0, VOCAB, (5, MAX_LEN)).astype(np.int32)
    mask = np.ones((5, MAX_LEN), np.int32)
    for row, length in enumerate((MAX_LEN, 7, 3, 1, 10)):
        mask[row, length:] = 0
    return ids, mask


def keras_logits(model: "keras.Model", ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")   # "does not support masking": upstream's layers neither
        out = model([keras.ops.convert_to_tensor(ids), keras.ops.convert_to_tensor(mask)],
                    training=False)
    return np.asarray(keras.ops.convert_to_numpy(out), dtype=np.float64)


def written(tmp_path, layout: str, method: str, sparsity: float = 0.9, seed: int = 0):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")   # "does not support masking" / "legacy HDF5 format"
        model = keras_upstream.build(num_layers=2, d_model=256, num_heads=4, dff=512,
                                     vocab_size=VOCAB, max_len=MAX_LEN, num_classes=CLASSES,
                                     method=method)
        randomise(model, sparsity, seed)
        if layout == "keras3":
            path = tmp_path / "model.weights.h5"
            model.save_weights(path)
        else:
            path = tmp_path / "model.h5"
            model.save(path)
    return model, path


@pytest.mark.parametrize("method", ["", "spt_", "movement_"])
@pytest.mark.parametrize("layout", ["keras3", "keras2"])
def test_loaded_model_matches_keras_forward(tmp_path, layout, method):
    keras_model, path = written(tmp_path, layout, method)
    model, report = load_gated_bert(path)
    assert report.layout == layout
    assert report.attention == "upstream"
    cfg = report.config
    assert (cfg.num_layers, cfg.d_model, cfg.num_heads, cfg.dff, cfg.vocab_size, cfg.max_len,
            cfg.num_classes) == (2, 256, 4, 512, VOCAB, MAX_LEN, CLASSES)
    ids, mask = inputs(1)
    expected = keras_logits(keras_model, ids, mask)
    with torch.no_grad():
        got = model(torch.from_numpy(ids).long(), torch.from_numpy(mask)).double().numpy()
    assert np.isfinite(expected).all()
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4)
    # the gates came through: gatex's sparsity per layer is the file's
    gates = {v.path: np.asarray(keras.ops.convert_to_numpy(v)) for v in keras_model.weights
             if v.path.endswith("/gates")}
    assert len(report.sparsity) == len(gates) == 13
    file_zero = sum(float((g == 0).sum()) for g in gates.values())
    file_total = sum(g.size for g in gates.values())
    assert report.overall_sparsity == pytest.approx(file_zero / file_total, rel=1e-9)
    # pruning state is read, named and dropped, never used as weights
    dropped = {d.split(" ")[0].rsplit("/", 1)[-1] for d in report.dropped}
    assert PRUNING_STATE[method] <= dropped


@pytest.mark.parametrize("layout", ["keras3", "keras2"])
def test_folded_and_corrected_attention_on_keras_files(tmp_path, layout):
    keras_model, path = written(tmp_path, layout, "", sparsity=0.99, seed=3)
    ids, mask = inputs(4)
    expected = keras_logits(keras_model, ids, mask)
    folded, _ = load_gated_bert(path, fold=True)
    with torch.no_grad():
        got = folded(torch.from_numpy(ids).long(), torch.from_numpy(mask)).double().numpy()
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4)


def test_corrected_attention_is_another_model(tmp_path):
    """attention='corrected' (standard masked softmax) does not reproduce what the Keras model
    computes: upstream's weights mean uniform attention over real tokens."""
    keras_model, path = written(tmp_path, "keras3", "", sparsity=0.5, seed=5)
    ids, mask = inputs(6)
    expected = keras_logits(keras_model, ids, mask)
    corrected, report = load_gated_bert(path, attention="corrected")
    assert report.notes == []
    with torch.no_grad():
        fixed = corrected(torch.from_numpy(ids).long(), torch.from_numpy(mask)).double().numpy()
    assert np.abs(fixed - expected).max() > 1e-2
