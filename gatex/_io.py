"""Writing files safely, and the limits that keep an untrusted file from exhausting memory.

Every artifact and report gatex writes appears by rename from a staging path beside it
(`staged_file`, `staged_dir`): a reader sees the old file or the new one, never half of one.
A staging path is registered while it exists, so an interrupt (Ctrl-C, SIGTERM: see
`gatex._signals`) removes it; a commit after an interrupt was seen is refused, so a library that
swallows KeyboardInterrupt (coremltools' import does) cannot let a file appear afterwards.
Files are created with the user's umask (``0644`` under ``umask 022``), as ``open()`` would.
"""

from __future__ import annotations

import math

import os
import shutil
import tempfile
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from gatex.errors import BadInputError

# -- limits on what an untrusted file may make gatex allocate -------------------------------------

LIMITS = {  # kind: (environment variable, default)
    # one input array: an .npz member as stored and as declared, an --input-shape tensor
    "input": ("GATEX_MAX_INPUT_BYTES", 1 << 30),
    # a model file: a checkpoint, a .pt2 archive unpacked, one declared weight
    "model": ("GATEX_MAX_MODEL_BYTES", 16 << 30),
}


def max_bytes(kind: str = "input") -> int:
    """The most bytes one ``kind`` of thing read from a file or an option may make gatex
    allocate (`LIMITS`; each overridable through its environment variable)."""
    env, default = LIMITS[kind]
    raw = os.environ.get(env, "").strip()
    if not raw:
        return default
    try:
        value = int(float(raw))
    except ValueError:
        raise BadInputError(f"{env}={raw!r} is not a number of bytes") from None
    if value <= 0:
        raise BadInputError(f"{env} must be positive; got {raw}")
    return value


def check_size(nbytes: int, what: str, kind: str = "input") -> None:
    """BadInputError before allocating ``nbytes`` for ``what`` when that is over `max_bytes`."""
    limit = max_bytes(kind)
    if nbytes > limit:
        raise BadInputError(f"{what} needs {_human(nbytes)}, over gatex's limit of "
                            f"{_human(limit)}; set {LIMITS[kind][0]}=BYTES to allow more")


def _human(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n} B"  # pragma: no cover


# -- staging paths and interrupts ------------------------------------------------------------------

_staging: set[Path] = set()
_lock = threading.Lock()
_interrupted: list[str] = []


def note_interrupt(signal_name: str) -> None:
    """Record that the process was interrupted: later commits are refused."""
    _interrupted.append(signal_name)


def interrupted() -> str | None:
    """The name of the first interrupting signal seen, or None."""
    return _interrupted[0] if _interrupted else None


def remove_staging() -> None:
    """Remove every staging path still registered (the interrupt handler's cleanup)."""
    with _lock:
        paths = list(_staging)
        _staging.clear()
    for path in paths:
        _remove(path)


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


@contextmanager
def registered(path: Path, *, keep_on_success: bool = False) -> Iterator[Path]:
    """Keep ``path`` registered for removal on interrupt while the block runs; remove it after
    (after a failure only, with ``keep_on_success``)."""
    with _lock:
        _staging.add(path)
    ok = False
    try:
        yield path
        ok = True
    finally:
        with _lock:
            _staging.discard(path)
        if not (ok and keep_on_success):
            _remove(path)


def _refuse_if_interrupted() -> None:
    if _interrupted:
        raise KeyboardInterrupt(_interrupted[0])


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _make_dir(directory: Path) -> None:
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise BadInputError(f"cannot write to {directory}: it is a file, not a directory") \
            from None
    except OSError as exc:
        raise BadInputError(f"cannot write to {directory}: {exc.strerror or exc}") from None


@contextmanager
def staged_file(path: str | Path, *, suffix: str = ".tmp") -> Iterator[Path]:
    """A temporary path beside ``path`` to write; renamed onto ``path`` when the block succeeds.

    On failure or interrupt nothing is left. The file gets the mode ``open()`` would give it.
    An OSError while writing becomes a one-line BadInputError naming ``path``.
    """
    path = Path(path)
    _make_dir(path.parent)
    try:
        fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix, dir=path.parent)
    except OSError as exc:
        raise BadInputError(f"cannot write to {path.parent}: {exc.strerror or exc}") from None
    os.close(fd)
    tmp = Path(name)
    with registered(tmp):
        try:
            yield tmp
            _refuse_if_interrupted()
            os.chmod(tmp, 0o666 & ~_umask())
            os.replace(tmp, path)
        except OSError as exc:
            raise BadInputError(f"cannot write {path}: {exc.strerror or exc}") from None


@contextmanager
def staged_dir(path: str | Path, what: str = "") -> Iterator[Path]:
    """A staging directory; the path ``staging / path.name`` yielded becomes ``path`` on success.

    An existing ``path`` is moved aside and removed only once the new one is in place, so
    ``path`` is always the old tree or the new one, never half of one.
    """
    path = Path(path)
    label = f"{what} {path}" if what else str(path)
    if path.exists() and not path.is_dir():
        raise BadInputError(f"cannot write {label}: a file of that name exists")
    _make_dir(path.parent)
    try:
        work = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    except OSError as exc:
        raise BadInputError(f"cannot write to {path.parent}: {exc.strerror or exc}") from None
    staged = work / path.name
    with registered(work):
        try:
            yield staged
            _refuse_if_interrupted()
            _fix_modes(staged)
            if path.exists():
                old = work / (path.name + ".old")
                os.replace(path, old)
                try:
                    os.replace(staged, path)
                except OSError:
                    os.replace(old, path)
                    raise
            else:
                os.replace(staged, path)
        except OSError as exc:
            raise BadInputError(f"cannot write {label}: {exc.strerror or exc}") from None


@contextmanager
def private_tempdir(prefix: str) -> Iterator[Path]:
    """A fresh directory that `tempfile` uses while the block runs, removed after (interrupts
    included): a library's own temporary files (coremltools' ``tmpXXXX.mlpackage``) go with it."""
    work = Path(tempfile.mkdtemp(prefix=prefix))
    saved = tempfile.tempdir
    tempfile.tempdir = str(work)
    try:
        with registered(work):
            yield work
    finally:
        tempfile.tempdir = saved


def _fix_modes(root: Path) -> None:
    """mkdtemp makes 0700 directories: give the tree the modes the umask allows."""
    mask = _umask()
    for dirpath, dirnames, filenames in os.walk(root):
        os.chmod(dirpath, 0o777 & ~mask)
        for name in filenames:
            file = Path(dirpath) / name
            if not file.is_symlink():
                executable = file.stat().st_mode & 0o100
                os.chmod(file, (0o777 if executable else 0o666) & ~mask)


def write_bytes_atomic(path: str | Path, data: bytes) -> Path:
    """Write ``data`` to ``path`` through `staged_file`."""
    path = Path(path)
    with staged_file(path) as tmp:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
    return path


def write_text_atomic(path: str | Path, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` through `staged_file`."""
    return write_bytes_atomic(path, text.encode("utf-8"))


# -- paths inside an artifact ----------------------------------------------------------------------

def contained(root: str | Path, relative: str, what: str) -> Path:
    """``root / relative`` resolved, or BadInputError when it lies outside ``root``.

    Absolute paths, ``..`` and symbolic links that lead out of ``root`` are refused before any
    reader opens the file: an artifact may not make gatex read a file it does not contain.
    """
    root_resolved = Path(root).resolve()
    if not relative or Path(relative).is_absolute() or relative.startswith(("/", "\\")):
        raise BadInputError(f"{what} points to {relative!r}, outside {root}; refusing to read "
                            "it (an artifact may only reference files inside itself)")
    target = (root_resolved / relative).resolve()
    if target != root_resolved and root_resolved not in target.parents:
        raise BadInputError(f"{what} points to {relative!r}, outside {root}; refusing to read "
                            "it (an artifact may only reference files inside itself)")
    return target


__all__ = ["LIMITS", "check_size", "contained", "interrupted",
           "max_bytes", "note_interrupt", "private_tempdir", "registered", "remove_staging", "staged_dir",
           "staged_file", "write_bytes_atomic", "write_text_atomic"]


def json_safe(value: Any, nonfinite: Callable[[float], Any]) -> Any:
    """``value`` (dicts, lists and tuples walked) with every non-finite float replaced by
    ``nonfinite(x)``: strict JSON has no Infinity or NaN."""
    if isinstance(value, float) and not math.isfinite(value):
        return nonfinite(value)
    if isinstance(value, dict):
        return {k: json_safe(v, nonfinite) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v, nonfinite) for v in value]
    return value
