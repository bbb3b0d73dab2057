"""`load_state_dict`: load an upstream checkpoint into a model, or say in one line why not.

Upstream ResNets (ZiLU-Activation) register one activation module under two names, so their
checkpoints hold two keys for one tensor. Loading accepts such duplicates on either side:

- a model key the checkpoint lacks is fine when the model key names the same tensor as a key
  that is loaded (one module registered twice in the model);
- a checkpoint key the model lacks is fine when it aliases a loaded key: it shares that key's
  storage (what ``torch.save`` of a duplicated module gives), or every tensor under its module
  equals, key for key, the tensors under the module of a loaded key (a copy of a duplicate).

Everything else that does not fit (missing, unexpected, shape mismatch, two checkpoint values
for one model tensor that differ) raises `CheckpointError` naming the first few keys.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import torch
from torch import nn

from gatex.errors import CheckpointError

SHOWN_KEYS = 3


@dataclass(frozen=True)
class LoadedState:
    """What `load_state_dict` did: keys loaded, duplicates accepted, and (non-strict) leftovers."""

    loaded: tuple[str, ...]
    aliased: tuple[str, ...]          # checkpoint keys accepted as duplicates of loaded keys
    shared: tuple[str, ...]           # model keys filled through another name of their tensor
    missing: tuple[str, ...] = ()     # strict=False only
    unexpected: tuple[str, ...] = ()  # strict=False only


def _first(keys: Iterable[str]) -> str:
    keys = list(keys)
    shown = ", ".join(keys[:SHOWN_KEYS])
    return shown + (f" (+{len(keys) - SHOWN_KEYS} more)" if len(keys) > SHOWN_KEYS else "")


def _same_storage(a: torch.Tensor, b: torch.Tensor) -> bool:
    return (a.device == b.device and a.dtype == b.dtype and a.shape == b.shape
            and a.stride() == b.stride() and a.untyped_storage().data_ptr()
            == b.untyped_storage().data_ptr() and a.storage_offset() == b.storage_offset())


def _equal(a: torch.Tensor, b: torch.Tensor) -> bool:
    if a.shape != b.shape:
        return False
    a, b = a.detach().cpu(), b.detach().cpu()
    common = torch.promote_types(a.dtype, b.dtype)
    return bool(torch.equal(a.to(common), b.to(common)))


def _under(prefix: str, keys: Iterable[str]) -> dict[str, str]:
    """relative name -> key, for the keys under module ``prefix``."""
    return {k[len(prefix) + 1:]: k for k in keys if k.startswith(prefix + ".")}


def _aliases_a_loaded_key(key: str, sd: Mapping[str, torch.Tensor], loaded: list[str]) -> bool:
    value = sd[key]
    if any(_same_storage(value, sd[k]) for k in loaded):
        return True
    # a copy of a duplicated module: the whole module must equal a loaded module, key for key
    parts = key.split(".")
    for cut in range(len(parts) - 1, 0, -1):
        prefix, rel = ".".join(parts[:cut]), ".".join(parts[cut:])
        mine = _under(prefix, sd)
        for other in loaded:
            if not other.endswith("." + rel) or not _equal(sd[other], value):
                continue
            theirs = _under(other[:-len(rel) - 1], sd)
            if theirs.keys() == mine.keys() and all(
                    theirs[r] in loaded and _equal(sd[theirs[r]], sd[mine[r]]) for r in mine):
                return True
    return False


def _strip_wrapper_prefix(sd: Mapping[str, torch.Tensor], own: Mapping[str, torch.Tensor]
                          ) -> Mapping[str, torch.Tensor]:
    # nn.DataParallel / DDP checkpoints prefix every key with "module."
    if sd and all(k.startswith("module.") for k in sd) and not any(
            k.startswith("module.") for k in own):
        return {k.removeprefix("module."): v for k, v in sd.items()}
    return sd


def load_state_dict(model: nn.Module, state_dict: Mapping[str, torch.Tensor], *,
                    strict: bool = True) -> LoadedState:
    """Copy ``state_dict`` into ``model``, accepting duplicated-module keys (module docstring).

    ``strict=False`` tolerates missing and unexpected keys (returned in the result) but never a
    shape mismatch or conflicting duplicates. Raises `CheckpointError` with one line.

    >>> load_state_dict(model, safetensors.torch.load_file("weights.safetensors"))
    """
    bad = [k for k, v in state_dict.items() if not isinstance(v, torch.Tensor)]
    if bad:
        raise CheckpointError(f"checkpoint values must be tensors; not for {_first(bad)}")
    what = type(model).__name__
    own = model.state_dict(keep_vars=True)
    sd = _strip_wrapper_prefix(state_dict, own)

    present = [k for k in own if k in sd]
    mismatched = [f"{k} {tuple(sd[k].shape)} vs {tuple(own[k].shape)}" for k in present
                  if sd[k].shape != own[k].shape]
    if mismatched:
        raise CheckpointError(f"checkpoint does not fit {what}: shape mismatch (checkpoint vs "
                              f"model) for {_first(mismatched)}")

    groups: dict[int, list[str]] = {}
    for k, v in own.items():
        groups.setdefault(id(v), []).append(k)
    missing: list[str] = []
    shared: list[str] = []
    conflicts: list[str] = []
    for keys in groups.values():
        given = [k for k in keys if k in sd]
        if not given:
            missing.extend(keys)
            continue
        shared.extend(k for k in keys if k not in sd)
        conflicts.extend(f"{k} != {given[0]}" for k in given[1:] if not _equal(sd[k], sd[given[0]]))
    if conflicts:
        raise CheckpointError(f"checkpoint gives different values for one tensor of {what}: "
                              f"{_first(conflicts)}")

    extra = [k for k in sd if k not in own]
    aliased = [k for k in extra if _aliases_a_loaded_key(k, sd, present)]
    unexpected = [k for k in extra if k not in aliased]
    if strict and (missing or unexpected):
        parts = []
        if missing:
            parts.append(f"missing keys {_first(missing)}")
        if unexpected:
            parts.append(f"unexpected keys {_first(unexpected)}")
        raise CheckpointError(f"checkpoint does not fit {what}: {'; '.join(parts)}; check that "
                              "the checkpoint and the model (and its config) belong together")
    try:
        model.load_state_dict({k: sd[k] for k in present}, strict=False)
    except RuntimeError as exc:  # e.g. a module's own _load_from_state_dict refuses a value
        line = str(exc).strip().splitlines()
        raise CheckpointError(f"checkpoint does not fit {what}: "
                              f"{line[-1].strip() if line else type(exc).__name__}") from None
    return LoadedState(loaded=tuple(present), aliased=tuple(aliased), shared=tuple(shared),
                       missing=tuple(missing) if not strict else (),
                       unexpected=tuple(unexpected) if not strict else ())
