"""CPU time of the commands a person runs first, each in a fresh process, side by side with
`python -c "import torch"` (what every command paid before the ops became data).

    python benchmarks/cli_start.py [--rounds 5]

Prints, per command, the median user+sys CPU seconds over the rounds, its ratio to the torch
import, and whether the process imported torch. Target (issue 18): under 1 s of CPU, no torch.
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys

COMMANDS = {
    "--help": ["--help"],
    "--version": ["--version"],
    "units": ["units"],
    "units GoLU": ["units", "GoLU"],
    "doctor": ["doctor"],
    "doctor --deep": ["doctor", "--deep"],   # what doctor did before: torch asked itself
    "bad option": ["export", "--bogus"],
}
PROBE = ("import sys, runpy; sys.argv = ['gatex', *sys.argv[1:]]\n"
         "try:\n    runpy.run_module('gatex', run_name='__main__')\n"
         "except SystemExit:\n    pass\n"
         "sys.stderr.write('TORCH=%d\\n' % ('torch' in sys.modules))\n")


def cpu_of(argv: list[str]) -> tuple[float, str]:
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    proc = subprocess.run(argv, capture_output=True, text=True, env={**os.environ, "COLUMNS": "80"},
                          check=False)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return cpu, proc.stderr


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args()
    torch_cpu = statistics.median(cpu_of([sys.executable, "-c", "import torch"])[0]
                                  for _ in range(args.rounds))
    print(f"{'command':<14} {'cpu s':>7} {'/ import torch':>15}  torch imported")
    print(f"{'import torch':<14} {torch_cpu:7.3f} {1.0:15.2f}  yes")
    fast = [label for label in COMMANDS if not label.endswith("--deep")]
    worst = 0.0
    for label, argv in COMMANDS.items():
        runs = [cpu_of([sys.executable, "-c", PROBE, *argv]) for _ in range(args.rounds)]
        cpu = statistics.median(r[0] for r in runs)
        imported = "yes" if "TORCH=1" in runs[-1][1] else "no"
        print(f"{label:<14} {cpu:7.3f} {cpu / torch_cpu:15.2f}  {imported}")
        if label in fast:
            worst = max(worst, cpu)
    print(f"slowest of {', '.join(fast)}: {worst:.3f} s CPU (target < 1 s; doctor --deep "
          "imports torch by design)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
