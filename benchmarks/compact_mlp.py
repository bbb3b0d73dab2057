"""Compaction benchmark (issue 7, "Performance"): a unit-pruned GatedDense MLP, compacted vs
dense, on onnxruntime CPU; and the file size of dense vs ``sparse_initializer`` weights.

Model: 784 -> GatedDense(4096, relu) -> GatedDense(4096, relu) -> GatedDense(10), Keras init,
biases N(0, 0.1) (so removed units are non-zero constants that compaction must fold).
Pruning: ``--pruned`` (default 90 %) of the output units of each hidden layer get all-zero
gate columns (the head keeps its 10 outputs), chosen at random (seed 0).

Both models are written by gatex's ONNX exporter (portable flavor, fp32, opset 21):

- ``dense``: the model as pruned (gates folded into the kernels: K * G),
- ``compact``: `gatex.exporters.compact.compact_model` of it (kept units only; the removed
  units' constants folded into the next layer's bias).

Outputs are compared on the same random batch (max abs diff, asserted <= 1e-5 against the
dense ONNX and against torch). Timing: onnxruntime CPU EP, ``--threads`` intra-op threads
(default 2), sequential execution, graph optimization ALL; 3 warm-up runs, then ``--repeats``
rounds (default 20), each running both models once in a fresh random order; the speed-up is
the median of the per-round ratios (dense / compact), with the 25th-75th percentile. Target:
>= 5x. Then the dense model is also written with ``sparse_weights=True`` and the file sizes
printed.

    python benchmarks/compact_mlp.py                     # about 1-2 minutes on 2 cores
    python benchmarks/compact_mlp.py --hidden 512 --repeats 3 --batch 8

Exit codes: 0 measured, 1 outputs differ, 2 bad option.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

from gatex.exporters.compact import compact_model, fold_gates
from gatex.exporters.onnx import trace_onnx, write_onnx
from gatex.models import GatedDense

MAX_ABS_DIFF = 1e-5


class PrunedMLP(nn.Module):
    def __init__(self, hidden: int) -> None:
        super().__init__()
        self.dense1 = GatedDense(784, hidden, activation="relu")
        self.dense2 = GatedDense(hidden, hidden, activation="relu")
        self.head = GatedDense(hidden, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.dense2(self.dense1(x)))


def build(hidden: int, pruned: float, seed: int = 0) -> PrunedMLP:
    torch.manual_seed(seed)
    model = PrunedMLP(hidden)
    with torch.no_grad():
        for layer in (model.dense1, model.dense2):
            layer.bias.normal_(0, 0.1)
            units = torch.randperm(hidden)[: round(pruned * hidden)]
            layer.gates[:, units] = 0
    return model.eval()


def session(path: Path, threads: int):
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--hidden", type=int, default=4096)
    parser.add_argument("--pruned", type=float, default=0.9)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", help="write the numbers as JSON to this file ('-': stdout)")
    args = parser.parse_args(argv)
    if not 0 <= args.pruned < 1 or min(args.hidden, args.batch, args.repeats, args.threads) < 1:
        print("error: --pruned must be in [0, 1); --hidden, --batch, --repeats, --threads >= 1",
              file=sys.stderr)
        return 2
    model = build(args.hidden, args.pruned)
    dense_model = fold_gates(model)
    compact, report = compact_model(model)
    x = torch.randn(args.batch, 784, generator=torch.Generator().manual_seed(1))
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        traced = trace_onnx(dense_model, (x[:2],))
        write_onnx(traced, tmp / "dense.onnx")
        write_onnx(traced, tmp / "sparse.onnx", sparse_weights=True)
        write_onnx(trace_onnx(compact, (x[:2],)), tmp / "compact.onnx")
        sizes = {k: (tmp / f"{k}.onnx").stat().st_size for k in ("dense", "sparse", "compact")}
        sessions = {k: session(tmp / f"{k}.onnx", args.threads)
                    for k in ("dense", "compact", "sparse")}
        feed = {"x": x.numpy()}
        outs = {k: s.run(None, feed)[0] for k, s in sessions.items()}
        with torch.no_grad():
            reference = model(x).numpy()
        diffs = {"compact_vs_dense": float(np.abs(outs["compact"] - outs["dense"]).max()),
                 "compact_vs_torch": float(np.abs(outs["compact"] - reference).max()),
                 "sparse_vs_dense": float(np.abs(outs["sparse"] - outs["dense"]).max())}
        del sessions["sparse"]
        for s in sessions.values():
            for _ in range(3):
                s.run(None, feed)
        times: dict[str, list[float]] = {"dense": [], "compact": []}
        rng = random.Random(0)
        for _ in range(args.repeats):
            order = list(sessions)
            rng.shuffle(order)
            for k in order:
                start = time.perf_counter()
                sessions[k].run(None, feed)
                times[k].append(time.perf_counter() - start)
    ratios = sorted(d / c for d, c in zip(times["dense"], times["compact"]))
    q = statistics.quantiles(ratios, n=4) if len(ratios) > 1 else [ratios[0]] * 3
    result = {
        "hidden": args.hidden, "pruned": args.pruned, "batch": args.batch,
        "threads": args.threads, "repeats": args.repeats,
        "units": {x.name: [x.units_before, x.units_after] for x in report.layers},
        "median_ms": {k: 1e3 * statistics.median(v) for k, v in times.items()},
        "speedup_median": statistics.median(ratios), "speedup_iqr": [q[0], q[2]],
        "file_bytes": sizes, "max_abs_diff": diffs,
    }
    for x_ in report.layers:
        print(f"{x_.name}: {x_.units_before} -> {x_.units_after} units"
              + (f" (not compacted: {x_.why_not})" if x_.why_not else ""))
    print(f"dense {result['median_ms']['dense']:.2f} ms, compact "
          f"{result['median_ms']['compact']:.2f} ms (median, batch {args.batch}, "
          f"{args.threads} threads): speed-up {result['speedup_median']:.1f}x "
          f"(IQR {q[0]:.1f}-{q[2]:.1f}; target >= 5x)")
    print(f"files: dense {sizes['dense']:,} B, sparse_initializer {sizes['sparse']:,} B "
          f"({sizes['sparse'] / sizes['dense']:.1%}), compact {sizes['compact']:,} B")
    print("max abs diff: " + ", ".join(f"{k} {v:.3g}" for k, v in diffs.items()))
    if args.json:
        text = json.dumps(result, indent=2)
        print(text) if args.json == "-" else Path(args.json).write_text(text + "\n")
    if max(diffs.values()) > MAX_ABS_DIFF:
        print(f"error: outputs differ by more than {MAX_ABS_DIFF}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
