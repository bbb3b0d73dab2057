"""gatex export --to coreml against plain coremltools.convert of the same program (issue 16).

    python benchmarks/coreml_speed.py                    # 3 models, 1 warm-up + 2 rounds
    python benchmarks/coreml_speed.py --models resnet20-CG --rounds 3 --json -

Per model (tests/realmodels/corpus.py; random init), side by side in one process, after
``--warmup`` untimed rounds, each round in a fresh random order:

- plain: ``torch.export.export`` of the model with the batch dynamic (the gatex ops kept, as
  gatex traces them) and ``coremltools.convert`` of that program to an fp16 ML Program, saved:
  what a user gets by calling coremltools on gatex's program with gatex's lowerings registered;
- export: ``gatex.export(model, inputs, to="coreml", check=False)`` (the same two steps, plus
  gatex's metadata, the gated-weight scan and the atomic save);
- export + check: the same with the check (the MIL emulator against torch).

Targets: export <= 1.5x plain, export + check <= 3x. Then, per model, the MIL emulator on 32
samples against torch eager on the same batch (the program exported once; medians of
``--rounds`` + 1 paired runs after a warm-up; target: <= 10x). Exit 2 for a bad argument.
"""

from __future__ import annotations

import argparse
import importlib.util
import random
import statistics
import sys
import time
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests" / "realmodels"))

MODELS = ("resnet18-GoLU", "gru-PaGRUCell", "resnet20-CG")
TARGETS = {"export": 1.5, "export+check": 3.0}


def _plain(model, inputs, out: Path) -> float:
    import coremltools as ct
    import torch

    from gatex.exporters.coreml import register_lowerings
    from gatex.ops import keep_ops
    from gatex.runtimes.coreml_emulator import quiet_coremltools

    register_lowerings()
    batch = torch.export.Dim("batch", min=1)
    start = time.perf_counter()
    with warnings.catch_warnings(), keep_ops(), quiet_coremltools():
        warnings.simplefilter("ignore")
        program = torch.export.export(model, tuple(inputs),
                                      dynamic_shapes=tuple({0: batch} for _ in inputs))
        program = program.run_decompositions({})
        mlmodel = ct.convert(program, convert_to="mlprogram",
                             compute_precision=ct.precision.FLOAT16,
                             minimum_deployment_target=ct.target.iOS17, skip_model_load=True)
        mlmodel.save(str(out / "plain.mlpackage"))
    return time.perf_counter() - start


def _gatex(model, inputs, out: Path, check: bool) -> float:
    from gatex.pipeline import export

    start = time.perf_counter()
    result = export(model, inputs, to="coreml", out_dir=out, name=f"g{int(check)}", force=True,
                    check=check)
    if check and not result.passed:
        raise SystemExit(f"error: the export's check failed: {result.parity.summary()}")
    return time.perf_counter() - start


def measure(name: str, rounds: int, warmup: int, out: Path) -> dict:
    import corpus

    entry = next(e for e in corpus.ENTRIES if e.name == name)
    model, inputs = entry.build()
    run = {"plain": lambda: _plain(model, inputs, out),
           "export": lambda: _gatex(model, inputs, out, False),
           "export+check": lambda: _gatex(model, inputs, out, True)}
    for _ in range(warmup):
        for fn in run.values():
            fn()
    times: dict[str, list[float]] = {k: [] for k in run}
    for _ in range(rounds):
        for variant in random.sample(list(run), len(run)):
            times[variant].append(run[variant]())
    med = {k: statistics.median(v) for k, v in times.items()}
    return {"model": name, "rounds": rounds, "seconds": med,
            "ratios": {k: med[k] / med["plain"] for k in TARGETS},
            "emulator": emulator_vs_torch(model, inputs, out, rounds + 1)}


def emulator_vs_torch(model, inputs, out: Path, rounds: int, samples: int = 32) -> dict:
    """The emulator's time for ``samples`` samples against torch eager on the same batch."""
    import numpy as np
    import torch

    from gatex.pipeline import export
    from gatex.runtimes.coreml_emulator import MilEmulator

    def batch(t: torch.Tensor) -> torch.Tensor:
        reps = -(-samples // t.shape[0])
        return t.repeat(reps, *([1] * (t.dim() - 1)))[:samples]

    big = [batch(t) for t in inputs]
    emulator = MilEmulator(export(model, inputs, to="coreml", out_dir=out, name="emu",
                                  force=True, check=False).path)
    feeds = {spec.name: np.asarray(t.numpy(), spec.dtype) for spec, t in
             zip(emulator.inputs, big)}
    emulator.run(feeds)
    with torch.no_grad():
        model(*big)
    ratios, seconds = [], {"emulator": [], "torch": []}
    for _ in range(rounds):
        start = time.perf_counter()
        emulator.run(feeds)
        seconds["emulator"].append(time.perf_counter() - start)
        start = time.perf_counter()
        with torch.no_grad():
            model(*big)
        seconds["torch"].append(time.perf_counter() - start)
        ratios.append(seconds["emulator"][-1] / seconds["torch"][-1])
    return {"samples": samples, "ratio": statistics.median(ratios),
            **{k: statistics.median(v) for k, v in seconds.items()}}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default=",".join(MODELS), help="comma separated")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--json", help="write the rows as JSON to this file ('-': stdout)")
    args = parser.parse_args(argv)
    names = [m for m in args.models.split(",") if m]
    bad = [m for m in names if m not in MODELS]
    if bad or args.rounds < 1 or args.warmup < 0:
        print(f"error: unknown models {', '.join(bad) or '-'} (choose from {', '.join(MODELS)});"
              " --rounds must be >= 1", file=sys.stderr)
        return 2
    if importlib.util.find_spec("coremltools") is None:
        print("error: coremltools is not installed (pip install 'gatex[coreml]')",
              file=sys.stderr)
        return 3
    from export_speed import run_corpus, write_rows  # the sibling script, on sys.path

    def emulator_line(row: dict) -> str:
        emu = row["emulator"]
        return (f"{'':15} emulator {emu['emulator']:.3f} s vs torch {emu['torch']:.3f} s on "
                f"{emu['samples']} samples: {emu['ratio']:.1f}x "
                f"({'ok' if emu['ratio'] <= 10 else 'over'} 10x)")

    rows = run_corpus(names, lambda name, tmp: measure(name, args.rounds, args.warmup, tmp),
                      TARGETS, "gatex-coreml-speed-", emulator_line)
    return write_rows(rows, args.json)


if __name__ == "__main__":
    sys.exit(main())
