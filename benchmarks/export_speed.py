"""gatex export --to onnx against a plain torch.onnx.export of the same model (issue 16).

    python benchmarks/export_speed.py                          # the four corpus models, 2 rounds
    python benchmarks/export_speed.py --models resnet20-CG --rounds 3 --json -

Per model (tests/realmodels/corpus.py: GPT-2 paGLU, ResNet-18 GoLU, ViT-tiny GoLU, ResNet-20
CG; random init), side by side in one process, after ``--warmup`` untimed rounds, each round
in a fresh random order:

- plain: ``torch.onnx.export(model, inputs, dynamo=True)`` with the batch dimension dynamic
  (as gatex exports it by default; a dynamic batch costs torch.export about 2x a static one,
  measured on GPT-2: 1.7 s static, 3.8 s dynamic, for both exporters), the gatex ops
  decomposed into standard aten ops (what a user's own exporter gets from gatex modules),
  saved to a file;
- export: ``gatex.export(model, inputs, to="onnx", check=False)``;
- export + check: the same with the post-export parity check.

It prints the median seconds, the ratios to plain (targets: export <= 1.5x, export + check <=
2x) and where gatex's time goes (its stages: prepare, trace, write, check). A model whose
library is missing is skipped with the reason. Exit 2 for a bad argument.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import random
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests" / "realmodels"))

MODELS = ("gpt2-paGLU", "resnet18-GoLU", "vit-tiny-GoLU", "resnet20-CG")
TARGETS = {"export": 1.5, "export+check": 2.0}


def _plain(model, inputs, out: Path) -> float:
    import torch

    batch = torch.export.Dim("batch")   # gatex exports a dynamic batch by default: the same
    start = time.perf_counter()
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        program = torch.onnx.export(model, inputs, dynamo=True, verbose=False,
                                    dynamic_shapes=tuple({0: batch} for _ in inputs))
        program.save(str(out / "plain.onnx"))
    return time.perf_counter() - start


def _gatex(model, inputs, out: Path, check: bool) -> tuple[float, dict[str, float]]:
    from gatex.pipeline import export

    start = time.perf_counter()
    result = export(model, inputs, to="onnx", out_dir=out, name=f"g{int(check)}", force=True,
                    check=check)
    if check and not result.passed:
        raise SystemExit(f"error: the export's check failed: {result.parity.summary()}")
    return time.perf_counter() - start, dict(result.timings)


def measure(name: str, rounds: int, out: Path, warmup: int = 1) -> dict:
    import corpus

    entry = next(e for e in corpus.ENTRIES if e.name == name)
    model, inputs = entry.build()
    for _ in range(warmup):   # first calls pay for imports and caches: not what is compared
        _plain(model, inputs, out)
        _gatex(model, inputs, out, check=True)
    times: dict[str, list[float]] = {"plain": [], "export": [], "export+check": []}
    stages: dict[str, list[float]] = {}
    for _ in range(rounds):
        for variant in random.sample(list(times), len(times)):
            if variant == "plain":
                times[variant].append(_plain(model, inputs, out))
                continue
            seconds, timings = _gatex(model, inputs, out, check=variant == "export+check")
            times[variant].append(seconds)
            if variant == "export+check":
                for stage, s in timings.items():
                    stages.setdefault(stage, []).append(s)
    med = {k: statistics.median(v) for k, v in times.items()}
    return {"model": name, "rounds": rounds, "seconds": med,
            "ratios": {k: med[k] / med["plain"] for k in TARGETS},
            "stages": {k: statistics.median(v) for k, v in stages.items()}}


def run_corpus(names: list[str], measure_one, targets: dict[str, float], prefix: str,
               detail=None) -> list[dict]:
    """``measure_one(name, folder)`` for each corpus model whose library is installed (the
    others skipped with the reason), printing its times, ratios against ``targets`` and
    ``detail(row)``; the rows. coreml_speed.py shares it."""
    import corpus

    rows = []
    with tempfile.TemporaryDirectory(prefix=prefix) as tmp:
        for name in names:
            entry = next(e for e in corpus.ENTRIES if e.name == name)
            if entry.library and importlib.util.find_spec(entry.library) is None:
                print(f"skipped {name}: {entry.library} is not installed", file=sys.stderr)
                continue
            rows.append(measure_one(name, Path(tmp)))
            s, r = rows[-1]["seconds"], rows[-1]["ratios"]
            verdicts = ", ".join(f"{k} {r[k]:.2f}x ({'ok' if r[k] <= t else 'over'} {t:g}x)"
                                 for k, t in targets.items())
            print(f"{name:15} plain {s['plain']:6.1f} s  export {s['export']:6.1f} s  "
                  f"export+check {s['export+check']:6.1f} s  -> {verdicts}")
            if detail is not None:
                print(detail(rows[-1]))
    return rows


def write_rows(rows: list[dict], where: str | None) -> int:
    """The rows as JSON to ``where`` ('-': stdout; None: nowhere); exit code 0."""
    if where:
        text = json.dumps(rows, indent=2) + "\n"
        sys.stdout.write(text) if where == "-" else Path(where).write_text(text)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default=",".join(MODELS), help="comma separated")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--warmup", type=int, default=1, help="untimed rounds first")
    parser.add_argument("--json", help="write the rows as JSON to this file ('-': stdout)")
    args = parser.parse_args(argv)
    names = [m for m in args.models.split(",") if m]
    bad = [m for m in names if m not in MODELS]
    if bad or args.rounds < 1:
        print(f"error: unknown models {', '.join(bad) or '-'} (choose from {', '.join(MODELS)});"
              " --rounds must be >= 1", file=sys.stderr)
        return 2
    rows = run_corpus(names, lambda name, tmp: measure(name, args.rounds, tmp, args.warmup),
                      TARGETS, "gatex-export-speed-",
                      lambda row: "    gatex stages: " + ", ".join(
                          f"{k} {v:.1f} s" for k, v in row["stages"].items()))
    return write_rows(rows, args.json)


if __name__ == "__main__":
    sys.exit(main())
