"""Cost of the dense lowering of CGConv2d and PGConv2d (issue 7, "Performance"): each zoo CNN
exported by gatex against the same CNN with plain convolutions, on onnxruntime CPU.

No standard runtime skips the work a gate switches off: without a custom kernel, CGConv2d
computes two full-size convolutions (W*M and W*(1-M)) and adds the second where the gate is
open, PGConv2d quantises the activation, computes two full-size convolutions (high bits, low
bits) and does the same. So the
ratio measured here is the price of the dense lowering, never a saving.

Models (the zoo's GatedConvNet, trained weights; any H x W works, the head pools globally):

- ``CG``: ``gatex.load_model("CGConv2d")``, ``PG``: ``gatex.load_model("PGConv2d")`` (dynamic
  per-batch scale, as upstream), both written by gatex's ONNX exporter (portable flavor, fp32,
  opset 21, dynamic batch);
- ``plain-CG`` / ``plain-PG``: the same network with each gated conv replaced by an
  ``nn.Conv2d`` of the same shape (bias-free, the gated layer's float weight) and its
  activation by ``nn.ReLU`` (PG's PactReLU included), written by the same exporter.

Each ONNX output is first checked against its torch model (max abs diff <= 1e-4; exit 1
otherwise). Timing: onnxruntime CPU EP, ``--threads`` intra-op threads (default 2),
sequential, graph optimization ALL, spinning off; inputs are held-out digits (8 x 8, the zoo's
shape) or, for a larger ``--sizes`` entry, the digits upsampled (nearest). Per batch size:
3 warm-up runs, then ``--repeats`` rounds (default 30), each running the four models once in a
fresh random order, each run timed as the mean of ``--inner`` calls; a ratio is the median of
the per-round ratios gated / plain, printed with its 25th-75th percentile. The Conv kernels
and all nodes onnxruntime runs after its optimizations are counted from its optimized graph
(the plain twin fuses BatchNorm and ReLU into its convolutions; the gated models cannot, the
gate sits between, and they add layout reorders around the non-NCHWc ops).

    python benchmarks/conv_gates.py                        # about 1 minute on 2 cores
    python benchmarks/conv_gates.py --batches 1 --sizes 8 --repeats 5 --json -

Exit codes: 0 measured, 1 an export does not match its torch model, 2 bad option.
"""

from __future__ import annotations

import argparse
import copy
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

MAX_ABS_DIFF = 1e-4


def plain_twin(model: nn.Module) -> nn.Module:
    """``model`` with its gated convs as plain ``nn.Conv2d`` (same shape and weight) + ReLU."""
    from gatex.models import CGConv2d, PGConv2d, PactReLU

    twin = copy.deepcopy(model).eval()
    for name, child in list(twin.named_children()):
        if isinstance(child, (CGConv2d, PGConv2d)):
            conv = nn.Conv2d(child.in_channels, child.out_channels, child.kernel_size,
                             child.stride, child.padding, child.dilation, child.groups,
                             bias=False)
            with torch.no_grad():
                conv.weight.copy_(child.weight)
            setattr(twin, name, conv)
        elif isinstance(child, PactReLU):
            setattr(twin, name, nn.ReLU())
    return twin.eval()


def session(path: Path, threads: int, optimized: Path | None = None):
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    opts.log_severity_level = 3
    if optimized is not None:
        opts.optimized_model_filepath = str(optimized)
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


def conv_kernels(path: Path) -> dict[str, int]:
    """Conv nodes (BatchNorm and ReLU fused in count as one) and all nodes in onnxruntime's
    optimized graph."""
    import onnx

    graph = onnx.load(str(path)).graph
    return {"conv": sum(1 for n in graph.node if "Conv" in n.op_type), "nodes": len(graph.node)}


def digits(batch: int, size: int) -> np.ndarray:
    from gatex.models import zoo

    x, _ = zoo.held_out("PGConv2d")
    x = x.repeat(-(-batch // len(x)), 1, 1, 1)[:batch]
    if size != 8:
        x = torch.nn.functional.interpolate(x, size=(size, size), mode="nearest")
    return np.ascontiguousarray(x.numpy())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batches", default="1,64", help="batch sizes, comma separated")
    parser.add_argument("--sizes", default="8,32", help="input H = W, comma separated (8: zoo)")
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--inner", type=int, default=10, help="calls averaged per timed run")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", help="write the numbers as JSON to this file ('-': stdout)")
    args = parser.parse_args(argv)
    try:
        batches = [int(b) for b in args.batches.split(",")]
        sizes = [int(s) for s in args.sizes.split(",")]
    except ValueError:
        batches = sizes = []
    if not batches or not sizes or min(*batches, *sizes, args.repeats, args.inner,
                                           args.threads) < 1 or min(sizes) < 4:
        print("error: --batches, --repeats, --inner, --threads must be >= 1 and --sizes >= 4 "
              "(comma-separated integers)", file=sys.stderr)
        return 2

    import gatex
    from gatex.exporters.onnx import trace_onnx, write_onnx

    models = {"CG": gatex.load_model("CGConv2d"), "PG": gatex.load_model("PGConv2d")}
    models.update({f"plain-{k}": plain_twin(m) for k, m in list(models.items())})
    results: dict = {"threads": args.threads, "repeats": args.repeats, "inner": args.inner,
                     "cases": []}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        for size in sizes:  # the exporter fixes H x W: one export per size
            example = torch.from_numpy(digits(2, size))
            sessions, kernels = {}, {}
            for k, m in models.items():
                path = tmp / f"{k}-{size}.onnx"
                write_onnx(trace_onnx(m, (example,), dynamic_batch=True), path)
                sessions[k] = session(path, args.threads, tmp / f"{k}-{size}.opt.onnx")
                kernels[k] = conv_kernels(tmp / f"{k}-{size}.opt.onnx")
            results["conv_kernels"] = kernels
            if size == sizes[0]:
                print("after onnxruntime's optimizations (Conv kernels / all nodes): "
                      + ", ".join(f"{k} {v['conv']}/{v['nodes']}" for k, v in kernels.items()))
            for batch in batches:
                feed = digits(batch, size)
                diffs = {}
                for k, s in sessions.items():
                    with torch.no_grad():
                        expected = models[k](torch.from_numpy(feed)).numpy()
                    diffs[k] = float(np.abs(s.run(None, {s.get_inputs()[0].name: feed})[0]
                                              - expected).max())
                if max(diffs.values()) > MAX_ABS_DIFF:
                    print(f"error: an export differs from its torch model: {diffs}",
                          file=sys.stderr)
                    return 1
                results["cases"].append(measure(sessions, feed, batch, size, diffs, args))
    if args.json:
        text = json.dumps(results, indent=2)
        print(text) if args.json == "-" else Path(args.json).write_text(text + "\n")
    return 0


def measure(sessions: dict, feed: np.ndarray, batch: int, size: int, diffs: dict,
            args: argparse.Namespace) -> dict:
    name = next(iter(sessions.values())).get_inputs()[0].name
    feeds = {name: feed}
    for s in sessions.values():
        for _ in range(3):
            s.run(None, feeds)
    times: dict[str, list[float]] = {k: [] for k in sessions}
    rng = random.Random(0)
    for _ in range(args.repeats):
        order = list(sessions)
        rng.shuffle(order)
        for k in order:
            run = sessions[k].run
            start = time.perf_counter()
            for _ in range(args.inner):
                run(None, feeds)
            times[k].append((time.perf_counter() - start) / args.inner)
    case = {"batch": batch, "size": size, "max_abs_diff": diffs,
            "median_ms": {k: 1e3 * statistics.median(v) for k, v in times.items()}}
    line = [f"{size}x{size} batch {batch}:"]
    for gate in ("CG", "PG"):
        ratios = sorted(g / p for g, p in zip(times[gate], times[f"plain-{gate}"]))
        q = statistics.quantiles(ratios, n=4) if len(ratios) > 1 else [ratios[0]] * 3
        case[gate] = {"ratio_median": statistics.median(ratios), "ratio_iqr": [q[0], q[2]]}
        line.append(f"{gate} {case['median_ms'][gate]:.3f} ms vs plain "
                    f"{case['median_ms']['plain-' + gate]:.3f} ms = "
                    f"{case[gate]['ratio_median']:.2f}x (IQR {q[0]:.2f}-{q[2]:.2f});")
    print(" ".join(line))
    return case


if __name__ == "__main__":
    sys.exit(main())
