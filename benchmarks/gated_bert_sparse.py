"""Sparse ONNX weights for a pruned Gated BERT (issue 7, "Performance"): the GatedDense kernels'
stored bytes in a ``sparse_weights=True`` file vs the dense file, and identical outputs.

Model: `gatex.models.gated_bert.GatedBert` ``--size`` (default tiny: 2 layers, hidden 256, 4
heads, FFN 512, vocab 30522, max_len 128), torch default init (seed 0). Pruning: ``--sparsity``
(default 0.99) of every GatedDense's gate entries set to 0, chosen at random per layer (seed 0).

Both files are written by `gatex.export` (portable flavor, fp32, post-export parity against
torch and the pruned-weights check on):

- ``dense``: the model as it is (kernel K and gates G stored as dense initializers),
- ``sparse``: ``sparse_weights=True`` (gates folded into the kernels, K * G, and every
  initializer that COO storage makes smaller moved to ``graph.sparse_initializer``).

The per-weight stored bytes come from `gatex.artifacts.inspect.inspect_artifact` (what
``gatex inspect`` prints: values plus int64 indices for a sparse initializer). "Gated-weight
bytes" are the ``<layer>.kernel`` initializers of the GatedDense layers; the gates (``.gates``)
are reported separately (the exporter keeps them; in the sparse file they are 0/1 and stored
sparse too). Target: sparse kernels <= 5 % of the dense kernels' bytes. Both files then run on
onnxruntime CPU on the same ``--batch`` x ``--seq`` token ids (random, some rows padded) and the
outputs are compared: max abs diff, expected 0 (onnxruntime densifies sparse initializers when
it loads the model).

    python benchmarks/gated_bert_sparse.py            # about 30 s on 2 cores
    python benchmarks/gated_bert_sparse.py --size tiny --sparsity 0.9 --json -

Exit codes: 0 measured and the target met, 1 target missed or outputs differ, 2 bad option.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

TARGET = 0.05


def build(size: str = "tiny", sparsity: float = 0.99, seed: int = 0, **overrides: int) -> Any:
    """A GatedBert of ``size`` whose every GatedDense has ``sparsity`` of its gates zero."""
    from gatex.models.gated_bert import GatedBert

    torch.manual_seed(seed)
    model = GatedBert(size, **overrides).eval()
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for layer in model.gated_layers().values():
            n = layer.gates.numel()
            off = torch.randperm(n, generator=generator)[: round(sparsity * n)]
            layer.gates.view(-1)[off] = 0
    return model


def inputs(model: Any, batch: int, seq: int, seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    """Random token ids and a 0/1 mask whose odd rows are padded after half the sequence."""
    generator = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, model.config.vocab_size, (batch, seq), generator=generator)
    mask = torch.ones(batch, seq)
    mask[1::2, seq // 2:] = 0
    return ids, mask


def measure(model: Any, ids: torch.Tensor, mask: torch.Tensor, out_dir: Path) -> dict[str, Any]:
    """Export dense and sparse, inspect both, run both on onnxruntime; the numbers as a dict."""
    import onnxruntime as ort

    import gatex
    from gatex.artifacts.inspect import inspect_artifact

    gated = set(model.gated_layers())
    results = {k: gatex.export(model, (ids, mask), out_dir=out_dir, name=f"bert-{k}",
                               sparse_weights=k == "sparse") for k in ("dense", "sparse")}
    out: dict[str, Any] = {"file_bytes": {}, "kernel_bytes": {}, "gates_bytes": {},
                           "kernel_storage": {}, "parity": {}, "pruned_check": {}}
    outputs = {}
    for kind, result in results.items():
        info = inspect_artifact(result.path)
        kernels = [w for w in info.weights if w.name.rpartition(".")[0] in gated
                   and w.name.endswith(".kernel")]
        gates = [w for w in info.weights if w.name.rpartition(".")[0] in gated
                 and w.name.endswith(".gates")]
        if len(kernels) != len(gated):
            raise RuntimeError(f"{kind}: found {len(kernels)} GatedDense kernels in the file, "
                               f"expected {len(gated)}")
        out["file_bytes"][kind] = info.file_bytes
        out["kernel_bytes"][kind] = sum(w.bytes for w in kernels)
        out["gates_bytes"][kind] = sum(w.bytes for w in gates)
        out["kernel_storage"][kind] = sorted({w.storage for w in kernels})
        out["parity"][kind] = {"passed": bool(result.parity),
                               "max_abs_vs_torch": max(o.max_abs for o in result.parity.outputs)}
        out["pruned_check"][kind] = bool(result.pruned)
        session = ort.InferenceSession(str(result.path), providers=["CPUExecutionProvider"])
        names = [i.name for i in session.get_inputs()]
        outputs[kind] = session.run(None, dict(zip(names, (ids.numpy(), mask.numpy()))))[0]
    out["kernel_ratio"] = out["kernel_bytes"]["sparse"] / out["kernel_bytes"]["dense"]
    gated_dense = out["kernel_bytes"]["dense"] + out["gates_bytes"]["dense"]
    out["kernel_and_gates_ratio"] = (out["kernel_bytes"]["sparse"]
                                     + out["gates_bytes"]["sparse"]) / gated_dense
    out["file_ratio"] = out["file_bytes"]["sparse"] / out["file_bytes"]["dense"]
    out["max_abs_diff_sparse_vs_dense"] = float(np.abs(outputs["sparse"]
                                                       - outputs["dense"]).max())
    return out


def main(argv: list[str] | None = None) -> int:
    from gatex.models.gated_bert import SIZES

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", default="tiny", choices=list(SIZES))
    parser.add_argument("--sparsity", type=float, default=0.99)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--seq", type=int, default=64)
    parser.add_argument("--json", help="write the numbers as JSON to this file ('-': stdout)")
    args = parser.parse_args(argv)
    if not 0 <= args.sparsity <= 1 or args.batch < 1 or not 1 <= args.seq <= 128:
        print("error: --sparsity must be in [0, 1], --batch >= 1, --seq in 1..128",
              file=sys.stderr)
        return 2
    model = build(args.size, args.sparsity)
    ids, mask = inputs(model, args.batch, args.seq)
    with tempfile.TemporaryDirectory() as tmp:
        result = measure(model, ids, mask, Path(tmp))
    result.update(size=args.size, sparsity=args.sparsity, batch=args.batch, seq=args.seq,
                  layers=len(model.gated_layers()))
    kb, gb, fb = result["kernel_bytes"], result["gates_bytes"], result["file_bytes"]
    print(f"Gated BERT {args.size}, {args.sparsity:.0%} of every GatedDense's gates zero, "
          f"{result['layers']} GatedDense layers")
    print(f"GatedDense kernels: dense {kb['dense']:,} B, sparse {kb['sparse']:,} B "
          f"({result['kernel_ratio']:.2%}; target <= {TARGET:.0%})")
    print(f"kernels + gates: dense {kb['dense'] + gb['dense']:,} B, sparse "
          f"{kb['sparse'] + gb['sparse']:,} B ({result['kernel_and_gates_ratio']:.2%})")
    print(f"files: dense {fb['dense']:,} B, sparse {fb['sparse']:,} B "
          f"({result['file_ratio']:.1%})")
    print(f"onnxruntime outputs, sparse vs dense file: max abs diff "
          f"{result['max_abs_diff_sparse_vs_dense']:.3g}; parity vs torch: "
          + ", ".join(f"{k} {'PASS' if v['passed'] else 'FAIL'} "
                      f"(max abs {v['max_abs_vs_torch']:.3g})" for k, v in result["parity"].items())
          + "; pruned weights still zero: "
          + ", ".join(f"{k} {'ok' if v else 'FAILED'}" for k, v in result["pruned_check"].items()))
    if args.json:
        text = json.dumps(result, indent=2)
        print(text) if args.json == "-" else Path(args.json).write_text(text + "\n")
    ok = (result["kernel_ratio"] <= TARGET and result["max_abs_diff_sparse_vs_dense"] == 0
          and all(v["passed"] for v in result["parity"].values())
          and all(result["pruned_check"].values()))
    if not ok:
        print("error: target missed, outputs differ, or a check failed", file=sys.stderr)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
