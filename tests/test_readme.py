"""README.md's setup commands are the ones CI runs, and its main job works."""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
from pathlib import Path

import pytest
from typer.testing import CliRunner

from gatex.cli import app
from gatex.errors import EXIT_BACKEND_UNAVAILABLE, EXIT_BAD_INPUT, EXIT_CHECK_FAILED, EXIT_OK

README = Path(__file__).resolve().parent.parent / "README.md"


def fenced_block_after(marker: str) -> str:
    """The first fenced code block after the line ``marker`` (as .ci/run's awk reads it)."""
    lines = README.read_text().splitlines()
    assert marker in lines, f"README.md lacks the line {marker}"
    rest = lines[lines.index(marker) + 1:]
    start = next(i for i, line in enumerate(rest) if line.startswith("```"))
    end = next(i for i, line in enumerate(rest[start + 1:], start + 1) if line.startswith("```"))
    return "\n".join(rest[start + 1:end])


def steps(marker: str) -> list[str]:
    command = fenced_block_after(marker)
    assert "\n" not in command.strip(), f"{marker}: one command on one line"
    return [step.strip() for step in command.split("&&")]


def test_readme_has_both_commands_and_the_zoo_marker():
    assert steps("<!-- main-command -->")
    assert steps("<!-- test-command -->")
    text = README.read_text()
    zoo = text.split("## Reference zoo", 1)[1].split("\n## ", 1)[0]
    assert "<!-- zoo-table -->" in zoo.splitlines()


@pytest.mark.parametrize("marker", ["<!-- main-command -->", "<!-- test-command -->"])
def test_commands_set_up_a_fresh_venv_with_cpu_torch_before_the_project(marker):
    setup = steps(marker)[:-1]
    assert setup[0] == "python3 -m venv .venv"
    torch_step = next(i for i, s in enumerate(setup) if re.fullmatch(
        r"\.venv/bin/pip install torch==[\d.]+", s))
    project_step = next(i for i, s in enumerate(setup) if s.startswith(".venv/bin/pip install -e "))
    # torch first: installing the project first would let pip pull a multi-GB CUDA build
    assert torch_step < project_step


def test_main_command_installs_the_core_only_and_tests_install_the_extras():
    """The main job needs the core install and nothing more (triton alone is 1 GB); the test
    command sets up the same way and adds every extra the tests exercise."""
    main, test = steps("<!-- main-command -->")[:-1], steps("<!-- test-command -->")[:-1]
    assert main[:-1] == test[:-1]                      # venv, then CPU torch, the same way
    assert main[-1] == ".venv/bin/pip install -e ."
    extras = re.fullmatch(r"\.venv/bin/pip install -e '\.\[([\w,]+)\]'", test[-1])
    assert extras, test[-1]
    import tomllib

    declared = tomllib.loads((README.parent / "pyproject.toml").read_text())["project"]
    optional = {k for k, v in declared["optional-dependencies"].items() if v}
    assert set(extras.group(1).split(",")) == optional   # every non-empty extra, tested
    core = " ".join(declared["dependencies"])
    assert all(name in core for name in ("onnx>=", "onnxruntime>=", "onnxscript>="))


def test_ci_runs_exactly_the_readme_test_command(repo_root):
    ci = repo_root / ".ci" / "run"
    assert os.access(ci, os.X_OK), ".ci/run must be executable"
    assert "set -euo pipefail" in ci.read_text()
    printed = subprocess.run(["bash", str(ci), "--print-test-command"], capture_output=True,
                             text=True, check=True, timeout=60, stdin=subprocess.DEVNULL)
    assert printed.stdout.rstrip("\n") == fenced_block_after("<!-- test-command -->")
    last = steps("<!-- test-command -->")[-1]
    assert last.startswith(".venv/bin/python -m pytest")


def test_main_command_runs_here(run_python, tmp_path):
    """The main job's gatex invocation, through the real entry point of this environment:
    it exports paGLU to ONNX in the working directory and the parity check passes."""
    last = shlex.split(steps("<!-- main-command -->")[-1])
    assert last[0] == ".venv/bin/gatex", "the main command must end by running gatex"
    assert last[1:] == ["export", "--unit", "paGLU", "--to", "onnx"]
    proc = run_python("-m", "gatex", *last[1:], cwd=tmp_path, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "pass" in proc.stdout
    assert "Traceback" not in proc.stderr
    assert (tmp_path / "paGLU-portable-fp32.onnx").stat().st_size > 10_000
    assert not list(tmp_path.glob("*.tmp")), "no half-written files"


def test_readme_documents_the_exit_codes():
    text = README.read_text()
    for code, meaning in [(EXIT_OK, "ok"), (EXIT_CHECK_FAILED, "a check ran and failed"),
                          (EXIT_BAD_INPUT, "bad input"),
                          (EXIT_BACKEND_UNAVAILABLE, "backend unavailable")]:
        assert f"| {code} | {meaning}" in text


def test_readme_documents_every_json_key():
    text = README.read_text()
    runner = CliRunner()
    ops = json.loads(runner.invoke(app, ["units", "--json"]).stdout)
    doctor = json.loads(runner.invoke(app, ["doctor", "--json"]).stdout)
    keys = set(ops[0]) | {k for op in ops for p in op["params"] for k in p} | set(doctor) \
        | set(doctor["components"][0])
    undocumented = sorted(k for k in keys if f"`{k}`" not in text)
    assert not undocumented, f"README.md does not document: {undocumented}"
    assert set(ops[0]["tolerances"]["float32"]) == {"rtol", "atol"}
    assert "`{dtype: {rtol, atol}}`" in text
