"""Assertions shared by the CLI tests (importable from every test folder: tests/ is on sys.path
because tests/conftest.py lives there)."""

from __future__ import annotations


def one_error_line(result) -> str:
    """The single stderr line of a failed run (``error: ...``), and no traceback anywhere."""
    lines = [ln for ln in result.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: "), result.output
    assert "Traceback" not in result.output
    return lines[0]
