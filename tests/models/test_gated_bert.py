"""GatedBert: presets, both attention rules against a float64 NumPy forward (OPS.md section 4),
upstream's mask edge cases, folding, bad configs, and ONNX export with integer token ids."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

import gatex
from gatex.errors import BadInputError
from gatex.models import GatedBert, GatedBertConfig, GatedDense


def small_model(attention: str = "upstream", seed: int = 0) -> GatedBert:
    """tiny's shape (2 x 256, 4 heads, ffn 512) with a small vocabulary; ~half the gates off."""
    torch.manual_seed(seed)
    model = GatedBert("tiny", attention=attention, vocab_size=30, max_len=12,
                      num_classes=3).eval()
    with torch.no_grad():
        for layer in model.gated_layers().values():
            layer.gates.copy_((torch.rand_like(layer.gates) < 0.5).float())
            layer.bias.normal_(0, 0.1)
        for name, p in model.named_parameters():
            if "layernorm" in name and name.endswith("weight"):
                p.normal_(1, 0.1)
            elif "embedding." in name:
                p.uniform_(-0.05, 0.05)
    return model


def numpy_forward(model: GatedBert, ids: np.ndarray, mask: np.ndarray,
                  attention: str) -> np.ndarray:
    """OPS.md section 4 in float64; upstream's mask literally: scores + (m * -1e9) * -1e9."""
    sd = {k: v.double().numpy() for k, v in model.state_dict().items()}
    cfg = model.config
    heads, depth = cfg.num_heads, cfg.d_model // cfg.num_heads

    def ln(x, prefix):
        mu = x.mean(-1, keepdims=True)
        var = ((x - mu) ** 2).mean(-1, keepdims=True)
        return (x - mu) / np.sqrt(var + cfg.eps) * sd[f"{prefix}.weight"] + sd[f"{prefix}.bias"]

    def dense(x, prefix):
        return x @ (sd[f"{prefix}.kernel"] * sd[f"{prefix}.gates"]) + sd[f"{prefix}.bias"]

    batch, seq = ids.shape
    h = ln(sd["token_embedding.weight"][ids] + sd["position_embedding.weight"][:seq],
           "embedding_layernorm")
    m = mask.astype(np.float64)[:, None, None, :]
    for i in range(cfg.num_layers):
        b = f"blocks.{i}"

        def split(x):
            return x.reshape(batch, seq, heads, depth).transpose(0, 2, 1, 3)

        q, k, v = (split(dense(h, f"{b}.mha.{n}")) for n in ("wq", "wk", "wv"))
        scores = q @ k.transpose(0, 1, 3, 2) / np.sqrt(depth)
        scores = scores + ((m * -1e9) * -1e9 if attention == "upstream" else (1 - m) * -1e9)
        e = np.exp(scores - scores.max(-1, keepdims=True))
        att = ((e / e.sum(-1, keepdims=True)) @ v).transpose(0, 2, 1, 3)
        out1 = ln(h + dense(att.reshape(batch, seq, cfg.d_model), f"{b}.mha.dense"),
                  f"{b}.layernorm1")
        ffn = dense(np.maximum(dense(out1, f"{b}.ffn_layer1"), 0), f"{b}.ffn_layer2")
        h = ln(out1 + ffn, f"{b}.layernorm2")
    return dense(h[:, 0], "classifier")


def inputs(seq: int = 12) -> tuple[torch.Tensor, torch.Tensor]:
    ids = torch.randint(0, 30, (4, seq), generator=torch.Generator().manual_seed(1))
    mask = torch.ones(4, seq, dtype=torch.long)
    mask[1, seq // 2:] = 0
    mask[2, 2:] = 0
    mask[3, 1:] = 0                                     # only the CLS token is real
    return ids, mask


def test_presets_follow_ops_md():
    shapes = {s: (c.num_layers, c.d_model, c.num_heads, c.dff) for s in
              ("tiny", "small", "base", "large") for c in [GatedBertConfig.from_size(s)]}
    assert shapes == {"tiny": (2, 256, 4, 512), "small": (6, 512, 8, 1024),
                      "base": (12, 768, 12, 3072), "large": (24, 1024, 16, 4096)}
    model = GatedBert("tiny", vocab_size=30, max_len=12)
    # every dense layer is gated: 4 attention + 2 FFN per block, plus the classifier
    assert len(model.gated_layers()) == 6 * 2 + 1
    assert all(isinstance(m, GatedDense) for m in model.gated_layers().values())
    assert model.embedding_layernorm.eps == 1e-6
    assert model.blocks[0].ffn_layer1.activation == "relu"


@pytest.mark.parametrize("attention", ["upstream", "corrected"])
@pytest.mark.parametrize("seq", [12, 7])
def test_forward_matches_numpy(attention, seq):
    model = small_model(attention)
    ids, mask = inputs(seq)
    with torch.no_grad():
        got = model(ids, mask).double().numpy()
    expected = numpy_forward(model, ids.numpy(), mask.numpy(), attention)
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-5)
    other = numpy_forward(model, ids.numpy(), mask.numpy(),
                          "corrected" if attention == "upstream" else "upstream")
    assert np.abs(other - expected).max() > 1e-2      # the two rules differ on these inputs


def test_upstream_mask_edge_cases():
    """No mask = all real; an all-padding row gets upstream's +0, a plain softmax."""
    model = small_model("upstream")
    ids, _ = inputs()
    with torch.no_grad():
        np.testing.assert_array_equal(model(ids).numpy(), model(ids, torch.ones_like(ids)).numpy())
        none = torch.zeros_like(ids)
        got = model(ids, none).double().numpy()
    np.testing.assert_allclose(got, numpy_forward(model, ids.numpy(), none.numpy(), "upstream"),
                               rtol=1e-4, atol=1e-5)
    with torch.no_grad():
        unmasked = copy.deepcopy(model)
        unmasked.attention = "corrected"
        np.testing.assert_allclose(got, unmasked(ids).double().numpy(), rtol=1e-5, atol=1e-6)


def test_fold_gates_keeps_outputs_and_zeros():
    model = small_model("corrected")
    ids, mask = inputs()
    folded = copy.deepcopy(model).fold_gates()
    assert folded.gated_layers() == {}
    weight = folded.blocks[1].ffn_layer2.weight
    gates = model.blocks[1].ffn_layer2.gates.T
    assert bool((weight[gates == 0] == 0).all())
    with torch.no_grad():
        np.testing.assert_allclose(folded(ids, mask).numpy(), model(ids, mask).numpy(),
                                   rtol=1e-6, atol=1e-6)


def test_bad_configurations_are_bad_input():
    with pytest.raises(BadInputError, match="unknown Gated BERT size 'huge'"):
        GatedBert("huge")
    with pytest.raises(BadInputError, match="divisible by num_heads 3"):
        GatedBertConfig(2, 256, 3, 512)
    with pytest.raises(BadInputError, match="attention must be one of"):
        GatedBert("tiny", attention="bidirectional", vocab_size=10, max_len=4)
    with pytest.raises(BadInputError, match="sequence length 13 exceeds max_len 12"):
        GatedBert("tiny", vocab_size=10, max_len=12)(torch.zeros(1, 13, dtype=torch.long))
    with pytest.raises(BadInputError, match="vocab_size must be a positive integer"):
        GatedBertConfig.from_size("tiny", vocab_size=0)


@pytest.mark.parametrize("attention", ["upstream", "corrected"])
def test_exports_to_onnx_with_integer_ids(tmp_path, attention):
    ort = pytest.importorskip("onnxruntime")
    model = small_model(attention)
    ids, mask = inputs()
    result = gatex.export(model, (ids, mask), to="onnx", out_dir=tmp_path, name="gbert")
    assert result.passed and bool(result.parity)
    session = ort.InferenceSession(str(result.path), providers=["CPUExecutionProvider"])
    feeds = dict(zip([i.name for i in session.get_inputs()], [ids.numpy(), mask.numpy()],
                     strict=True))
    got = session.run(None, feeds)[0]
    expected = numpy_forward(model, ids.numpy(), mask.numpy(), attention)
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-5)
