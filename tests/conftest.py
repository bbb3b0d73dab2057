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


# -- slow tests: skipped by default, with the reason printed (pytest -ra) -------------------------

def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--run-slow", action="store_true", default=False,
                     help="also run tests marked slow (or set GATEX_RUN_SLOW=1)")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if config.getoption("--run-slow") or os.environ.get("GATEX_RUN_SLOW") == "1":
        return
    # `-m slow` asks for them explicitly
    if "slow" in (config.getoption("markexpr") or "") and "not slow" not in config.getoption("markexpr"):
        return
    skip = pytest.mark.skip(reason="slow: the full matrix; run with --run-slow or GATEX_RUN_SLOW=1")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)


# -- no test leaves files in the checkout --------------------------------------------------------

_ROOT_BEFORE: set[str] = set()


def _root_entries() -> set[str]:
    return {p.name for p in REPO_ROOT.iterdir()}


def pytest_sessionstart(session: pytest.Session) -> None:
    _ROOT_BEFORE.update(_root_entries())


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """A test that exports without ``-o``/``out_dir`` writes into the working directory, the
    checkout: fail the run, naming what appeared (and remove nothing: look at it)."""
    new = sorted(_root_entries() - _ROOT_BEFORE - {".pytest_cache", ".hypothesis"})
    if new and not hasattr(session.config, "workerinput"):
        session.config.get_terminal_writer().line(
            f"error: the tests left new files in the checkout root: {', '.join(new)}", red=True)
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
