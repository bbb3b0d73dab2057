"""Hold torch's log records while gatex drives a torch API that logs noise.

``torch.onnx.export`` logs one warning per optional package it looks for (``torchvision is not
installed. Skipping torchvision::nms``) on every call, and a failing ``torch.export`` or
``torch.export.load`` logs its whole traceback at warning level before raising. gatex turns
the failure into one line (see `gatex.errors`), so those records are noise to its users.

`held_torch_logs` keeps the records of the ``torch`` logger tree while its block runs. If the
block succeeds, the records that matter are replayed to torch's own handlers (the known noise
is dropped); if it fails, they are dropped, since the error says what happened, unless
``GATEX_DEBUG`` is set, where everything is replayed for the traceback's sake.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
from collections.abc import Iterator

DEBUG_ENV = "GATEX_DEBUG"   # the CLI's switch for tracebacks (gatex.cli.DEBUG_ENV)

# (logger name prefix, message pattern) of records that carry no information for a user
NOISE: tuple[tuple[str, re.Pattern[str]], ...] = (
    # the ONNX exporter's registry lists torchvision's ops, which gatex never uses
    ("torch.onnx", re.compile(r"\btorchvision is not installed\b")),
)


def is_noise(record: logging.LogRecord) -> bool:
    """True for a record in `NOISE`."""
    message = record.getMessage()
    return any(record.name.startswith(prefix) and pattern.search(message)
               for prefix, pattern in NOISE)


class _Hold(logging.Handler):
    """Collects records for one logger; a record seen lower in the tree is not taken twice."""

    def __init__(self, logger: logging.Logger, held: list[tuple[logging.Logger, logging.LogRecord]],
                 seen: set[int]) -> None:
        super().__init__(logging.NOTSET)
        self.logger, self.held, self.seen = logger, held, seen

    def emit(self, record: logging.LogRecord) -> None:
        if id(record) not in self.seen:
            self.seen.add(id(record))
            self.held.append((self.logger, record))


def _torch_loggers() -> list[logging.Logger]:
    # torch._logging gives many loggers of the tree their own stderr handler (propagate off)
    manager = logging.Logger.manager
    names = [n for n in list(manager.loggerDict) if n == "torch" or n.startswith("torch.")]
    loggers = [logging.getLogger(n) for n in names]
    return [lg for lg in loggers if lg.handlers or lg.name == "torch"]


@contextlib.contextmanager
def held_torch_logs() -> Iterator[None]:
    """Run the block with torch's log records held; replay those that matter if it succeeds.

    >>> with held_torch_logs():
    ...     program = torch.onnx.export(model, args, dynamo=True)
    """
    held: list[tuple[logging.Logger, logging.LogRecord]] = []
    seen: set[int] = set()
    saved = [(lg, lg.handlers[:]) for lg in _torch_loggers()]
    for lg, _ in saved:
        lg.handlers[:] = [_Hold(lg, held, seen)]
    failed = False
    try:
        yield
    except BaseException:
        failed = True
        raise
    finally:
        for lg, handlers in saved:
            lg.handlers[:] = handlers
        debugging = os.environ.get(DEBUG_ENV, "") not in ("", "0")
        if debugging or not failed:
            for lg, record in held:
                if debugging or not is_noise(record):
                    lg.handle(record)
