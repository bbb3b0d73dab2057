"""Gated BERT (upstream royk1/gated-bert-pruning, Keras) as a torch module; OPS.md section 4.

Upstream's functional model, layer for layer (names follow upstream's attributes):

    h = LayerNorm(token_embedding[ids] + position_embedding[0..S-1])        eps 1e-6
    per block (post-LN):
        a = mha.dense(concat_heads(attention(mha.wq(h), mha.wk(h), mha.wv(h), mask)))
        h1 = layernorm1(h + a)
        h = layernorm2(h1 + ffn_layer2(relu(ffn_layer1(h1))))
    logits = classifier(h[:, 0])                                           CLS token

Every dense layer (Q, K, V, attention output, both FFN layers, classifier) is a `GatedDense`.
Dropout is omitted (inference only).

The attention mask. Upstream builds ``mask_expanded = attention_mask * -1e9`` and then adds
``mask_expanded * -1e9`` to the scaled scores, i.e. +1e18 on every REAL token and 0 on padding.
In fp32 (and fp64) +1e18 swallows every score below ~3e10, so attention is a uniform mean over
the real tokens, independent of Q and K (and NaN in fp16, where 1e18 overflows). Trained
upstream weights were trained under that rule, so ``attention="upstream"`` (the default, and
what `load_gated_bert` uses) reproduces it exactly: weights = m / sum(m) over the key axis
(plain softmax of the scores when a row has no real token, as upstream's +0 gives).
``attention="corrected"`` is standard BERT masking: softmax of the scores with padding keys
removed. Masks are 0/1 (1 = real token), as upstream's tokenizer writes them.

Differs from upstream: sequences may be shorter than ``max_len`` (upstream reshapes the mask
to exactly ``max_len``); fp16 gives finite values in upstream mode instead of NaN.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import torch
from torch import nn

from gatex.errors import BadInputError
from gatex.models.gated_dense import GatedDense

ATTENTION_MODES = ("upstream", "corrected")

#: OPS.md section 4: (layers, hidden, heads, ffn) per upstream size preset.
SIZES: dict[str, tuple[int, int, int, int]] = {
    "tiny": (2, 256, 4, 512),
    "small": (6, 512, 8, 1024),
    "base": (12, 768, 12, 3072),
    "large": (24, 1024, 16, 4096),
}


@dataclass(frozen=True)
class GatedBertConfig:
    """Shape of a Gated BERT; upstream defaults: vocab 30522 (bert-base-uncased), max_len 128."""

    num_layers: int
    d_model: int
    num_heads: int
    dff: int
    vocab_size: int = 30522
    max_len: int = 128
    num_classes: int = 2
    eps: float = 1e-6

    def __post_init__(self) -> None:
        for name in ("num_layers", "d_model", "num_heads", "dff", "vocab_size", "max_len",
                     "num_classes"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise BadInputError(f"GatedBertConfig {name} must be a positive integer; "
                                    f"got {value!r}")
        if self.d_model % self.num_heads:
            raise BadInputError(f"GatedBertConfig d_model {self.d_model} must be divisible by "
                                f"num_heads {self.num_heads}")

    @classmethod
    def from_size(cls, size: str, **overrides: int | float) -> GatedBertConfig:
        """A preset from `SIZES` (tiny, small, base, large) with optional field overrides."""
        if size not in SIZES:
            raise BadInputError(f"unknown Gated BERT size {size!r}; choose one of "
                                f"{', '.join(SIZES)}")
        layers, hidden, heads, ffn = SIZES[size]
        return replace(cls(layers, hidden, heads, ffn), **overrides)


def _check_length(input_ids: torch.Tensor, max_len: int) -> None:
    """The sequence must fit the position table. A function `torch.fx` keeps as a leaf call (its
    branch depends on the input's shape), so `gatex.exporters.compact` can trace the model."""
    if input_ids.shape[1] > max_len:
        raise BadInputError(f"GatedBert: sequence length {input_ids.shape[1]} exceeds max_len "
                            f"{max_len} (the position table)")


def _mask_padding(scores: torch.Tensor, keys: torch.Tensor) -> torch.Tensor:
    """Scores with padding keys at the dtype's lowest value (a leaf for `torch.fx` too: it
    reads ``scores.dtype``)."""
    return scores.masked_fill(keys == 0, torch.finfo(scores.dtype).min)


torch.fx.wrap("_check_length")
torch.fx.wrap("_mask_padding")


def _check_attention(attention: str) -> str:
    if attention not in ATTENTION_MODES:
        raise BadInputError(f"attention must be one of {', '.join(ATTENTION_MODES)}; "
                            f"got {attention!r}")
    return attention


class GatedMultiHeadAttention(nn.Module):
    """Upstream's GatedMultiHeadAttention: wq, wk, wv, dense, all GatedDense (d_model, d_model)."""

    def __init__(self, d_model: int, num_heads: int, attention: str = "upstream") -> None:
        super().__init__()
        self.d_model, self.num_heads = d_model, num_heads
        self.depth = d_model // num_heads
        self.attention = _check_attention(attention)
        self.wq = GatedDense(d_model, d_model)
        self.wk = GatedDense(d_model, d_model)
        self.wv = GatedDense(d_model, d_model)
        self.dense = GatedDense(d_model, d_model)

    def _split(self, x: torch.Tensor) -> torch.Tensor:
        batch, seq = x.shape[0], x.shape[1]
        return x.reshape(batch, seq, self.num_heads, self.depth).transpose(1, 2)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """x (B, S, d_model); mask (B, S) float 0/1, 1 = real token."""
        q, k, v = self._split(self.wq(x)), self._split(self.wk(x)), self._split(self.wv(x))
        scores = q @ k.transpose(-1, -2) / math.sqrt(self.depth)
        keys = mask[:, None, None, :].to(scores.dtype)           # (B, 1, 1, S)
        if self.attention == "upstream":
            # softmax(scores + 1e18 * m) == m / sum(m) exactly while |scores| < ~3e10
            count = keys.sum(-1, keepdim=True)
            uniform = keys / count.clamp_min(1.0)
            weights = torch.where(count > 0, uniform, torch.softmax(scores, dim=-1))
        else:
            scores = _mask_padding(scores, keys)
            weights = torch.softmax(scores, dim=-1)
        out = (weights @ v).transpose(1, 2).reshape(x.shape[0], x.shape[1], self.d_model)
        return self.dense(out)


class GatedTransformerBlock(nn.Module):
    """Upstream's post-LN GatedTransformerBlock with a ReLU FFN."""

    def __init__(self, config: GatedBertConfig, attention: str = "upstream") -> None:
        super().__init__()
        self.mha = GatedMultiHeadAttention(config.d_model, config.num_heads, attention)
        self.ffn_layer1 = GatedDense(config.d_model, config.dff, activation="relu")
        self.ffn_layer2 = GatedDense(config.dff, config.d_model)
        self.layernorm1 = nn.LayerNorm(config.d_model, eps=config.eps)
        self.layernorm2 = nn.LayerNorm(config.d_model, eps=config.eps)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        out1 = self.layernorm1(x + self.mha(x, mask))
        return self.layernorm2(out1 + self.ffn_layer2(self.ffn_layer1(out1)))


class GatedBert(nn.Module):
    """Upstream Gated BERT classifier: ``forward(input_ids, attention_mask=None) -> logits``.

    >>> model = GatedBert(GatedBertConfig.from_size("tiny", vocab_size=100, max_len=16))
    >>> model(torch.zeros(1, 16, dtype=torch.long)).shape
    torch.Size([1, 2])

    ``attention_mask`` (B, S) is 0/1 with 1 on real tokens; None means all real. See the
    module docstring for ``attention="upstream"`` vs ``"corrected"``.
    """

    def __init__(self, config: GatedBertConfig | str = "tiny", attention: str = "upstream",
                 **overrides: int | float) -> None:
        super().__init__()
        if isinstance(config, str):
            config = GatedBertConfig.from_size(config, **overrides)
        elif overrides:
            config = replace(config, **overrides)
        self.config = config
        self.token_embedding = nn.Embedding(config.vocab_size, config.d_model)
        self.position_embedding = nn.Embedding(config.max_len, config.d_model)
        self.embedding_layernorm = nn.LayerNorm(config.d_model, eps=config.eps)
        self.blocks = nn.ModuleList(GatedTransformerBlock(config, attention)
                                    for _ in range(config.num_layers))
        self.classifier = GatedDense(config.d_model, config.num_classes)
        self.attention = _check_attention(attention)

    @property
    def attention(self) -> str:
        return self._attention

    @attention.setter
    def attention(self, mode: str) -> None:
        self._attention = _check_attention(mode)
        for block in getattr(self, "blocks", ()):
            block.mha.attention = mode

    def gated_layers(self) -> dict[str, GatedDense]:
        """Every GatedDense by its module name (empty once `fold_gates` has run)."""
        return {name: m for name, m in self.named_modules() if isinstance(m, GatedDense)}

    def fold_gates(self) -> GatedBert:
        """Replace every GatedDense by its folded ``nn.Linear`` (W = (K * G).T), in place."""
        for name, layer in list(self.gated_layers().items()):
            parent_name, _, child = name.rpartition(".")
            parent = self.get_submodule(parent_name) if parent_name else self
            setattr(parent, child, layer.fold())
        return self

    def forward(self, input_ids: torch.Tensor,
                attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        _check_length(input_ids, self.config.max_len)
        seq = input_ids.shape[1]
        positions = torch.arange(seq, device=input_ids.device)
        h = self.token_embedding(input_ids) + self.position_embedding(positions)[None]
        h = self.embedding_layernorm(h)
        if attention_mask is None:
            mask = torch.ones(input_ids.shape, dtype=h.dtype, device=h.device)
        else:
            mask = attention_mask.to(h.dtype)
        for block in self.blocks:
            h = block(h, mask)
        return self.classifier(h[:, 0])
