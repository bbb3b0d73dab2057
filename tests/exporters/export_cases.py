"""Shared tables and helpers for the ONNX exporter tests (fixtures are in conftest.py).

Each zoo model is traced once per dtype for the whole session (`trace_onnx`, the step that costs
seconds) and written in each flavor on demand (`write_onnx`, milliseconds), so the op x flavor x
dtype matrix costs 2 traces per op, not 6. `export_onnx` is `write_onnx(trace_onnx(...))`;
test_onnx_export.py checks that the two routes write the same file.
"""

from __future__ import annotations

import functools
import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from gatex.exporters.onnx import OnnxArtifact, TracedOnnx, trace_onnx, write_onnx
from gatex.models import zoo
from gatex.ops import REGISTRY
from gatex.ops.spec import REDUCTION_TOLERANCES, Tolerance

HERE = Path(__file__).resolve().parent
REPO_ROOT = HERE.parent.parent
UNITS = tuple(zoo.ZOO)
FLAVORS = ("portable", "plugin", "inline")
DTYPES = ("fp32", "fp16")
# Every op is exported in fp32 (the default) in every flavor. fp16 costs a second trace per op:
# by default it runs for one op of each family (the one with an fp16 hazard in OPS.md where
# there is one: Mish's softplus, GoLU's inner exponent, ZiLU_Approx's inf / inf) and both conv
# gates (known fp16 parity failures); the other 12 fp16 exports are marked slow.
FP16_FAST = ("paMishU", "PaGRUCell", "GoLU", "ZiLU_Approx", "GatedDense", "CGConv2d",
             "PGConv2d")
TORCH_DTYPES = {"fp32": torch.float32, "fp16": torch.float16}
NP_DTYPES = {"fp32": np.float32, "fp16": np.float16}
EXAMPLE_BATCH = 4          # what gatex.export traces a zoo unit with
REFERENCE_SAMPLES = 64     # onnx.reference is pure NumPy: a slice of the 450 held-out digits


def spec_tolerance(ops: tuple[str, ...], dtype: str) -> Tolerance:
    """The loosest spec tolerance of ``ops`` and the standard reductions every zoo model runs
    (Linear, Conv), straight from the specs: what an export of a zoo model is held to."""
    name = {"fp32": "float32", "fp16": "float16"}[dtype]
    bounds = [REGISTRY.get(op).tolerance(TORCH_DTYPES[dtype]) for op in ops]
    bounds.append(REDUCTION_TOLERANCES[name])
    return Tolerance(max(t.rtol for t in bounds), max(t.atol for t in bounds))


def violations(actual: np.ndarray, expected: np.ndarray, tol: Tolerance) -> tuple[int, float]:
    """(elements outside |a - e| <= atol + rtol |e|, max |a - e|), in float64."""
    a, e = actual.astype(np.float64), expected.astype(np.float64)
    diff = np.abs(a - e)
    return int((diff > tol.atol + tol.rtol * np.abs(e)).sum()), float(diff.max())


@dataclass(eq=False)  # hashed by identity: the cached methods key on it
class ZooExports:
    """Zoo models, their held-out digits, torch outputs, and their ONNX exports (cached)."""

    root: Path

    @functools.cache  # noqa: B019  (one instance per session)
    def model(self, unit: str) -> nn.Module:
        return zoo.load(unit)

    @functools.cache  # noqa: B019
    def digits(self, unit: str) -> torch.Tensor:
        return zoo.held_out(unit)[0]

    @functools.cache  # noqa: B019
    def torch_output(self, unit: str, dtype: str, rows: int | None = None) -> np.ndarray:
        """The fp32 torch model on the first ``rows`` digits (all: None) as the export sees them
        (rounded to ``dtype``). Rows matter: PGConv2d's activation scale is the batch's max."""
        x = self.digits(unit)[:rows].to(TORCH_DTYPES[dtype]).float()
        with torch.no_grad():
            return self.model(unit)(x).numpy()

    @functools.cache  # noqa: B019
    def traced(self, unit: str, dtype: str) -> TracedOnnx:
        return trace_onnx(self.model(unit), (self.digits(unit)[:EXAMPLE_BATCH],), dtype=dtype)

    @functools.cache  # noqa: B019
    def artifact(self, unit: str, flavor: str, dtype: str) -> OnnxArtifact:
        path = self.root / f"{unit}-{flavor}-{dtype}.onnx"
        return write_onnx(self.traced(unit, dtype), path, flavor=flavor, unit=unit)


RUNNER = HERE / "no_gatex_runner.py"


def run_without_gatex(jobs: list[dict[str, str]], workdir: Path) -> dict[str, Any]:
    """Run ``jobs`` (model, inputs .npz, outputs .npz, backend) in a fresh Python process in
    which ``import gatex`` fails; returns the runner's JSON report."""
    spec = workdir / "jobs.json"
    spec.write_text(json.dumps(jobs))
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "GATEX_DEBUG")}
    proc = subprocess.run([sys.executable, str(RUNNER), str(spec)], capture_output=True,
                          text=True, timeout=600, env=env, cwd=workdir,
                          stdin=subprocess.DEVNULL, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def is_slow(unit: str, dtype: str) -> bool:
    return dtype == "fp16" and unit not in FP16_FAST


def matrix_param(unit: str, *rest: str, dtype: str) -> Any:
    """A ``pytest.param`` of (unit, *rest, dtype), marked slow per `is_slow`."""
    import pytest

    marks = [pytest.mark.slow] if is_slow(unit, dtype) else []
    return pytest.param(unit, *rest, dtype, marks=marks, id="-".join((unit, *rest, dtype)))
