"""gatex: deploy neural networks built with gated units, and prove every export numerically.

Public API: `load_model` (zoo unit, user model or .pt2), `export` (ONNX, checked against torch),
`parity` (an artifact against its reference), the op registry (`gatex.ops`), the modules
(`gatex.models`), `bench` (latency and memory per backend); `export` reaches ONNX, CoreML and
TensorRT.

``import gatex`` is light: torch and the backends are imported when an attribute that needs
them is first used (PEP 562), so the command line can install its signal handlers first.
"""

from __future__ import annotations

from typing import Any

from gatex._version import __version__
from gatex.errors import GatexError

_LAZY = {"ops": ("gatex.ops", None), "export": ("gatex.pipeline", "export"),
         "load_model": ("gatex.loading", "load_model"),
         "read_checkpoint": ("gatex.loading", "read_checkpoint")}


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module 'gatex' has no attribute {name!r}")
    import importlib

    module_name, attr = _LAZY[name]
    module = importlib.import_module(module_name)
    value = module if attr is None else getattr(module, attr)
    globals()[name] = value
    return value


def parity(artifact: str, **options: object) -> object:
    """Parity of an exported artifact against its torch reference (`gatex parity` in Python).

    Options as `gatex.pipeline.check_artifact`: unit=, model=, weights=, inputs=, dtype=, rtol=,
    atol=, locate=, precision_floor= (default True: an fp16/bf16 artifact's atol is at least 2x
    the atol torch's own run in that precision needs). Returns a `ParityResult`, truthy when
    every output passes.
    """
    from pathlib import Path

    from gatex.pipeline.check import check_artifact

    return check_artifact(Path(artifact), **options)


def bench(*artifacts: str, **options: object) -> object:
    """Latency, memory, load time and size on each backend (`gatex bench` in Python).

    Options as `gatex.benchmarking.run.bench`: unit=, model=, backends= ("all" or "torch,ort"),
    batch_size=, warmup=, iterations= or duration=, threads=, device=, baseline=,
    max_regression=. Each backend runs in its own process; returns a `BenchResult` (torch eager
    is the reference row), truthy when no backend failed and nothing regressed.

    >>> result = gatex.bench(unit="GoLU", backends="torch,ort", iterations=50)
    """
    from gatex.benchmarking.run import bench as run_bench

    if len(artifacts) == 1 and isinstance(artifacts[0], (list, tuple)):
        artifacts = tuple(artifacts[0])    # gatex.bench([a, b]) as gatex.bench(a, b)
    return run_bench(artifacts, **options)  # type: ignore[arg-type]


__all__ = ["GatexError", "bench", "export", "ops", "parity", "__version__", "load_model",
           "read_checkpoint"]
