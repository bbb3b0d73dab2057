"""The real-model matrix: every corpus model (tests/realmodels/corpus.py) through every target.

    python benchmarks/realmodels_matrix.py                   # print the Markdown table
    python benchmarks/realmodels_matrix.py --readme README.md  # and rewrite the README's table
    python benchmarks/realmodels_matrix.py --models gpt2 --targets onnx-fp32,openvino

Each cell: pass/FAIL and the worst max-abs error against torch (fp32 eager) on the model's
example inputs; the notes under the table say why a cell failed. The seconds per cell are
printed as the run goes (machines are noisy: they are for orientation, not targets).
"""

from __future__ import annotations

import argparse
import re
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests" / "realmodels"))

BEGIN, END = "<!-- realmodels-matrix -->", "<!-- /realmodels-matrix -->"


def main(argv: list[str] | None = None) -> int:
    import importlib.util

    from corpus import ENTRIES
    from matrix import TARGETS, no_output, run_cell

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--readme", type=Path, help="rewrite the table between the markers")
    ap.add_argument("--models", default="", help="comma-separated name prefixes (default all)")
    ap.add_argument("--targets", default=",".join(TARGETS), help="comma-separated targets")
    args = ap.parse_args(argv)
    targets = [t for t in args.targets.split(",") if t]
    prefixes = tuple(p for p in args.models.split(",") if p)
    rows, notes = [], []
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="gatex-matrix-") as tmp:
        for entry in ENTRIES:
            if prefixes and not entry.name.startswith(prefixes):
                continue
            if entry.library and importlib.util.find_spec(entry.library) is None:
                notes.append(f"{entry.name}: skipped, {entry.library} is not installed")
                continue
            model, inputs = no_output(entry.build)
            cells = []
            for target in targets:
                cell = no_output(lambda: run_cell(entry, model, inputs, target, Path(tmp)))
                print(f"{entry.name:24} {target:12} {cell.markdown():22} {cell.seconds:6.1f} s"
                      f"  {cell.note}", file=sys.stderr, flush=True)
                cells.append(cell.markdown())
                if not cell.passed:
                    notes.append(f"{entry.name} / {target}: {cell.note}")
            rows.append(f"| {entry.name} | " + " | ".join(cells) + " |")
    table = "\n".join([f"| model | {' | '.join(targets)} |",
                       "|---" * (len(targets) + 1) + "|", *rows])
    if notes:
        table += "\n\n" + "\n".join(f"- {n}" for n in notes)
    table += (f"\n\nMeasured by `python benchmarks/realmodels_matrix.py` in "
              f"{time.perf_counter() - start:.0f} s; max abs error against torch fp32 eager.")
    print(table)
    if args.readme:
        text = args.readme.read_text()
        if BEGIN not in text or END not in text:
            print(f"{args.readme} has no {BEGIN} ... {END} markers", file=sys.stderr)
            return 2
        new = re.sub(re.escape(BEGIN) + ".*?" + re.escape(END),
                     lambda _: f"{BEGIN}\n{table}\n{END}", text, flags=re.S)
        args.readme.write_text(new)
    return 0


if __name__ == "__main__":
    sys.exit(main())
