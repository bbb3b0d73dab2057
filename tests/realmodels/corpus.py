"""Real architectures built from configs (random init, no download), with gated units, in a
"trained-looking" state: BatchNorm running statistics warmed on random batches, learnable
alphas and sigmas spread away from their init. Each entry builds (model, example inputs).

transformers, timm and torchvision are the ``models`` extra; an entry whose library is missing
is skipped with the reason.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from gatex import models


@dataclass(frozen=True)
class Entry:
    name: str
    library: str | None              # the package it needs (None: gatex alone)
    build: Callable[[], tuple[nn.Module, tuple[torch.Tensor, ...]]]
    dynamic: tuple[dict[int, str], ...] | None = None   # dynamic_shapes for export
    slow: bool = False


def _spread(model: nn.Module, seed: int = 0) -> nn.Module:
    """Warm BatchNorm statistics on random batches; move learnable alphas / sigmas off init."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith(("alpha_param", "sigma")):
                p.copy_(p + torch.randn(p.shape, generator=g) * 0.5)
    return model.eval()


def _warm_bn(model: nn.Module, make: Callable[[], torch.Tensor], steps: int = 3) -> None:
    model.train()
    with torch.no_grad():
        for _ in range(steps):
            model(make())
    model.eval()


# -- GPT-2 with a paGating FFN (how upstream paGating patches GPT-2) ----------------------------

class PaGatedMLP(nn.Module):
    """GPT-2's MLP as a paGLU FFN: paGLU(n_embd -> 4 n_embd), then the projection back."""

    def __init__(self, n_embd: int, alpha: float | str) -> None:
        super().__init__()
        self.unit = models.paGLU(n_embd, 4 * n_embd, alpha=alpha)
        self.proj = nn.Linear(4 * n_embd, n_embd)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return self.proj(self.unit(hidden_states))


class LogitsOnly(nn.Module):
    """A transformers model called with ``use_cache=False``, returning the logits tensor."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        return self.model(input_ids=input_ids, use_cache=False).logits


GPT2_MAX_SEQ = 128


def gpt2(alpha: float | str = 0.5) -> Callable[[], tuple[nn.Module, tuple[torch.Tensor, ...]]]:
    def build() -> tuple[nn.Module, tuple[torch.Tensor, ...]]:
        from transformers import GPT2Config, GPT2LMHeadModel

        torch.manual_seed(0)
        config = GPT2Config(n_layer=2, n_embd=128, n_head=4, vocab_size=1000,
                            n_positions=GPT2_MAX_SEQ, attn_implementation="eager")
        lm = GPT2LMHeadModel(config)
        for block in lm.transformer.h:
            block.mlp = PaGatedMLP(config.n_embd, alpha)
        model = _spread(LogitsOnly(lm))
        ids = torch.randint(0, 1000, (2, 32), generator=torch.Generator().manual_seed(1))
        return model, (ids,)
    return build


# -- BERT-style encoder with GatedDense (gatex's Gated BERT) -------------------------------------

BERT_MAX_SEQ = 64


def gated_bert() -> tuple[nn.Module, tuple[torch.Tensor, ...]]:
    torch.manual_seed(0)
    config = models.GatedBertConfig(num_layers=2, d_model=64, num_heads=4, dff=128,
                                    vocab_size=1000, max_len=BERT_MAX_SEQ, num_classes=3)
    model = models.GatedBert(config)
    g = torch.Generator().manual_seed(3)
    with torch.no_grad():  # pruned-looking gates: a third of each kernel switched off
        for m in model.modules():
            if isinstance(m, models.GatedDense):
                m.gates.copy_((torch.rand(m.gates.shape, generator=g) > 0.33).to(m.gates.dtype))
    ids = torch.randint(0, 1000, (2, 32), generator=g)
    return model.eval(), (ids,)


# -- vision models from transformers' configs, activations swapped for gatex's ------------------

def swap_activations(model: nn.Module, kinds: tuple[type, ...], make: Callable[[], nn.Module]
                     ) -> int:
    """Replace every submodule of a type in ``kinds`` by ``make()``; returns how many."""
    count = 0
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, kinds):
                setattr(parent, name, make())
                count += 1
    return count


class PixelLogits(nn.Module):
    """A transformers image classifier called on ``pixel_values``, returning the logits."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self.model(pixel_values=pixel_values).logits


def resnet18(act: Callable[[], nn.Module]) -> Callable[[], tuple[nn.Module, tuple]]:
    """ResNet-18 (transformers ResNetConfig: basic blocks, depths 2-2-2-2), 10 classes."""
    def build() -> tuple[nn.Module, tuple[torch.Tensor, ...]]:
        from transformers import ResNetConfig, ResNetForImageClassification

        torch.manual_seed(0)
        config = ResNetConfig(layer_type="basic", depths=[2, 2, 2, 2],
                              hidden_sizes=[64, 128, 256, 512], num_labels=10)
        model = PixelLogits(ResNetForImageClassification(config))
        assert swap_activations(model, (nn.ReLU,), act) > 0
        g = torch.Generator().manual_seed(2)
        _warm_bn(model, lambda: torch.randn(4, 3, 32, 32, generator=g))
        return _spread(model), (torch.randn(2, 3, 32, 32, generator=g),)
    return build


def vit_tiny(act: Callable[[], nn.Module]) -> Callable[[], tuple[nn.Module, tuple]]:
    """ViT-tiny's width (192, 3 heads, MLP 768) at 32x32, patch 8, 4 layers, 10 classes."""
    def build() -> tuple[nn.Module, tuple[torch.Tensor, ...]]:
        from transformers import ViTConfig, ViTForImageClassification
        from transformers.activations import GELUActivation

        torch.manual_seed(0)
        config = ViTConfig(hidden_size=192, num_hidden_layers=4, num_attention_heads=3,
                           intermediate_size=768, image_size=32, patch_size=8, num_labels=10,
                           attn_implementation="eager")
        model = PixelLogits(ViTForImageClassification(config))
        assert swap_activations(model, (GELUActivation, nn.GELU), act) > 0
        g = torch.Generator().manual_seed(4)
        return _spread(model), (torch.randn(2, 3, 32, 32, generator=g),)
    return build


# -- CIFAR ResNet-20 with channel- and precision-gated convolutions ----------------------------

class BasicBlock(nn.Module):
    def __init__(self, conv: Callable[..., nn.Module], cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.conv1 = conv(cin, cout, 3, stride=stride, padding=1)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = conv(cout, cout, 3, stride=1, padding=1)
        self.bn2 = nn.BatchNorm2d(cout)
        self.short = nn.Sequential() if stride == 1 and cin == cout else nn.Sequential(
            nn.Conv2d(cin, cout, 1, stride=stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.relu(self.bn1(self.conv1(x)))
        return torch.relu(self.bn2(self.conv2(out)) + self.short(x))


class ResNet20(nn.Module):
    """He et al.'s CIFAR ResNet-20 (3 stages of 3 blocks, 16-32-64 channels), gated convs in
    the blocks (the first conv and the shortcuts stay plain, as dnn-gating's models do)."""

    def __init__(self, conv: Callable[..., nn.Module]) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1, bias=False), nn.BatchNorm2d(16),
                                  nn.ReLU())
        blocks, cin = [], 16
        for cout, stride in ((16, 1), (32, 2), (64, 2)):
            for i in range(3):
                blocks.append(BasicBlock(conv, cin, cout, stride if i == 0 else 1))
                cin = cout
        self.blocks = nn.Sequential(*blocks)
        self.head = nn.Linear(64, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.blocks(self.stem(x)).mean(dim=(2, 3)))


def resnet20(kind: str) -> Callable[[], tuple[nn.Module, tuple[torch.Tensor, ...]]]:
    def build() -> tuple[nn.Module, tuple[torch.Tensor, ...]]:
        torch.manual_seed(0)
        conv = models.CGConv2d if kind == "CG" else models.PGConv2d
        model = ResNet20(conv)
        g = torch.Generator().manual_seed(5)
        _warm_bn(model, lambda: torch.randn(8, 3, 32, 32, generator=g))
        return model.eval(), (torch.randn(2, 3, 32, 32, generator=g),)
    return build


# -- a PaGRUCell sequence classifier --------------------------------------------------------------

class GRUSequenceClassifier(nn.Module):
    """Token embeddings read by one PaGRUCell (learnable alphas), the last state classified."""

    def __init__(self, vocab: int = 500, dim: int = 32, hidden: int = 64) -> None:
        super().__init__()
        self.emb = nn.Embedding(vocab, dim)
        self.cell = models.PaGRUCell(dim, hidden, alpha_mode="learnable")
        self.head = nn.Linear(hidden, 4)
        self.hidden = hidden

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        x = self.emb(input_ids)
        h = x.new_zeros(x.shape[0], self.hidden)
        for t in range(x.shape[1]):
            h = self.cell(x[:, t], h)
        return self.head(h)


def gru_classifier() -> tuple[nn.Module, tuple[torch.Tensor, ...]]:
    torch.manual_seed(0)
    model = _spread(GRUSequenceClassifier())
    return model, (torch.randint(0, 500, (2, 12), generator=torch.Generator().manual_seed(6)),)


def zilu_learnable() -> nn.Module:
    return models.ZiLU(sigma=None)


def golu() -> nn.Module:
    return models.GoLU()


BATCH_SEQ = ({0: "batch", 1: "seq"},)

ENTRIES: tuple[Entry, ...] = (
    Entry("gpt2-paGLU", "transformers", gpt2(0.5), BATCH_SEQ),
    Entry("gpt2-paGLU-learnable", "transformers", gpt2("learnable"), BATCH_SEQ, slow=True),
    Entry("bert-GatedDense", None, gated_bert, BATCH_SEQ),
    Entry("resnet18-GoLU", "transformers", resnet18(golu), slow=True),
    Entry("resnet18-ZiLU", "transformers", resnet18(zilu_learnable), slow=True),
    Entry("vit-tiny-GoLU", "transformers", vit_tiny(golu), slow=True),
    Entry("vit-tiny-ZiLU", "transformers", vit_tiny(zilu_learnable)),
    Entry("resnet20-CG", None, resnet20("CG"), slow=True),
    Entry("resnet20-PG", None, resnet20("PG"), slow=True),
    Entry("gru-PaGRUCell", None, gru_classifier),
)
