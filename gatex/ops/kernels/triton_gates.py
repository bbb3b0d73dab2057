"""The Triton kernel family for gatex's elementwise gates (see `plans` for the formula).

Imported only when a kernel runs: ``import gatex`` never imports triton. One math core
(`_gated`) under two entry points:

- `gated_strided_kernel`: the torch path (CUDA implementation of the ``gatex::`` ops). Inputs of
  any float dtype and any strides, broadcast against each other and against the parameter tensor
  p (alpha or sigma: scalar, per channel, any broadcastable shape), in up to 4 collapsed dims.
- `gated_flat1_kernel` / `gated_flat2_kernel`: the TensorRT plugin path. Contiguous inputs of one
  shape, p and the other scalars compiled in as constants, parameters ordered (inputs, n, output)
  as TensorRT's AOT plugins launch them.

Arithmetic is fp32 whatever the I/O dtype, rounded once on store, as upstream GoLU's CUDA kernel
and gatex's `compute_in_fp32` impls do. Special functions are written out (Cephes atanf, the
Numerical Recipes erfc with an exact x^2 split, a tanh with a Taylor branch near 0) rather than
taken from libdevice, so the interpreter (``TRITON_INTERPRET=1``, NumPy on the CPU) runs the very
arithmetic the GPU runs. Global constants stand right of a tensor (``x * INV_PI``): the
interpreter would wrap ``constexpr * tensor`` as a constexpr. Comparisons are written so that NaN
propagates (``where(x > hi, hi, x)`` keeps NaN; a GPU ``fminf`` would drop it), as the torch
impls propagate NaN.
"""

from __future__ import annotations

from gatex import _optional

triton = _optional.require("triton", "the Triton gate kernels")  # exit 3 naming the extra
import triton.language as tl  # noqa: E402

from gatex.ops.kernels.plans import Gate, Mix, Value  # noqa: E402

V_V = tl.constexpr(int(Value.V))
V_TANH = tl.constexpr(int(Value.TANH))
G_SIGMOID = tl.constexpr(int(Gate.SIGMOID))
G_TANH = tl.constexpr(int(Gate.TANH))
G_RELU = tl.constexpr(int(Gate.RELU))
G_GELU = tl.constexpr(int(Gate.GELU))
G_GELU_TANH = tl.constexpr(int(Gate.GELU_TANH))
G_MISH = tl.constexpr(int(Gate.MISH))
G_SWISH = tl.constexpr(int(Gate.SWISH))
G_SOFTSIGN = tl.constexpr(int(Gate.SOFTSIGN))
G_GOLU = tl.constexpr(int(Gate.GOLU))
G_ARCTAN = tl.constexpr(int(Gate.ARCTAN))
G_ARCTAN_APPROX = tl.constexpr(int(Gate.ARCTAN_APPROX))
G_PHI = tl.constexpr(int(Gate.PHI))
G_IDENTITY = tl.constexpr(int(Gate.IDENTITY))
M_ALPHA = tl.constexpr(int(Mix.ALPHA))
M_SCALE = tl.constexpr(int(Mix.SCALE))

FLT_MAX = tl.constexpr(3.4028234663852886e38)
INV_PI = tl.constexpr(0.3183098861837907)
INV_SQRT2 = tl.constexpr(0.7071067811865476)
TWO_SQRT_2_OVER_PI = tl.constexpr(1.5957691216057308)  # 2 sqrt(2 / pi)
GOLU_INNER_CLAMP = tl.constexpr(80.0)      # gatex.ops.golu.INNER_EXP_CLAMP
GOLU_GAMMA_X_CLAMP = tl.constexpr(1000.0)  # gatex.ops.golu.GAMMA_X_CLAMP
GELU_LEFT_CLAMP = tl.constexpr(-40.0)      # gatex.ops.lowering.gates.GELU_LEFT_CLAMP
MISH_THRESHOLD = tl.constexpr(20.0)        # torch softplus threshold


@triton.jit
def _min_keep_nan(x, hi):
    return tl.where(x > hi, hi, x)


@triton.jit
def _max_keep_nan(x, lo):
    return tl.where(x < lo, lo, x)


@triton.jit
def _sigmoid(x):
    return 1.0 / (1.0 + tl.exp(-x))


@triton.jit
def _tanh(x):
    # (1 - e^-2|x|) / (1 + e^-2|x|) cancels near 0: there the Taylor series to x^9 (relative
    # error below 1e-8 for |x| < 0.25)
    ax = tl.abs(x)
    e = tl.exp(-2.0 * ax)
    far = (1.0 - e) / (1.0 + e)
    x2 = x * x
    near = x * (1.0 + x2 * (-0.3333333333333333 + x2 * (0.13333333333333333 + x2 * (
        -0.05396825396825397 + x2 * 0.021869488536155203))))
    return tl.where(ax < 0.25, near, tl.where(x < 0.0, -far, far))


@triton.jit
def _atan(x):
    # Cephes atanf: reduce |x| to [0, tan(pi/8)] with pi/4 and pi/2 offsets; relative error
    # about 2e-7 (1 to 2 fp32 ulp)
    ax = tl.abs(x)
    big = ax > 2.414213562373095
    mid = ax > 0.41421356237309503
    base = tl.where(big, 1.5707963267948966, tl.where(mid, 0.7853981633974483, 0.0))
    r = tl.where(big, -1.0 / ax, tl.where(mid, (ax - 1.0) / (ax + 1.0), ax))
    z = r * r
    poly = (((0.0805374449538 * z - 0.138776856032) * z + 0.199777106478) * z
            - 0.333329491539) * z * r + r
    a = base + poly
    return tl.where(x < 0.0, -a, a)


@triton.jit
def _erfc(x):
    # Numerical Recipes erfcc (fractional error below 1.2e-7 for every x), with exp(-x^2) split
    # as exp(-h^2) exp(-(x - h)(x + h)), h = x rounded down to 1/16: h^2 is exact in fp32, so
    # large x keep their relative accuracy. erfc(x) < 2.1e-45 for x >= 10: 0 there.
    ax = _min_keep_nan(tl.abs(x), 10.0)
    t = 1.0 / (1.0 + 0.5 * ax)
    poly = -1.26551223 + t * (1.00002368 + t * (0.37409196 + t * (0.09678418 + t * (
        -0.18628806 + t * (0.27886807 + t * (-1.13520398 + t * (1.48851587 + t * (
            -0.82215223 + t * 0.17087277))))))))
    h = tl.floor(ax * 16.0) * 0.0625
    e = t * tl.exp(-h * h) * tl.exp(poly - (ax - h) * (ax + h))
    e = tl.where(ax >= 10.0, 0.0, e)
    return tl.where(x < 0.0, 2.0 - e, e)


@triton.jit
def _gate(z, c0, c1, GATE: tl.constexpr):
    if GATE == G_SIGMOID:
        g = _sigmoid(z)
    elif GATE == G_TANH:
        g = _tanh(z)
    elif GATE == G_RELU:
        g = tl.where(z < 0.0, 0.0, z)
    elif GATE == G_GELU:
        zc = _max_keep_nan(z, GELU_LEFT_CLAMP)
        g = 0.5 * zc * _erfc(-zc * INV_SQRT2)
    elif GATE == G_GELU_TANH:
        # 1 + tanh(w) = 2 sigmoid(2 w): no cancellation for w << 0
        g = z * _sigmoid((z + 0.044715 * z * z * z) * TWO_SQRT_2_OVER_PI)
    elif GATE == G_MISH:
        # tanh(softplus(z)) = n / (n + 2), n = e^z (e^z + 2); 1 past torch's threshold 20
        w = tl.exp(z)
        n = w * (w + 2.0)
        g = z * tl.where(z > MISH_THRESHOLD, 1.0, n / (n + 2.0))
    elif GATE == G_SWISH:
        g = z * _sigmoid(c0 * z)
    elif GATE == G_SOFTSIGN:
        g = z / (1.0 + tl.abs(z))
    elif GATE == G_GOLU:
        t = _min_keep_nan(_min_keep_nan(-c1 * z, GOLU_GAMMA_X_CLAMP) + c0, GOLU_INNER_CLAMP)
        g = z * tl.exp(-tl.exp(t))
    elif GATE == G_ARCTAN:
        far_left = z < -1.0
        a = _atan(tl.where(far_left, 1.0 / tl.where(far_left, z, -1.0), z)) * INV_PI
        g = tl.where(far_left, -a, 0.5 + a)
    elif GATE == G_ARCTAN_APPROX:
        g = (0.5 + tl.where(z < 0.0, 0.0, z)) / (1.0 + tl.abs(z))
    elif GATE == G_IDENTITY:
        g = z
    else:  # G_PHI
        g = 0.5 * _erfc(-z * INV_SQRT2)
    return g


@triton.jit
def _lifted(z, GATE: tl.constexpr):
    # g(z) + 1 without cancellation for the gates bounded below by -1 (gatex.ops.lowering.gates):
    # tanh + 1 = 2 sigmoid(2z), softsign + 1 = 2 (0.5 + max(z, 0)) / (1 + |z|)
    if GATE == G_TANH:
        s = 2.0 * _sigmoid(2.0 * z)
    else:  # G_SOFTSIGN
        s = 2.0 * ((0.5 + tl.where(z < 0.0, 0.0, z)) / (1.0 + tl.abs(z)))
    return s


@triton.jit
def _gated(v, u, p, c0, c1, c2, VALUE: tl.constexpr, GATE: tl.constexpr, MIX: tl.constexpr,
           SIGMA_FROM_P: tl.constexpr, CLAMP_Z: tl.constexpr, LIFT: tl.constexpr):
    """y = V(v) * M(g(z)) in fp32 (gatex.ops.kernels.plans)."""
    if SIGMA_FROM_P:
        z = u * p
    else:
        z = u
    if CLAMP_Z:
        z = tl.where(z > FLT_MAX, FLT_MAX, tl.where(z < -FLT_MAX, -FLT_MAX, z))
    g = _gate(z, c0, c1, GATE)
    if MIX == M_ALPHA:
        m = p * g + (1.0 - p)
        if LIFT:  # p <= 0.5: every term >= 0, nothing cancels where p g ~ p - 1
            m = tl.where(p <= 0.5, p * _lifted(z, GATE) + (1.0 - 2.0 * p), m)
    elif MIX == M_SCALE:
        m = c2 * g
    else:
        m = g
    if VALUE == V_V:
        y = v * m
    elif VALUE == V_TANH:
        y = _tanh(v) * m
    else:
        y = m
    if SIGMA_FROM_P and VALUE == V_V:
        if GATE == G_ARCTAN or GATE == G_ARCTAN_APPROX:
            # ZiLU / ZiLU_Approx for sigma x < -1, as gatex/ops/zilu.py: x / (sigma x) = 1/sigma,
            # so x times a gate that underflows is never formed; w = 1/(sigma x) in (-1, 0)
            far = z < -1.0
            w = 1.0 / tl.where(far, z, -1.0)
            inv_p = 1.0 / tl.where(far, p, 1.0)
            if GATE == G_ARCTAN:
                tail = -(inv_p * INV_PI) * (_atan(w) / w)
            else:
                tail = (0.5 * inv_p) / (w - 1.0)
            y = tl.where(far, tail, y)
    return y


@triton.jit
def _offset(i, d1, d2, d3, s0, s1, s2, s3, NDIM: tl.constexpr):
    # element i of a row-major (d0, d1, d2, d3) index space -> offset with strides s0..s3;
    # NDIM counts the trailing dims in use
    if NDIM == 1:
        off = i * s3
    elif NDIM == 2:
        off = (i % d3) * s3 + (i // d3) * s2
    elif NDIM == 3:
        r = i // d3
        off = (i % d3) * s3 + (r % d2) * s2 + (r // d2) * s1
    else:
        r = i // d3
        r2 = r // d2
        off = (i % d3) * s3 + (r % d2) * s2 + (r2 % d1) * s1 + (r2 // d1) * s0
    return off


@triton.jit
def gated_strided_kernel(out_ptr, v_ptr, u_ptr, p_ptr, n, d1, d2, d3,
                         sv0, sv1, sv2, sv3, su0, su1, su2, su3, sp0, sp1, sp2, sp3,
                         c0, c1, c2,
                         NDIM: tl.constexpr, TWO_INPUTS: tl.constexpr, HAS_P: tl.constexpr,
                         VALUE: tl.constexpr, GATE: tl.constexpr, MIX: tl.constexpr,
                         SIGMA_FROM_P: tl.constexpr, CLAMP_Z: tl.constexpr, LIFT: tl.constexpr,
                         WIDE: tl.constexpr, BLOCK: tl.constexpr):
    pid = tl.program_id(0)
    if WIDE:  # 64-bit offsets only where a tensor spans 2^31 elements
        i = pid.to(tl.int64) * BLOCK + tl.arange(0, BLOCK).to(tl.int64)
    else:
        i = pid * BLOCK + tl.arange(0, BLOCK)
    mask = i < n
    v = tl.load(v_ptr + _offset(i, d1, d2, d3, sv0, sv1, sv2, sv3, NDIM), mask=mask,
                other=0.0).to(tl.float32)
    if TWO_INPUTS:
        u = tl.load(u_ptr + _offset(i, d1, d2, d3, su0, su1, su2, su3, NDIM), mask=mask,
                    other=0.0).to(tl.float32)
    else:
        u = v
    if HAS_P:
        p = tl.load(p_ptr + _offset(i, d1, d2, d3, sp0, sp1, sp2, sp3, NDIM), mask=mask,
                    other=0.0).to(tl.float32)
    else:
        p = 0.0
    y = _gated(v, u, p, c0, c1, c2, VALUE, GATE, MIX, SIGMA_FROM_P, CLAMP_Z, LIFT)
    tl.store(out_ptr + i, y.to(out_ptr.dtype.element_ty), mask=mask)


@triton.jit
def gated_flat1_kernel(x_ptr, n, out_ptr, P: tl.constexpr, C0: tl.constexpr, C1: tl.constexpr,
                       C2: tl.constexpr, VALUE: tl.constexpr, GATE: tl.constexpr,
                       MIX: tl.constexpr, SIGMA_FROM_P: tl.constexpr, CLAMP_Z: tl.constexpr,
                       LIFT: tl.constexpr, BLOCK: tl.constexpr):
    i = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    mask = i < n
    x = tl.load(x_ptr + i, mask=mask, other=0.0).to(tl.float32)
    y = _gated(x, x, P, C0, C1, C2, VALUE, GATE, MIX, SIGMA_FROM_P, CLAMP_Z, LIFT)
    tl.store(out_ptr + i, y.to(out_ptr.dtype.element_ty), mask=mask)


@triton.jit
def gated_flat2_kernel(v_ptr, u_ptr, n, out_ptr, P: tl.constexpr, C0: tl.constexpr,
                       C1: tl.constexpr, C2: tl.constexpr, VALUE: tl.constexpr,
                       GATE: tl.constexpr, MIX: tl.constexpr, SIGMA_FROM_P: tl.constexpr,
                       CLAMP_Z: tl.constexpr, LIFT: tl.constexpr, BLOCK: tl.constexpr):
    i = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    mask = i < n
    v = tl.load(v_ptr + i, mask=mask, other=0.0).to(tl.float32)
    u = tl.load(u_ptr + i, mask=mask, other=0.0).to(tl.float32)
    y = _gated(v, u, P, C0, C1, C2, VALUE, GATE, MIX, SIGMA_FROM_P, CLAMP_Z, LIFT)
    tl.store(out_ptr + i, y.to(out_ptr.dtype.element_ty), mask=mask)
