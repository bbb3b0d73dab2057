"""Upstream Gated BERT Keras weight files (written here with h5py, both layouts) -> GatedBert.

The loaded model is checked against a float64 NumPy forward written from OPS.md section 4,
including upstream's literal double-negated mask (scores + (m * -1e9) * -1e9).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from gatex.errors import EXIT_BAD_INPUT, BadInputError

h5py = pytest.importorskip("h5py")

from gatex.models.gated_bert import GatedBert  # noqa: E402
from gatex.models.keras_weights import UPSTREAM_ATTENTION_NOTE, load_gated_bert  # noqa: E402

VOCAB, MAX_LEN, D, HEADS, DFF, LAYERS, CLASSES = 40, 10, 256, 4, 512, 2, 3
BLOCK_DENSE = {"mha.wq": (D, D), "mha.wk": (D, D), "mha.wv": (D, D), "mha.dense": (D, D),
               "ffn_layer1": (D, DFF), "ffn_layer2": (DFF, D)}


def random_weights(seed: int = 0) -> dict[str, dict[str, np.ndarray]]:
    """Upstream-like tiny weights by gatex module path; about half the gates zero."""
    rng = np.random.default_rng(seed)
    f32 = np.float32

    def dense(shape: tuple[int, int]) -> dict[str, np.ndarray]:
        limit = np.sqrt(6 / sum(shape))
        gates = (rng.random(shape) < 0.5).astype(f32)
        gates[0] = 0.0                                   # a whole input row pruned
        return {"kernel": rng.uniform(-limit, limit, shape).astype(f32),
                "bias": rng.normal(0, 0.1, shape[1]).astype(f32), "gates": gates}

    def norm() -> dict[str, np.ndarray]:
        return {"gamma": (1 + rng.normal(0, 0.1, D)).astype(f32),
                "beta": rng.normal(0, 0.1, D).astype(f32)}

    w = {"token_embedding": {"embeddings": rng.uniform(-0.05, 0.05, (VOCAB, D)).astype(f32)},
         "position_embedding": {"embeddings": rng.uniform(-0.05, 0.05, (MAX_LEN, D)).astype(f32)},
         "embedding_layernorm": norm(), "classifier": dense((D, CLASSES))}
    for i in range(LAYERS):
        for module, shape in BLOCK_DENSE.items():
            w[f"blocks.{i}.{module}"] = dense(shape)
        w[f"blocks.{i}.layernorm1"], w[f"blocks.{i}.layernorm2"] = norm(), norm()
    return w


# -- writers: the two Keras layouts, as upstream's model_builder.py names its layers ---------

K2_SUFFIX = {"mha.wq": "_mha_wq", "mha.wk": "_mha_wk", "mha.wv": "_mha_wv",
             "mha.dense": "_mha_output", "ffn_layer1": "_ffn1", "ffn_layer2": "_ffn2",
             "layernorm1": "_ln1", "layernorm2": "_ln2"}
K3_ATTR = {"mha.wq": "mha/wq", "mha.wk": "mha/wk", "mha.wv": "mha/wv", "mha.dense": "mha/dense",
           "ffn_layer1": "ffn_layer1", "ffn_layer2": "ffn_layer2", "layernorm1": "layernorm1",
           "layernorm2": "layernorm2"}
EXTRA = {"": (), "movement_": ("movement_scores",), "spt_": ("reward_buffer", "reward_count")}


def write_keras2(path, w, method: str = "", weights_only: bool = False) -> None:
    """Keras 2 HDF5: (model_weights/)<layer>/ with weight_names; upstream's layer names."""
    rng = np.random.default_rng(1)
    tops: dict[str, list[tuple[str, np.ndarray]]] = {"input_ids": [], "attention_mask": []}
    tops["token_embedding"] = [("token_embedding/embeddings:0",
                                w["token_embedding"]["embeddings"])]
    tops["position_embedding"] = [("position_embedding/pos_embedding/embeddings:0",
                                   w["position_embedding"]["embeddings"])]
    tops["embedding_layernorm"] = [(f"embedding_layernorm/{k}:0", v)
                                   for k, v in w["embedding_layernorm"].items()]
    for i in range(LAYERS):
        block = f"{method}transformer_block_{i}"
        entries = []
        for module, suffix in K2_SUFFIX.items():
            owner = block + suffix
            scope = f"{block}/{block}_mha/{owner}" if module.startswith("mha") else \
                f"{block}/{owner}"
            values = dict(w[f"blocks.{i}.{module}"])
            if "kernel" in values:
                values.update({name: rng.normal(size=values["kernel"].shape).astype(np.float32)
                               for name in EXTRA[method]})
            entries += [(f"{scope}/{k}:0", v) for k, v in values.items()]
        tops[block] = entries
    values = dict(w["classifier"])
    values.update({name: np.ones_like(values["kernel"]) for name in EXTRA[method]})
    tops["classifier"] = [(f"classifier/{k}:0", v) for k, v in values.items()]
    with h5py.File(path, "w") as f:
        root = f if weights_only else f.create_group("model_weights")
        if not weights_only:
            f.attrs["keras_version"] = b"2.15.0"
            f.create_group("optimizer_weights").create_dataset("iter:0", data=np.int64(7))
        root.attrs["layer_names"] = [t.encode() for t in tops]
        for top, entries in tops.items():
            group = root.create_group(top)
            group.attrs["weight_names"] = [name.encode() for name, _ in entries]
            for name, value in entries:
                group.create_dataset(name, data=value)


def write_keras3(path, w, method: str = "") -> None:
    """Keras 3 .weights.h5: layers/<snake class name>[_n]/<attr>/vars/<i>."""
    rng = np.random.default_rng(2)
    with h5py.File(path, "w") as f:
        layers = f.create_group("layers")

        def put(group_path: str, arrays: list[np.ndarray]) -> None:
            group = layers.create_group(f"{group_path}/vars")
            for j, array in enumerate(arrays):
                group.create_dataset(str(j), data=array)

        put("input_layer", [])
        put("embedding", [w["token_embedding"]["embeddings"]])
        put("positional_embedding/pos_embedding", [w["position_embedding"]["embeddings"]])
        put("layer_normalization", list(w["embedding_layernorm"].values()))
        for i in range(LAYERS):
            top = f"{method}gated_transformer_block" + (f"_{i}" if i else "")
            put(top, [])
            put(f"{top}/mha", [])
            for module, attr in K3_ATTR.items():
                values = list(w[f"blocks.{i}.{module}"].values())
                if not module.startswith("layernorm"):
                    values += [rng.normal(size=values[0].shape).astype(np.float32)
                               for _ in EXTRA[method]]
                put(f"{top}/{attr}", values)
        cls = w["classifier"]
        put(f"{method}gated_dense", [cls["kernel"], cls["bias"], cls["gates"]]
            + [np.zeros_like(cls["kernel"]) for _ in EXTRA[method]])
        f.create_group("optimizer/vars").create_dataset("0", data=np.int64(3))


# -- the NumPy forward, OPS.md section 4 ------------------------------------------------------

def numpy_forward(w, ids: np.ndarray, mask: np.ndarray, attention: str) -> np.ndarray:
    def ln(x, p):
        mu = x.mean(-1, keepdims=True)
        var = ((x - mu) ** 2).mean(-1, keepdims=True)
        return (x - mu) / np.sqrt(var + 1e-6) * p["gamma"] + p["beta"]

    def dense(x, p, relu=False):
        y = x @ (p["kernel"].astype(np.float64) * p["gates"]) + p["bias"]
        return np.maximum(y, 0) if relu else y

    batch, seq = ids.shape
    h = ln(w["token_embedding"]["embeddings"][ids].astype(np.float64)
           + w["position_embedding"]["embeddings"][:seq], w["embedding_layernorm"])
    m = mask.astype(np.float64)[:, None, None, :]
    for i in range(LAYERS):
        p = {k.split(".", 2)[2]: v for k, v in w.items() if k.startswith(f"blocks.{i}.")}

        def heads(x):
            return x.reshape(batch, seq, HEADS, D // HEADS).transpose(0, 2, 1, 3)

        q, k, v = (heads(dense(h, p[name])) for name in ("mha.wq", "mha.wk", "mha.wv"))
        scores = q @ k.transpose(0, 1, 3, 2) / np.sqrt(D // HEADS)
        if attention == "upstream":
            scores = scores + (m * -1e9) * -1e9          # upstream: mask_expanded * -1e9
        else:
            scores = scores + (1 - m) * -1e9
        e = np.exp(scores - scores.max(-1, keepdims=True))
        att = (e / e.sum(-1, keepdims=True)) @ v
        a = dense(att.transpose(0, 2, 1, 3).reshape(batch, seq, D), p["mha.dense"])
        out1 = ln(h + a, p["layernorm1"])
        h = ln(out1 + dense(dense(out1, p["ffn_layer1"], relu=True), p["ffn_layer2"]),
               p["layernorm2"])
    return dense(h[:, 0], w["classifier"])


@pytest.fixture(scope="module")
def weights():
    return random_weights()


@pytest.fixture(scope="module")
def batch():
    rng = np.random.default_rng(3)
    ids = rng.integers(0, VOCAB, (3, MAX_LEN))
    mask = np.ones((3, MAX_LEN), dtype=np.int64)
    mask[1, 6:] = 0
    mask[2, 3:] = 0
    return ids, mask


def run(model, ids, mask) -> np.ndarray:
    with torch.no_grad():
        return model(torch.as_tensor(ids), torch.as_tensor(mask)).double().numpy()


@pytest.mark.parametrize(("layout", "method"), [("keras2", ""), ("keras2", "movement_"),
                                                ("keras3", ""), ("keras3", "spt_")])
def test_loaded_model_matches_numpy_forward(tmp_path, weights, batch, layout, method):
    path = tmp_path / ("m.h5" if layout == "keras2" else "m.weights.h5")
    (write_keras2 if layout == "keras2" else write_keras3)(path, weights, method)
    ids, mask = batch
    model, report = load_gated_bert(path)
    assert report.layout == layout and report.attention == "upstream"
    assert report.notes == [UPSTREAM_ATTENTION_NOTE]
    assert (report.config.num_layers, report.config.d_model, report.config.num_heads,
            report.config.dff, report.config.vocab_size, report.config.max_len,
            report.config.num_classes) == (LAYERS, D, HEADS, DFF, VOCAB, MAX_LEN, CLASSES)
    expected_up = numpy_forward(weights, ids, mask, "upstream")
    np.testing.assert_allclose(run(model, ids, mask), expected_up, rtol=1e-4, atol=1e-5)
    corrected, _ = load_gated_bert(path, attention="corrected")
    expected_fix = numpy_forward(weights, ids, mask, "corrected")
    np.testing.assert_allclose(run(corrected, ids, mask), expected_fix, rtol=1e-4, atol=1e-5)
    # the two attention rules really differ on these weights (the test has teeth)
    assert np.abs(expected_up - expected_fix).max() > 1e-2
    # gates survived: about half of every gated layer is off, row 0 entirely
    assert 0.45 < report.overall_sparsity < 0.56
    assert float(model.blocks[1].ffn_layer2.gates[0].abs().sum()) == 0.0


def test_upstream_attention_ignores_queries_and_keys(tmp_path, weights, batch):
    """Upstream's +1e18 makes attention a uniform mean over real tokens: Q and K are dead."""
    write_keras3(tmp_path / "a.weights.h5", weights)
    changed = {k: dict(v) for k, v in weights.items()}
    for i in range(LAYERS):
        for name in ("mha.wq", "mha.wk"):
            changed[f"blocks.{i}.{name}"]["kernel"] = changed[f"blocks.{i}.{name}"]["kernel"] * 7
    write_keras3(tmp_path / "b.weights.h5", changed)
    ids, mask = batch
    a, _ = load_gated_bert(tmp_path / "a.weights.h5")
    b, _ = load_gated_bert(tmp_path / "b.weights.h5")
    np.testing.assert_array_equal(run(a, ids, mask), run(b, ids, mask))
    a.attention = b.attention = "corrected"
    assert np.abs(run(a, ids, mask) - run(b, ids, mask)).max() > 1e-3


@pytest.mark.parametrize("attention", ["upstream", "corrected"])
def test_fold_gives_identical_outputs(tmp_path, weights, batch, attention):
    path = tmp_path / "m.h5"
    write_keras2(path, weights, weights_only=True)
    ids, mask = batch
    gated, _ = load_gated_bert(path, attention=attention)
    folded, report = load_gated_bert(path, attention=attention, fold=True)
    assert report.folded and not folded.gated_layers()
    weight = folded.blocks[0].mha.wq.weight.detach().numpy()
    np.testing.assert_array_equal(
        weight, (weights["blocks.0.mha.wq"]["kernel"] * weights["blocks.0.mha.wq"]["gates"]).T)
    np.testing.assert_allclose(run(folded, ids, mask), run(gated, ids, mask),
                               rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize(("layout", "method", "expected"), [
    ("keras2", "movement_", {"movement_scores"}),
    ("keras2", "spt_", {"reward_buffer", "reward_count"}),
    ("keras3", "movement_", {"movement_scores"}),
    ("keras3", "spt_", {"reward_buffer", "reward_count"}),
])
def test_pruning_state_is_dropped_and_reported(tmp_path, weights, layout, method, expected):
    path = tmp_path / "m.h5"
    (write_keras2 if layout == "keras2" else write_keras3)(path, weights, method)
    _, report = load_gated_bert(path)
    dropped_vars = {d.rsplit("/", 1)[-1] for d in report.dropped if "(" not in d}
    assert dropped_vars == expected
    # one entry per gated layer and variable: 6 per block plus the classifier
    per_var = sum(1 for d in report.dropped if d.endswith(sorted(expected)[0]))
    assert per_var == 6 * LAYERS + 1
    assert any(d.startswith("optimizer") for d in report.dropped)
    assert not any(d.startswith("layers/input_layer") for d in report.dropped)  # empty vars


def test_weights_only_keras2_file_has_no_extra_state(tmp_path, weights):
    write_keras2(tmp_path / "w.h5", weights, weights_only=True)
    _, report = load_gated_bert(tmp_path / "w.h5", attention="corrected")
    assert report.dropped == [] and report.notes == []


def _expect_bad(path, *parts: str, **kwargs) -> None:
    with pytest.raises(BadInputError) as info:
        load_gated_bert(path, **kwargs)
    message = str(info.value)
    assert info.value.exit_code == EXIT_BAD_INPUT and "\n" not in message
    for part in parts:
        assert part in message, message


def test_bad_files_are_one_line_exit_2(tmp_path, weights):
    corrupt = tmp_path / "corrupt.h5"
    corrupt.write_bytes(b"\x89HDF\r\n\x1a\n" + bytes(range(256)) * 4)
    _expect_bad(corrupt, "not a readable Keras HDF5 weight file")
    _expect_bad(tmp_path / "absent.h5", "no such file")

    write_keras3(tmp_path / "missing.weights.h5", weights)
    with h5py.File(tmp_path / "missing.weights.h5", "a") as f:
        del f["layers/gated_dense"]
    _expect_bad(tmp_path / "missing.weights.h5", "no weights for layer 'classifier'")

    wrong = {k: dict(v) for k, v in weights.items()}
    wrong["blocks.1.ffn_layer2"]["kernel"] = np.zeros((DFF, D + 1), np.float32)
    write_keras2(tmp_path / "shape.h5", wrong)
    _expect_bad(tmp_path / "shape.h5", "'blocks.1.ffn_layer2' kernel", f"({DFF}, {D + 1})",
                f"({DFF}, {D})")

    fuzzy = {k: dict(v) for k, v in weights.items()}
    fuzzy["blocks.0.mha.wv"]["gates"] = np.full((D, D), 0.3, np.float32)
    write_keras3(tmp_path / "gates.weights.h5", fuzzy)
    _expect_bad(tmp_path / "gates.weights.h5", "'blocks.0.mha.wv' gates are not 0/1")

    import zipfile

    with zipfile.ZipFile(tmp_path / "model.keras", "w") as archive:
        archive.writestr("config.json", "{}")
    _expect_bad(tmp_path / "model.keras", "zip archive", "model.weights.h5")

    with h5py.File(tmp_path / "other.h5", "w") as f:
        f.create_dataset("x", data=np.zeros(3))
    _expect_bad(tmp_path / "other.h5", "neither a Keras 2")

    write_keras3(tmp_path / "ok.weights.h5", weights)
    _expect_bad(tmp_path / "ok.weights.h5", "attention must be one of", attention="fixed")


def test_loaded_model_is_a_gated_bert(tmp_path, weights):
    write_keras3(tmp_path / "m.weights.h5", weights)
    model, _ = load_gated_bert(tmp_path / "m.weights.h5")
    assert isinstance(model, GatedBert) and not model.training
