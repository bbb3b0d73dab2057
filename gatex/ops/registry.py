"""`OpRegistry`: op specs by name. Duplicates are errors; tests build private registries."""

from __future__ import annotations

import difflib
from collections.abc import Iterator

from gatex.errors import DuplicateRegistrationError, UnknownOpError
from gatex.ops.spec import OpSpec


def _key(name: str) -> str:
    return name.removeprefix("gatex::").replace("_", "").lower()


class OpRegistry:
    """Op specs, looked up by name, id or torch name, case- and underscore-insensitively."""

    def __init__(self) -> None:
        self._specs: dict[str, OpSpec] = {}
        self._aliases: dict[str, str] = {}

    def register(self, spec: OpSpec) -> OpSpec:
        for alias in {_key(spec.name), _key(spec.torch_name)}:
            if alias in self._aliases:
                raise DuplicateRegistrationError(
                    f"op {spec.id} collides with {self._specs[self._aliases[alias]].id}")
        self._specs[spec.name] = spec
        for alias in {_key(spec.name), _key(spec.torch_name)}:
            self._aliases[alias] = spec.name
        return spec

    def get(self, name: str) -> OpSpec:
        try:
            return self._specs[self._aliases[_key(name)]]
        except KeyError:
            close = difflib.get_close_matches(name, list(self._specs), n=3, cutoff=0.5)
            hint = f"; did you mean {', '.join(close)}?" if close else ""
            raise UnknownOpError(
                f"unknown op {name!r}{hint} (`gatex units` lists them)") from None

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and _key(name) in self._aliases

    def __iter__(self) -> Iterator[OpSpec]:
        return iter(self._specs.values())

    def __len__(self) -> int:
        return len(self._specs)

    def names(self) -> list[str]:
        return list(self._specs)


REGISTRY = OpRegistry()
"""The registry every gatex op file registers into."""
