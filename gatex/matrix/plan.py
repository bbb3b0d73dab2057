"""Planning a matrix: its cells grouped by the runner kind that can execute them and balanced
over shards by cost (a baseline's measured seconds, else `DEFAULT_COST` per target kind), in
the forms CI systems consume (GitHub Actions ``include:``, GitLab ``parallel: matrix:``).

The plan is a pure function of the matrix, the runner kinds and the shard count (and the
baseline's costs), so every shard job computes the same one: ``--shard i/N`` needs no file
passed between jobs.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from gatex.matrix.spec import DEFAULT_COST, Cell, Matrix, MatrixError

FORMATS = ("github", "gitlab", "json")


@dataclass(frozen=True)
class Shard:
    runner: str
    index: int           # 1-based
    count: int
    cells: tuple[Cell, ...]
    exports: tuple[Cell, ...] = ()   # cells only exported here, checked on another runner

    @property
    def name(self) -> str:
        return f"{self.index}/{self.count}"

    def cost(self, costs: Mapping[str, float]) -> float:
        return sum(cell_cost(c, costs) for c in (*self.cells, *self.exports))


def cell_cost(cell: Cell, costs: Mapping[str, float]) -> float:
    return float(costs.get(cell.id, DEFAULT_COST[cell.target.to]))


def parse_shard(text: str) -> tuple[int, int]:
    """``"2/3"`` -> (2, 3); a bad one is one line (exit 2)."""
    try:
        i, n = (int(x) for x in str(text).split("/"))
    except ValueError:
        raise MatrixError(f"--shard must be I/N, like 2/3; got {text!r}") from None
    if not 1 <= i <= n:
        raise MatrixError(f"--shard {text}: I must be in 1..N")
    return i, n


def plan(matrix: Matrix, shards: int, *, runner: str | None = None,
         costs: Mapping[str, float] | None = None) -> list[Shard]:
    """``shards`` shards per runner kind (only ``runner`` when given), each a balanced share of
    that kind's cells, and of the cells it only exports for another runner (`Cell.exported_on`:
    CoreML packages for macOS are converted on linux): longest first onto the least loaded
    shard (LPT), ties by cell id, so the plan is the same in every job."""
    if shards < 1:
        raise MatrixError(f"--shards must be >= 1; got {shards}")
    costs = costs or {}
    kinds = [r for r in matrix.runners if runner is None or r == runner]
    if runner is not None and not kinds:
        raise MatrixError(f"runner {runner!r} is not declared in {matrix.path} "
                          f"(runners = {list(matrix.runners)})")
    out = []
    order = {c.id: i for i, c in enumerate(matrix.cells())}
    for kind in kinds:
        jobs = [(c, False) for c in matrix.cells() if c.runner(matrix.runners) == kind]
        jobs += [(c, True) for c in matrix.cells() if c.exported_on(matrix.runners) == kind]
        if not jobs:
            continue
        loads = [0.0] * shards
        groups: list[list[tuple[Cell, bool]]] = [[] for _ in range(shards)]
        for job in sorted(jobs, key=lambda j: (-cell_cost(j[0], costs), j[0].id, j[1])):
            k = min(range(shards), key=lambda j: (loads[j], j))
            groups[k].append(job)
            loads[k] += cell_cost(job[0], costs)
        for i, group in enumerate(groups):
            group.sort(key=lambda j: order[j[0].id])
            out.append(Shard(kind, i + 1, shards, tuple(c for c, e in group if not e),
                             tuple(c for c, e in group if e)))
    return out


def shard_cells(shards: Sequence[Shard], index: int, count: int, runner: str) -> Shard:
    for s in shards:
        if s.runner == runner and s.index == index and s.count == count:
            return s
    return Shard(runner, index, count, ())


def render(shards: Sequence[Shard], fmt: str, matrix: Matrix,
           costs: Mapping[str, float] | None = None) -> str:
    """The plan as GitHub Actions ``include:`` JSON (one entry per shard: runner, shard,
    cells, estimated seconds), GitLab ``parallel: matrix:`` YAML, or the full JSON plan."""
    costs = costs or {}
    if fmt not in FORMATS:
        raise MatrixError(f"--format must be one of {', '.join(FORMATS)}; got {fmt!r}")
    busy = [s for s in shards if s.cells or s.exports]
    entries = [{"runner": s.runner, "shard": s.name, "cells": len(s.cells),
                "exports": len(s.exports), "seconds": round(s.cost(costs), 1)} for s in busy]
    if fmt == "github":
        return json.dumps({"include": entries}) + "\n"
    if fmt == "gitlab":
        lines = ["parallel:", "  matrix:"]
        for e in entries:
            lines += [f"    - RUNNER: {e['runner']}", f"      SHARD: \"{e['shard']}\""]
        return "\n".join(lines) + "\n"
    doc = {"schema": "gatex.matrix-plan/1", "matrix": str(matrix.path),
           "runners": list(matrix.runners),
           "shards": [{**e, "ids": [c.id for c in s.cells],
                       "export_ids": [c.id for c in s.exports]} for e, s in zip(entries, busy)]}
    return json.dumps(doc, indent=2) + "\n"
