"""What ``torch.jit.script`` meets in a gatex module: one clear error naming the alternatives.

A gatex module's forward calls its op through `gatex.ops.call_op`, which picks the ``gatex::``
custom op or the op's own impl as standard aten ops (see `gatex.ops.keep_ops`). TorchScript
compiles Python source, and neither the picking nor the impls (variadic, keyword-only
parameters, ``functools.wraps`` wrappers) are TorchScript. Every other route exports these
modules with the same numbers: ``torch.jit.trace``, ``torch.export``, ``torch.onnx.export``
(dynamo and legacy), ``torch.compile``. TorchScript itself is deprecated upstream.
"""

from __future__ import annotations

from typing import NoReturn

from gatex.errors import NotScriptableError


class NotScriptable:
    """Mixin for gatex modules: ``torch.jit.script`` raises `NotScriptableError` in one line."""

    def __prepare_scriptable__(self) -> NoReturn:
        raise NotScriptableError(
            f"torch.jit.script cannot compile gatex's {type(self).__name__} (its op is a torch "
            "custom op called from Python); use torch.jit.trace(model, example_inputs), "
            "torch.export.export or torch.onnx.export, which see it as standard aten ops")
