"""The console entry point: signal handlers first, then the (heavy) command line.

Ctrl-C (SIGINT) and SIGTERM at any moment, the imports included, end gatex with one line,
``error: interrupted (SIGINT)``, exit code 130 for SIGINT and 143 for SIGTERM (128 + the signal
number, as a shell reports it), and no staging file left behind: the handler raises
KeyboardInterrupt, every staging path (`gatex._io`) is removed on the way out, and bench worker
processes are ended with their parent. An interrupt that a library swallowed still ends the run
this way, and no artifact is committed after it.
"""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import Sequence
from typing import Any, NoReturn

from gatex import _io

EXIT_CODES = {"SIGINT": 128 + signal.SIGINT, "SIGTERM": 128 + signal.SIGTERM}


def _handler(signum: int, frame: Any) -> None:
    name = signal.Signals(signum).name
    first = _io.interrupted() is None
    _io.note_interrupt(name)
    if first:
        raise KeyboardInterrupt(name)


def install_handlers() -> None:
    """SIGINT and SIGTERM raise KeyboardInterrupt once and are recorded (see `gatex._io`)."""
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, _handler)


def _exit_interrupted() -> NoReturn:
    name = _io.interrupted() or "SIGINT"
    _io.remove_staging()
    try:
        sys.stdout.flush()
        sys.stderr.write(f"error: interrupted ({name})\n")
        sys.stderr.flush()
    except (OSError, ValueError):
        pass
    # os._exit, not sys.exit: under load, an interrupt during the first 0.2 s (torch
    # importing) ended with CPython killing itself by SIGINT (exit -2) after this line was
    # printed, whatever code sys.exit gave (most likely CPython's "unhandled
    # KeyboardInterrupt" flag, set by an inner run of code during the import). Staging paths
    # are removed above; nothing else needs the interpreter's shutdown.
    os._exit(EXIT_CODES.get(name, 130))


def _work_is_done() -> None:
    """From here on a signal changes nothing: the command's outcome (its files, its exit code)
    stands, and a KeyboardInterrupt raised during interpreter shutdown would only turn it into
    Python's own death-by-SIGINT."""
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, signal.SIG_IGN)


def main(argv: Sequence[str] | None = None) -> None:
    """Run ``gatex``; an interrupt anywhere is one line and exit 130 (SIGINT) or 143 (SIGTERM)."""
    install_handlers()
    try:
        from gatex import cli

        cli.main(argv)
    except KeyboardInterrupt:
        _work_is_done()
        if _io.interrupted() is None:
            _io.note_interrupt("SIGINT")
        _exit_interrupted()
    except SystemExit:
        _work_is_done()
        if _io.interrupted():
            _exit_interrupted()
        raise
    _work_is_done()
    if _io.interrupted():
        _exit_interrupted()


__all__ = ["EXIT_CODES", "install_handlers", "main"]
