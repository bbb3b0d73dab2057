"""A wheel built from the tree, installed with its core dependencies only (in the spirit of
Polygraphy's dependency test): every module imports, every command's --help works, the main
job passes, and each command that needs an extra exits 3 with one line naming it.

It builds a fresh virtual environment (CPU torch first, then the wheel and what it requires),
so it takes a minute or two; it needs the package index that CI and the README use.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
OPTIONAL = ("coremltools", "h5py", "matplotlib", "triton", "sklearn", "keras", "pytest")
COMMANDS = ("units", "doctor", "export", "parity", "bench", "inspect")

IMPORT_ALL = """
import importlib, pkgutil, sys
import gatex
from gatex.errors import BackendUnavailableError
assert gatex.__file__.startswith(sys.prefix), gatex.__file__   # the wheel, not the tree
for name in {optional!r}:
    assert importlib.util.find_spec(name) is None, name + " is installed"
names = [m.name for m in pkgutil.walk_packages(gatex.__path__, "gatex.")]
needs_extra = []
for name in names:
    try:
        importlib.import_module(name)
    except BackendUnavailableError as exc:  # a module that is an optional backend itself
        assert "pip install 'gatex[" in str(exc), (name, str(exc))
        needs_extra.append(name)
print(len(names), "modules", ",".join(needs_extra))
"""


def _run(args: list[str], cwd: Path, timeout: float = 600) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "GATEX_DEBUG")}
    env.update(PYTHONNOUSERSITE="1", PIP_NO_INPUT="1", PIP_PROGRESS_BAR="off", COLUMNS="120")
    return subprocess.run(args, cwd=cwd, env=env, text=True, capture_output=True,
                          timeout=timeout, stdin=subprocess.DEVNULL, check=False)


@pytest.fixture(scope="module")
def bare(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The bin/ folder of a venv holding the gatex wheel and its core dependencies only."""
    root = tmp_path_factory.mktemp("bare")
    # built from a copy: setuptools writes build/ (and egg-info) into the tree it builds
    source = root / "src"
    shutil.copytree(REPO, source, ignore=shutil.ignore_patterns(
        ".venv", ".git", "build", "*.egg-info", ".pytest_cache", ".hypothesis", "__pycache__"))
    built = _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
                  "-q", "-w", str(root / "dist"), str(source)], cwd=root)
    assert built.returncode == 0, built.stderr
    wheel = next((root / "dist").glob("gatex-*.whl"))
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
    assert any(n.startswith("gatex/models/zoo/weights/") and n.endswith(".safetensors")
               for n in names)
    assert "gatex/models/zoo/data/digits.npz" in names or \
        any(n.startswith("gatex/models/zoo/data/") and n.endswith(".npz") for n in names)
    base = getattr(sys, "_base_executable", sys.executable)
    made = _run([base, "-m", "venv", str(root / "venv")], cwd=root)
    assert made.returncode == 0, made.stderr
    pip = [str(root / "venv" / "bin" / "python"), "-m", "pip", "install", "-q"]
    for step in (["torch==2.13.0"], [str(wheel)]):    # CPU torch first, as the README does
        done = _run(pip + step, cwd=root)
        assert done.returncode == 0, done.stderr[-3000:]
    return root / "venv" / "bin"


def test_every_module_imports_without_the_extras(bare: Path, tmp_path: Path) -> None:
    done = _run([str(bare / "python"), "-c", IMPORT_ALL.format(optional=OPTIONAL)], tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    count, _, needs_extra = done.stdout.split()[0], done.stdout.split()[1], done.stdout.split()[2:]
    assert int(count) > 50
    assert needs_extra == ["gatex.ops.kernels.triton_gates"], needs_extra  # triton's own kernels


def test_every_help_works(bare: Path, tmp_path: Path) -> None:
    for args in (["--help"], ["--version"], *([c, "--help"] for c in COMMANDS)):
        done = _run([str(bare / "gatex"), *args], tmp_path)
        assert done.returncode == 0, (args, done.stderr)
        assert done.stdout.strip() and not done.stderr.strip(), args


def test_main_job_passes_on_the_core_install(bare: Path, tmp_path: Path) -> None:
    done = _run([str(bare / "gatex"), "export", "--unit", "paGLU", "--to", "onnx"], tmp_path)
    assert done.returncode == 0, done.stderr
    assert "pass" in done.stdout
    assert (tmp_path / "paGLU-portable-fp32.onnx").stat().st_size > 10_000


@pytest.mark.parametrize("args, extra", [
    (["export", "--unit", "GoLU", "--to", "coreml"], "coreml"),
    (["bench", "--unit", "GoLU", "--backend", "torch", "--iterations", "3",
      "--plot", "p.png"], "plot"),
])
def test_commands_needing_an_extra_exit_3_naming_it(bare: Path, tmp_path: Path,
                                                    args: list[str], extra: str) -> None:
    done = _run([str(bare / "gatex"), *args], tmp_path)
    lines = [ln for ln in done.stderr.splitlines() if ln.strip()]
    assert done.returncode == 3, (done.stdout, done.stderr)
    assert len(lines) == 1 and lines[0].startswith("error: "), done.stderr
    assert f"pip install 'gatex[{extra}]'" in lines[0]
    assert not list(tmp_path.iterdir()), "nothing written"


def test_keras_loader_needs_its_extra(bare: Path, tmp_path: Path) -> None:
    code = ("from gatex.models.keras_weights import load_gated_bert\n"
            "from gatex.errors import BackendUnavailableError\n"
            "try:\n    load_gated_bert('w.h5')\n"
            "except BackendUnavailableError as e:\n    print(e); raise SystemExit(e.exit_code)\n")
    (tmp_path / "w.h5").write_bytes(b"\x89HDF\r\n\x1a\n")
    done = _run([str(bare / "python"), "-c", code], tmp_path)
    assert done.returncode == 3 and "pip install 'gatex[keras]'" in done.stdout
