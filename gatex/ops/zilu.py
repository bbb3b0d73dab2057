"""The ZiLU family: sharpened GELU/SiLU, the arctan gates and ZiLU itself.

Upstream: mingikang31/ZiLU-Activation ``Models/activation.py``. ``sigma`` is a learnable scalar
in upstream modules, so the torch ops take it as a tensor.
"""

from __future__ import annotations

import math

import torch

from gatex.ops._torch import compute_in_fp32, publish
from gatex.ops.spec import OpSpec, Param

SOURCE = "https://github.com/mingikang31/ZiLU-Activation Models/activation.py"
SIGMA = Param("sigma", 1.0, "sharpness of the gate (upstream modules learn it, init 5.0)",
              learnable=True)
# |sigma x| past 1e30 leaves every gate at exactly 0 or 1 in fp32; clamping there keeps
# inf / inf (ZiLU_Approx) and inf * 0 out of the arithmetic.
Z_CLAMP = 1e30
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
    return torch.clamp(sigma * x, -Z_CLAMP, Z_CLAMP)


def _arctan_approx_safe(z: torch.Tensor) -> torch.Tensor:
    # (0.5 + max(z, 0)) / (1 + |z|) == 0.5 * (1 + softsign(z)) for every finite z; with z
    # clamped the division never sees inf / inf.
    return 0.5 + 0.5 * (z / (1.0 + torch.abs(z)))


@compute_in_fp32
def gelu_s_impl(x: torch.Tensor, *, sigma: torch.Tensor | float = 1.0) -> torch.Tensor:
    return x * 0.5 * (1 + torch.erf(_z(x, sigma) * INV_SQRT2))


@compute_in_fp32
def silu_s_impl(x: torch.Tensor, *, sigma: torch.Tensor | float = 1.0) -> torch.Tensor:
    return x * torch.sigmoid(_z(x, sigma))


@compute_in_fp32
def arctan_impl(x: torch.Tensor, *, sigma: torch.Tensor | float = 1.0) -> torch.Tensor:
    return 0.5 + (1.0 / math.pi) * torch.arctan(_z(x, sigma))


@compute_in_fp32
def arctan_approx_impl(x: torch.Tensor, *, sigma: torch.Tensor | float = 1.0) -> torch.Tensor:
    return _arctan_approx_safe(_z(x, sigma))


@compute_in_fp32
def zilu_impl(x: torch.Tensor, *, sigma: torch.Tensor | float = 1.0) -> torch.Tensor:
    return x * (0.5 + (1.0 / math.pi) * torch.arctan(_z(x, sigma)))


@compute_in_fp32
def zilu_approx_impl(x: torch.Tensor, *, sigma: torch.Tensor | float = 1.0) -> torch.Tensor:
    return x * _arctan_approx_safe(_z(x, sigma))


def _spec(name: str, torch_name: str, summary: str, formula: str, reference, impl,
          hazards: str = "") -> OpSpec:
    return publish(OpSpec(
        name=name, torch_name=torch_name, family="zilu", summary=summary, formula=formula,
        source=f"{SOURCE} ({name})", inputs=("x",), params=(SIGMA,), reference=reference,
        impl=impl, hazards=hazards,
    ), "(Tensor x, Tensor sigma) -> Tensor")


GELU_S = _spec("GELU_s", "gelu_s", "GELU with a sharpness parameter.",
               "x * 0.5 * (1 + erf(sigma * x / sqrt(2)))", gelu_s_reference, gelu_s_impl)
SILU_S = _spec("SiLU_s", "silu_s", "SiLU with a sharpness parameter.",
               "x * sigmoid(sigma * x)", silu_s_reference, silu_s_impl)
ARCTAN = _spec("ArcTan", "arctan", "The arctan gate alone (values in (0, 1)).",
               "0.5 + atan(sigma * x) / pi", arctan_reference, arctan_impl)
ARCTAN_APPROX = _spec(
    "ArcTan_Approx", "arctan_approx", "Rational approximation of the arctan gate.",
    "(0.5 + max(sigma * x, 0)) / (1 + |sigma * x|) = 0.5 * (1 + softsign(sigma * x))",
    arctan_approx_reference, arctan_approx_impl,
    hazards="sigma x overflowing to inf gives inf / inf: impl uses the softsign form on a "
            "clamped sigma x.")
ZILU = _spec("ZiLU", "zilu", "x gated by the arctan gate.",
             "x * (0.5 + atan(sigma * x) / pi)", zilu_reference, zilu_impl)
ZILU_APPROX = _spec(
    "ZiLU_Approx", "zilu_approx", "x gated by the rational arctan approximation.",
    "x * (0.5 + max(sigma * x, 0)) / (1 + |sigma * x|)", zilu_approx_reference, zilu_approx_impl,
    hazards="sigma x overflowing to inf gives inf / inf = NaN upstream: impl uses the softsign "
            "form on a clamped sigma x, in fp32.")
