"""Shared test helpers: the repository root, and a fresh Python process (the real entry point)."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent

RunPython = Callable[..., subprocess.CompletedProcess]


def _run_python(*args: str, env: dict[str, str] | None = None, timeout: float = 120,
                cwd: Path = REPO_ROOT) -> subprocess.CompletedProcess:
    # The checkout's gatex whether or not it is installed; no GATEX_DEBUG unless a test sets it;
    # a wide terminal so rich does not wrap the tables the tests read.
    base = {k: v for k, v in os.environ.items() if k != "GATEX_DEBUG"}
    full_env = {**base, "PYTHONPATH": str(REPO_ROOT), "COLUMNS": "200", **(env or {})}
    return subprocess.run([sys.executable, *args], check=False, cwd=cwd, env=full_env,
                          text=True, capture_output=True, timeout=timeout,
                          stdin=subprocess.DEVNULL)


@pytest.fixture
def repo_root() -> Path:
    return REPO_ROOT


@pytest.fixture
def run_python() -> RunPython:
    """``run_python("-m", "gatex", "units")``: this interpreter, a fresh process, the repo root."""
    return _run_python
