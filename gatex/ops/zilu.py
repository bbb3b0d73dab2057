"""The ZiLU family: sharpened GELU/SiLU, the arctan gates and ZiLU itself.

Upstream: mingikang31/ZiLU-Activation ``Models/activation.py``. ``sigma`` is a learnable scalar
in upstream modules, so the torch ops take it as a tensor.
"""

from __future__ import annotations

import math

import torch

from gatex.ops._torch import compute_in_fp32, publish
from gatex.ops.kernels.plans import Gate as KernelGate, Value, sigma_plan
from gatex.ops.lowering.gates import Gate, register_gate
from gatex.ops.lowering.sym import Sym
from gatex.ops.spec import OpSpec, Param, TensorrtLowering

SOURCE = "https://github.com/mingikang31/ZiLU-Activation Models/activation.py"
SIGMA = Param("sigma", 1.0, "sharpness of the gate (upstream modules learn it, init 5.0)",
              learnable=True)
INV_SQRT2 = 0.70710678118654752440


def gelu_s_reference(x: torch.Tensor, *, sigma: torch.Tensor | float = 1.0) -> torch.Tensor:
    return x * 0.5 * (1 + torch.erf(sigma * x * INV_SQRT2))


def silu_s_reference(x: torch.Tensor, *, sigma: torch.Tensor | float = 1.0) -> torch.Tensor:
    return x * torch.sigmoid(sigma * x)


def arctan_reference(x: torch.Tensor, *, sigma: torch.Tensor | float = 1.0) -> torch.Tensor:
    return 0.5 + (1.0 / math.pi) * torch.arctan(sigma * x)


def arctan_approx_reference(x: torch.Tensor, *, sigma: torch.Tensor | float = 1.0) -> torch.Tensor:
    z = sigma * x
    return (0.5 + torch.clamp(z, min=0)) / (1.0 + torch.abs(z))


def zilu_reference(x: torch.Tensor, *, sigma: torch.Tensor | float = 1.0) -> torch.Tensor:
    return x * arctan_reference(x, sigma=sigma)


def zilu_approx_reference(x: torch.Tensor, *, sigma: torch.Tensor | float = 1.0) -> torch.Tensor:
    return x * arctan_approx_reference(x, sigma=sigma)


def _z(x: torch.Tensor, sigma: torch.Tensor | float) -> torch.Tensor:
    # sigma x overflowing to +-inf gives inf / inf (ZiLU_Approx) and 0 * inf; clamping at the
    # dtype's max keeps it finite, and exact wherever it did not overflow (a smaller clamp,
    # say 1e30, would make ZiLU(-3e38) = -9.5e7 instead of -1/pi)
    z = sigma * x
    big = torch.finfo(z.dtype).max
    return torch.clamp(z, -big, big)


def _arctan_gate_safe(z: torch.Tensor) -> torch.Tensor:
    # 0.5 + atan(z)/pi cancels for z << 0 (fp32 keeps ~1e-7 of the 0.5, so at z = -6e6 the
    # gate 5e-8 is lost); there the identity atan(z) = -pi/2 - atan(1/z) gives -atan(1/z)/pi
    # without cancellation. The reciprocal only sees z < -1 (the other branch gets -1), so
    # neither branch produces inf, nor NaN in the backward of torch.where.
    far_left = z < -1.0
    recip = 1.0 / torch.where(far_left, z, -1.0)
    return torch.where(far_left, -torch.atan(recip) / math.pi, 0.5 + torch.atan(z) / math.pi)


def _arctan_approx_safe(z: torch.Tensor) -> torch.Tensor:
    # upstream's (0.5 + max(z, 0)) / (1 + |z|) is accurate for z << 0 (the softsign form
    # 0.5 + 0.5 z / (1 + |z|) cancels to 0 there); with z clamped it never sees inf / inf.
    return (0.5 + torch.clamp(z, min=0.0)) / (1.0 + torch.abs(z))


@compute_in_fp32
def gelu_s_impl(x: torch.Tensor, *, sigma: torch.Tensor | float = 1.0) -> torch.Tensor:
    # 1 + erf(w) = erfc(-w): the same value without cancelling for w << 0 (in fp32, 1 + erf
    # keeps 6e-8 absolute, so at sigma x = -5 the gate 2.9e-7 was 20 % off)
    return x * 0.5 * torch.erfc(-_z(x, sigma) * INV_SQRT2)


@compute_in_fp32
def silu_s_impl(x: torch.Tensor, *, sigma: torch.Tensor | float = 1.0) -> torch.Tensor:
    return x * torch.sigmoid(_z(x, sigma))


@compute_in_fp32
def arctan_impl(x: torch.Tensor, *, sigma: torch.Tensor | float = 1.0) -> torch.Tensor:
    return _arctan_gate_safe(_z(x, sigma))


@compute_in_fp32
def arctan_approx_impl(x: torch.Tensor, *, sigma: torch.Tensor | float = 1.0) -> torch.Tensor:
    return _arctan_approx_safe(_z(x, sigma))


def _far_left(x: torch.Tensor, sigma: torch.Tensor | float) -> tuple[torch.Tensor, ...]:
    """For x (.) gate(sigma x) where sigma x < -1: the mask, w = 1/(sigma x) in (-1, 0) and
    1/sigma, with harmless stand-ins (w = -1, sigma = 1) elsewhere so that neither the unused
    branch nor its backward meets inf or NaN.

    There x / (sigma x) = 1/sigma exactly, so the product never has to be formed: x times a
    gate that underflows (sigma x beyond fp32's range, clamped by `_z`) used to give
    ZiLU(-3e38, sigma 5) = -0.28 instead of -1/(5 pi) = -0.064.
    """
    z = _z(x, sigma)
    far = z < -1.0
    w = 1.0 / torch.where(far, z, -1.0)
    inv_sigma = 1.0 / torch.where(far, torch.as_tensor(sigma, dtype=x.dtype), 1.0)
    return far, z, w, inv_sigma


@compute_in_fp32
def zilu_impl(x: torch.Tensor, *, sigma: torch.Tensor | float = 1.0) -> torch.Tensor:
    # far left: x (-atan(w)/pi) = -(1/(pi sigma)) atan(w)/w, w = 1/(sigma x) in (-1, 0), where
    # atan(w)/w is smooth and in (pi/4, 1]: no cancellation, no overflow, exact as x -> -inf
    far, z, w, inv_sigma = _far_left(x, sigma)
    tail = -(inv_sigma / math.pi) * (torch.atan(w) / w)
    return torch.where(far, tail, x * (0.5 + torch.atan(z) / math.pi))


@compute_in_fp32
def zilu_approx_impl(x: torch.Tensor, *, sigma: torch.Tensor | float = 1.0) -> torch.Tensor:
    # far left: x 0.5 / (1 + |z|) = x 0.5 / (1 - z) = (0.5/sigma) / (w - 1), w = 1/z in (-1, 0)
    far, z, w, inv_sigma = _far_left(x, sigma)
    tail = (0.5 * inv_sigma) / (w - 1.0)
    return torch.where(far, tail, x * _arctan_approx_safe(z))


def _spec(name: str, torch_name: str, summary: str, formula: str, reference, impl,
          hazards: str = "", *, kernel: tuple[KernelGate, Value]) -> OpSpec:
    """One ZiLU-family op; ``kernel`` is (gate, value) of its Triton plan (TensorRT plugin)."""
    spec = publish(OpSpec(
        name=name, torch_name=torch_name, family="zilu", summary=summary, formula=formula,
        source=f"{SOURCE} ({name})", inputs=("x",), params=(SIGMA,), reference=reference,
        impl=impl, hazards=hazards,
    ), "(Tensor x, Tensor sigma) -> Tensor")
    spec.lowering("tensorrt")(TensorrtLowering(sigma_plan(name, *kernel)))
    return spec


GELU_S = _spec("GELU_s", "gelu_s", "GELU with a sharpness parameter.",
               "x * 0.5 * (1 + erf(sigma * x / sqrt(2)))", gelu_s_reference, gelu_s_impl,
               hazards="1 + erf(w) cancels for w << 0: impl uses erfc(-w).",
    kernel=(KernelGate.PHI, Value.V))
SILU_S = _spec("SiLU_s", "silu_s", "SiLU with a sharpness parameter.",
               "x * sigmoid(sigma * x)", silu_s_reference, silu_s_impl,
    kernel=(KernelGate.SIGMOID, Value.V))
ARCTAN = _spec("ArcTan", "arctan", "The arctan gate alone (values in (0, 1)).",
               "0.5 + atan(sigma * x) / pi", arctan_reference, arctan_impl,
               hazards="0.5 + atan(sigma x)/pi loses its relative accuracy for sigma x << 0: "
                       "impl uses -atan(1/(sigma x))/pi for sigma x < -1.",
    kernel=(KernelGate.ARCTAN, Value.ONE))
ARCTAN_APPROX = _spec(
    "ArcTan_Approx", "arctan_approx", "Rational approximation of the arctan gate.",
    "(0.5 + max(sigma * x, 0)) / (1 + |sigma * x|) = 0.5 * (1 + softsign(sigma * x))",
    arctan_approx_reference, arctan_approx_impl,
    hazards="sigma x overflowing to inf gives inf / inf: impl clamps sigma x.",
    kernel=(KernelGate.ARCTAN_APPROX, Value.ONE))
ZILU = _spec("ZiLU", "zilu", "x gated by the arctan gate.",
             "x * (0.5 + atan(sigma * x) / pi)", zilu_reference, zilu_impl,
             hazards="0.5 + atan(sigma x)/pi cancels for sigma x << 0 (ZiLU tends to "
                     "-1/(pi sigma) there): for sigma x < -1 impl computes "
                     "-(1/(pi sigma)) atan(w)/w with w = 1/(sigma x), never forming x times a "
                     "vanishing gate, so the limit holds even where sigma x overflows (and at "
                     "x = -inf, where the formula gives NaN).",
    kernel=(KernelGate.ARCTAN, Value.V))
ZILU_APPROX = _spec(
    "ZiLU_Approx", "zilu_approx", "x gated by the rational arctan approximation.",
    "x * (0.5 + max(sigma * x, 0)) / (1 + |sigma * x|)", zilu_approx_reference, zilu_approx_impl,
    hazards="sigma x overflowing to inf gives inf / inf = NaN upstream: impl clamps sigma x "
            "(computing in fp32); the softsign form would cancel to 0 for sigma x << 0. For "
            "sigma x < -1 impl computes (0.5/sigma) / (1/(sigma x) - 1): the limit -0.5/sigma "
            "holds where sigma x overflows and at x = -inf.",
    kernel=(KernelGate.ARCTAN_APPROX, Value.V))


# ONNX lowerings: the fewest native ops (onnxruntime runs one memory pass per op; pass counts
# for sigma != 1, measured with benchmarks/onnx_ops.py). GELU(z) = z * Phi(z), so
# GELU_s(x) = x * Phi(sigma x) = GELU(sigma x) / sigma (the Erf pattern ORT fuses): 3 passes.
# ArcTan uses 0.5 + atan(z)/pi, the affine part as one HardSigmoid (the gate lies in [0, 1]):
# 3 passes. In the far left tail (z < -1e3) its absolute error is about eps/2, relative error
# grows as 1/|z| (fine for a gate; ZiLU multiplies it by x, so ZiLU has its own form below).
# ArcTan_Approx is 0.5 (1 + softsign(z)) (Clip + Softsign + HardSigmoid, 4 passes, upstream's
# form takes 6), the same math as upstream's (0.5 + relu(z)) / (1 + |z|), with the same eps/2
# absolute error in the far left tail as ArcTan. ZiLU_Approx uses x (0.5 + relu(z)) / (1 + |z|)
# = R(x) - (0.5 / sigma) |softsign(z)| with R(x) = relu(x) (sigma > 0) or min(x, 0)
# (sigma < 0): exact, no cancellation (the second term is at most half the first where both are
# non-zero), 7 passes as upstream's form, which cancels and is NaN at +-inf. z is clipped to
# the dtype's finite range so inf / inf cannot occur: where sigma x overflows fp16, and at
# x = +-inf in any dtype (Softsign(+-inf) is NaN; torch's impl gives the limits).
def _sigma_x(b, x: str, sigma: float, clip: bool = False) -> str:
    z = b.mul(x, sigma)
    if clip:
        limit = b.low_precision_max() or float(torch.finfo(torch.float32).max)
        z = b.op("Clip", z, b.const(-limit), b.const(limit))
    return z


def _arctan_gate(b, x: str, sigma: float) -> str:
    return b.unit_affine(b.op("Atan", _sigma_x(b, x, sigma)), 1.0 / math.pi, 0.5)


def _arctan_approx_gate(b, x: str, sigma: float) -> str:
    return b.unit_affine(b.op("Softsign", _sigma_x(b, x, sigma, clip=True)), 0.5, 0.5)


def _zilu_approx_tail_safe(b, x: str, sigma) -> str:
    # x (0.5 + max(z, 0)) / (1 + |z|), z = sigma x, as s (relu(s x) - |q|) with s = sign(sigma)
    # (1 for sigma = 0) and |q| = 0.5 / (1/|x| + |sigma|) = |0.5 x / (1 + |z|)|: finite, with the
    # limit -0.5 / sigma on the far side, where sigma x overflows fp16 (a clipped z gives a gate
    # 100x off at x = -60000, sigma = 100), and at x = +-inf; x = 0 gives 0, sigma = 0 x / 2.
    # For a run-time sigma (its sign unknown) or a huge 0.5/sigma. 8 cheap passes (it selected
    # with Greater + Where, which measured 16x a Relu pass on onnxruntime CPU).
    if isinstance(sigma, Sym):
        sign = Sym(b, b.op("Sign", _nonzero(b, sigma, 1.0).name))
        abs_sigma = Sym(b, b.op("Abs", sigma.name))
    else:
        sign, abs_sigma = (1.0 if sigma >= 0 else -1.0), abs(float(sigma))
    abs_q = b.op("Div", b.const(0.5), b.add(b.op("Reciprocal", b.op("Abs", x)), abs_sigma))
    return b.mul(b.op("Sub", b.op("Relu", b.mul(x, sign)), abs_q), sign)


@GELU_S.lowering("onnx")
def _gelu_s_onnx(b, x: str, *, sigma: float = 1.0) -> str:
    return b.mul(b.gelu(b.mul(x, sigma)), 1.0 / sigma)


@SILU_S.lowering("onnx")
def _silu_s_onnx(b, x: str, *, sigma: float = 1.0) -> str:
    return b.op("Mul", x, b.op("Sigmoid", b.mul(x, sigma)))


@ARCTAN.lowering("onnx")
def _arctan_onnx(b, x: str, *, sigma: float = 1.0) -> str:
    return _arctan_gate(b, x, sigma)


@ARCTAN_APPROX.lowering("onnx")
def _arctan_approx_onnx(b, x: str, *, sigma: float = 1.0) -> str:
    return _arctan_approx_gate(b, x, sigma)


@ZILU.lowering("onnx")
def _zilu_onnx(b, x: str, *, sigma: float = 1.0) -> str:
    if isinstance(sigma, Sym):                # read at run time: its sign unknown here
        return _zilu_runtime_sigma(b, x, sigma)
    if not isinstance(sigma, (int, float)) or sigma == 0:   # x / 2
        return b.op("Mul", x, _arctan_gate(b, x, sigma))
    # x (0.5 + atan(z)/pi) = R(x) + x atan(w) / pi with w = -1/z = (-1/sigma) / x and
    # R(x) = x [z > 0] (relu(x) for sigma > 0, min(x, 0) for sigma < 0), from
    # 0.5 + atan(z)/pi = [z > 0] + atan(-1/z)/pi. No cancellation anywhere: as z -> -inf the
    # second term tends to -1/(pi sigma) and is computed from w ~ 1/|z| (the HardSigmoid form
    # lost it: ZiLU(-65504, sigma 5) was 1.2 % off, ZiLU(-1e30) was -0); w cannot overflow
    # (x = 0 gives +-inf, atan +-pi/2, times x: 0). The tail takes x clipped to [-L, L], so
    # x = +-inf gives the tail's limit -1/(pi sigma) (plus R(x) = +-inf on the near side), not
    # inf * atan(-0) = NaN. Past L the tail differs from that limit by 1/(3 pi |sigma|^3 x^2),
    # under fp32 rounding when |sigma| L >= 1e4: L = max(1e30, 1e10/|sigma|) up to the dtype's
    # max (fp16: 65504, which moves only +-inf). 7 passes instead of 4.
    limit = _zilu_tail_clip(b.low_precision_max(), sigma)
    clipped = b.op("Clip", x, b.const(-limit), b.const(limit))
    w = b.op("Div", b.const(-1.0 / sigma), clipped)
    tail = b.mul(b.op("Mul", clipped, b.op("Atan", w)), 1.0 / math.pi)
    kept = b.op("Relu", x) if sigma > 0 else b.op("Min", x, b.const(0.0))
    return b.op("Add", kept, tail)


def _zilu_runtime_sigma(b, x: str, sigma) -> str:
    """ZiLU for a sigma read at run time (the portable function of a model whose ZiLU nodes
    have different sigmas): the same R(x) + tail as `_zilu_onnx`, written for either sign.

    With z = sigma x clipped to +-1e30 (zc): R(x) = s relu(s x) with s = sign(sigma), tail =
    zc atan(-1/zc) / (pi sigma) (= x atan(-1/z) / pi), exact like the constant-sigma form and
    the limits at +-inf. A sigma of exactly 0 (ZiLU = x / 2) becomes 1e-30, the same values to
    fp32 rounding. fp32 inside (16-bit graphs cast in and out: 1/(pi sigma) and the clip need
    fp32's range). 10 passes (12 in fp16) where the HardSigmoid form takes 4 and cancels in
    the far tail (ZiLU(-1000, sigma 5) 4e-4 off) and gives NaN at x = -inf.
    """
    import onnx

    fp32 = onnx.TensorProto.FLOAT
    cast = b.dtype != fp32
    xs = b.op("Cast", x, to=fp32) if cast else x
    with b.computing_in(fp32):
        nonzero = _nonzero(b, sigma, 1e-30)
        z = b.mul(xs, nonzero)
        zc = b.op("Clip", z, b.const(-1e30), b.const(1e30))
        a = b.op("Atan", b.op("Div", b.const(-1.0), zc))
        tail = b.mul(b.op("Mul", zc, a), 1.0 / (nonzero * math.pi))
        # R(x) = s relu(s x), s = sign(sigma): relu(x), or min(x, 0) for sigma < 0 (Greater +
        # Where measured 16x a Relu pass on onnxruntime CPU)
        sign = b.op("Sign", nonzero.name)
        kept = b.op("Mul", b.op("Relu", b.op("Mul", xs, sign)), sign)
        y = b.op("Add", kept, tail)
    return b.op("Cast", y, to=b.dtype) if cast else y


def _nonzero(b, sigma, stand_in: float):
    """A run-time sigma (a float32 scalar) with 0 replaced by ``stand_in``: a scalar Where."""
    import onnx

    fp32 = onnx.TensorProto.FLOAT
    zero = b.op("Equal", sigma.name, b.const(0.0, fp32))
    return Sym(b, b.op("Where", zero, b.const(stand_in, fp32), sigma.name))


def _zilu_tail_clip(low_precision_max: float | None, sigma: float) -> float:
    """Where ZiLU's ONNX tail clips x (see `_zilu_onnx`): 65504 in fp16, else
    max(1e30, 1e10/|sigma|) up to the dtype's largest finite value."""
    if low_precision_max is not None and low_precision_max < 1e30:   # fp16
        return low_precision_max
    top = low_precision_max or float(torch.finfo(torch.float32).max)
    return min(top, max(1e30, 1e10 / abs(sigma)))


@ZILU_APPROX.lowering("onnx")
def _zilu_approx_onnx(b, x: str, *, sigma: float = 1.0) -> str:
    limit = b.low_precision_max() or float(torch.finfo(torch.float32).max)
    if not isinstance(sigma, (int, float)) or sigma == 0 or abs(0.5 / sigma) > limit:
        # sigma read at run time (its sign unknown), or 0.5 / sigma not representable
        return _zilu_approx_tail_safe(b, x, sigma)
    soft = b.op("Abs", b.op("Softsign", _sigma_x(b, x, sigma, clip=True)))
    kept = b.op("Relu", x) if sigma > 0 else b.op("Min", x, b.const(0.0))
    return b.op("Sub", kept, b.mul(soft, 0.5 / sigma))


# CoreML lowerings. Unlike the ONNX ones they keep impl's tail-safe forms: on the GPU and
# Neural Engine the program runs in fp16, where sigma x overflows for |x| > 65504 / |sigma| and
# the cancellations impl avoids cost whole digits.
# - ArcTan / ZiLU: 0.5 + atan(z)/pi for z >= -1, -atan(1/z)/pi for z < -1 (one atan), with
#   1/z = (1/sigma) / x, finite where sigma x overflows (ZiLU keeps its limit -1/(pi sigma)).
# - ArcTan_Approx: r = 0.5 / (1 + |z|), gate = 1 - r for z > 0, r otherwise: upstream's
#   (0.5 + max(z, 0)) / (1 + |z|) without inf / inf.
# - ZiLU_Approx: q = 0.5 x / (1 + |z|) = 0.5 sign(x) / (1/|x| + |sigma|), y = x - q for z > 0,
#   q otherwise: the same value, finite and keeping its limit 0.5 sign(x)/|sigma| where sigma x
#   overflows (x r with r = 0 would give 0 there).
# - GELU_s: x (0.5 + 0.5 erf(sigma x / sqrt 2)), which saturates (erf(+-inf) = +-1) where
#   GELU(sigma x) / sigma would overflow; sigma = 1 is the native exact gelu.
# - SiLU_s: sigma = 1 is the native silu.
def _arctan_gate_coreml(m, x, sigma):
    far_left = m.less(m.mul(x, sigma), -1.0)
    recip = m.div(m.div(1.0, sigma), m.select(far_left, x, -1.0))   # 1/(sigma x) where far left
    a = m.mul(m.atan(x=m.select(far_left, recip, m.mul(x, sigma))), 1.0 / math.pi)
    return m.select(far_left, m.mul(a, -1.0), m.add(a, 0.5))


def _arctan_approx_gate_coreml(m, z):
    r = m.div(0.5, m.add(m.abs(x=z), 1.0))
    return m.select(m.greater(z, 0.0), m.sub(1.0, r), r)


def _abs(m, value):
    """|value| of a parameter: a number, an array or a variable."""
    return m.abs(x=value) if m.value(value) is None else abs(m.value(value))


@GELU_S.lowering("coreml")
def _gelu_s_coreml(m, x, *, sigma=1.0):
    if m.is_number(sigma, 1.0):
        return m.gelu(x=x, mode="EXACT")
    gate = m.add(m.mul(m.erf(x=m.mul(x, m.mul(sigma, INV_SQRT2))), 0.5), 0.5)
    return m.mul(x, gate)


@SILU_S.lowering("coreml")
def _silu_s_coreml(m, x, *, sigma=1.0):
    if m.is_number(sigma, 1.0):
        return m.silu(x=x)
    return m.mul(x, m.sigmoid(x=m.mul(x, sigma)))


@ARCTAN.lowering("coreml")
def _arctan_coreml(m, x, *, sigma=1.0):
    return _arctan_gate_coreml(m, x, sigma)


@ARCTAN_APPROX.lowering("coreml")
def _arctan_approx_coreml(m, x, *, sigma=1.0):
    return _arctan_approx_gate_coreml(m, m.mul(x, sigma))


@ZILU.lowering("coreml")
def _zilu_coreml(m, x, *, sigma=1.0):
    y = m.mul(x, _arctan_gate_coreml(m, x, sigma))
    # x = -inf (+inf for sigma < 0) is -inf * 0 = NaN above; torch's impl gives the limit
    # -1/(pi sigma) there. The far side's infinity, found without any constant past fp16's range
    far_inf = m.logical_and(x=m.less(m.mul(x, sigma), -1.0),
                            y=m.equal(x=m.abs(x=x), y=m.const(math.inf, x)))
    return m.select(far_inf, m.div(-1.0 / math.pi, sigma), y)


@ZILU_APPROX.lowering("coreml")
def _zilu_approx_coreml(m, x, *, sigma=1.0):
    q = m.div(m.mul(m.sign(x=x), 0.5), m.add(m.div(1.0, m.abs(x=x)), _abs(m, sigma)))
    return m.select(m.greater(m.mul(x, sigma), 0.0), m.sub(x, q), q)


register_gate(Gate("arctan", lambda u: arctan_impl(u), lambda b, u: _arctan_onnx(b, u),
                   lambda m, u: _arctan_coreml(m, u), reference=lambda u: arctan_reference(u),
                   kernel="ARCTAN", kernel_constants=(1.0, 1.0, True), lo=0.0, hi=1.0,
                   doc="0.5 + atan(u) / pi: ArcTan with sigma 1"))
register_gate(Gate("arctan_approx", lambda u: arctan_approx_impl(u),
                   lambda b, u: _arctan_approx_onnx(b, u), lambda m, u: _arctan_approx_coreml(m, u),
                   reference=lambda u: arctan_approx_reference(u), kernel="ARCTAN_APPROX",
                   kernel_constants=(1.0, 1.0, True), lo=0.0, hi=1.0,
                   doc="(0.5 + relu(u)) / (1 + |u|): ArcTan_Approx with sigma 1"))
