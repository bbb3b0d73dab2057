"""Convolution, pooling, normalisation and resampling MIL ops (none has a ``value_inference``).

Convolutions run on torch's CPU kernels in fp32 (fp16 programs: fp16 values, fp32 accumulation,
the result rounded to fp16 by the executor). Padding follows MIL: ``valid``; ``custom`` with
``pad = [before_0, after_0, before_1, ...]``; ``same`` (output ceil(in / stride), the odd pixel
after) and ``same_lower`` (the odd pixel before).
"""

from __future__ import annotations

import math

import numpy as np

from gatex.runtimes.coreml_emulator.registry import OpCall, kernel


def _torch(array: np.ndarray):
    import torch

    return torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32))


def mil_pads(call: OpCall, spatial: tuple[int, ...], kernel_eff: list[int],
             strides: list[int]) -> list[tuple[int, int]]:
    """(before, after) padding per spatial dim for the op's ``pad_type`` / ``pad``."""
    pad_type = call.scalar("pad_type", "valid")
    n = len(spatial)
    if pad_type == "valid":
        return [(0, 0)] * n
    if pad_type == "custom":
        pad = call.ints("pad", [0] * 2 * n)
        return [(pad[2 * i], pad[2 * i + 1]) for i in range(n)]
    if pad_type in ("same", "same_lower"):
        pads = []
        for size, k, s in zip(spatial, kernel_eff, strides):
            total = max(0, (math.ceil(size / s) - 1) * s + k - size)
            small = total // 2
            pads.append((small, total - small) if pad_type == "same" else (total - small, small))
        return pads
    raise NotImplementedError(f"pad_type {pad_type!r}")


def _flat_pad(pads: list[tuple[int, int]]) -> list[int]:
    # torch.nn.functional.pad takes the last dim first
    return [p for before_after in reversed(pads) for p in before_after]


@kernel("conv", source="torch")
def conv(call: OpCall) -> np.ndarray:
    """N-d convolution (1 to 3 spatial dims) with strides, dilations, groups and MIL padding."""
    import torch.nn.functional as F

    x, weight, bias = call.x, call.weight, call.get("bias")
    n = x.ndim - 2
    strides = call.ints("strides", [1] * n)
    dilations = call.ints("dilations", [1] * n)
    groups = int(call.scalar("groups", 1))
    kernel_eff = [(k - 1) * d + 1 for k, d in zip(weight.shape[2:], dilations)]
    pads = mil_pads(call, x.shape[2:], kernel_eff, strides)
    tx = _torch(x)
    if any(p for pair in pads for p in pair):
        tx = F.pad(tx, _flat_pad(pads))
    fn = (F.conv1d, F.conv2d, F.conv3d)[n - 1]
    out = fn(tx, _torch(weight), None if bias is None else _torch(bias), stride=strides,
             dilation=dilations, groups=groups)
    return out.numpy()


@kernel("conv_transpose", source="torch")
def conv_transpose(call: OpCall) -> np.ndarray:
    """Transposed convolution: the full (``valid``) result, cropped by the padding, or cut or
    extended to ``output_shape`` (the extension holds only the bias)."""
    import torch.nn.functional as F

    x, weight, bias = call.x, call.weight, call.get("bias")
    n = x.ndim - 2
    strides = call.ints("strides", [1] * n)
    dilations = call.ints("dilations", [1] * n)
    groups = int(call.scalar("groups", 1))
    fn = (F.conv_transpose1d, F.conv_transpose2d, F.conv_transpose3d)[n - 1]
    full = fn(_torch(x), _torch(weight), None, stride=strides, dilation=dilations,
              groups=groups).numpy()
    pad_type = call.scalar("pad_type", "valid")
    sizes = list(full.shape[2:])
    if pad_type == "custom":
        pad = call.ints("pad", [0] * 2 * n)
        starts = [pad[2 * i] for i in range(n)]
        targets = [sizes[i] - pad[2 * i] - pad[2 * i + 1] for i in range(n)]
    elif pad_type == "same":
        targets = [x.shape[2 + i] * strides[i] for i in range(n)]
        starts = [max(0, sizes[i] - targets[i]) // 2 for i in range(n)]
    else:
        starts, targets = [0] * n, sizes
    shape = call.ints("output_shape")
    if shape is not None:
        targets = shape[2:]
    out = np.zeros((*full.shape[:2], *targets), dtype=np.float32)
    src = tuple(slice(s, min(s + t, size)) for s, t, size in zip(starts, targets, sizes))
    dst = tuple(slice(0, sl.stop - sl.start) for sl in src)
    out[(slice(None), slice(None), *dst)] = full[(slice(None), slice(None), *src)]
    if bias is not None:
        out += bias.reshape(1, -1, *([1] * n))
    return out


# -- pooling -------------------------------------------------------------------------------------

def _pool_geometry(call: OpCall, x: np.ndarray) -> tuple[list[int], list[int],
                                                         list[tuple[int, int]], list[int]]:
    """(kernel, strides, declared pads, output sizes) as MIL's type inference computes them."""
    n = x.ndim - 2
    kernel_sizes = call.ints("kernel_sizes")
    strides = call.ints("strides", [1] * n)
    pads = mil_pads(call, x.shape[2:], kernel_sizes, strides)
    ceil_mode = bool(call.scalar("ceil_mode", False))
    outs = []
    for size, k, s, (before, after) in zip(x.shape[2:], kernel_sizes, strides, pads):
        total = before + after
        if not ceil_mode:
            out = (size + total - k) // s + 1
        else:  # coremltools' rule (mil/ops/defs/_utils.py, spatial_dimensions_out_shape)
            out = (size + total - k + s - 1) // s + 1
            if (out - 1) * s >= size + total / 2 and total > 0:
                out -= 1
        outs.append(out)
    return kernel_sizes, strides, pads, outs


def _windows(x: np.ndarray, kernel_sizes: list[int], strides: list[int],
             pads: list[tuple[int, int]], outs: list[int], fill: float) -> np.ndarray:
    """x padded with ``fill`` (past the declared pads too, where ceil_mode reaches), as windows:
    shape (N, C, *outs, *kernel_sizes)."""
    n = x.ndim - 2
    widths = [(0, 0), (0, 0)]
    for size, k, s, (before, after), out in zip(x.shape[2:], kernel_sizes, strides, pads, outs):
        widths.append((before, max(after, (out - 1) * s + k - size - before)))
    padded = np.pad(x, widths, constant_values=fill)
    view = np.lib.stride_tricks.sliding_window_view(padded, kernel_sizes,
                                                    axis=tuple(range(2, 2 + n)))
    index = (slice(None), slice(None),
             *(slice(0, (o - 1) * s + 1, s) for o, s in zip(outs, strides)))
    return view[index]


def _kernel_axes(x: np.ndarray) -> tuple[int, ...]:
    n = x.ndim - 2
    return tuple(range(2 + n, 2 + 2 * n))


@kernel("max_pool")
def max_pool(call: OpCall) -> np.ndarray:
    """Max over each window; padding never wins (it is -inf)."""
    x = call.x
    kernel_sizes, strides, pads, outs = _pool_geometry(call, x)
    windows = _windows(x, kernel_sizes, strides, pads, outs, -np.inf)
    return windows.max(axis=_kernel_axes(x))


@kernel("avg_pool")
def avg_pool(call: OpCall) -> np.ndarray:
    """Mean over each window. The divisor counts the declared padding unless
    ``exclude_padding_from_average``; never the overhang that ceil_mode adds (as torch)."""
    x = call.x
    kernel_sizes, strides, pads, outs = _pool_geometry(call, x)
    axes = _kernel_axes(x)
    sums = _windows(x, kernel_sizes, strides, pads, outs, 0.0).sum(axis=axes)
    ones = np.ones((1, 1, *x.shape[2:]), dtype=np.float32)
    if not call.scalar("exclude_padding_from_average", False):
        ones = np.pad(ones, [(0, 0), (0, 0), *pads], constant_values=1.0)
        pads = [(0, 0)] * len(pads)
    count = _windows(ones, kernel_sizes, strides, pads, outs, 0.0).sum(axis=axes)
    return sums / count


@kernel("l2_pool")
def l2_pool(call: OpCall) -> np.ndarray:
    """sqrt(sum of squares) over each window (padding adds 0)."""
    x = call.x
    kernel_sizes, strides, pads, outs = _pool_geometry(call, x)
    windows = _windows(x, kernel_sizes, strides, pads, outs, 0.0)
    return np.sqrt(np.square(windows).sum(axis=_kernel_axes(x)))


# -- normalisation -------------------------------------------------------------------------------

def _per_channel(value: np.ndarray | None, rank: int, default: float) -> np.ndarray:
    if value is None:
        return np.float32(default)
    return np.asarray(value).reshape(1, -1, *([1] * (rank - 2)))


@kernel("batch_norm")
def batch_norm(call: OpCall) -> np.ndarray:
    """(x - mean) / sqrt(variance + epsilon) * gamma + beta, per channel (axis 1)."""
    x = call.x
    mean = _per_channel(call.mean, x.ndim, 0.0)
    var = _per_channel(call.variance, x.ndim, 1.0)
    gamma = _per_channel(call.get("gamma"), x.ndim, 1.0)
    beta = _per_channel(call.get("beta"), x.ndim, 0.0)
    eps = np.float32(call.scalar("epsilon", 1e-5))
    return (x - mean) / np.sqrt(var + eps) * gamma + beta


@kernel("instance_norm")
def instance_norm(call: OpCall) -> np.ndarray:
    """Per sample and channel, over the spatial dims: (x - mean) / sqrt(var + epsilon) * gamma +
    beta, with the biased variance."""
    x = call.x
    axes = tuple(range(2, x.ndim))
    centred = x - x.mean(axis=axes, keepdims=True)
    var = np.square(centred).mean(axis=axes, keepdims=True)
    eps = np.float32(call.scalar("epsilon", 1e-5))
    gamma = _per_channel(call.get("gamma"), x.ndim, 1.0)
    beta = _per_channel(call.get("beta"), x.ndim, 0.0)
    return centred / np.sqrt(var + eps) * gamma + beta


# -- resampling ----------------------------------------------------------------------------------

@kernel("upsample_nearest_neighbor")
def upsample_nearest_neighbor(call: OpCall) -> np.ndarray:
    """Output (floor(H sh), floor(W sw)); pixel (i, j) copies (floor(i / sh), floor(j / sw))."""
    x = call.x
    sh = float(call.scalar("scale_factor_height", 1))
    sw = float(call.scalar("scale_factor_width", 1))
    h, w = x.shape[-2:]
    rows = np.minimum((np.arange(int(h * sh)) / sh).astype(np.int64), h - 1)
    cols = np.minimum((np.arange(int(w * sw)) / sw).astype(np.int64), w - 1)
    return x[..., rows[:, None], cols[None, :]]


def _bilinear_axis(x: np.ndarray, axis: int, size_out: int, align_corners: bool,
                   half_pixel: bool) -> np.ndarray:
    """Linear interpolation along ``axis`` to ``size_out`` samples on MIL's sampling grid."""
    size_in = x.shape[axis]
    i = np.arange(size_out, dtype=np.float64)
    if align_corners:
        grid = i * ((size_in - 1) / (size_out - 1) if size_out > 1 else 0.0)
    else:
        spacing = size_in / size_out
        grid = i * spacing + (0.5 * spacing - 0.5 if half_pixel else 0.0)
    grid = np.clip(grid, 0, size_in - 1)
    low = np.floor(grid).astype(np.int64)
    high = np.minimum(low + 1, size_in - 1)
    shape = [1] * x.ndim
    shape[axis] = size_out
    weight = (grid - low).astype(np.float32).reshape(shape)
    return np.take(x, low, axis=axis) * (1 - weight) + np.take(x, high, axis=axis) * weight


@kernel("upsample_bilinear")
def upsample_bilinear(call: OpCall) -> np.ndarray:
    """Output (floor(H sh), floor(W sw)). Grid: align_corners, i (in - 1) / (out - 1);
    otherwise i in / out, shifted by half a pixel (0.5 in / out - 0.5) when
    ``half_pixel_centers`` (default: not align_corners); clamped to the input (MIL)."""
    x = call.x
    align = bool(call.scalar("align_corners", True))
    half = bool(call.scalar("half_pixel_centers", not align))
    h, w = x.shape[-2:]
    out_h = math.floor(h * float(call.scalar("scale_factor_height", 1)))
    out_w = math.floor(w * float(call.scalar("scale_factor_width", 1)))
    rows = _bilinear_axis(x, x.ndim - 2, out_h, align, half)
    return _bilinear_axis(rows, x.ndim - 1, out_w, align, half)


@kernel("crop")
def crop(call: OpCall) -> np.ndarray:
    """x[..., top:H - bottom, left:W - right]."""
    x = call.x
    top, bottom = call.ints("crop_height")
    left, right = call.ints("crop_width")
    h, w = x.shape[-2:]
    return x[..., top:h - bottom, left:w - right]


@kernel("pixel_shuffle")
def pixel_shuffle(call: OpCall) -> np.ndarray:
    """(N, C r^2, H, W) -> (N, C, H r, W r), as torch.nn.PixelShuffle."""
    x, r = call.x, int(call.scalar("upscale_factor"))
    n, c, h, w = x.shape
    y = x.reshape(n, c // (r * r), r, r, h, w).transpose(0, 1, 4, 2, 5, 3)
    return y.reshape(n, c // (r * r), h * r, w * r)


@kernel("pixel_unshuffle")
def pixel_unshuffle(call: OpCall) -> np.ndarray:
    """(N, C, H r, W r) -> (N, C r^2, H, W), as torch.nn.PixelUnshuffle."""
    x, r = call.x, int(call.scalar("downscale_factor"))
    n, c, h, w = x.shape
    y = x.reshape(n, c, h // r, r, w // r, r).transpose(0, 1, 3, 5, 2, 4)
    return y.reshape(n, c * r * r, h // r, w // r)
