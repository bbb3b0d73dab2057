"""gatex's error hierarchy: one root, a handful of classes, each with the exit code the CLI uses.

Exit codes (DESIGN.md, "CLI contract"): 0 ok, 1 check failed, 2 bad input, 3 backend unavailable.
Messages say what was wrong and what to do about it; the CLI prints them as one line.
"""

from __future__ import annotations

from collections.abc import Iterable

EXIT_OK = 0
EXIT_CHECK_FAILED = 1
EXIT_BAD_INPUT = 2
EXIT_BACKEND_UNAVAILABLE = 3


class GatexError(Exception):
    """Root of every error gatex raises on purpose."""

    exit_code = EXIT_BAD_INPUT


class BadInputError(GatexError, ValueError):
    """The user gave something gatex cannot use (unknown name, bad file, bad value)."""

    exit_code = EXIT_BAD_INPUT


class UnknownOpError(BadInputError, KeyError):
    """No op, unit or zoo model of that name."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class ParameterRangeError(BadInputError):
    """A parameter is outside the range its op spec allows."""


class DuplicateRegistrationError(GatexError, RuntimeError):
    """Something was registered twice under one name: a programming error, never ignored."""

    exit_code = EXIT_CHECK_FAILED


class CheckpointError(BadInputError):
    """A checkpoint or model file is missing, corrupt, or does not fit the model."""


class UntrustedCheckpointError(CheckpointError):
    """A pickle needs code to load and the user did not pass the trust flag."""


class BackendUnavailableError(GatexError, RuntimeError):
    """A backend (onnxruntime, coremltools, TensorRT, CUDA, macOS) is not available here."""

    exit_code = EXIT_BACKEND_UNAVAILABLE


class CoremlExportError(BadInputError):
    """The model cannot be converted to CoreML as asked (an op CoreML cannot take, a target too
    old, ...)."""


class CheckFailedError(GatexError):
    """A parity or regression check ran and failed."""

    exit_code = EXIT_CHECK_FAILED


def require_choice(value: object, choices: Iterable[object], what: str) -> None:
    """BadInputError ``unknown <what> 'x'; choose one of a, b, c`` unless ``value`` is a choice."""
    choices = tuple(choices)
    if value not in choices:
        raise BadInputError(f"unknown {what} {value!r}; choose one of "
                            f"{', '.join(str(c) for c in choices)}")


class NotScriptableError(GatexError, RuntimeError):
    """``torch.jit.script`` was asked to compile a gatex module (it cannot: see
    `gatex.models.scripting`)."""


class GatexWarning(UserWarning):
    """Something the user should know that does not stop the work (a dimension exported static
    where it was asked dynamic, ...); the CLI prints each as one ``warning:`` line."""
