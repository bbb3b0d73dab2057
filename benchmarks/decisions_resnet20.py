"""Decision-forced parity on CIFAR ResNet-20 with CGConv2d and with PGConv2d (issue 15).

    python benchmarks/decisions_resnet20.py                       # both models, 4 targets
    python benchmarks/decisions_resnet20.py --models PG --targets onnx-fp32 --batch 4 --json -

Per model (tests/realmodels/corpus.py: random init, warmed BatchNorm) and target (onnxruntime
fp32/fp16, CoreML fp32/fp16 in the MIL emulator): the export, then the parity check twice, side
by side in one process: plain (``--decisions strict``: the outputs against torch's own) and
decision-forced (the default). It prints, per target, the strict verdict, the forced verdict,
the max abs error of the outputs against torch with the artifact's decisions, the flips per
layer (how many gate or level decisions differ from torch's, all of them within the rounding
bound or not), the worst margin as a share of its bound, and the time the forced check takes
as a ratio to the plain one (the median of ``--rounds`` paired rounds, each running both in a
fresh random order; target: at most 2x). Exit 1 when a forced check fails or a ratio exceeds
``--max-ratio``; 2 for a bad argument.
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

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests" / "realmodels"))

TARGETS = {"onnx-fp32": ("onnx", "fp32"), "onnx-fp16": ("onnx", "fp16"),
           "coreml-fp32": ("coreml", "fp32"), "coreml-fp16": ("coreml", "fp16")}


def _export(model, inputs, target: str, out: Path) -> Path:
    from gatex.pipeline import export

    to, precision = TARGETS[target]
    options = {"dtype": precision} if to == "onnx" else {"precision": precision}
    return export(model, inputs, to=to, out_dir=out, name=f"r20-{target}", force=True,
                  check=False, **options).path


def _check(path: Path, model, feeds: dict, mode: str):
    from gatex.pipeline.check import artifact_runtime, compare_runtimes
    from gatex.runtimes.torch_runtime import TorchRuntime

    start = time.perf_counter()
    with artifact_runtime(path) as artifact, TorchRuntime(model) as reference:
        name = artifact.input_specs[0].name
        result = compare_runtimes(artifact, reference, {name: feeds["x"]}, decisions=mode)
    return result, time.perf_counter() - start


def measure(kind: str, target: str, batch: int, rounds: int, out: Path) -> dict:
    import corpus
    import numpy as np
    import torch

    model, _ = corpus.resnet20(kind)()
    g = torch.Generator().manual_seed(11)
    x = torch.randn(batch, 3, 32, 32, generator=g)
    path = _export(model, (x,), target, out)
    if target.endswith("fp16") and target.startswith("onnx"):
        feeds = {"x": x.numpy().astype(np.float16)}
    else:
        feeds = {"x": x.numpy()}
    times = {"strict": [], "forced": []}
    results = {}
    ratios = []
    for _ in range(rounds):
        order = ["strict", "forced"]
        random.shuffle(order)
        seconds = {}
        for mode in order:
            results[mode], seconds[mode] = _check(path, model, feeds, mode)
            times[mode].append(seconds[mode])
        ratios.append(seconds["forced"] / seconds["strict"])
    forced, strict = results["forced"], results["strict"]
    report = forced.decisions
    layers = [{"layer": layer.where(), "flips": layer.flips, "elements": layer.elements,
               "boundary": layer.boundary_flips, "worst_ratio": layer.worst_ratio}
              for layer in report.layers]
    return {"model": f"resnet20-{kind}", "target": target, "batch": batch,
            "strict_passed": strict.passed, "strict_max_abs": strict.outputs[0].max_abs,
            "forced_passed": forced.passed, "forced_max_abs": forced.outputs[0].max_abs,
            "forced": report.forced, "reason": report.reason,
            "tolerance": forced.tolerance.describe(),
            "flips": sum(x["flips"] for x in layers),
            "worst_ratio": max((x["worst_ratio"] for x in layers), default=0.0),
            "layers": layers, "seconds_strict": statistics.median(times["strict"]),
            "seconds_forced": statistics.median(times["forced"]),
            "ratio": statistics.median(ratios)}


def _print(row: dict) -> None:
    print(f"\n{row['model']} on {row['target']} (batch {row['batch']}): strict "
          f"{'pass' if row['strict_passed'] else 'FAIL'} (max abs {row['strict_max_abs']:.3g}), "
          f"forced {'pass' if row['forced_passed'] else 'FAIL'} (max abs under forcing "
          f"{row['forced_max_abs']:.3g}); {row['flips']} flips, worst margin "
          f"{row['worst_ratio']:.3g}x the bound; forced/plain time {row['ratio']:.2f}x "
          f"({row['seconds_forced']:.2f} s vs {row['seconds_strict']:.2f} s)")
    if not row["forced"]:
        print(f"  not forced: {row['reason']}")
    for x in row["layers"]:
        if x["flips"]:
            print(f"  {x['layer']}: {x['flips']} of {x['elements']} flipped, {x['boundary']} "
                  f"within the bound (worst {x['worst_ratio']:.2g}x)")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default="CG,PG", help="CG, PG or both, comma separated")
    parser.add_argument("--targets", default=",".join(TARGETS), help="comma separated")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=3, help="paired timing rounds")
    parser.add_argument("--max-ratio", type=float, default=2.0)
    parser.add_argument("--json", help="write the rows as JSON to this file ('-': stdout)")
    args = parser.parse_args(argv)
    kinds = [k for k in args.models.split(",") if k]
    targets = [t for t in args.targets.split(",") if t]
    bad = [k for k in kinds if k not in ("CG", "PG")] + [t for t in targets if t not in TARGETS]
    if bad or args.batch < 1 or args.rounds < 1:
        print(f"error: unknown models/targets {', '.join(bad) or '-'} (models CG, PG; targets "
              f"{', '.join(TARGETS)}); --batch and --rounds must be >= 1", file=sys.stderr)
        return 2
    import importlib.util

    rows = []
    with tempfile.TemporaryDirectory(prefix="gatex-decisions-") as tmp:
        for kind in kinds:
            for target in targets:
                if target.startswith("coreml") and importlib.util.find_spec("coremltools") is None:
                    print(f"skipped {target}: coremltools is not installed", file=sys.stderr)
                    continue
                rows.append(measure(kind, target, args.batch, args.rounds, Path(tmp)))
                _print(rows[-1])
    if args.json:
        text = json.dumps(rows, indent=2) + "\n"
        sys.stdout.write(text) if args.json == "-" else Path(args.json).write_text(text)
    failed = [r for r in rows if not r["forced_passed"] or r["ratio"] > args.max_ratio]
    for r in failed:
        print(f"error: {r['model']} on {r['target']}: forced "
              f"{'pass' if r['forced_passed'] else 'FAIL'}, time ratio {r['ratio']:.2f}x "
              f"(limit {args.max_ratio:g}x)", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
