"""Helpers that turn an op spec's ``impl`` into a `gatex::` torch custom op.

``torch.library.custom_op`` + ``register_fake`` keep each op one node under ``torch.export``;
``register_autograd`` differentiates ``impl`` itself (recomputed in backward), so every op
trains without a hand-written backward that could drift from the forward.
"""

from __future__ import annotations

import contextlib
import functools
import sys
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import torch

from gatex.ops.registry import REGISTRY

LOW_PRECISION = (torch.float16, torch.bfloat16)


def compute_in_fp32(fn: Callable[..., torch.Tensor]) -> Callable[..., torch.Tensor]:
    """Run ``fn`` in fp32 when the first tensor is fp16/bf16, rounding once at the end; the result
    has the first tensor's dtype.

    This is what upstream GoLU's CUDA kernel does, and it keeps the hazards of OPS.md (inner
    exponents, inf/inf) out of the low-precision range.
    """

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> torch.Tensor:
        first = next(a for a in args if isinstance(a, torch.Tensor))
        if first.dtype not in LOW_PRECISION:
            # the output dtype is always the first input's (as the fake kernels say), also when
            # a per-channel parameter of another float dtype would promote it
            return fn(*args, **kwargs).to(first.dtype)
        up = [a.float() if isinstance(a, torch.Tensor) and a.is_floating_point() else a
              for a in args]
        up_kw = {k: v.float() if isinstance(v, torch.Tensor) and v.is_floating_point() else v
                 for k, v in kwargs.items()}
        return fn(*up, **up_kw).to(first.dtype)

    return wrapper


# -- who sees the op: gatex's exporters keep it, every other tracer gets standard aten ops ----
# A module global, not a ContextVar: torch.compile (dynamo) reads a global as a guarded constant,
# where a ContextVar.get() would break its graph.
_KEEP_OPS = 0
_COMPOSITES: dict[str, Callable[..., torch.Tensor]] = {}


@contextlib.contextmanager
def keep_ops() -> Iterator[None]:
    """While the block runs, every tracer sees each gatex op as one ``gatex::`` node.

    Outside it (see `call_op`): ``torch.export`` keeps the ops too (a saved .pt2 program stays
    gatex's to export), while the tools that cannot carry a custom op get its impl as standard
    aten ops, so they export the gatex module as they exported the upstream one, with the same
    numbers: ``torch.onnx.export`` (dynamo and legacy), ``torch.jit.trace``, ``torch.compile``.
    gatex's own exporters trace inside this block.
    """
    global _KEEP_OPS
    _KEEP_OPS += 1
    try:
        yield
    finally:
        _KEEP_OPS -= 1


def _decompose_here() -> bool:
    """Whether the caller is being traced by a tool that needs standard aten ops."""
    if _KEEP_OPS:
        return False
    if torch.jit.is_tracing():          # torch.jit.trace, legacy torch.onnx.export
        _legacy_onnx_symbolics()
        return True
    if not torch.compiler.is_compiling():
        return False                    # eager: the op itself
    if not torch.compiler.is_exporting():
        return True                     # torch.compile: inductor fuses the aten ops
    if torch.compiler.is_dynamo_compiling():
        return False                    # strict torch.export: keep the op
    return _onnx_on_stack()             # non-strict torch.export: torch.onnx's or the user's


@functools.cache
def _legacy_onnx_symbolics() -> None:
    """The aten ops the impls use that the legacy (TorchScript) torch.onnx exporter cannot
    translate, given a symbolic once: erfc(x) = 1 - erf(x) (the GELU-family gates). Only adds a
    translation where torch.onnx had none."""
    import torch.onnx

    def erfc(g: Any, x: Any) -> Any:
        one = g.op("Constant", value_t=torch.tensor(1.0))
        return g.op("Sub", g.op("CastLike", one, x), g.op("Erf", x))

    try:
        torch.onnx.register_custom_op_symbolic("aten::erfc", erfc, 13)
    except Exception:  # noqa: BLE001  (a torch without the legacy exporter: nothing to add)
        pass


def _onnx_on_stack() -> bool:
    # plain Python here (non-strict export runs the model eagerly on fake tensors), so the
    # frames are real; tracing calls this once per op node, not per element
    frame = sys._getframe(2)
    while frame is not None:
        if frame.f_globals.get("__name__", "").startswith("torch.onnx"):
            return True
        frame = frame.f_back
    return False


def call_op(torch_name: str, *args: Any) -> torch.Tensor:
    """``torch.ops.gatex.<torch_name>(*args)``, or its impl as standard aten ops when a tool
    that cannot carry a custom op traces the caller (`keep_ops`)."""
    if _decompose_here():
        return _COMPOSITES[torch_name](*args)
    return getattr(torch.ops.gatex, torch_name)(*args)


def _elementwise_fake(*args: Any) -> torch.Tensor:
    # every tensor argument broadcasts (alpha or sigma may carry dims the inputs lack); the
    # dtype is the first input's (`compute_in_fp32`)
    tensors = [a for a in args if isinstance(a, torch.Tensor)]
    return tensors[0].new_empty(torch.broadcast_shapes(*(t.shape for t in tensors)))


def define_op(
    torch_name: str,
    schema: str,
    impl: Callable[..., torch.Tensor],
    *,
    param_names: Sequence[str],
    n_inputs: int,
    fake: Callable[..., torch.Tensor] | None = None,
) -> Any:
    """Register ``gatex::<torch_name>`` with ``schema``; positional args are inputs then params.

    ``impl`` is called as ``impl(*inputs, **params)``. The result is a fresh tensor (custom ops
    must not alias their inputs).
    """

    def forward(*args: Any) -> torch.Tensor:
        inputs, params = args[:n_inputs], dict(zip(param_names, args[n_inputs:]))
        out = impl(*inputs, **params)
        return out.clone() if any(out is a for a in args) else out

    _COMPOSITES[torch_name] = forward
    op = torch.library.custom_op(f"gatex::{torch_name}", forward, mutates_args=(), schema=schema)
    op.register_fake(fake or _elementwise_fake)

    def setup_context(ctx: Any, inputs: tuple[Any, ...], output: Any) -> None:
        is_tensor = [isinstance(a, torch.Tensor) for a in inputs]
        ctx.is_tensor = is_tensor
        ctx.others = [None if t else a for a, t in zip(inputs, is_tensor)]
        ctx.save_for_backward(*(a for a, t in zip(inputs, is_tensor) if t))

    def backward(ctx: Any, grad: torch.Tensor) -> tuple[Any, ...]:
        saved = iter(ctx.saved_tensors)
        args: list[Any] = []
        wanted: list[int] = []
        for i, (t, other) in enumerate(zip(ctx.is_tensor, ctx.others)):
            if not t:
                args.append(other)
                continue
            a = next(saved).detach()
            if ctx.needs_input_grad[i] and a.is_floating_point():
                a.requires_grad_(True)
                wanted.append(i)
            args.append(a)
        grads: list[Any] = [None] * len(args)
        if wanted:
            with torch.enable_grad():
                out = forward(*args)
                got = torch.autograd.grad(out, [args[i] for i in wanted], grad, allow_unused=True)
            for i, g in zip(wanted, got):
                grads[i] = torch.zeros_like(args[i]) if g is None else g
        return tuple(grads)

    op.register_autograd(backward, setup_context=setup_context)
    return op


def schema_for(spec: Any) -> str:
    """The torch.library schema of an elementwise-style op from its spec: tensor inputs (optional
    ones ``Tensor?``), learnable parameters as tensors, the others typed by their kind with their
    defaults, one tensor out.

    paGLU's: ``(Tensor v, Tensor u, Tensor alpha) -> Tensor``.
    """
    args = [f"Tensor{'?' if name in spec.optional_inputs else ''} {name}"
            for name in spec.inputs]
    kinds = {float: "float", int: "int", str: "str", tuple: "int[]"}
    for p in spec.params:
        if p.learnable:
            args.append(f"Tensor {p.name}")
            continue
        kind = kinds[p.kind] + ("?" if p.default is None else "")
        default = "None" if p.default is None else (
            repr(p.default) if p.kind is str else
            "[" + ", ".join(str(v) for v in p.default) + "]" if p.kind is tuple else
            str(float(p.default)) if p.kind is float else str(int(p.default)))
        args.append(f"{kind} {p.name}={default}")
    return "(" + ", ".join(args) + ") -> Tensor"


def publish(spec: Any, schema: str | None = None, *,
            fake: Callable[..., torch.Tensor] | None = None) -> Any:
    """Register ``spec`` in the global registry and define its torch custom op from ``schema``
    (default: `schema_for`)."""
    schema = schema_for(spec) if schema is None else schema
    REGISTRY.register(spec)
    define_op(spec.torch_name, schema, spec.impl, param_names=[p.name for p in spec.params],
              n_inputs=len(spec.inputs), fake=fake)
    return spec
