"""Exporters: a model in, an artifact out (ONNX `onnx`, CoreML `coreml`, TensorRT `tensorrt`,
pruned-layer `compact`ion before any of them). They write artifacts and never run them: the
check that follows an export is `gatex.pipeline`. Importing this package imports no torch.
"""

from __future__ import annotations

import re

TARGETS = ("onnx", "coreml", "trt")


def _safe_stem(stem: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", stem).strip("_") or "model"


def artifact_name(stem: str, flavor: str, dtype: str) -> str:
    """The ONNX file name of an export: ``<stem>-<flavor>-<dtype>.onnx``, the stem made safe."""
    return f"{_safe_stem(stem)}-{flavor}-{dtype}.onnx"


def coreml_artifact_name(stem: str, precision: str) -> str:
    """The package name of a CoreML export: ``<stem>-<precision>.mlpackage``."""
    return f"{_safe_stem(stem)}-{precision}.mlpackage"


__all__ = ["TARGETS", "artifact_name", "coreml_artifact_name"]
