"""The CoreML MIL emulator against independent references, op by op, in fp32 and fp16.

Every MIL op the emulator implements has at least one row in `CASES`: a program built with
coremltools' builder, converted to an ML Program with no graph passes (so the op reaches the
package as built), saved, read back and emulated, against a NumPy/torch reference computed in
float64 from the very values the program saw. One program per opset and dtype holds every row's
op, each on its own inputs with its own output, so a table of 150 ops costs four conversions.

fp32 programs must match the reference to fp32 accuracy; fp16 programs must be within one fp16
ULP of it (the emulator computes each op in fp32 and rounds its result once). Further tests check
that rounding happens after every op, fp16 overflow to inf, fp32 accumulation, and the bad inputs:
unsupported ops, corrupt or missing packages.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from gatex.errors import BackendUnavailableError, CheckpointError

try:
    from gatex.runtimes.coreml_emulator import import_coremltools

    ct = import_coremltools()
except BackendUnavailableError as exc:  # pragma: no cover  (the coreml extra is not installed)
    pytest.skip(f"coremltools is not installed: {exc}", allow_module_level=True)

import torch
import torch.nn.functional as F
from coremltools.converters.mil import Builder as mb
from coremltools.converters.mil.mil import Function, Program, types

from gatex.runtimes.coreml_emulator import (
    SUPPORTED_OPS,
    MilEmulator,
    UnsupportedOpError,
    quiet_coremltools,
    read_package,
)

NP = {"fp32": np.float32, "fp16": np.float16}
MIL = {"fp32": types.fp32, "fp16": types.fp16}
# (rtol, atol). fp16: one ULP (2^-10 relative) of the correctly rounded value, plus a hair
# for results near zero; fp32: a few ULPs.
TOL = {"fp32": (2e-6, 1e-6), "fp16": (2.0 ** -10, 1e-6)}


# -- the table -----------------------------------------------------------------------------------

Gen = Callable[[np.random.Generator, tuple[int, ...]], np.ndarray]


def normal(scale: float = 1.0) -> Gen:
    return lambda rng, shape: rng.standard_normal(shape) * scale


NORMAL = normal()


def uniform(lo: float, hi: float) -> Gen:
    return lambda rng, shape: rng.uniform(lo, hi, shape)


def signed(lo: float, hi: float) -> Gen:
    """|x| in [lo, hi], either sign: away from zero (divisors)."""
    return lambda rng, shape: rng.uniform(lo, hi, shape) * rng.choice([-1.0, 1.0], shape)


def integers(lo: int, hi: int, *, nonzero: bool = False) -> Gen:
    def gen(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
        x = rng.integers(lo, hi + 1, shape).astype(np.float64)
        return np.where(x == 0, 1.0, x) if nonzero else x
    return gen


def fixed(values: list[float]) -> Gen:
    return lambda rng, shape: np.asarray(values, dtype=np.float64).reshape(shape)


@dataclass(frozen=True)
class In:
    """A runtime input of the program (so the op is not folded away at load)."""

    shape: tuple[int, ...]
    gen: Gen = NORMAL
    dynamic: bool = False  # a flexible first dim, so that shape-dependent ops are not folded

    def spec(self, dt: str) -> Any:
        from coremltools.converters.mil.mil import get_new_symbol

        shape = (get_new_symbol(), *self.shape[1:]) if self.dynamic else self.shape
        return mb.TensorSpec(shape=shape, dtype=MIL[dt])


class Ctx:
    """What a row's build and reference see: the dtype and the row's constants (``p``), typed
    for the program in `build` and as float64 of the same values in the reference."""

    def __init__(self, dt: str, p: dict[str, np.ndarray]) -> None:
        self.dt = dt
        self.p = p

    def s(self, value: float) -> Any:
        """A scalar constant in the program's float type."""
        return NP[self.dt](value)


@dataclass(frozen=True)
class Case:
    id: str
    op: str                                  # the MIL op under test
    inputs: tuple[In, ...]
    build: Callable[..., Any]                # (ctx, *vars) -> var or tuple of vars
    reference: Callable[..., Any]            # (ctx, *float64 arrays) -> array or tuple
    params: dict[str, Gen | np.ndarray] = field(default_factory=dict)
    param_shapes: dict[str, tuple[int, ...]] = field(default_factory=dict)
    tol: dict[str, tuple[float, float]] = field(default_factory=dict)
    opset: str = "iOS17"
    dtypes: tuple[str, ...] = ("fp32", "fp16")


def c(id: str, op: str, inputs: list[In] | In, build: Callable[..., Any],
      reference: Callable[..., Any], **kw: Any) -> Case:
    return Case(id, op, tuple(inputs) if isinstance(inputs, list) else (inputs,), build,
                reference, **kw)


def cast_back(ctx: Ctx, var: Any) -> Any:
    """A bool result as the program's float type (Core ML outputs cannot be bool)."""
    return mb.cast(x=var, dtype=ctx.dt)


def binary(op: str, ref: Callable, ga: Gen = NORMAL, gb: Gen = NORMAL, **kw: Any) -> Case:
    return c(op, op, [In((2, 3, 4), ga), In((3, 1), gb)],
             lambda ctx, a, b: getattr(mb, op)(x=a, y=b), lambda ctx, a, b: ref(a, b), **kw)


def compare(op: str, ref: Callable) -> Case:
    ints = integers(-2, 2)
    return c(op, op, [In((2, 3, 4), ints), In((3, 1), ints)],
             lambda ctx, a, b: cast_back(ctx, getattr(mb, op)(x=a, y=b)),
             lambda ctx, a, b: ref(a, b).astype(np.float64))


def logical(op: str, ref: Callable) -> Case:
    return c(op, op, [In((2, 3, 4)), In((3, 1))],
             lambda ctx, a, b: cast_back(ctx, getattr(mb, op)(x=mb.greater(x=a, y=ctx.s(0)),
                                                            y=mb.greater(x=b, y=ctx.s(0)))),
             lambda ctx, a, b: ref(a > 0, b > 0).astype(np.float64))


def unary(op: str, ref: Callable, gen: Gen = NORMAL, id: str | None = None, **kw: Any) -> Case:
    """``attrs``: float attributes go to the program in its dtype, and to the reference as
    float64 of that same (rounded) value; strings (gelu's mode) go to the program only."""
    attrs = kw.pop("attrs", {})
    floats = {k: v for k, v in attrs.items() if isinstance(v, float)}
    return c(id or op, op, In((3, 4, 5), gen),
             lambda ctx, x: getattr(mb, op)(x=x, **{k: ctx.s(v) if k in floats else v
                                                    for k, v in attrs.items()}),
             lambda ctx, x: ref(x, **{k: float(ctx.s(v)) for k, v in floats.items()}), **kw)


def reduction(op: str, ref: Callable, gen: Gen = NORMAL, keep: bool = False) -> Case:
    return c(f"{op}-keep" if keep else op, op, In((2, 3, 4), gen),
             lambda ctx, x: getattr(mb, op)(x=x, axes=[1], keep_dims=keep),
             lambda ctx, x: ref(x, axis=1, keepdims=keep))


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1 / (1 + np.exp(-x))


def _erf(x: np.ndarray) -> np.ndarray:
    return np.vectorize(math.erf)(x)


def _softmax(x: np.ndarray, axis: int) -> np.ndarray:
    e = np.exp(x - x.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


def _t(x: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.asarray(x, dtype=np.float64))


def _conv_ref(x: np.ndarray, w: np.ndarray, b: np.ndarray | None, *, stride: int | list = 1,
              dilation: int | list = 1, groups: int = 1, pads: list[int] | None = None
              ) -> np.ndarray:
    """torch conv in float64, ``pads`` in torch.nn.functional.pad order (last dim first)."""
    n = x.ndim - 2
    tx = _t(x)
    if pads:
        tx = F.pad(tx, pads)
    fn = (F.conv1d, F.conv2d, F.conv3d)[n - 1]
    return fn(tx, _t(w), None if b is None else _t(b), stride=stride, dilation=dilation,
              groups=groups).numpy()


def _pool_ref(fn: Callable, x: np.ndarray, **kw: Any) -> np.ndarray:
    return fn(_t(x), **kw).numpy()


def _layer_norm(x: np.ndarray, gamma: np.ndarray, beta: np.ndarray, eps: float) -> np.ndarray:
    mean = x.mean(-1, keepdims=True)
    var = ((x - mean) ** 2).mean(-1, keepdims=True)
    return (x - mean) / np.sqrt(var + eps) * gamma + beta


def _scatter_add(data: np.ndarray, indices: np.ndarray, updates: np.ndarray) -> np.ndarray:
    out = data.copy()
    for i in range(indices.shape[0]):
        for j in range(indices.shape[1]):
            out[i, indices[i, j]] += updates[i, j]
    return out


def _scatter_update(data: np.ndarray, indices: np.ndarray, updates: np.ndarray) -> np.ndarray:
    out = data.copy()
    for i in range(indices.shape[0]):
        for j in range(indices.shape[1]):
            out[i, indices[i, j]] = updates[i, j]
    return out


TIES = [-2.5, -1.5, -0.5, 0.5, 1.5, 2.5, 3.5, -3.5, 0.49, 0.51, 7.0, -0.0]
GATHER_IDX = np.array([4, 0, -1, 2], dtype=np.int32)
ALONG_IDX = np.array([[3, 0], [1, 1], [2, 3]], dtype=np.int32)
ND_IDX = np.array([[2, 1], [0, 3]], dtype=np.int32)
SCATTER_IDX = np.array([[3, 0], [1, 2], [0, 3]], dtype=np.int32)
SUM = {"tol": {"fp32": (1e-5, 1e-5)}}  # sums of tens of fp32 terms: absolute error ~1e-6

CASES: list[Case] = [
    # elementwise binary, broadcasting (2,3,4) with (3,1)
    binary("add", np.add), binary("sub", np.subtract), binary("mul", np.multiply),
    binary("real_div", np.divide, gb=signed(0.5, 2)),
    binary("pow", np.power, ga=uniform(0.5, 2)),
    binary("maximum", np.maximum), binary("minimum", np.minimum),
    binary("floor_div", np.floor_divide, integers(-20, 20), integers(-4, 4, nonzero=True)),
    binary("mod", np.mod, integers(-20, 20), integers(-4, 4, nonzero=True)),
    compare("equal", np.equal), compare("not_equal", np.not_equal),
    compare("greater", np.greater), compare("greater_equal", np.greater_equal),
    compare("less", np.less), compare("less_equal", np.less_equal),
    logical("logical_and", np.logical_and), logical("logical_or", np.logical_or),
    logical("logical_xor", np.logical_xor),
    c("logical_not", "logical_not", In((3, 4)),
      lambda ctx, x: cast_back(ctx, mb.logical_not(x=mb.greater(x=x, y=ctx.s(0)))),
      lambda ctx, x: (~(x > 0)).astype(np.float64)),
    # elementwise unary
    unary("abs", np.abs), unary("acos", np.arccos, uniform(-0.99, 0.99)),
    unary("asin", np.arcsin, uniform(-0.99, 0.99)), unary("atan", np.arctan, normal(4)),
    unary("atanh", np.arctanh, uniform(-0.9, 0.9)), unary("ceil", np.ceil, normal(3)),
    unary("cos", np.cos, normal(3)), unary("cosh", np.cosh, normal(2)),
    unary("exp", np.exp, normal(2)), unary("exp2", np.exp2, normal(2)),
    unary("floor", np.floor, normal(3)),
    unary("inverse", lambda x: 1 / (x + 1e-4), signed(0.5, 2)),
    unary("log", np.log, uniform(0.1, 10)),
    c("round", "round", In((12,), fixed(TIES)), lambda ctx, x: mb.round(x=x),
      lambda ctx, x: np.round(x)),  # ties to even, as torch.round (which converts to it)
    unary("rsqrt", lambda x: 1 / np.sqrt(x + 1e-12), uniform(0.1, 10)),
    c("sign", "sign", In((6,), fixed([-2.0, -0.1, 0.0, 0.3, 5.0, -0.0])),
      lambda ctx, x: mb.sign(x=x), lambda ctx, x: np.sign(x)),
    unary("sin", np.sin, normal(3)), unary("sinh", np.sinh, normal(2)),
    unary("sqrt", np.sqrt, uniform(0, 10)), unary("square", np.square, normal(3)),
    unary("tan", np.tan, uniform(-1.4, 1.4), tol={"fp32": (1e-5, 1e-6)}),
    unary("tanh", np.tanh, normal(2)),
    unary("threshold", lambda x, alpha: np.maximum(x, alpha), attrs={"alpha": 0.3}),
    c("clip", "clip", In((3, 4, 5)), lambda ctx, x: mb.clip(x=x, alpha=ctx.s(-0.5),
                                                           beta=ctx.s(0.7)),
      lambda ctx, x: np.clip(x, ctx.s(-0.5), ctx.s(0.7))),
    c("cast-fp16", "cast", In((3, 4), normal(100)), lambda ctx, x: mb.cast(x=x, dtype="fp16"),
      lambda ctx, x: x.astype(np.float16).astype(np.float64)),
    c("cast-fp32", "cast", In((3, 4), normal(100)), lambda ctx, x: mb.cast(x=x, dtype="fp32"),
      lambda ctx, x: x),
    c("cast-int32", "cast", In((3, 4), normal(5)), lambda ctx, x: mb.cast(x=x, dtype="int32"),
      lambda ctx, x: np.trunc(x).astype(np.int32)),
    c("select", "select", [In((2, 3, 4)), In((2, 3, 4))],
      lambda ctx, a, b: mb.select(cond=mb.greater(x=a, y=ctx.s(0)), a=a, b=b),
      lambda ctx, a, b: np.where(a > 0, a, b)),
    # activations
    unary("relu", lambda x: np.maximum(x, 0)),
    unary("relu6", lambda x: np.clip(x, 0, 6), normal(5)),
    unary("sigmoid", _sigmoid, normal(5)),
    unary("sigmoid_hard", lambda x, alpha, beta: np.clip(alpha * x + beta, 0, 1), normal(4),
          attrs={"alpha": 0.2, "beta": 0.5}),
    unary("leaky_relu", lambda x, alpha: np.where(x < 0, alpha * x, x), attrs={"alpha": 0.1}),
    unary("elu", lambda x, alpha: np.where(x < 0, alpha * np.expm1(x), x), normal(2),
          attrs={"alpha": 0.7}),
    unary("linear_activation", lambda x, alpha, beta: alpha * x + beta,
          attrs={"alpha": 2.0, "beta": -1.3}),
    unary("scaled_tanh", lambda x, alpha, beta: alpha * np.tanh(beta * x), normal(3),
          attrs={"alpha": 1.5, "beta": 0.3}),
    unary("thresholded_relu", lambda x, alpha: np.where(x >= alpha, x, 0),
          attrs={"alpha": 0.3}),
    unary("clamped_relu", lambda x, alpha, beta: np.minimum(np.maximum(x, 0), beta) +
          np.minimum(np.minimum(x, 0) * alpha, beta), normal(3), attrs={"alpha": 0.1, "beta": 2.0}),
    c("prelu", "prelu", In((2, 3, 4, 4)), lambda ctx, x: mb.prelu(x=x, alpha=ctx.p["a"]),
      lambda ctx, x: np.where(x > 0, x, x * ctx.p["a"].reshape(1, 3, 1, 1)),
      params={"a": np.array([0.1, -0.5, 2.0])}),
    unary("softsign", lambda x: x / (1 + np.abs(x)), normal(5)),
    c("softplus", "softplus", In((8,), fixed([-100, -20, -1, 0, 1, 15, 20, 100])),
      lambda ctx, x: mb.softplus(x=x), lambda ctx, x: np.logaddexp(0, x)),
    c("softplus_parametric", "softplus_parametric", In((2, 3, 4, 4), normal(3)),
      lambda ctx, x: mb.softplus_parametric(x=x, alpha=ctx.p["a"], beta=ctx.p["b"]),
      lambda ctx, x: ctx.p["a"].reshape(1, 3, 1, 1) *
      np.logaddexp(0, ctx.p["b"].reshape(1, 3, 1, 1) * x),
      params={"a": np.array([0.5, 1.0, 2.0]), "b": np.array([1.0, 0.5, 3.0])}),
    c("softmax", "softmax", In((2, 3, 5), normal(3)), lambda ctx, x: mb.softmax(x=x, axis=-1),
      lambda ctx, x: _softmax(x, -1)),
    c("softmax-axis1", "softmax", In((2, 3, 5), normal(3)),
      lambda ctx, x: mb.softmax(x=x, axis=1), lambda ctx, x: _softmax(x, 1)),
    unary("erf", _erf, normal(2)),
    unary("gelu", lambda x: 0.5 * x * (1 + _erf(x / math.sqrt(2))), normal(3), id="gelu-exact",
          attrs={"mode": "EXACT"}),
    unary("gelu", lambda x: 0.5 * x * (1 + np.tanh(math.sqrt(2 / math.pi) *
                                                    (x + 0.044715 * x ** 3))),
          normal(3), id="gelu-tanh", attrs={"mode": "TANH_APPROXIMATION"}),
    unary("gelu", lambda x: x * _sigmoid(1.702 * x), normal(3), id="gelu-sigmoid",
          attrs={"mode": "SIGMOID_APPROXIMATION"}),
    c("silu", "silu", In((9,), fixed([-200, -90, -20, -1, 0, 1, 5, 20, 90])),
      lambda ctx, x: mb.silu(x=x), lambda ctx, x: x * _sigmoid(x)),
    # reductions
    c("reduce_argmax", "reduce_argmax", In((2, 5, 4)),
      lambda ctx, x: mb.reduce_argmax(x=x, axis=1), lambda ctx, x: np.argmax(x, 1)),
    c("reduce_argmin", "reduce_argmin", In((2, 5, 4)),
      lambda ctx, x: mb.reduce_argmin(x=x, axis=-1, keep_dims=True),
      lambda ctx, x: np.argmin(x, -1)[..., None]),
    reduction("reduce_l1_norm", lambda x, **k: np.abs(x).sum(**k)),
    reduction("reduce_l2_norm", lambda x, **k: np.sqrt(np.square(x).sum(**k))),
    reduction("reduce_log_sum", lambda x, **k: np.log(x.sum(**k)), uniform(0.1, 2)),
    reduction("reduce_log_sum_exp", lambda x, **k: np.log(np.exp(x).sum(**k)), normal(3)),
    reduction("reduce_max", np.max), reduction("reduce_max", np.max, keep=True),
    reduction("reduce_mean", np.mean), reduction("reduce_mean", np.mean, keep=True),
    reduction("reduce_min", np.min), reduction("reduce_prod", np.prod, uniform(0.5, 1.5)),
    reduction("reduce_sum", np.sum), reduction("reduce_sum_square", lambda x, **k:
                                                np.square(x).sum(**k)),
    # linear algebra
    c("linear", "linear", In((4, 16)),
      lambda ctx, x: mb.linear(x=x, weight=ctx.p["w"], bias=ctx.p["b"]),
      lambda ctx, x: x @ ctx.p["w"].T + ctx.p["b"],
      params={"w": normal(0.3), "b": normal()}, param_shapes={"w": (6, 16), "b": (6,)}, **SUM),
    c("matmul", "matmul", [In((2, 3, 8)), In((2, 8, 5))],
      lambda ctx, a, b: mb.matmul(x=a, y=b), lambda ctx, a, b: a @ b, **SUM),
    c("matmul-transpose", "matmul", [In((2, 8, 3)), In((5, 8))],
      lambda ctx, a, b: mb.matmul(x=a, y=b, transpose_x=True, transpose_y=True),
      lambda ctx, a, b: np.swapaxes(a, -1, -2) @ b.T, **SUM),
    c("einsum", "einsum", [In((2, 3, 4, 5)), In((2, 5, 4, 6))],
      lambda ctx, a, b: mb.einsum(values=(a, b), equation="nchw,nwhu->nchu"),
      lambda ctx, a, b: np.einsum("nchw,nwhu->nchu", a, b), **SUM),
    c("layer_norm", "layer_norm", In((2, 3, 16), normal(3)),
      lambda ctx, x: mb.layer_norm(x=x, axes=[-1], gamma=ctx.p["g"], beta=ctx.p["b"],
                                   epsilon=ctx.s(1e-5)),
      lambda ctx, x: _layer_norm(x, ctx.p["g"], ctx.p["b"], 1e-5),
      params={"g": normal(), "b": normal()}, param_shapes={"g": (16,), "b": (16,)},
      tol={"fp32": (1e-5, 1e-5)}),
    c("l2_norm", "l2_norm", In((2, 3, 4, 5)), lambda ctx, x: mb.l2_norm(x=x, epsilon=ctx.s(1e-6)),
      lambda ctx, x: x / np.sqrt((x ** 2).sum(axis=(1, 2, 3), keepdims=True) + 1e-6)),
    c("cumsum", "cumsum", In((2, 6)), lambda ctx, x: mb.cumsum(x=x, axis=1),
      lambda ctx, x: np.cumsum(x, 1)),
    c("cumsum-exclusive-reverse", "cumsum", In((2, 6)),
      lambda ctx, x: mb.cumsum(x=x, axis=1, exclusive=True, reverse=True),
      lambda ctx, x: np.flip(np.cumsum(np.flip(x, 1), 1), 1) - x, tol={"fp32": (1e-5, 1e-6)}),
    # shapes, indexing, data movement (exact)
    c("reshape", "reshape", In((2, 3, 4)), lambda ctx, x: mb.reshape(x=x, shape=[4, -1]),
      lambda ctx, x: x.reshape(4, -1)),
    c("transpose", "transpose", In((2, 3, 4)), lambda ctx, x: mb.transpose(x=x, perm=[2, 0, 1]),
      lambda ctx, x: x.transpose(2, 0, 1)),
    c("expand_dims", "expand_dims", In((2, 3)), lambda ctx, x: mb.expand_dims(x=x, axes=[1, -1]),
      lambda ctx, x: x[:, None, :, None]),
    c("squeeze", "squeeze", In((2, 1, 3, 1)), lambda ctx, x: mb.squeeze(x=x, axes=[1]),
      lambda ctx, x: x[:, 0]),
    c("concat", "concat", [In((2, 3)), In((2, 5))],
      lambda ctx, a, b: mb.concat(values=(a, b), axis=1),
      lambda ctx, a, b: np.concatenate([a, b], 1)),
    c("concat-interleave", "concat", [In((2, 3)), In((2, 3))],
      lambda ctx, a, b: mb.concat(values=(a, b), axis=0, interleave=True),
      lambda ctx, a, b: np.stack([a, b], 1).reshape(4, 3)),
    c("concat-scalars", "concat", In((2, 3)),  # how dynamic shapes are assembled
      lambda ctx, x: mb.concat(values=(mb.reduce_max(x=x, axes=[0, 1]),
                                       mb.reduce_min(x=x, axes=[0, 1])), axis=0),
      lambda ctx, x: np.array([x.max(), x.min()])),
    c("stack", "stack", [In((2, 3)), In((2, 3))],
      lambda ctx, a, b: mb.stack(values=(a, b), axis=1), lambda ctx, a, b: np.stack([a, b], 1)),
    c("split", "split", In((2, 3, 4)), lambda ctx, x: tuple(mb.split(x=x, num_splits=2, axis=2)),
      lambda ctx, x: (x[..., :2], x[..., 2:])),
    c("split-sizes", "split", In((2, 5)),
      lambda ctx, x: tuple(mb.split(x=x, split_sizes=[1, 4], axis=-1)),
      lambda ctx, x: (x[:, :1], x[:, 1:])),
    c("tile", "tile", In((2, 3)), lambda ctx, x: mb.tile(x=x, reps=[2, 3]),
      lambda ctx, x: np.tile(x, (2, 3))),
    c("slice_by_index", "slice_by_index", In((4, 5, 6)),
      lambda ctx, x: mb.slice_by_index(x=x, begin=[1, 0, 5], end=[4, 5, 0], stride=[2, 1, -2],
                                       end_mask=[False, True, True]),
      lambda ctx, x: x[1:4:2, :, 5::-2]),
    c("slice_by_index-squeeze", "slice_by_index", In((4, 5)),
      lambda ctx, x: mb.slice_by_index(x=x, begin=[2, 0], end=[3, 5], squeeze_mask=[True, False]),
      lambda ctx, x: x[2]),
    c("slice_by_size", "slice_by_size", In((4, 5, 6)),
      lambda ctx, x: mb.slice_by_size(x=x, begin=[1, 0, 2], size=[2, -1, 3]),
      lambda ctx, x: x[1:3, :, 2:5]),
    c("gather", "gather", In((5, 4)), lambda ctx, x: mb.gather(x=x, indices=GATHER_IDX, axis=0),
      lambda ctx, x: np.take(x, GATHER_IDX, 0)),
    c("gather_along_axis", "gather_along_axis", In((3, 4)),
      lambda ctx, x: mb.gather_along_axis(x=x, indices=ALONG_IDX, axis=1),
      lambda ctx, x: np.take_along_axis(x, ALONG_IDX, 1)),
    c("gather_nd", "gather_nd", In((3, 4, 5)), lambda ctx, x: mb.gather_nd(x=x, indices=ND_IDX),
      lambda ctx, x: x[ND_IDX[:, 0], ND_IDX[:, 1]]),
    c("scatter_along_axis-add", "scatter_along_axis", [In((3, 4)), In((3, 2))],
      lambda ctx, d, u: mb.scatter_along_axis(data=d, indices=SCATTER_IDX, updates=u, axis=1,
                                              mode="add"),
      lambda ctx, d, u: _scatter_add(d, SCATTER_IDX, u)),
    c("scatter_along_axis-update", "scatter_along_axis", [In((3, 4)), In((3, 2))],
      lambda ctx, d, u: mb.scatter_along_axis(data=d, indices=SCATTER_IDX, updates=u, axis=1,
                                              mode="update"),
      lambda ctx, d, u: _scatter_update(d, SCATTER_IDX, u)),
    c("reverse", "reverse", In((2, 3, 4)), lambda ctx, x: mb.reverse(x=x, axes=[0, 2]),
      lambda ctx, x: x[::-1, :, ::-1]),
    c("pad-constant", "pad", In((2, 3, 4)),
      lambda ctx, x: mb.pad(x=x, pad=np.array([1, 0, 2, 1], np.int32), mode="constant",
                            constant_val=ctx.s(0.5)),
      lambda ctx, x: np.pad(x, [(0, 0), (1, 0), (2, 1)], constant_values=0.5)),
    c("pad-reflect", "pad", In((2, 3, 4)),
      lambda ctx, x: mb.pad(x=x, pad=np.array([1, 2], np.int32), mode="reflect",
                            constant_val=ctx.s(0)),
      lambda ctx, x: np.pad(x, [(0, 0), (0, 0), (1, 2)], mode="reflect")),
    c("pad-replicate", "pad", In((2, 3, 4)),
      lambda ctx, x: mb.pad(x=x, pad=np.array([2, 1], np.int32), mode="replicate",
                            constant_val=ctx.s(0)),
      lambda ctx, x: np.pad(x, [(0, 0), (0, 0), (2, 1)], mode="edge")),
    c("flatten2d", "flatten2d", In((2, 3, 4)), lambda ctx, x: mb.flatten2d(x=x, axis=2),
      lambda ctx, x: x.reshape(6, 4)),
    c("shape", "shape", In((2, 3, 4), dynamic=True), lambda ctx, x: mb.shape(x=x),
      lambda ctx, x: np.array([2, 3, 4], np.int32)),
    c("fill", "fill", In((2, 3), dynamic=True),
      lambda ctx, x: mb.fill(shape=mb.shape(x=x), value=ctx.s(2.5)),
      lambda ctx, x: np.full((2, 3), 2.5)),
    c("fill_like", "fill_like", In((2, 3), dynamic=True),
      lambda ctx, x: mb.fill_like(ref_tensor=x, value=ctx.s(1.5)),
      lambda ctx, x: np.full((2, 3), 1.5)),
    c("identity", "identity", In((2, 3)), lambda ctx, x: mb.identity(x=x), lambda ctx, x: x),
    c("topk", "topk", In((3, 6)), lambda ctx, x: tuple(mb.topk(x=x, k=2, axis=-1)),
      lambda ctx, x: (-np.sort(-x, -1)[:, :2], np.argsort(-x, -1)[:, :2].astype(np.int32))),
    c("argsort", "argsort", In((3, 6)), lambda ctx, x: mb.argsort(x=x, axis=-1, ascending=True),
      lambda ctx, x: np.argsort(x, -1).astype(np.int32)),
    c("range_1d", "range_1d", In((1,), fixed([5.0])),
      lambda ctx, x: mb.range_1d(start=ctx.s(0.5), end=mb.reduce_max(x=x, axes=[0]),
                                 step=ctx.s(1.5)),
      lambda ctx, x: np.arange(0.5, 5.0, 1.5)),
    c("band_part", "band_part", In((2, 4, 5)), lambda ctx, x: mb.band_part(x=x, lower=1, upper=0),
      lambda ctx, x: np.where(np.tril(np.triu(np.ones((4, 5)), -1)) > 0, x, 0)),
    # convolution
    c("conv", "conv", In((2, 3, 6, 7)),
      lambda ctx, x: mb.conv(x=x, weight=ctx.p["w"], bias=ctx.p["b"], pad_type="valid"),
      lambda ctx, x: _conv_ref(x, ctx.p["w"], ctx.p["b"]),
      params={"w": normal(0.3), "b": normal()}, param_shapes={"w": (4, 3, 3, 3), "b": (4,)},
      **SUM),
    c("conv-groups-dilation-custom", "conv", In((2, 4, 9, 8)),
      lambda ctx, x: mb.conv(x=x, weight=ctx.p["w"], strides=[1, 2], dilations=[2, 1],
                             groups=2, pad_type="custom", pad=[1, 0, 2, 1]),
      lambda ctx, x: _conv_ref(x, ctx.p["w"], None, stride=[1, 2], dilation=[2, 1], groups=2,
                               pads=[2, 1, 1, 0]),
      params={"w": normal(0.3)}, param_shapes={"w": (6, 2, 3, 3)}, **SUM),
    c("conv-same-even-kernel", "conv", In((1, 2, 5, 6)),
      lambda ctx, x: mb.conv(x=x, weight=ctx.p["w"], strides=[2, 1], pad_type="same"),
      # same: out = ceil(in / stride); the odd padding pixel goes after (bottom / right)
      lambda ctx, x: _conv_ref(x, ctx.p["w"], None, stride=[2, 1], pads=[0, 1, 0, 1]),
      params={"w": normal(0.3)}, param_shapes={"w": (3, 2, 2, 2)}, **SUM),
    c("conv-same_lower", "conv", In((1, 2, 5, 6)),
      lambda ctx, x: mb.conv(x=x, weight=ctx.p["w"], pad_type="same_lower"),
      lambda ctx, x: _conv_ref(x, ctx.p["w"], None, pads=[1, 0, 1, 0]),
      params={"w": normal(0.3)}, param_shapes={"w": (3, 2, 2, 2)}, **SUM),
    c("conv1d-depthwise", "conv", In((2, 4, 10)),
      lambda ctx, x: mb.conv(x=x, weight=ctx.p["w"], groups=4, pad_type="custom", pad=[2, 2]),
      lambda ctx, x: _conv_ref(x, ctx.p["w"], None, groups=4, pads=[2, 2]),
      params={"w": normal(0.3)}, param_shapes={"w": (4, 1, 5)}, **SUM),
    c("conv3d", "conv", In((1, 2, 4, 5, 5)),
      lambda ctx, x: mb.conv(x=x, weight=ctx.p["w"], pad_type="valid", strides=[1, 2, 2]),
      lambda ctx, x: _conv_ref(x, ctx.p["w"], None, stride=[1, 2, 2]),
      params={"w": normal(0.3)}, param_shapes={"w": (3, 2, 2, 3, 3)}, **SUM),
    c("conv_transpose", "conv_transpose", In((2, 3, 4, 5)),
      lambda ctx, x: mb.conv_transpose(x=x, weight=ctx.p["w"], bias=ctx.p["b"], strides=[2, 2],
                                       pad_type="valid"),
      lambda ctx, x: F.conv_transpose2d(_t(x), _t(ctx.p["w"]), _t(ctx.p["b"]), stride=2).numpy(),
      params={"w": normal(0.3), "b": normal()}, param_shapes={"w": (3, 2, 3, 3), "b": (2,)},
      **SUM),
    c("conv_transpose-custom-groups", "conv_transpose", In((1, 4, 4, 4)),
      lambda ctx, x: mb.conv_transpose(x=x, weight=ctx.p["w"], strides=[2, 1], groups=2,
                                       dilations=[1, 2], pad_type="custom", pad=[1, 1, 2, 2]),
      lambda ctx, x: F.conv_transpose2d(_t(x), _t(ctx.p["w"]), stride=[2, 1], groups=2,
                                        dilation=[1, 2], padding=[1, 2]).numpy(),
      params={"w": normal(0.3)}, param_shapes={"w": (4, 3, 3, 3)}, **SUM),
    c("conv_transpose-output_shape", "conv_transpose", In((1, 2, 3, 3)),
      lambda ctx, x: mb.conv_transpose(x=x, weight=ctx.p["w"], bias=ctx.p["b"], strides=[2, 2],
                                       pad_type="custom", pad=[1, 1, 1, 1],
                                       output_shape=[1, 2, 6, 6]),
      # torch's output_padding=1: the extra row/column at the end
      lambda ctx, x: F.conv_transpose2d(_t(x), _t(ctx.p["w"]), _t(ctx.p["b"]), stride=2,
                                        padding=1, output_padding=1).numpy(),
      params={"w": normal(0.3), "b": normal()}, param_shapes={"w": (2, 2, 3, 3), "b": (2,)},
      **SUM),
    # pooling
    c("max_pool", "max_pool", In((2, 3, 6, 6)),
      lambda ctx, x: mb.max_pool(x=x, kernel_sizes=[2, 2], strides=[2, 2], pad_type="valid"),
      lambda ctx, x: _pool_ref(F.max_pool2d, x, kernel_size=2, stride=2)),
    c("max_pool-pad-ceil", "max_pool", In((2, 3, 7, 6)),
      lambda ctx, x: mb.max_pool(x=x, kernel_sizes=[3, 2], strides=[2, 2], pad_type="custom",
                                 pad=[1, 1, 1, 1], ceil_mode=True),
      lambda ctx, x: _pool_ref(F.max_pool2d, x, kernel_size=[3, 2], stride=2, padding=1,
                               ceil_mode=True)),
    c("max_pool-same", "max_pool", In((1, 2, 5, 5)),
      lambda ctx, x: mb.max_pool(x=x, kernel_sizes=[2, 2], strides=[2, 2], pad_type="same"),
      lambda ctx, x: _pool_ref(F.max_pool2d, F.pad(_t(x), [0, 1, 0, 1], value=-math.inf).numpy(),
                               kernel_size=2, stride=2)),
    c("avg_pool-include-pad", "avg_pool", In((2, 3, 6, 6)),
      lambda ctx, x: mb.avg_pool(x=x, kernel_sizes=[3, 3], strides=[2, 2], pad_type="custom",
                                 pad=[1, 1, 1, 1], exclude_padding_from_average=False),
      lambda ctx, x: _pool_ref(F.avg_pool2d, x, kernel_size=3, stride=2, padding=1,
                               count_include_pad=True)),
    c("avg_pool-exclude-pad-ceil", "avg_pool", In((2, 3, 7, 7)),
      lambda ctx, x: mb.avg_pool(x=x, kernel_sizes=[3, 3], strides=[2, 2], pad_type="custom",
                                 pad=[1, 1, 1, 1], exclude_padding_from_average=True,
                                 ceil_mode=True),
      lambda ctx, x: _pool_ref(F.avg_pool2d, x, kernel_size=3, stride=2, padding=1,
                               ceil_mode=True, count_include_pad=False)),
    c("avg_pool1d", "avg_pool", In((2, 3, 9)),
      lambda ctx, x: mb.avg_pool(x=x, kernel_sizes=[3], strides=[3], pad_type="valid"),
      lambda ctx, x: _pool_ref(F.avg_pool1d, x, kernel_size=3, stride=3)),
    c("l2_pool", "l2_pool", In((2, 3, 6, 6)),
      lambda ctx, x: mb.l2_pool(x=x, kernel_sizes=[2, 2], strides=[2, 2], pad_type="valid"),
      lambda ctx, x: np.sqrt(_pool_ref(F.avg_pool2d, x ** 2, kernel_size=2, stride=2) * 4)),
    # normalisation and resampling
    c("batch_norm", "batch_norm", In((2, 3, 4, 4), normal(2)),
      lambda ctx, x: mb.batch_norm(x=x, mean=ctx.p["m"], variance=ctx.p["v"], gamma=ctx.p["g"],
                                   beta=ctx.p["b"], epsilon=ctx.s(1e-3)),
      lambda ctx, x: (x - ctx.p["m"].reshape(1, 3, 1, 1)) /
      np.sqrt(ctx.p["v"].reshape(1, 3, 1, 1) + 1e-3) * ctx.p["g"].reshape(1, 3, 1, 1) +
      ctx.p["b"].reshape(1, 3, 1, 1),
      params={"m": normal(), "v": uniform(0.5, 2), "g": normal(), "b": normal()},
      param_shapes={k: (3,) for k in "mvgb"}),
    c("instance_norm", "instance_norm", In((2, 3, 4, 5), normal(3)),
      lambda ctx, x: mb.instance_norm(x=x, gamma=ctx.p["g"], beta=ctx.p["b"],
                                      epsilon=ctx.s(1e-5)),
      lambda ctx, x: F.instance_norm(_t(x), weight=_t(ctx.p["g"]), bias=_t(ctx.p["b"]),
                                     eps=1e-5).numpy(),
      params={"g": normal(), "b": normal()}, param_shapes={"g": (3,), "b": (3,)},
      tol={"fp32": (1e-5, 1e-5)}),
    c("upsample_nearest_neighbor", "upsample_nearest_neighbor", In((2, 3, 3, 4)),
      lambda ctx, x: mb.upsample_nearest_neighbor(x=x, scale_factor_height=2,
                                                  scale_factor_width=3),
      lambda ctx, x: x.repeat(2, axis=2).repeat(3, axis=3)),
    c("upsample_bilinear-align-corners", "upsample_bilinear", In((2, 3, 3, 4)),
      lambda ctx, x: mb.upsample_bilinear(x=x, scale_factor_height=2, scale_factor_width=3,
                                          align_corners=True),
      lambda ctx, x: F.interpolate(_t(x), size=(6, 12), mode="bilinear",
                                   align_corners=True).numpy()),
    c("upsample_bilinear-half-pixel", "upsample_bilinear", In((2, 3, 3, 4)),
      lambda ctx, x: mb.upsample_bilinear(x=x, scale_factor_height=2.5, scale_factor_width=2.0,
                                          align_corners=False),
      lambda ctx, x: F.interpolate(_t(x), size=(7, 8), mode="bilinear",
                                   align_corners=False).numpy()),
    c("crop", "crop", In((2, 3, 6, 7)),
      lambda ctx, x: mb.crop(x=x, crop_height=[1, 2], crop_width=[0, 3]),
      lambda ctx, x: x[..., 1:4, 0:4]),
    c("pixel_shuffle", "pixel_shuffle", In((2, 8, 3, 4)),
      lambda ctx, x: mb.pixel_shuffle(x=x, upscale_factor=2),
      lambda ctx, x: F.pixel_shuffle(_t(x), 2).numpy()),
    c("pixel_unshuffle", "pixel_unshuffle", In((2, 2, 4, 6)),
      lambda ctx, x: mb.pixel_unshuffle(x=x, downscale_factor=np.uint32(2)),
      lambda ctx, x: F.pixel_unshuffle(_t(x), 2).numpy()),
    # iOS18
    c("scaled_dot_product_attention", "scaled_dot_product_attention",
      [In((2, 3, 5, 8)), In((2, 3, 6, 8)), In((2, 3, 6, 4))],
      lambda ctx, q, k, v: mb.scaled_dot_product_attention(query=q, key=k, value=v),
      lambda ctx, q, k, v: F.scaled_dot_product_attention(_t(q), _t(k), _t(v)).numpy(),
      opset="iOS18", **SUM),
    c("scaled_dot_product_attention-mask", "scaled_dot_product_attention",
      [In((2, 5, 8)), In((2, 6, 8)), In((2, 6, 4))],
      lambda ctx, q, k, v: mb.scaled_dot_product_attention(query=q, key=k, value=v,
                                                           attn_mask=ctx.p["m"]),
      lambda ctx, q, k, v: F.scaled_dot_product_attention(
          _t(q), _t(k), _t(v), attn_mask=torch.from_numpy(ctx.p["m"])).numpy(),
      params={"m": np.tril(np.ones((5, 6), dtype=bool), 1)}, opset="iOS18", **SUM),
]


# -- building, converting, emulating the table ---------------------------------------------------

@dataclass
class Built:
    feeds: dict[str, np.ndarray]                      # by input name, in the program's dtype
    outputs: dict[str, tuple[int, int]]               # case id -> slice of program outputs
    refs: dict[str, Any]                              # case id -> reference (float64)
    results: list[np.ndarray]                         # emulated outputs in program order
    executed: set[str]                                # op types the emulator ran (not folded)
    output_dtypes: list[str]


def _params(case: Case, rng: np.random.Generator, dt: str) -> tuple[dict, dict]:
    typed, wide = {}, {}
    for name, gen in case.params.items():
        value = gen if isinstance(gen, np.ndarray) else gen(rng, case.param_shapes[name])
        if value.dtype.kind == "f":
            value = value.astype(NP[dt])
            wide[name] = value.astype(np.float64)
        else:
            wide[name] = value
        typed[name] = value
    return typed, wide


def save_program(program, path: Path, target, dt: str) -> None:
    """Convert a MIL program as built (no passes) in ``dt`` for ``target`` and save it."""
    with quiet_coremltools():
        model = ct.convert(program, convert_to="mlprogram", minimum_deployment_target=target,
                           compute_precision=(ct.precision.FLOAT16 if dt == "fp16"
                                              else ct.precision.FLOAT32),
                           pass_pipeline=ct.PassPipeline.EMPTY)
        model.save(str(path))


def build_table(dt: str, opset: str, directory: Path) -> Built:
    rng = np.random.default_rng(1234)
    cases = [k for k in CASES if k.opset == opset and dt in k.dtypes]
    specs: dict[str, Any] = {}
    feeds: dict[str, np.ndarray] = {}
    plan = []
    for i, case in enumerate(cases):
        names = []
        for j, spec in enumerate(case.inputs):
            name = f"in{i}_{j}"
            value = spec.gen(rng, spec.shape).astype(NP[dt])
            specs[name] = spec.spec(dt)
            feeds[name] = value
            names.append(name)
        typed, wide = _params(case, rng, dt)
        plan.append((case, names, typed, wide))

    refs: dict[str, Any] = {}
    slices: dict[str, tuple[int, int]] = {}
    target = getattr(ct.target, opset)
    with Function(specs, target) as function:
        outputs: list[Any] = []
        for case, names, typed, wide in plan:
            result = case.build(Ctx(dt, typed), *(function.inputs[n] for n in names))
            result = result if isinstance(result, tuple) else (result,)
            slices[case.id] = (len(outputs), len(outputs) + len(result))
            outputs.extend(result)
            refs[case.id] = case.reference(Ctx(dt, wide),
                                           *(feeds[n].astype(np.float64) for n in names))
        function.set_outputs(outputs)
    program = Program()
    program.add_function("main", function)
    path = directory / f"table-{opset}-{dt}.mlpackage"
    save_program(program, path, target, dt)
    emulator = MilEmulator(path)
    out = emulator.run(feeds)
    return Built(feeds, slices, refs, list(out.values()),
                 {step.op.op_type for step in emulator.program.steps},
                 [o.dtype for o in emulator.outputs])


@pytest.fixture(scope="module")
def tables(tmp_path_factory: pytest.TempPathFactory) -> dict[tuple[str, str], Built]:
    directory = tmp_path_factory.mktemp("coreml-op-table")
    return {(dt, opset): build_table(dt, opset, directory)
            for opset in ("iOS17", "iOS18") for dt in ("fp32", "fp16")}


def _case_params() -> list[Any]:
    return [pytest.param(case, dt, id=f"{case.id}-{dt}") for case in CASES for dt in case.dtypes]


@pytest.mark.parametrize(("case", "dt"), _case_params())
def test_op_matches_reference(case: Case, dt: str, tables: dict) -> None:
    built = tables[(dt, case.opset)]
    assert case.op in built.executed, f"the emulator did not run {case.op} (folded or lost)"
    start, stop = built.outputs[case.id]
    actual = built.results[start:stop]
    expected = built.refs[case.id]
    expected = expected if isinstance(expected, tuple) else (expected,)
    assert len(actual) == len(expected)
    rtol, atol = case.tol.get(dt, TOL[dt])
    for a, e, declared in zip(actual, expected, built.output_dtypes[start:stop]):
        e = np.asarray(e)
        assert a.shape == e.shape, f"shape {a.shape}, expected {e.shape}"
        assert a.dtype.name == declared  # what the package declares for this output
        if e.dtype.kind in "iub":
            np.testing.assert_array_equal(a, e)
            continue
        np.testing.assert_allclose(a.astype(np.float64), e, rtol=rtol, atol=atol)


def test_every_supported_op_has_a_reference_row() -> None:
    covered = {case.op for case in CASES}
    assert sorted(set(SUPPORTED_OPS) - covered) == []
    assert sorted(covered - set(SUPPORTED_OPS)) == []


def test_kernel_sources_are_reported() -> None:
    assert SUPPORTED_OPS["conv"] == "torch"
    assert SUPPORTED_OPS["add"] == "value_inference"
    assert SUPPORTED_OPS["silu"] == "numpy"
    assert set(SUPPORTED_OPS.values()) <= {"value_inference", "numpy", "torch"}


# -- precision: rounding after every op, overflow, accumulation ----------------------------------

def convert_program(program: Any, path: Path, dt: str, *, passes: bool = False) -> MilEmulator:
    with quiet_coremltools():
        kwargs = {} if passes else {"pass_pipeline": ct.PassPipeline.EMPTY}
        model = ct.convert(program, convert_to="mlprogram",
                           minimum_deployment_target=ct.target.iOS17,
                           compute_precision=(ct.precision.FLOAT16 if dt == "fp16"
                                              else ct.precision.FLOAT32), **kwargs)
        model.save(str(path))
    return MilEmulator(path)


def _one_input_program(dt: str, shape: tuple[int, ...], body: Callable[[Any], Any]) -> Any:
    @mb.program(input_specs=[mb.TensorSpec(shape=shape, dtype=MIL[dt])],
                opset_version=ct.target.iOS17)
    def program(x):
        return body(x)
    return program


@pytest.fixture(scope="module")
def precision_models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, MilEmulator]:
    """(x + 1e-4) - x, log(exp(x)), x * x and a sum of 2048 and eight ones, per dtype: each
    separates rounding once per op from rounding once per program, or fp16 from fp32."""
    directory = tmp_path_factory.mktemp("coreml-precision")

    def body(dt: str) -> Callable[[Any], Any]:
        def outputs(x: Any) -> tuple[Any, ...]:
            small = mb.sub(x=mb.add(x=x, y=NP[dt](1e-4)), y=x)
            roundtrip = mb.log(x=mb.exp(x=x))
            square = mb.mul(x=x, y=x)
            ones = mb.reduce_sum(x=mb.stack(values=(x, mb.fill_like(ref_tensor=x,
                                                                    value=NP[dt](1))),
                                            axis=0), axes=[0])
            return small, roundtrip, square, ones
        return outputs

    return {dt: convert_program(_one_input_program(dt, (9,), body(dt)),
                                directory / f"precision-{dt}.mlpackage", dt)
            for dt in ("fp32", "fp16")}


X_PRECISION = np.array([1.0, 12.0, 300.0, 2048.0, 0, 0, 0, 0, 0], dtype=np.float64)


def _run_precision(models: dict[str, MilEmulator], dt: str) -> list[np.ndarray]:
    return list(models[dt].run({"x": X_PRECISION.astype(NP[dt])}).values())


def test_fp16_rounds_after_every_op(precision_models: dict[str, MilEmulator]) -> None:
    # 1 + 1e-4 rounds to 1 in fp16 (its ULP at 1 is 2^-10), so the difference is exactly 0;
    # in fp32 it is 1e-4 to fp32 accuracy. Rounding once at the end would give 1e-4 in both.
    small16 = _run_precision(precision_models, "fp16")[0]
    small32 = _run_precision(precision_models, "fp32")[0]
    assert small16.dtype == np.float16 and small16[0] == 0.0
    assert small32.dtype == np.float32 and small32[0] == pytest.approx(1e-4, rel=1e-3)
    # at 12 the fp16 ULP is 2^-7: 12 + 1e-4 rounds back to 12 as well
    assert small16[1] == 0.0


def test_fp16_overflows_to_inf_like_core_ml(precision_models: dict[str, MilEmulator]) -> None:
    _, roundtrip16, square16, _ = _run_precision(precision_models, "fp16")
    _, roundtrip32, square32, _ = _run_precision(precision_models, "fp32")
    # exp(12) = 162755 > 65504: inf in fp16, so log(exp(12)) is inf; fp32 gives 12 back
    assert roundtrip16[0] == pytest.approx(1.0, abs=2e-3)
    assert np.isposinf(roundtrip16[1])
    assert roundtrip32[1] == pytest.approx(12.0, rel=1e-6)
    # 300 * 300 = 90000 overflows fp16; 2048 * 2048 too; fp32 is exact
    assert np.isposinf(square16[2]) and np.isposinf(square16[3])
    assert square32[2] == 90000.0
    assert not np.isnan(square16).any()


def test_reductions_accumulate_in_fp32_and_round_once(
        precision_models: dict[str, MilEmulator]) -> None:
    # sum over [x, ones]: column 3 is 2048 + 1 = 2049, not representable in fp16 (ULP 2 at
    # 2048): the emulator sums in fp32 and rounds once (to 2048, ties to even); column 0 is
    # 1 + 1 = 2 exactly. An fp16 running sum would agree here; the point is one rounding.
    ones16 = _run_precision(precision_models, "fp16")[3]
    ones32 = _run_precision(precision_models, "fp32")[3]
    assert ones16[3] == 2048.0 and ones32[3] == 2049.0
    assert ones16[0] == 2.0


def test_fp16_matmul_accumulates_in_fp32(tmp_path: Path) -> None:
    # 2048 followed by eight ones, dotted with ones: fp32 accumulation gives 2056 (exact in
    # fp16); an fp16 running sum would stay at 2048 (2048 + 1 rounds back to 2048 each time).
    emulator = convert_program(
        _one_input_program("fp16", (1, 9), lambda x: mb.matmul(
            x=x, y=np.ones((9, 1), dtype=np.float16))), tmp_path / "dot.mlpackage", "fp16")
    x = np.array([[2048.0] + [1.0] * 8], dtype=np.float16)
    assert next(iter(emulator.run({"x": x}).values()))[0, 0] == 2056.0


def test_intermediates_are_fp16_in_an_fp16_program(tmp_path: Path) -> None:
    emulator = convert_program(_one_input_program("fp16", (4,), lambda x: mb.sigmoid(
        x=mb.mul(x=x, y=np.float16(3)))), tmp_path / "chain.mlpackage", "fp16")
    values = emulator.program.run({"x": np.array([0.1, 1, 2, 3], np.float16)}, keep_all=True)
    floats = [v for v in values.values() if v.dtype.kind == "f"]
    assert floats and all(v.dtype == np.float16 for v in floats)
    assert emulator.computes_fp16


# -- whole models converted from torch: the ops real exports produce ------------------------------

class Kitchen(torch.nn.Module):
    """A CNN branch (conv, BatchNorm, ReLU, max/avg pool, InstanceNorm, GELU, transposed conv,
    SiLU), an attention branch (linear, LayerNorm, softmax, matmul) and a GRU-style recurrence
    (split, sigmoid, tanh, softplus, clamp) over the 8x8 digits."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        nn = torch.nn
        self.c1, self.bn = nn.Conv2d(1, 8, 3, padding=1), nn.BatchNorm2d(8)
        self.c2 = nn.Conv2d(8, 8, 3, groups=2, dilation=2, padding=2)
        self.inorm = nn.InstanceNorm2d(8, affine=True)
        self.up = nn.ConvTranspose2d(8, 4, 2, stride=2)
        self.emb, self.ln = nn.Linear(8, 16), nn.LayerNorm(16)
        self.qkv = nn.Linear(16, 48)
        self.wi, self.wh = nn.Linear(8, 24), nn.Linear(8, 24)
        self.head = nn.Linear(4 + 16 + 8, 10)
        with torch.no_grad():  # non-trivial BatchNorm statistics
            self.bn.running_mean.uniform_(-0.5, 0.5)
            self.bn.running_var.uniform_(0.5, 2.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        img = x.reshape(-1, 1, 8, 8)
        h = F.max_pool2d(F.relu(self.bn(self.c1(img))), 2, 2, 0)
        h = F.gelu(F.avg_pool2d(self.inorm(self.c2(h)), 2))
        h = F.silu(self.up(h)).mean(dim=(2, 3))
        rows = x.reshape(-1, 8, 8)
        q, k, v = self.qkv(self.ln(self.emb(rows))).chunk(3, -1)
        t = ((q @ k.transpose(1, 2)) / 4.0).softmax(-1) @ v
        t = t.mean(1)
        s = torch.zeros(x.shape[0], 8)
        for step in range(0, 8, 3):
            ir, iz, i_n = self.wi(rows[:, step]).chunk(3, -1)
            hr, hz, hn = self.wh(s).chunk(3, -1)
            r, z = torch.sigmoid(ir + hr), torch.sigmoid(iz + hz)
            s = (1 - z) * torch.tanh(i_n + r * hn) + z * s
        s = F.softplus(s) * torch.clamp(s, -1, 1)
        return self.head(torch.cat([h, t, s], -1))


@pytest.fixture(scope="module")
def digits() -> np.ndarray:
    from gatex.models import zoo

    x, _ = zoo.held_out("GoLU")
    return x.numpy()[:64].astype(np.float32)


@pytest.mark.parametrize("dt", [pytest.param("fp32", marks=pytest.mark.slow), "fp16"])
def test_converted_torch_model_matches_torch(dt: str, digits: np.ndarray, tmp_path: Path) -> None:
    model = Kitchen().eval()
    example = torch.from_numpy(digits)
    with quiet_coremltools():
        program = torch.export.export(model, (example,)).run_decompositions({})
        mlmodel = ct.convert(program, convert_to="mlprogram",
                             compute_precision=(ct.precision.FLOAT16 if dt == "fp16"
                                                else ct.precision.FLOAT32),
                             minimum_deployment_target=ct.target.iOS17)
        mlmodel.save(str(tmp_path / "kitchen.mlpackage"))
    emulator = MilEmulator(tmp_path / "kitchen.mlpackage")
    ops = set(emulator.program.op_types)
    assert {"conv", "max_pool", "avg_pool", "instance_norm", "conv_transpose", "silu",
            "layer_norm", "softmax", "matmul", "sigmoid", "tanh", "softplus", "clip"} <= ops
    (out,) = emulator.run({emulator.inputs[0].name: digits}).values()
    with torch.no_grad():
        expected = model(example).double().numpy()
    err = np.abs(out.astype(np.float64) - expected).max()
    # fp32: accumulation order only; fp16: per-op rounding through ~100 ops, logits ~1
    assert err < (1e-5 if dt == "fp32" else 2e-2), err
    assert out.dtype == NP[dt]
    if dt == "fp16":  # the fp16 program really differs from fp32 (rounding is not a no-op)
        assert err > 1e-5
    np.testing.assert_array_equal(out.argmax(1), expected.argmax(1))


def test_fp16_program_matches_torch_half_kernels(digits: np.ndarray, tmp_path: Path) -> None:
    """An independent fp16 model of the same network: torch's CPU half kernels (linear
    accumulates in fp32 and rounds once, ReLU is exact), as the emulator models Core ML's."""
    torch.manual_seed(1)
    model = torch.nn.Sequential(torch.nn.Linear(64, 32), torch.nn.ReLU(),
                                torch.nn.Linear(32, 10)).eval()
    example = torch.from_numpy(digits)
    with quiet_coremltools():
        program = torch.export.export(model, (example,)).run_decompositions({})
        mlmodel = ct.convert(program, convert_to="mlprogram",
                             compute_precision=ct.precision.FLOAT16,
                             minimum_deployment_target=ct.target.iOS17)
        mlmodel.save(str(tmp_path / "mlp.mlpackage"))
    emulator = MilEmulator(tmp_path / "mlp.mlpackage")
    (out,) = emulator.run({emulator.inputs[0].name: digits}).values()
    with torch.no_grad():
        fp32 = model(example).double().numpy()
        half = model.half()(example.half()).double().numpy()
    emulated = out.astype(np.float64)
    ulp = np.spacing(np.abs(half).astype(np.float16)).astype(np.float64)
    assert (np.abs(emulated - half) <= ulp).mean() > 0.99  # mostly equal or one ULP apart
    assert np.abs(emulated - half).max() < np.abs(emulated - fp32).max() / 4


# -- compressed weights: constexpr_sparse_to_dense ------------------------------------------------

def _sparse_weight(rng: np.random.Generator, shape: tuple[int, int], dt: str
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A weight with 90 % exact zeros (and one -0.0), its non-zeros in row-major order, and
    its bit mask as MIL packs it: one bit per element, least significant bit first."""
    dense = rng.standard_normal(shape).astype(NP[dt])
    dense[rng.random(shape) < 0.9] = 0
    dense[0, 0] = -0.0
    flat = dense.reshape(-1)
    bits = flat != 0
    packed = np.zeros((flat.size + 7) // 8, np.uint8)
    for i in np.flatnonzero(bits):
        packed[i // 8] |= np.uint8(1 << (i % 8))
    return dense, flat[bits], packed


@pytest.mark.parametrize("dt", ["fp32", "fp16"])
@pytest.mark.parametrize("form", ["iOS16", "iOS18"])
def test_constexpr_sparse_to_dense_materialises_the_weight(form: str, dt: str,
                                                            tmp_path: Path) -> None:
    """The sparse weight coremltools' prune_weights writes (iOS16 form: uint8 bit mask + shape,
    in iOS16/17 programs; iOS18 form: a uint1 mask of the weight's shape) is the dense weight
    exactly, and a matmul reading it matches NumPy's (one fp16 ULP in fp16)."""
    from coremltools.converters.mil.mil.types.type_int import np_uint1_dtype

    rng = np.random.default_rng(7)
    dense, nonzero, packed = _sparse_weight(rng, (24, 40), dt)
    target = getattr(ct.target, "iOS18" if form == "iOS18" else "iOS17")

    @mb.program(input_specs=[mb.TensorSpec(shape=(5, 24), dtype=MIL[dt])], opset_version=target)
    def program(x):
        if form == "iOS16":
            w = mb.constexpr_sparse_to_dense(nonzero_data=nonzero, mask=packed,
                                             shape=np.uint32(dense.shape))
        else:
            mask = (dense != 0).astype(np_uint1_dtype)
            w = mb.constexpr_sparse_to_dense(nonzero_data=nonzero, mask=mask)
        return mb.matmul(x=x, y=w)

    path = tmp_path / f"sparse-{form}-{dt}.mlpackage"
    save_program(program, path, target, dt)
    emulator = MilEmulator(path)
    assert emulator.program.op_types["constexpr_sparse_to_dense"] == 1
    (weight,) = [v for v in emulator.program.constants.values()   # (the iOS18 mask too)
                 if np.shape(v) == dense.shape and v.dtype.kind == "f"]
    assert weight.dtype == dense.dtype and np.array_equal(weight, dense)
    x = rng.standard_normal((5, 24)).astype(NP[dt])
    (out,) = emulator.run({emulator.inputs[0].name: x}).values()
    expected = x.astype(np.float64) @ dense.astype(np.float64)
    rtol, atol = TOL[dt]
    np.testing.assert_allclose(out.astype(np.float64), expected, rtol=rtol, atol=1e-5)


# -- bad input ------------------------------------------------------------------------------------

def test_unsupported_op_is_named_before_running(tmp_path: Path) -> None:
    program = _one_input_program("fp32", (1, 4, 3, 3), lambda x: mb.local_response_norm(
        x=x, size=3))
    with pytest.raises(UnsupportedOpError, match="lacks MIL op local_response_norm") as info:
        convert_program(program, tmp_path / "lrn.mlpackage", "fp32")
    assert "\n" not in str(info.value)
    assert info.value.exit_code == 2


def test_missing_and_corrupt_packages_are_one_line(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="does not exist"):
        MilEmulator(tmp_path / "absent.mlpackage")
    empty = tmp_path / "empty.mlpackage"
    empty.mkdir()
    with pytest.raises(CheckpointError, match="no Manifest.json"):
        MilEmulator(empty)
    as_file = tmp_path / "file.mlpackage"
    as_file.write_text("not a package")
    with pytest.raises(CheckpointError, match="is not a directory"):
        MilEmulator(as_file)
    emulator = convert_program(_one_input_program("fp32", (2,), lambda x: mb.relu(x=x)),
                               tmp_path / "good.mlpackage", "fp32")
    spec_file = emulator.package.path / "Data" / "com.apple.CoreML" / "model.mlmodel"
    spec_file.write_bytes(b"\x08\x96\x01garbage" * 10)
    with pytest.raises(CheckpointError) as info:
        MilEmulator(emulator.package.path)
    assert "\n" not in str(info.value) and "good.mlpackage" in str(info.value)
    (emulator.package.path / "Manifest.json").write_text("{not json")
    with pytest.raises(CheckpointError, match="not a readable CoreML model"):
        read_package(emulator.package.path)
