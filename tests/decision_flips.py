"""Where a test compares a hard-decision op's raw outputs elementwise (no gatex parity).

PGConv2d quantises each conv output to a level; a summation order that differs by one ulp
moves a value that sits on a level boundary to the next level, and the next layer spreads the
jump. How many values sit that close depends on the CPU's kernels: on the AMD EPYC machines
the suite was written on, the zoo PGConv2d export on onnxruntime fp32 gave 10 flipped logits
of 4500; on an Intel AVX-512 machine (2026-12-01) 29. gatex parity proves such flips
(decision-forced parity, tests/runtimes/test_decision_parity.py); the tests that run an
artifact without gatex and compare its outputs with torch's own elementwise cannot, so there
such a case is an expected failure on machines that show it, with the count in the reason,
and a pass everywhere else.
"""

from __future__ import annotations

import pytest

HARD_DECISION_UNITS = {"PGConv2d"}


def xfail_on_decision_flips(unit: str, off: int, total: int, what: str) -> None:
    """xfail (not skip: the test ran) when ``unit`` makes hard decisions and at most 2 % of its
    ``total`` values are ``off``; more than that is a real failure."""
    if unit in HARD_DECISION_UNITS and 0 < off <= 0.02 * total:
        pytest.xfail(f"{unit}: {off} of {total} values flipped by hard decisions on this CPU "
                     f"({what}); gatex parity proves such flips (decision-forced), this raw "
                     "elementwise comparison cannot")
