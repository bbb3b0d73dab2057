"""Channel gating (CGConv2d), precision gating (PGConv2d) and PACT ReLU, upstream
cornell-zhang/dnn-gating (``utils/cg_utils.py``, ``utils/pg_utils.py``).

Both convolutions subclass ``nn.Conv2d`` with upstream's signatures and keys: CGConv2d
``weight``, ``mask`` (frozen), ``threshold`` (1, C_out, 1, 1), ``bn.running_mean``,
``bn.running_var``, ``bn.num_batches_tracked``; PGConv2d ``weight``, ``threshold``; PactReLU
``upper_bound``.

Eval mode runs one ``gatex::`` op per layer (CGConv2d with BN folded into the raw threshold
T = mean + threshold * sqrt(var + eps)); training mode runs upstream's semantics in plain torch
(BatchNorm on batch statistics, straight-through gates and quantisers) so the layers train.

Differences from upstream:

- ``bias=True`` is refused (`BadInputError`): upstream PG requires no bias, and the CG op
  decides on the bias-free partial sum. ``padding_mode`` must be ``'zeros'``; ``padding`` must
  be numbers (not ``'same'``).
- The gate 1[sigmoid(alpha (z - threshold)) > 0.5] is computed as 1[z > threshold], which is
  the same for alpha > 0 (alpha <= 0 is refused) except within rounding of the boundary,
  where upstream's saturated fp32 sigmoid says 0.5.
- CGConv2d's mask has the weight's shape (C_out, C_in / groups, kh, kw); upstream builds it
  with C_in, which only works for groups = 1 (where both agree).
- The ``num_out`` / ``num_full`` / ``num_high`` counters upstream writes in every forward are
  not kept: a forward with side effects does not export.
- PGConv2d has ``act_scale`` (default None: upstream's per-batch max|x|, which makes one
  sample's output depend on the rest of the batch). Set it to a calibrated float to deploy
  with a fixed scale; it is an attribute, not in the state_dict.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from gatex.errors import BadInputError, ParameterRangeError
from gatex.models.scripting import NotScriptable
from gatex.ops._torch import call_op
from gatex.ops.conv_gating import PG_CONV2D, PG_EPS, fold_cg_threshold


def _check_conv_args(unit: str, bias: bool, padding: Any, padding_mode: str) -> None:
    if bias:
        raise BadInputError(f"{unit}(bias=True) is not supported: the gate decides on a bias-free "
                            "partial sum (upstream's default is bias=False); put a bias or "
                            "BatchNorm after the layer instead")
    if padding_mode != "zeros":
        raise BadInputError(f"{unit} supports padding_mode='zeros' only; got {padding_mode!r}")
    if isinstance(padding, str):
        raise BadInputError(f"{unit} padding must be an int or a pair of ints; got {padding!r}")


def _positive(unit: str, name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) \
            or value <= 0:
        raise ParameterRangeError(f"{unit} {name} must be a finite number > 0; got {value!r}")
    return float(value)


def _straight_through(value: torch.Tensor, surrogate: torch.Tensor) -> torch.Tensor:
    """Forward: exactly ``value``; backward: the gradient of ``surrogate`` (identity STE)."""
    return value.detach() + (surrogate - surrogate.detach())


def _hard_gate(score: torch.Tensor, sparse_bp: bool) -> torch.Tensor:
    """1[score > 0.5] forward; gradient of score (only where the gate is on with sparse_bp)."""
    hard = (score > 0.5).to(score.dtype)
    surrogate = score * hard if sparse_bp else score
    return _straight_through(hard, surrogate)


def channel_shuffle(x: torch.Tensor, groups: int) -> torch.Tensor:
    """Interleave channels across ``groups`` (ShuffleNet), as upstream's ``shuffle=True``."""
    n, c, h, w = x.shape
    return x.reshape(n, groups, c // groups, h, w).transpose(1, 2).reshape(n, c, h, w)


class CGConv2d(NotScriptable, nn.Conv2d):
    """Channel-gated convolution.

    Yp = conv(x, W*M); d = 1[BN(Yp) > threshold]; out = Yp + d * conv(x, W*(1-M)).
    M is ones on the first floor(C_in / p) input channels (block diagonal with ``use_group``).
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int | tuple[int, int],
                 stride: int | tuple[int, int] = 1, padding: int | tuple[int, int] = 0,
                 dilation: int | tuple[int, int] = 1, groups: int = 1, bias: bool = False,
                 padding_mode: str = "zeros", sparse_bp: bool = False, use_group: bool = False,
                 shuffle: bool = False, p: int = 4, th: float = -6.0, alpha: float = 2.0) -> None:
        _check_conv_args("CGConv2d", bias, padding, padding_mode)
        if isinstance(p, bool) or not isinstance(p, int) or p < 1:
            raise ParameterRangeError(f"CGConv2d p must be a positive integer; got {p!r}")
        if shuffle and in_channels % p:
            raise ParameterRangeError(f"CGConv2d shuffle=True needs in_channels ({in_channels}) "
                                      f"divisible by p ({p})")
        if isinstance(th, bool) or not isinstance(th, (int, float)) or not math.isfinite(th):
            raise ParameterRangeError(f"CGConv2d th must be a finite number; got {th!r}")
        super().__init__(in_channels, out_channels, kernel_size, stride, padding, dilation,
                         groups, False, padding_mode)
        self.sparse_bp = bool(sparse_bp)
        self.use_group = bool(use_group)
        self.shuffle = bool(shuffle)
        self.p = p
        self.th = float(th)
        self.alpha = _positive("CGConv2d", "alpha", alpha)
        self.bn = nn.BatchNorm2d(out_channels, affine=False)
        self.mask = nn.Parameter(self._initial_mask(), requires_grad=False)
        self.threshold = nn.Parameter(self.th * torch.ones(1, out_channels, 1, 1))

    def _initial_mask(self) -> torch.Tensor:
        mask = torch.zeros_like(self.weight, requires_grad=False)
        in_chunk = self.weight.shape[1] // self.p
        if self.use_group:
            out_chunk = self.out_channels // self.p
            for i in range(self.p):
                mask[i * out_chunk:(i + 1) * out_chunk, i * in_chunk:(i + 1) * in_chunk] = 1.0
        else:
            mask[:, :in_chunk] = 1.0
        return mask

    def folded_threshold(self) -> torch.Tensor:
        """T_c = running_mean_c + threshold_c sqrt(running_var_c + eps): BN(Yp) > th <=> Yp > T."""
        return fold_cg_threshold(self.threshold, self.bn.running_mean, self.bn.running_var,
                                 self.bn.eps)

    def _conv(self, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, w, None, self.stride, self.padding, self.dilation, self.groups)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.shuffle:
            x = channel_shuffle(x, self.p)
        if not self.training:
            return call_op("cg_conv2d", x, self.weight, self.mask, self.folded_threshold(),
                           list(self.stride), list(self.padding), list(self.dilation),
                           self.groups)
        partial = self._conv(x, self.weight * self.mask)
        d = _hard_gate(torch.sigmoid(self.alpha * (self.bn(partial) - self.threshold)),
                       self.sparse_bp)
        full = self._conv(x, self.weight)
        return full * d + partial * (1 - d)

    def extra_repr(self) -> str:
        return (f"{super().extra_repr()}, p={self.p}, th={self.th:g}, alpha={self.alpha:g}"
                + (", use_group" if self.use_group else "") + (", shuffle" if self.shuffle else ""))


def _quantize_ste(t: torch.Tensor, bits: int, scale: float | None) -> torch.Tensor:
    """gatex.ops.conv_gating.quantize with upstream's straight-through rounding and clamping."""
    if bits == 0:
        return t
    if bits == 1:
        clipped = _straight_through(torch.clamp(t, -1.0, 1.0), t)
        half = (clipped + 1.0) / 2.0
        return _straight_through(torch.round(half), half) * 2.0 - 1.0
    levels = 2.0 ** bits - 1.0
    s = _act_scale(t, scale)
    m = torch.abs(t) / s
    m = _straight_through(torch.clamp(m, 0.0, 1.0), m) * levels
    return torch.sign(t).detach() * s * _straight_through(torch.round(m), m) / levels


def _truncate_ste(t: torch.Tensor, bits: int, msb_bits: int, scale: float | None) -> torch.Tensor:
    """gatex.ops.conv_gating.truncate with straight-through round and floor."""
    levels = 2.0 ** bits - 1.0
    drop = 2.0 ** (bits - msb_bits)
    s = _act_scale(t, scale)
    m = torch.abs(t) / s
    q = _straight_through(torch.clamp(m, 0.0, 1.0), m) * levels
    q = _straight_through(torch.round(q), q) / drop
    q = _straight_through(torch.floor(q), q) * drop
    return torch.sign(t).detach() * s * q / levels


def _act_scale(t: torch.Tensor, scale: float | None) -> torch.Tensor:
    if scale is not None:
        return t.new_tensor(scale)
    return torch.amax(torch.abs(t)).detach() + PG_EPS


class PGConv2d(NotScriptable, nn.Conv2d):
    """Precision-gated convolution.

    O_msb = conv(T(x), Q_w(W)); M = 1[O_msb > threshold];
    out = O_msb + M conv(Q_a(x) - T(x), Q_w(W)), T keeping the ``pred_bits`` most significant
    of the ``abits`` activation bits.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int | tuple[int, int],
                 stride: int | tuple[int, int] = 1, padding: int | tuple[int, int] = 0,
                 dilation: int | tuple[int, int] = 1, groups: int = 1, bias: bool = False,
                 padding_mode: str = "zeros", wbits: int = 8, abits: int = 8, pred_bits: int = 4,
                 sparse_bp: bool = False, alpha: float = 5) -> None:
        _check_conv_args("PGConv2d", bias, padding, padding_mode)
        for name, value in (("wbits", wbits), ("abits", abits), ("pred_bits", pred_bits)):
            PG_CONV2D.param(name).validate(value, op="PGConv2d")
        if pred_bits >= abits:
            raise ParameterRangeError(f"PGConv2d pred_bits ({pred_bits}) must be smaller than "
                                      f"abits ({abits}): the prediction uses the most "
                                      "significant of the activation bits")
        super().__init__(in_channels, out_channels, kernel_size, stride, padding, dilation,
                         groups, False, padding_mode)
        self.wbits = wbits
        self.abits = abits
        self.pred_bits = pred_bits
        self.sparse_bp = bool(sparse_bp)
        self.alpha = _positive("PGConv2d", "alpha", alpha)
        self.threshold = nn.Parameter(torch.zeros(1, out_channels, 1, 1))
        self._act_scale: float | None = None

    @property
    def act_scale(self) -> float | None:
        """Fixed activation scale (calibrated max|x|); None: upstream's per-batch max|x|."""
        return self._act_scale

    @act_scale.setter
    def act_scale(self, value: float | None) -> None:
        self._act_scale = None if value is None else _positive("PGConv2d", "act_scale", value)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training:
            return call_op("pg_conv2d", x, self.weight, self.threshold, self.wbits, self.abits,
                           self.pred_bits, self._act_scale, list(self.stride),
                           list(self.padding), list(self.dilation), self.groups)
        w = _quantize_ste(self.weight, self.wbits, None)
        if self.wbits == 1:  # upstream's binary rescale, as gatex.ops.conv_gating.pg_weight
            w = w * math.sqrt(1.0 / (self.weight.shape[-1] ** 2 * self.in_channels))
        msb = _truncate_ste(x, self.abits, self.pred_bits, self._act_scale)
        out_msb = F.conv2d(msb, w, None, self.stride, self.padding, self.dilation, self.groups)
        gate = _hard_gate(torch.sigmoid(self.alpha * (out_msb - self.threshold)), self.sparse_bp)
        lsb = _quantize_ste(x, self.abits, self._act_scale) - msb
        return out_msb + gate * F.conv2d(lsb, w, None, self.stride, self.padding, self.dilation,
                                         self.groups)

    def extra_repr(self) -> str:
        scale = "dynamic" if self._act_scale is None else f"{self._act_scale:g}"
        return (f"{super().extra_repr()}, wbits={self.wbits}, abits={self.abits}, "
                f"pred_bits={self.pred_bits}, alpha={self.alpha:g}, act_scale={scale}")


class PactReLU(nn.Module):
    """PACT: clamp(x, 0, upper_bound) with a learnable upper bound (key ``upper_bound``).

    Gradients as upstream's PactClip: x gets the gradient where 0 < x <= upper_bound, the
    bound gets the sum of the gradient where x > upper_bound.
    """

    def __init__(self, upper_bound: float = 6.0) -> None:
        super().__init__()
        self.upper_bound = nn.Parameter(torch.tensor(_positive("PactReLU", "upper_bound",
                                                               upper_bound)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        bound = self.upper_bound.to(x.dtype)
        return torch.where(x > bound, bound, torch.relu(x))
