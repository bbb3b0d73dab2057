"""Loading a ``torch.export`` program (``.pt2``) without running code from it.

``torch.export.load`` unpickles with a full unpickler in several places: a weight or constant
whose config says ``use_pickle``, custom and opaque objects among the constants, legacy weight
files, and sample inputs that fail a weights-only load; and it loads AOTInductor shared
libraries. Any of them runs code the file carries. So, unless the user trusts the file:

1. the archive is inspected before torch sees it (zip listing and the payload configs, sizes
   checked): AOTInductor/ExecuTorch/MTIA payloads, pickled weights or constants, custom or
   opaque objects and legacy weight files are refused with one line naming the entry;
2. torch then loads it with every unpickler it uses replaced by the weights-only one
   (``torch.load(weights_only=True)``; ``pickle.loads`` and TorchScript's object unpickler
   refuse), so a payload the inspection did not foresee fails instead of running.
"""

from __future__ import annotations

import json
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Any

import gatex.ops  # noqa: F401  (a program's gatex:: ops must be registered before it loads)
from gatex import _io
from gatex.errors import CheckpointError, UntrustedCheckpointError
from gatex.torch_logs import held_torch_logs

_CODE_DIRS = ("data/aotinductor/", "data/executorch/", "data/mtia")
_TRUST_HINT = ("pass --trust-checkpoint (trust_checkpoint=True) only if you trust its source, "
               "or re-save the program from plain tensors")


def load_exported_program(path: str | Path, *, trust_checkpoint: bool = False) -> Any:
    """The `torch.export.ExportedProgram` in ``path``; no code from the file runs unless trusted."""
    import torch

    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"exported program {path} does not exist")
    if not trust_checkpoint:
        inspect_archive(path)

    guard = _weights_only_unpickling() if not trust_checkpoint else nullcontext()
    try:
        with held_torch_logs(), guard:  # torch logs a bad file's traceback as a warning
            return torch.export.load(str(path))
    except _Refused as exc:
        raise UntrustedCheckpointError(f"{path}: {exc}; refusing. {_TRUST_HINT}") from None
    except Exception as exc:
        if "weights_only" in str(exc) or "Unsupported global" in str(exc):
            raise UntrustedCheckpointError(
                f"{path} holds a pickled object that needs code to load; refusing. "
                f"{_TRUST_HINT}") from None
        raise CheckpointError(f"{path} is not a loadable torch.export program: "
                              f"{_first_line(exc)}") from None


def inspect_archive(path: Path) -> None:
    """Refuse a .pt2 whose archive carries code or pickles, or whose sizes are out of bounds."""
    try:
        archive = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as exc:
        raise CheckpointError(f"{path} is not a loadable torch.export program (not a zip archive: "
                              f"{_first_line(exc)})") from None
    with archive:
        infos = archive.infolist()
        total = sum(info.file_size for info in infos)
        _io.check_size(total, f"{path} (its archive, unpacked)", "model")
        names = {_strip_root(info.filename): info for info in infos}
        for name in names:
            if name.startswith(_CODE_DIRS):
                raise UntrustedCheckpointError(
                    f"{path} carries compiled code ({name}: an AOTInductor/ExecuTorch/MTIA "
                    f"payload loads a shared library); refusing. {_TRUST_HINT}")
        for name, info in names.items():
            if name.startswith(("data/weights/", "data/constants/")) and name.endswith(".pt"):
                raise UntrustedCheckpointError(
                    f"{path} stores {name} in torch's legacy pickled format; refusing. "
                    f"{_TRUST_HINT}")
            if name.endswith("_config.json") and name.startswith(("data/weights/",
                                                                  "data/constants/")):
                _check_payload_config(path, name, archive.read(info))


def _check_payload_config(path: Path, name: str, raw: bytes) -> None:
    try:
        config = json.loads(raw).get("config", {})
    except (ValueError, AttributeError):
        raise CheckpointError(f"{path}: {name} is not valid JSON") from None
    if not isinstance(config, dict):
        raise CheckpointError(f"{path}: {name} has no payload table")
    for fqn, meta in config.items():
        if not isinstance(meta, dict):
            raise CheckpointError(f"{path}: {name} entry {fqn!r} is not a table")
        file = str(meta.get("path_name", ""))
        if meta.get("use_pickle"):
            raise UntrustedCheckpointError(
                f"{path}: {fqn!r} ({name}) is stored as a pickle, which can run code when "
                f"loaded; refusing. {_TRUST_HINT}")
        if file.startswith(("custom_obj_", "opaque_obj_")):
            raise UntrustedCheckpointError(
                f"{path}: {fqn!r} ({name}) is a pickled {file.split('_obj_')[0]} object, "
                f"which can run code when loaded; refusing. {_TRUST_HINT}")


def _strip_root(name: str) -> str:
    # torch.export.save puts everything under one top folder named after the file
    return name.split("/", 1)[1] if "/" in name else name


class _Refused(Exception):
    pass


def _refuse(*args: Any, **kwargs: Any) -> Any:
    raise _Refused("it holds a pickled object (custom or opaque) that needs code to load")


@contextmanager
def _weights_only_unpickling() -> Iterator[None]:
    """Every unpickler torch.export.load reaches becomes weights-only while the block runs."""
    import torch
    from torch.export.pt2_archive import _package

    real_load = torch.load

    def weights_only_load(f: Any, map_location: Any = None, pickle_module: Any = None,
                          **kwargs: Any) -> Any:
        kwargs["weights_only"] = True
        return real_load(f, map_location=map_location, **kwargs)

    class _NoPickle:
        loads = load = staticmethod(_refuse)

    saved = (torch.load, torch._C._pickle_load_obj, getattr(_package, "pickle", None))
    torch.load = weights_only_load
    torch._C._pickle_load_obj = _refuse
    if saved[2] is not None:
        _package.pickle = _NoPickle  # type: ignore[assignment]
    try:
        yield
    finally:
        torch.load, torch._C._pickle_load_obj = saved[0], saved[1]
        if saved[2] is not None:
            _package.pickle = saved[2]


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


__all__ = ["inspect_archive", "load_exported_program"]
