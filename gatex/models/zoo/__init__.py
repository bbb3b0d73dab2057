"""The reference zoo: for each gated op, a small digits classifier trained with a fixed seed.

Weights ship as safetensors beside this file (``weights/<unit>.safetensors``, with the
architecture, its config, accuracy and training settings in the metadata) together with the
held-out split (``data/digits_test.npz``), so no run needs scikit-learn or a download.
``python -m gatex.models.zoo.train`` retrains them reproducibly.
"""

from __future__ import annotations

import difflib
import json
from dataclasses import dataclass, field
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from gatex.errors import CheckpointError, UnknownOpError
from gatex.models.state import load_state_dict
from gatex.models.zoo.architectures import ARCHITECTURES
from gatex.ops import BUILTIN_OPS, REGISTRY, OpSpec

SEED = 0
DATA_FILE = "digits_test.npz"


@dataclass(frozen=True)
class ZooEntry:
    """One zoo model: which op it demonstrates, its architecture and how it is trained."""
    unit: str                      # op name from gatex.ops (paGLU, GoLU, ...)
    arch: str                      # key of architectures.ARCHITECTURES
    config: dict[str, Any] = field(default_factory=dict)
    epochs: int = 60
    lr: float = 3e-3
    prune_sparsity: float = 0.0    # GatedDense: fraction of each kernel pruned by magnitude
    note: str = ""

    def build(self) -> nn.Module:
        return ARCHITECTURES[self.arch](**self.config)

    @property
    def weights_path(self) -> Path:
        return Path(str(resources.files(__package__) / "weights" / f"{self.unit}.safetensors"))

    @property
    def input_shape(self) -> tuple[int, ...]:
        return ARCHITECTURES[self.arch].input_shape


def _pa(unit: str, alpha: float | str = 0.5, **kw: Any) -> ZooEntry:
    return ZooEntry(unit, "GateMLP", {"unit": unit, "alpha": alpha, **kw})


def _act(unit: str, **kw: Any) -> ZooEntry:
    return ZooEntry(unit, "ActivationMLP", {"activation": unit, **kw})


# The reference models that are not the default of their kind (`_default`): learnable alphas,
# a sharper sigma, the structural ops' own architectures.
OVERRIDES: dict[str, ZooEntry] = {e.unit: e for e in (
    _pa("paGTU", "learnable"),
    _pa("paSwishU", 0.5, beta=1.0),
    _pa("paGELU", "learnable"),
    _pa("paUnit", 0.5, gate="golu"),
    ZooEntry("PaGRUCell", "GRUClassifier", {"hidden": 48, "alpha_mode": "learnable"}, epochs=80),
    _act("GELU_s", sigma=None),
    _act("SiLU_s", sigma=2.0),
    _act("ArcTan", sigma=None),
    _act("ArcTan_Approx", sigma=None),
    _act("ZiLU", sigma=None),
    _act("ZiLU_Approx", sigma=None),
    ZooEntry("GatedDense", "GatedDenseMLP", {"hidden": 128}, prune_sparsity=0.8,
             note="magnitude-pruned to 80 % sparsity, then fine-tuned with the gates frozen"),
    ZooEntry("CGConv2d", "GatedConvNet", {"gate": "CGConv2d", "p": 4, "th": 0.0}, epochs=30),
    ZooEntry("PGConv2d", "GatedConvNet", {"gate": "PGConv2d", "wbits": 8, "abits": 8,
                                          "pred_bits": 4}, epochs=30),
)}


def _default(spec: OpSpec) -> ZooEntry | None:
    """A paGating unit (inputs v, u) in the two-unit MLP at alpha 0.5; a one-input elementwise op
    as the MLP's activation; anything else needs an `OVERRIDES` entry."""
    if spec.family == "pagating" and spec.inputs == ("v", "u"):
        return _pa(spec.name, 0.5)
    if spec.elementwise and len(spec.inputs) == 1:
        return _act(spec.name)
    return None


def _entries() -> tuple[ZooEntry, ...]:
    """One entry per op gatex ships (derived from the registry; ops that entry points add have
    no shipped weights), in registry order."""
    entries = []
    for spec in REGISTRY:
        if spec.name not in BUILTIN_OPS:
            continue
        found = OVERRIDES.get(spec.name) or _default(spec)
        if found is None:
            raise RuntimeError(f"op {spec.name} needs a zoo entry in gatex.models.zoo.OVERRIDES "
                               "(it is neither a paGating unit nor a one-input activation)")
        entries.append(found)
    return tuple(entries)


ENTRIES: tuple[ZooEntry, ...] = _entries()
ZOO: dict[str, ZooEntry] = {e.unit: e for e in ENTRIES}


def entry(unit: str) -> ZooEntry:
    """The zoo entry for ``unit`` (case-insensitive); unknown names raise `UnknownOpError`."""
    by_lower = {k.lower(): v for k, v in ZOO.items()}
    found = by_lower.get(unit.lower().removeprefix("gatex::"))
    if found is None:
        close = difflib.get_close_matches(unit, list(ZOO), n=3, cutoff=0.5)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise UnknownOpError(f"no zoo model for unit {unit!r}{hint} (units: {', '.join(ZOO)})")
    return found


def read_metadata(path: Path) -> dict[str, Any]:
    """The zoo metadata of a safetensors file (config and metrics decoded from JSON)."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            meta = dict(f.metadata() or {})
    except FileNotFoundError:
        raise CheckpointError(f"weights file {path} is missing; run "
                              "`python -m gatex.models.zoo.train` to create it") from None
    except Exception as exc:  # safetensors raises its own error types for corrupt headers
        raise CheckpointError(f"cannot read {path}: {exc}") from None
    return {k: json.loads(v) for k, v in meta.items()}


def load(unit: str) -> nn.Module:
    """Build the zoo model for ``unit`` and load its shipped weights (eval mode)."""
    from safetensors.torch import load_file


    e = entry(unit)
    meta = read_metadata(e.weights_path)
    if meta.get("config") != json.loads(json.dumps(e.config)) or meta.get("arch") != e.arch:
        raise CheckpointError(f"{e.weights_path.name} was trained for a different zoo config; "
                              "retrain with `python -m gatex.models.zoo.train`")
    model = e.build()
    load_state_dict(model, load_file(str(e.weights_path)))
    model.eval()
    model.gatex_unit = e.unit
    return model


@cache
def _held_out() -> tuple[np.ndarray, np.ndarray]:
    with resources.files(__package__).joinpath("data", DATA_FILE).open("rb") as f:
        data = np.load(f)
        return data["x"].copy(), data["y"].copy()


def held_out(unit: str | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """The held-out digits (inputs shaped for ``unit``'s model, labels); float32 in [0, 1]."""
    x, y = _held_out()
    t = torch.from_numpy(x)
    if unit is not None:
        t = t.reshape(-1, *entry(unit).input_shape)
    return t, torch.from_numpy(y)


def example_inputs(unit: str, batch: int = 1) -> tuple[torch.Tensor, ...]:
    """The first ``batch`` held-out digits, shaped for ``unit``'s model."""
    x, _ = held_out(unit)
    return (x[:batch].clone(),)


def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    with torch.no_grad():
        return float((model(x).argmax(-1) == y).float().mean())


def markdown_table() -> str:
    """The README's zoo table, rendered from the shipped weights' metadata."""
    from safetensors import safe_open

    rows = ["| unit | model | stored values | held-out accuracy | train accuracy |",
            "|---|---|---:|---:|---:|"]
    for e in ENTRIES:
        meta = read_metadata(e.weights_path)
        with safe_open(str(e.weights_path), framework="pt") as f:
            n = sum(_numel(f.get_slice(k).get_shape()) for k in f.keys())
        config = ", ".join(f"{k}={v}" for k, v in e.config.items())
        rows.append(f"| {e.unit} | {e.arch}({config}) | {n:,} | {meta['test_accuracy']:.4f} | "
                    f"{meta['train_accuracy']:.4f} |")
    return "\n".join(rows)


def _numel(shape: list[int]) -> int:
    n = 1
    for d in shape:
        n *= d
    return n


__all__ = ["ENTRIES", "ZOO", "ZooEntry", "accuracy", "entry", "example_inputs", "held_out", "load",
           "markdown_table", "read_metadata"]
