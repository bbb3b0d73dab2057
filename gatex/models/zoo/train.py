"""Retrain the reference zoo reproducibly: ``python -m gatex.models.zoo.train [--unit NAME ...]``.

Needs scikit-learn (the ``train`` extra) for the digits data set. The split is stratified, 75 %
train / 25 % held out, seed 0; training uses one thread, a fixed seed and full-batch-order
shuffles from a seeded generator, so a rerun on the same torch build gives the same weights.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from gatex.models import GatedDense
from gatex.models.zoo import DATA_FILE, ENTRIES, SEED, ZooEntry, accuracy, entry, markdown_table

BATCH = 64
PACKAGE_DIR = Path(__file__).resolve().parent


def digits_split() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(x_train, y_train, x_test, y_test, test_indices); pixels scaled from 0..16 to [0, 1]."""
    try:
        from sklearn.datasets import load_digits
        from sklearn.model_selection import train_test_split
    except ImportError:
        sys.exit("error: retraining the zoo needs scikit-learn: pip install 'gatex[train]'")
    digits = load_digits()
    x = (digits.data / 16.0).astype(np.float32)
    y = digits.target.astype(np.int64)
    idx = np.arange(len(y))
    tr, te = train_test_split(idx, test_size=0.25, stratify=y, random_state=SEED)
    return x[tr], y[tr], x[te], y[te], te


def _epochs(model: nn.Module, x: torch.Tensor, y: torch.Tensor, epochs: int, lr: float,
            gen: torch.Generator) -> None:
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=epochs)
    for _ in range(epochs):
        model.train()
        for idx in torch.randperm(len(y), generator=gen).split(BATCH):
            opt.zero_grad()
            F.cross_entropy(model(x[idx]), y[idx]).backward()
            opt.step()
        sched.step()


def prune_by_magnitude(model: nn.Module, sparsity: float) -> None:
    """Write 0/1 gates that keep the largest (1 - sparsity) of each GatedDense kernel by |K|."""
    for m in model.modules():
        if isinstance(m, GatedDense):
            k = m.kernel.detach().abs()
            cut = torch.quantile(k.flatten(), sparsity)
            m.gates.copy_((k > cut).to(m.gates.dtype))


def train(e: ZooEntry, data: tuple[np.ndarray, ...]) -> tuple[nn.Module, dict[str, float | int]]:
    x_tr, y_tr, x_te, y_te = (torch.from_numpy(a) for a in data[:4])
    x_tr = x_tr.reshape(-1, *e.input_shape)
    x_te = x_te.reshape(-1, *e.input_shape)
    torch.manual_seed(SEED)
    gen = torch.Generator().manual_seed(SEED)
    model = e.build()
    _epochs(model, x_tr, y_tr, e.epochs, e.lr, gen)
    if e.prune_sparsity:
        prune_by_magnitude(model, e.prune_sparsity)
        _epochs(model, x_tr, y_tr, e.epochs // 2, e.lr / 3, gen)
    model.eval()
    return model, {"train_accuracy": round(accuracy(model, x_tr, y_tr), 6),
                   "test_accuracy": round(accuracy(model, x_te, y_te), 6),
                   "test_samples": len(y_te)}


def save(model: nn.Module, e: ZooEntry, metrics: dict[str, float], out: Path) -> Path:
    from safetensors.torch import save_file

    meta = {
        "unit": e.unit, "arch": e.arch, "config": e.config, **metrics,
        "dataset": "scikit-learn digits, 8x8, pixels/16; stratified 75/25 split, seed 0",
        "seed": SEED, "epochs": e.epochs, "lr": e.lr, "batch": BATCH,
        "optimizer": "Adam + cosine annealing", "prune_sparsity": e.prune_sparsity,
        "torch_version": torch.__version__,
    }
    state = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
    path = out / f"{e.unit}.safetensors"
    tmp = path.with_suffix(".tmp")
    save_file(state, str(tmp), metadata={k: json.dumps(v) for k, v in meta.items()})
    sort_header(tmp)
    tmp.replace(path)
    return path


def sort_header(path: Path) -> None:
    """Rewrite a safetensors file's JSON header with sorted keys, in place.

    safetensors writes ``__metadata__`` in hash order, different in every process, so a
    retrain with the same values would rewrite every file byte for byte differently. Sorting
    changes no length (same keys, same values), so the tensor offsets stay valid; the header
    keeps its padding to 8 bytes."""
    raw = bytearray(path.read_bytes())
    size = int.from_bytes(raw[:8], "little")
    header = json.loads(raw[8:8 + size])
    header["__metadata__"] = dict(sorted(header.get("__metadata__", {}).items()))
    text = json.dumps(dict(sorted(header.items())), separators=(",", ":")).encode()
    if len(text) > size:
        raise RuntimeError(f"{path}: the sorted header is longer than the original")
    raw[8:8 + size] = text + b" " * (size - len(text))
    path.write_bytes(bytes(raw))


def write_readme_table(readme: Path) -> int:
    """Replace the table between ``<!-- zoo-table -->`` and ``<!-- /zoo-table -->``."""
    text = readme.read_text()
    start, end = "<!-- zoo-table -->\n", "\n<!-- /zoo-table -->"
    if start not in text or end not in text:
        print(f"error: {readme} has no {start.strip()} ... {end.strip()} block", file=sys.stderr)
        return 2
    head, rest = text.split(start, 1)
    tail = rest.split(end, 1)[1]
    readme.write_text(head + start + markdown_table() + end + tail)
    print(f"rewrote the zoo table of {readme} ({len(ENTRIES)} units)")
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--unit", action="append", help="train only these units (default: all)")
    ap.add_argument("--out", type=Path, default=PACKAGE_DIR / "weights")
    ap.add_argument("--data-out", type=Path, default=PACKAGE_DIR / "data")
    ap.add_argument("--readme", type=Path, metavar="README.md",
                    help="only rewrite the zoo table of this README from the shipped weights' "
                         "metadata (after training a new unit), and exit")
    args = ap.parse_args(argv)
    if args.readme is not None:
        return write_readme_table(args.readme)
    torch.set_num_threads(1)
    data = digits_split()
    args.out.mkdir(parents=True, exist_ok=True)
    args.data_out.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(args.data_out / DATA_FILE, x=data[2], y=data[3], index=data[4])
    entries = [entry(u) for u in args.unit] if args.unit else list(ENTRIES)
    failed = []
    for e in entries:
        model, metrics = train(e, data)
        metrics_line = ", ".join(f"{k} {v:g}" for k, v in metrics.items())
        print(f"{e.unit:14s} {e.arch:14s} {metrics_line}  -> {save(model, e, metrics, args.out)}")
        if metrics["test_accuracy"] < 0.90:
            failed.append(e.unit)
    if failed:
        print(f"error: below 0.90 test accuracy: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
