"""Elementwise, activation, reduction and linear-algebra MIL ops.

Most reuse coremltools' own ``value_inference`` (checked op by op in the tests). gatex's own
kernels: select (value_inference fails on a scalar b), erf and gelu (``value_inference`` maps
``math.erf`` over every element, one Python call each), silu (no ``value_inference``), cumsum (its exclusive branch is broken in coremltools 9),
and scaled_dot_product_attention (iOS18, none).
"""

from __future__ import annotations

import math

import numpy as np

from gatex.runtimes.coreml_emulator.registry import OpCall, kernel, reuse_value_inference

reuse_value_inference(
    # elementwise binary, NumPy broadcasting (``get_operator()(x, y)``)
    "add", "sub", "mul", "real_div", "pow", "maximum", "minimum", "floor_div", "mod",
    "equal", "not_equal", "greater", "greater_equal", "less", "less_equal",
    "logical_and", "logical_or", "logical_xor",
    # elementwise unary; log, rsqrt and inverse add their ``epsilon`` as Core ML does
    "abs", "acos", "asin", "atan", "atanh", "ceil", "cos", "cosh", "exp", "exp2", "floor",
    "inverse", "log", "logical_not", "round", "rsqrt", "sign", "sin", "sinh", "sqrt", "square",
    "tan", "tanh", "threshold", "clip", "cast",
    # activations (softplus in its overflow-safe form log1p(exp(-|x|)) + max(x, 0))
    "relu", "relu6", "sigmoid", "sigmoid_hard", "leaky_relu", "elu", "linear_activation",
    "scaled_tanh", "thresholded_relu", "clamped_relu", "prelu", "softsign", "softplus",
    "softplus_parametric", "softmax",
    # reductions over ``axes`` (``axis`` for argmax/argmin)
    "reduce_argmax", "reduce_argmin", "reduce_l1_norm", "reduce_l2_norm", "reduce_log_sum",
    "reduce_log_sum_exp", "reduce_max", "reduce_mean", "reduce_min", "reduce_prod",
    "reduce_sum", "reduce_sum_square",
    # linear algebra and normalisation by moments
    "linear", "matmul", "einsum", "layer_norm", "l2_norm",
)


def _torch(array: np.ndarray):
    import torch

    return torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32))


@kernel("select", source="numpy")
def select(call: OpCall) -> np.ndarray:
    """cond ? a : b, broadcast (coremltools' value_inference fails on a scalar b, as ViT's
    attention writes it); the result has a's dtype."""
    a = np.asarray(call.a)
    return np.where(np.asarray(call.cond).astype(bool), a, np.asarray(call.b)).astype(a.dtype)


@kernel("erf", source="torch")
def erf(call: OpCall) -> np.ndarray:
    """erf(x), torch's vectorised fp32 kernel."""
    import torch

    return torch.special.erf(_torch(call.x)).numpy()


@kernel("gelu", source="torch")
def gelu(call: OpCall) -> np.ndarray:
    """EXACT: 0.5 x (1 + erf(x / sqrt 2)); TANH_APPROXIMATION: 0.5 x (1 + tanh(sqrt(2/pi)
    (x + 0.044715 x^3))); SIGMOID_APPROXIMATION: x sigmoid(1.702 x) (MIL gelu)."""
    import torch.nn.functional as F

    mode = call.scalar("mode", "EXACT")
    x = call.x
    if mode == "EXACT":
        return F.gelu(_torch(x)).numpy()
    if mode == "TANH_APPROXIMATION":
        return F.gelu(_torch(x), approximate="tanh").numpy()
    if mode == "SIGMOID_APPROXIMATION":
        return x / (1 + np.exp(np.float32(-1.702) * x))
    raise NotImplementedError(f"gelu mode {mode!r}")


@kernel("silu")
def silu(call: OpCall) -> np.ndarray:
    """x sigmoid(x) = x / (1 + exp(-x)); exp overflows to inf for x < -88 and gives -0."""
    x = call.x
    return x / (1 + np.exp(-x))


@kernel("cumsum")
def cumsum(call: OpCall) -> np.ndarray:
    """Cumulative sum along ``axis``; ``exclusive`` starts at 0, ``reverse`` runs back to front."""
    x, axis = call.x, call.scalar("axis", 0)
    reverse, exclusive = bool(call.scalar("reverse", False)), bool(call.scalar("exclusive", False))
    if reverse:
        x = np.flip(x, axis)
    out = np.cumsum(x, axis=axis, dtype=x.dtype)
    if exclusive:
        out = np.concatenate([np.zeros_like(np.take(out, [0], axis=axis)),
                              np.delete(out, -1, axis=axis)], axis=axis)
    return np.flip(out, axis) if reverse else out


@kernel("scaled_dot_product_attention")
def scaled_dot_product_attention(call: OpCall) -> np.ndarray:
    """softmax(Q K^T / sqrt(E) + mask) V; a boolean mask keeps where True (MIL, iOS18)."""
    q, k, v = call.query, call.key, call.value
    scores = np.matmul(q, np.swapaxes(k, -1, -2)) / np.float32(math.sqrt(q.shape[-1]))
    mask = call.get("attn_mask")
    if mask is not None:
        scores = np.where(mask, scores, -np.inf) if mask.dtype == np.bool_ else scores + mask
    scores = np.exp(scores - scores.max(axis=-1, keepdims=True))
    return np.matmul(scores / scores.sum(axis=-1, keepdims=True), v)
