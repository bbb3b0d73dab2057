"""The command line as a person first meets it: fast (no torch for help, version, units and bad
options) and one `error:` line for every mistake, Click's included."""

from __future__ import annotations

import json
import textwrap

import pytest

from gatex.ops.catalogue import CATALOGUE_FILE, builtin_records

PROBE = textwrap.dedent("""
    import json, sys
    from gatex.cli import main
    try:
        main(sys.argv[1:])
    except SystemExit as exc:
        code = exc.code
    heavy = sorted({m.split(".")[0] for m in sys.modules} & {"torch", "onnx", "onnxruntime"})
    sys.stderr.write("RESULT " + json.dumps({"code": code, "heavy": heavy}) + "\\n")
""")


def _probe(run_python, *argv: str) -> tuple[dict, str, str]:
    proc = run_python("-c", PROBE, *argv)
    *lines, last = proc.stderr.splitlines() or [""]
    assert last.startswith("RESULT "), proc.stderr
    return json.loads(last.removeprefix("RESULT ")), proc.stdout, "\n".join(lines)


@pytest.mark.parametrize("argv", [["--help"], ["--version"], ["units"], ["units", "GoLU"],
                                  ["units", "--json"], ["export", "--help"], ["export", "--bogus"],
                                  ["nope"]], ids=" ".join)
def test_first_commands_import_no_torch(run_python, argv: list[str]) -> None:
    result, stdout, stderr = _probe(run_python, *argv)
    assert result["heavy"] == [], f"gatex {' '.join(argv)} imported {result['heavy']}"
    assert result["code"] in (0, 2, None)


def test_doctor_imports_no_torch(run_python) -> None:
    """gatex doctor reads torch's facts from its files (--deep imports it and asks)."""
    result, stdout, _ = _probe(run_python, "doctor")
    assert result["code"] in (0, None) and "torch" not in result["heavy"], result
    assert "torch" in stdout and "onnxruntime" in stdout
    deep, stdout, _ = _probe(run_python, "doctor", "--deep")
    assert deep["code"] in (0, None) and "torch" in deep["heavy"]


def test_units_from_the_catalogue_match_the_registry(run_python) -> None:
    """`gatex units` reads catalogue.json; it must say what the registry says (regenerate with
    python -m gatex.ops.catalogue after changing an op)."""
    assert json.loads(CATALOGUE_FILE.read_text()) == builtin_records(), \
        "gatex/ops/catalogue.json is stale: python -m gatex.ops.catalogue"
    result, stdout, _ = _probe(run_python, "units", "--json")
    assert result["code"] in (0, None)
    assert json.loads(stdout) == builtin_records()


@pytest.mark.parametrize(("argv", "message"), [
    (["export", "--bogus"], "error: No such option: --bogus (see gatex export --help)"),
    (["nope"], "error: No such command 'nope' (see gatex --help)"),
    (["units", "pagl"], "error: unknown op 'pagl'; did you mean paGLU, paGELU, paReGLU? "
                        "(`gatex units` lists them)"),
    (["export", "--unit", "paGLU", "--dtype", "fp99"],
     "error: unknown dtype 'fp99'; choose one of fp32, fp16"),
])
def test_every_mistake_is_one_error_line_and_exit_2(run_python, argv: list[str],
                                                      message: str) -> None:
    result, stdout, stderr = _probe(run_python, *argv)
    assert result["code"] == 2
    assert stderr == message
    assert stdout == ""


def test_a_verdict_path_in_a_missing_folder_is_bad_input(tmp_path, run_python) -> None:
    (tmp_path / "m.onnx").write_bytes(b"")   # the verdict paths are checked before the file
    result, stdout, stderr = _probe(run_python, "parity", str(tmp_path / "m.onnx"), "--json",
                                    str(tmp_path / "no" / "such" / "p.json"))
    assert result["code"] == 2
    assert stderr.startswith(f"error: cannot write {tmp_path / 'no' / 'such' / 'p.json'}: folder ")
    assert "does not exist" in stderr
    assert not (tmp_path / "no").exists()


def test_docs_ops_page_is_the_specs(run_python) -> None:
    """docs/ops.md is `gatex units --markdown` (regenerate: gatex units --markdown > docs/ops.md)."""
    from pathlib import Path

    from gatex.cli.units import markdown

    page = (Path(__file__).resolve().parents[1] / "docs" / "ops.md").read_text()
    assert page == markdown(builtin_records()), "docs/ops.md is stale: gatex units --markdown"
    for record in builtin_records():
        assert f"## {record['name']}\n" in page and record["formula"] in page


@pytest.mark.parametrize("command", ["units", "doctor", "export", "parity", "bench", "inspect"])
def test_every_help_has_examples_and_no_type_placeholder_on_flags(command: str) -> None:
    from typer.testing import CliRunner

    from gatex.cli import EXAMPLES, app

    result = CliRunner().invoke(app, [command, "--help"], env={"COLUMNS": "120"})
    assert result.exit_code == 0, result.output
    assert "Examples:" in result.stdout and len(EXAMPLES[command]) >= 2
    for example in EXAMPLES[command]:
        assert example in result.stdout
        assert example.split()[1] == command
    assert "<bool>" not in result.stdout
    usage = next(line for line in result.stdout.splitlines() if "Usage:" in line)
    assert "[[" not in usage and "]...]" not in usage, usage


def test_a_bench_error_in_a_log_is_one_line_with_no_blank_line_before_it(run_python) -> None:
    proc = run_python("-m", "gatex", "bench", "--unit", "Nope", "--backend", "torch")
    assert proc.returncode == 2
    assert proc.stderr.startswith("error: no zoo model for unit 'Nope'")
    assert proc.stderr.count("\n") == 1 and proc.stdout == ""
