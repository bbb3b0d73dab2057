"""Latency statistics of one backend's timed runs (min, mean, p50/p90/p99, max, std)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


# -- statistics -----------------------------------------------------------------------------------

@dataclass(frozen=True)
class LatencyStats:
    """Summary of one backend's timed runs, in milliseconds (see the module docstring)."""

    count: int
    min: float
    mean: float
    p50: float
    p90: float
    p99: float
    max: float
    std: float

    @property
    def cv(self) -> float:
        """Coefficient of variation, std / mean."""
        return self.std / self.mean if self.mean > 0 else 0.0

    def as_dict(self) -> dict[str, float]:
        return {k: getattr(self, k) for k in ("min", "mean", "p50", "p90", "p99", "max", "std")}


def latency_stats(samples_ns: Sequence[int | float]) -> LatencyStats:
    """Statistics of per-run times given in nanoseconds, reported in milliseconds.

    >>> latency_stats([1e6, 2e6, 3e6]).p50
    2.0
    """
    if len(samples_ns) == 0:
        raise ValueError("no timed runs to summarise")
    ms = np.asarray(samples_ns, dtype=np.float64) / 1e6
    p50, p90, p99 = np.percentile(ms, [50, 90, 99])
    std = float(ms.std(ddof=1)) if ms.size > 1 else 0.0
    return LatencyStats(int(ms.size), float(ms.min()), float(ms.mean()), float(p50), float(p90),
                        float(p99), float(ms.max()), std)
