"""Artifacts the runtime and parity tests share, built once per session.

The hand-built graphs (runtime_cases.py) cost milliseconds; `pa_glu_export` is one real
``gatex.export`` of the paGLU zoo model (about 5 s), so the runtime, locate and report tests
also run on what the exporter writes.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

import runtime_cases as cases


@dataclass(frozen=True)
class Tiny:
    """The tiny GoLU network: its ONNX file, its torch reference (file.py:Tiny + safetensors),
    an inputs file, and the weights and inputs themselves."""

    onnx: Path
    model_ref: str
    weights_path: Path
    inputs: Path
    weights: dict[str, np.ndarray]
    x: np.ndarray


@pytest.fixture(scope="session")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Tiny:
    directory = tmp_path_factory.mktemp("tiny")
    weights = cases.tiny_weights()
    model_ref, weights_path = cases.write_tiny_reference(directory, weights)
    x = np.random.default_rng(1).normal(0, 1.5, (32, 64)).astype(np.float32)
    np.savez(directory / "x.npz", x=x)
    return Tiny(cases.save(cases.tiny_onnx(weights), directory / "tiny.onnx"), model_ref,
                weights_path, directory / "x.npz", weights, x)


@pytest.fixture(scope="session")
def zoo_golu(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The zoo GoLU model as a portable ONNX graph built by hand, ``gatex.unit`` = GoLU."""
    return cases.save(cases.zoo_golu_onnx(), tmp_path_factory.mktemp("zoo") / "GoLU.onnx")


@pytest.fixture(scope="session")
def pa_glu_export(tmp_path_factory: pytest.TempPathFactory):
    """``gatex.export("paGLU", to="onnx")``: the ExportResult (path, parity at export)."""
    import gatex

    return gatex.export("paGLU", to="onnx", out_dir=tmp_path_factory.mktemp("export"))
