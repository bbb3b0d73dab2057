"""The shape of the code: the import layers and cycles (import-linter, pyproject.toml), file and
function sizes, and that op names are derived from the registry rather than typed in lists."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "gatex"
MAX_FILE_LINES = 600


def _lint_imports(*args: str) -> subprocess.CompletedProcess[str]:
    pytest.importorskip("importlinter", reason="import-linter is in the test extra")
    script = Path(sys.executable).with_name("lint-imports")
    command = [str(script)] if script.exists() else [sys.executable, "-m", "importlinter.cli"]
    return subprocess.run([*command, "--no-cache", *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=300)


def test_import_layers_hold_and_no_package_has_an_import_cycle() -> None:
    run = _lint_imports()
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-2000:]
    assert "Contracts: 2 kept, 0 broken." in run.stdout


def test_the_layer_check_has_teeth(tmp_path: Path) -> None:
    """The same contracts with two layers swapped must fail: ops imports errors, so errors
    above ops is broken."""
    config = (ROOT / "pyproject.toml").read_text()
    start = config.index("[tool.importlinter]")
    swapped = config[start:].replace('"errors | _version",', '"__ERRORS__",', 1) \
        .replace('"cli",', '"cli",\n    "errors | _version",', 1).replace('    "__ERRORS__",\n', "")
    assert swapped != config[start:]
    path = tmp_path / "swapped.toml"
    path.write_text(swapped)
    run = _lint_imports(str(path))
    assert run.returncode == 1, run.stdout[-2000:]
    assert "gatex layers BROKEN" in run.stdout


def _python_files() -> list[Path]:
    return sorted(PACKAGE.rglob("*.py"))


def test_no_file_in_gatex_is_over_600_lines() -> None:
    long = {str(p.relative_to(ROOT)): n for p in _python_files()
            if (n := len(p.read_text().splitlines())) > MAX_FILE_LINES}
    assert not long, f"files over {MAX_FILE_LINES} lines: {long}"


MAX_FUNCTION_BODY = 80


def test_no_function_body_is_over_80_lines() -> None:
    """Counted from the first statement after the docstring: a Typer command's option list is
    its signature, and a long docstring is documentation, not logic."""
    long = []
    for path in _python_files():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                body = node.body
                if isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
                    body = body[1:] or body
                if node.end_lineno - body[0].lineno + 1 > MAX_FUNCTION_BODY:
                    long.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.name}")
    assert not long, f"function bodies over {MAX_FUNCTION_BODY} lines: {long}"


def test_internal_imports_inside_functions_name_their_reason() -> None:
    """A function-local import of a gatex module is allowed only where it keeps startup light
    (the CLI and the lazy public API) or defers an optional backend; each such place is listed
    with its reason, so a new one is a decision, not a way around an import cycle."""
    allowed = {
        "gatex/__init__.py": "the lazy public API (PEP 562): import gatex imports no torch",
        "gatex/_entry.py": "signal handlers are installed before the CLI (and torch) loads",
        "gatex/cli/": "a command imports its implementation when it runs: --help stays light",
        "gatex/benchmarking/worker.py": "a bench worker imports only its own backend",
        "gatex/ops/kernels/launch.py": "triton_gates imports triton (optional extra)",
        "gatex/ops/kernels/ptx.py": "triton_gates imports triton (optional extra)",
        "gatex/runtimes/coreml_runtime.py": "the MIL emulator imports coremltools (optional)",
        "gatex/runtimes/tensorrt_runtime.py": "the TensorRT plugins need tensorrt (optional)",
        "gatex/runtimes/base.py": "torch only when a feed is a tensor (base stays torch-free)",
    }
    found = set()
    for path in _python_files():
        rel = str(path.relative_to(ROOT))
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                for sub in ast.walk(node):
                    if isinstance(sub, ast.ImportFrom) and (sub.module or "").startswith("gatex"):
                        found.add(rel)
    unexplained = {f for f in found if not any(f == a or f.startswith(a) for a in allowed)}
    assert not unexplained, f"function-local gatex imports in {sorted(unexplained)}"


def test_no_module_shadows_a_function_of_the_public_api() -> None:
    """``import gatex.x`` binds the module as the attribute ``gatex.x``: a subpackage named like a
    public function (``gatex.bench()``, ``gatex.parity()``) would replace the function."""
    import gatex

    functions = [name for name in gatex.__all__ if callable(getattr(gatex, name, None))
                 and not isinstance(getattr(gatex, name), type)]
    assert {"bench", "parity", "export", "load_model"} <= set(functions)
    clashes = [n for n in functions if (PACKAGE / n).is_dir() or (PACKAGE / f"{n}.py").is_file()]
    assert not clashes, f"modules named like public functions: {clashes}"
