"""Fixtures for the ONNX exporter tests: the session's zoo exports (see export_cases.py) and a
torch.onnx registry built once per session."""

from __future__ import annotations

import functools
import inspect
from typing import Any

import pytest
from export_cases import ZooExports


@pytest.fixture(scope="session", autouse=True)
def _reuse_torchlib_registry():
    """torch.onnx.export rebuilds its registry of aten translations on every call (about 1.2 s of
    a 2 s export of a zoo model: it re-parses ~500 onnxscript functions). It depends only on the
    opset, so the session builds it once per opset and hands each export a copy of its lists
    (the custom translations are added to the copy). If torch's internals differ, nothing is
    patched and exports just take longer."""
    try:
        from torch.onnx._internal.exporter import _registration

        cls = _registration.ONNXRegistry
        original = cls.__dict__["from_torchlib"].__func__
    except (ImportError, AttributeError, KeyError):
        yield
        return

    @functools.cache
    def base(opset_version: int) -> Any:
        return original(cls, opset_version=opset_version)

    default = inspect.signature(original).parameters["opset_version"].default

    def from_torchlib(klass: type, opset_version: int = default) -> Any:
        built = base(opset_version)
        registry = klass()
        registry._opset_version = built._opset_version
        registry.functions = {k: list(v) for k, v in built.functions.items()}
        return registry

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(cls, "from_torchlib", classmethod(from_torchlib))
        yield


@pytest.fixture(scope="session")
def zoo_exports(tmp_path_factory: pytest.TempPathFactory) -> ZooExports:
    return ZooExports(tmp_path_factory.mktemp("zoo-onnx"))


