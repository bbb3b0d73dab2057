"""`load_model`: a zoo unit, a user model (``module:attr``) plus weights, or a saved ``.pt2``.

Checkpoints are untrusted: safetensors, or ``torch.load(weights_only=True)``. A pickle that
needs code to load is refused unless the caller passes ``trust_checkpoint=True``.
"""

from __future__ import annotations

import importlib
import importlib.util
import pickle
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from gatex import _io, models
from gatex.artifacts.pt2 import load_exported_program
from gatex.errors import (
    BadInputError,
    CheckpointError,
    ParameterRangeError,
    UntrustedCheckpointError,
)
from gatex.models import zoo

STATE_DICT_KEYS = ("state_dict", "model_state_dict", "model")


def read_checkpoint(path: str | Path, *, trust_checkpoint: bool = False) -> dict[str, torch.Tensor]:
    """The state_dict in ``path`` (.safetensors, or a torch pickle loaded with weights_only).

    A dict wrapping the state_dict under one of ``state_dict``, ``model_state_dict`` or ``model``
    is unwrapped. Missing, corrupt and code-carrying files raise `CheckpointError` subclasses.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist or is not a file")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            return dict(load_file(str(path)))
        except Exception as exc:  # safetensors raises SafetensorError for bad headers
            raise CheckpointError(f"checkpoint {path} is not a valid safetensors file ({exc})") \
                from None
    _io.check_size(path.stat().st_size, f"checkpoint {path}", "model")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        if "Unsupported global" not in str(exc):  # not code it needs: a file that is not a pickle
            raise CheckpointError(f"checkpoint {path} is corrupt or not a torch file "
                                  f"({_weights_only_reason(exc)})") from None
        if not trust_checkpoint:
            raise UntrustedCheckpointError(
                f"checkpoint {path} needs code to load ({_unsupported_global(exc)}); refusing. "
                "Convert it to safetensors, or pass --trust-checkpoint (trust_checkpoint=True) "
                "only if you trust its source") from None
        obj = _load_trusted(path)
    except (RuntimeError, EOFError, OSError, ValueError) as exc:
        raise CheckpointError(f"checkpoint {path} is corrupt or not a torch file: "
                              f"{_first_line(exc)}") from None
    return _state_dict_of(obj, path)


def _state_dict_of(obj: Any, path: Path) -> dict[str, torch.Tensor]:
    if isinstance(obj, nn.Module):
        return dict(obj.state_dict())
    if isinstance(obj, Mapping):
        for key in STATE_DICT_KEYS:
            inner = obj.get(key)
            if isinstance(inner, Mapping) and inner and all(isinstance(v, torch.Tensor)
                                                            for v in inner.values()):
                return dict(inner)
        tensors = {k: v for k, v in obj.items() if isinstance(v, torch.Tensor)}
        if tensors and len(tensors) == len(obj):
            return tensors
    raise CheckpointError(f"checkpoint {path} holds no state_dict (a mapping of names to tensors, "
                          f"possibly under {', '.join(STATE_DICT_KEYS)})")


def _load_trusted(path: Path) -> Any:
    """torch.load with the full unpickler (the user passed the trust flag): its failures are
    still bad input, named, never a traceback."""
    try:
        return torch.load(path, map_location="cpu", weights_only=False)
    except (ImportError, AttributeError) as exc:
        raise CheckpointError(f"checkpoint {path} needs code that is not importable here "
                              f"({type(exc).__name__}: {_first_line(exc)}); install the package "
                              "that defines it, or save a plain state_dict") from None
    except Exception as exc:  # noqa: BLE001  (whatever the pickle raised: the file is the cause)
        raise CheckpointError(f"checkpoint {path} is corrupt or cannot be loaded "
                              f"({type(exc).__name__}: {_first_line(exc)})") from None


def _weights_only_reason(exc: BaseException) -> str:
    for line in str(exc).splitlines():
        line = line.strip()
        if line and not line.startswith(("Weights only load failed", "Please file", "Check the",
                                         "(1)", "(2)", "WeightsUnpickler error: ")) \
                and "weights_only" not in line:
            return line
    return "its pickle stream cannot be read"


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _unsupported_global(exc: BaseException) -> str:
    for line in str(exc).splitlines():
        if "Unsupported global" in line:
            text = line.strip().removeprefix("WeightsUnpickler error: ")
            return text.split(" was not an allowed global")[0]
    return "a pickled object that is not plain tensors"


def import_object(ref: str) -> Any:
    """Resolve ``module:attr`` or ``path/to/file.py:attr`` (attr may be dotted)."""
    module_part, sep, attr = ref.rpartition(":")
    if not sep or not module_part or not attr:
        raise BadInputError(f"{ref!r} is not of the form module:attr or file.py:attr")
    try:
        if module_part.endswith(".py"):
            file = Path(module_part)
            if not file.is_file():
                raise BadInputError(f"model file {file} does not exist")
            spec = importlib.util.spec_from_file_location(f"gatex_user_{file.stem}", file)
            assert spec is not None and spec.loader is not None
            module = importlib.util.module_from_spec(spec)
            sys.modules[spec.name] = module
            spec.loader.exec_module(module)
        else:
            module = importlib.import_module(module_part)
    except BadInputError:
        raise
    except Exception as exc:
        raise BadInputError(f"cannot import {module_part!r}: {type(exc).__name__}: "
                            f"{_first_line(exc)}") from None
    obj: Any = module
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise BadInputError(f"{module_part!r} has no attribute {attr!r}")
        obj = getattr(obj, part)
    return obj


def load_model(source: str | Path | nn.Module, *, weights: str | Path | None = None,
               trust_checkpoint: bool = False, adapt: bool = True) -> nn.Module:
    """Load a model in eval mode, with upstream gated modules replaced by gatex ones.

    ``source`` is a zoo unit name (``"paGLU"``), ``"module:attr"`` / ``"file.py:attr"`` naming an
    ``nn.Module`` or a factory returning one, a saved ``torch.export`` program (``.pt2``), or a
    module. ``weights`` (safetensors or a torch checkpoint) is loaded after adapting.

    >>> model = load_model("paGLU")
    """
    if isinstance(source, nn.Module):
        model = source
    elif str(source).endswith(".pt2"):
        if weights is not None:
            raise BadInputError("a .pt2 program carries its weights; drop --weights")
        return _load_exported(Path(source), trust_checkpoint=trust_checkpoint)
    elif ":" in str(source) and not Path(str(source)).exists():
        obj = import_object(str(source))
        model = obj if isinstance(obj, nn.Module) else _call_factory(obj, str(source))
    elif _names_a_file(str(source)):
        raise BadInputError(_not_a_model_file(Path(str(source))))
    else:
        if weights is not None:
            raise BadInputError("zoo models ship their weights; use --model module:attr to load "
                                "other weights")
        return zoo.load(str(source))
    if adapt:
        model, report = models.adapt(model)
        if report.invalid:
            path, cls, why = report.invalid[0]
            raise ParameterRangeError(f"module {path or '<root>'} ({cls}): {why}")
    if weights is not None:
        models.load_state_dict(model, read_checkpoint(weights, trust_checkpoint=trust_checkpoint))
    return model.eval()


def _names_a_file(source: str) -> bool:
    # zoo unit names have neither a suffix nor a directory part
    return bool(Path(source).suffix) or "/" in source or "\\" in source


def _not_a_model_file(path: Path) -> str:
    kinds = "module:attr, file.py:attr (an nn.Module or a factory) or a torch.export .pt2 program"
    if path.suffix == ".py":
        return f"{path} names a file, not the model in it: give {path}:ATTR (gatex loads {kinds})"
    if not path.exists():
        return f"model file {path} does not exist (gatex loads {kinds})"
    return f"{path}: unsupported model file type {path.suffix or '(none)'}; gatex loads {kinds}"


def _call_factory(factory: Any, ref: str) -> nn.Module:
    if not callable(factory):
        raise BadInputError(f"{ref} is neither an nn.Module nor a factory returning one")
    try:
        model = factory()
    except Exception as exc:
        raise BadInputError(f"{ref}() failed: {type(exc).__name__}: {_first_line(exc)}") from None
    if not isinstance(model, nn.Module):
        raise BadInputError(f"{ref}() returned {type(model).__name__}, not an nn.Module")
    return model


class ExportedModule(nn.Module):
    """A loaded ``torch.export`` program as a module gatex can export again.

    ``ExportedProgram.module()`` refuses ``eval()``/``train()`` (its mode is fixed at export
    time); this wrapper keeps that mode and makes both calls no-ops, so the program goes through
    every exporter like any other module.
    """
    def __init__(self, program_module: nn.Module, name: str) -> None:
        super().__init__()
        self.program = program_module
        self.gatex_name = name

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        return self.program(*args, **kwargs)

    def train(self, mode: bool = True) -> ExportedModule:
        self.training = mode  # the program's own mode was fixed when it was exported
        return self


def _load_exported(path: Path, *, trust_checkpoint: bool = False) -> nn.Module:

    program = load_exported_program(path, trust_checkpoint=trust_checkpoint)
    return ExportedModule(program.module(), path.stem)
