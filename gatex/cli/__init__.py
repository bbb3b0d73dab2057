"""The ``gatex`` command line: a Typer app, one module per command, no logic of its own.

Every command composes the library. A `gatex.errors.GatexError` raised anywhere below a command
becomes one line on stderr (``error: <message>``) and the error's exit code; anything else is a
bug in gatex and becomes one line and exit code 1 (``GATEX_DEBUG=1`` adds the traceback).
"""

from __future__ import annotations

import os
import sys
import traceback
from collections.abc import Sequence
from typing import Annotated, Any

import typer
from typer.core import TyperGroup

try:  # typer >= 0.2x vendors click; its commands raise that copy's exceptions
    from typer._click import exceptions as click_errors
except ImportError:  # typer with click as a dependency
    from click import exceptions as click_errors

from gatex.cli import bench, doctor, export, inspect, matrix, parity, units
from gatex.errors import (
    EXIT_BACKEND_UNAVAILABLE,
    EXIT_BAD_INPUT,
    EXIT_CHECK_FAILED,
    EXIT_OK,
    GatexError,
)

DEBUG_ENV = "GATEX_DEBUG"
EXIT_INTERNAL_ERROR = 1  # a bug in gatex: the generic failure code, as an uncaught exception gives

EXIT_CODES_EPILOG = (
    f"Exit codes: {EXIT_OK} ok, {EXIT_CHECK_FAILED} check failed, {EXIT_BAD_INPUT} bad input "
    f"(unknown name, bad value or file, bad option), "
    f"{EXIT_BACKEND_UNAVAILABLE} backend unavailable. "
    f"Errors print one line on stderr; set {DEBUG_ENV}=1 to add the traceback."
)


EXAMPLES = {
    "units": ["gatex units", "gatex units paGLU", "gatex units --json > ops.json"],
    "doctor": ["gatex doctor", "gatex doctor --json", "gatex doctor --deep"],
    "export": ["gatex export --unit paGLU --to onnx -o out/",
               "gatex export --model net.py:build --input-shape 1,64 --to coreml",
               "gatex export --model lm.py:build --input input_ids:int64[2,32]:0..1000 "
               "--dynamic 0=batch,1=seq",
               "gatex export --unit GoLU --to trt --precision fp16 --plugins auto"],
    "parity": ["gatex parity out/paGLU-portable-fp32.onnx --junit parity.xml",
               "gatex parity m.onnx m-fp16.mlpackage --model net.py:build --inputs x.npz",
               "gatex parity m.onnx --unit paGLU --locate"],
    "bench": ["gatex bench --unit GoLU --backend torch,ort",
              "gatex bench m.onnx --model net.py:build --input-shape 1,64 --json b.json",
              "gatex bench m.onnx --unit paGLU --baseline b.json --max-regression 10"],
    "inspect": ["gatex inspect out/paGLU-portable-fp32.onnx", "gatex inspect m.mlpackage --json"],
}


def _epilog(command: str) -> str:
    """Two or three examples, then the exit codes (Typer's epilog: paragraphs are kept)."""
    lines = "\n\n".join(f"  {e}" for e in EXAMPLES[command])
    return f"Examples:\n\n{lines}\n\n{EXIT_CODES_EPILOG}"


def _hide_flag_types() -> None:
    """Typer 0.2x prints a value type after every option, ``<bool>`` after a flag too, which
    takes no value: show none there. (Older Typer has no such column: nothing to do.)"""
    option = getattr(typer.core, "TyperOption", None)
    shown = getattr(option, "display_type_rich", None)
    if shown is None:
        return

    def display_type_rich(self: Any, ctx: Any) -> str | None:
        return None if getattr(self, "is_flag", False) else shown(self, ctx)

    option.display_type_rich = display_type_rich


def _debugging() -> bool:
    return os.environ.get(DEBUG_ENV, "") not in ("", "0")


def _one_line(text: str) -> str:
    return " ".join(text.split()) or "(no message)"


def report_error(err: BaseException, *, bug: bool = False) -> None:
    """Print ``err`` as one stderr line (traceback first when debugging); the caller exits.

    After an interrupt nothing is printed here: the entry point (`gatex._entry`) says
    ``error: interrupted`` once, whatever a library made of the KeyboardInterrupt.
    """
    from gatex import _io

    if _io.interrupted():
        return
    if _debugging():
        traceback.print_exception(err, file=sys.stderr)
    if bug:
        line = (f"error: internal error, this is a bug in gatex ({type(err).__name__}: "
                f"{_one_line(str(err))}); please report it, and rerun with {DEBUG_ENV}=1 "
                "for the traceback")
    else:
        line = f"error: {_one_line(str(err))}"
    typer.echo(line, err=True)


class GatexGroup(TyperGroup):
    """The app's command group: turns a `GatexError` from any command into one line + exit code.

    Handling it here (not only in `main`) keeps in-process runs (``CliRunner``) and the console
    script identical.
    """

    def invoke(self, ctx: typer.Context) -> Any:
        try:
            return super().invoke(ctx)
        except GatexError as err:
            report_error(err)
            raise typer.Exit(err.exit_code) from None

    def main(self, args: Any = None, prog_name: str | None = None, complete_var: Any = None,
             standalone_mode: bool = True, **extra: Any) -> Any:
        """Click's own handling, except that a usage error (unknown option or command, a bad
        option value) is one ``error:`` line on stderr and exit 2, as every other bad input."""
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, False, **extra)
        try:
            code = super().main(args, prog_name, complete_var, False, **extra)
        except click_errors.NoArgsIsHelpError as err:   # bare `gatex`: the help, as before
            err.show()
            sys.exit(err.exit_code)
        except click_errors.UsageError as err:
            where = err.ctx.command_path if err.ctx is not None else "gatex"
            message = _one_line(err.format_message()).rstrip(".")
            typer.echo(f"error: {message} (see {where} --help)", err=True)
            sys.exit(EXIT_BAD_INPUT)
        except click_errors.ClickException as err:
            typer.echo(f"error: {_one_line(err.format_message())}", err=True)
            sys.exit(err.exit_code)
        except (typer.Abort, getattr(click_errors, "Abort", typer.Abort)):
            typer.echo("error: aborted", err=True)
            sys.exit(EXIT_INTERNAL_ERROR)
        sys.exit(code if isinstance(code, int) else EXIT_OK)


app = typer.Typer(
    name="gatex",
    cls=GatexGroup,
    help="Deploy PyTorch models built with gated units (paGLU family, PaGRUCell, GoLU, "
         "ZiLU family, GatedDense, CGConv2d, PGConv2d) to ONNX, CoreML and TensorRT, "
         "with parity checks.",
    epilog=EXIT_CODES_EPILOG,
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"gatex {gatex_version()}")
        raise typer.Exit(EXIT_OK)


def gatex_version() -> str:
    """``gatex.__version__``; the installed distribution's version if the package lacks one."""
    import gatex

    if hasattr(gatex, "__version__"):
        return str(gatex.__version__)
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("gatex")
    except PackageNotFoundError:
        return "unknown"


@app.callback()
def _root(
    version: Annotated[bool, typer.Option(
        "--version", callback=_version, is_eager=True, help="Print gatex's version and exit.",
    )] = False,
) -> None:
    """Options that apply to every command (the app's help= text is what --help shows)."""


_hide_flag_types()
app.command("units", epilog=_epilog("units"))(units.units)
app.command("doctor", epilog=_epilog("doctor"))(doctor.doctor)
app.command("export", epilog=_epilog("export"))(export.export)
app.command("parity", epilog=_epilog("parity"))(parity.parity)
app.command("bench", epilog=_epilog("bench"))(bench.bench)
app.command("inspect", epilog=_epilog("inspect"))(inspect.inspect)
app.add_typer(matrix.matrix_app, name="matrix", cls=GatexGroup)


def main(argv: Sequence[str] | None = None) -> None:
    """Console entry point: run the app; never let a traceback reach the user unasked."""
    try:
        app(args=list(argv) if argv is not None else None, prog_name="gatex")
    except GatexError as err:  # raised outside a command (e.g. while parsing options)
        report_error(err)
        sys.exit(err.exit_code)
    except Exception as err:  # noqa: BLE001  (anything else is a gatex bug: say so in one line)
        report_error(err, bug=True)
        sys.exit(EXIT_INTERNAL_ERROR)


__all__ = ["EXIT_CODES_EPILOG", "app", "main"]
