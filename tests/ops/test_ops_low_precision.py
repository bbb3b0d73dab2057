"""fp16 / bf16 behaviour of every elementwise op.

1. On ordinary inputs the op in fp16/bf16 is within ``spec.tolerance(dtype)`` of the float64
   reference evaluated on the same, already rounded, inputs.
2. On the hazard inputs of OPS.md inside the fp16 range (GoLU's overflowing inner exponent,
   ZiLU_Approx's inf / inf, huge sigma, huge Mish gates, the fp16 max / min, subnormals, +-0)
   the op, in fp16, bf16 and fp32, gives no NaN, no inf wherever the float64 value is finite in
   that dtype, and keeps its tolerance; its input gradients stay finite likewise.
3. At bf16's and fp32's own max / min and subnormals: no NaN, no spurious inf (values only).
4. Tails where the upstream formula cancels keep the tolerance (regression tests for the
   erfc / reciprocal-arctan / log-beta forms in the impls).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import pytest
import torch
from ops_cases import CASES, Case, assert_within, call_op, formula, round_params

LOW = [torch.float16, torch.bfloat16]


def grid_inputs(n_inputs: int, dtype: torch.dtype) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(7)
    grid = torch.linspace(-8.0, 8.0, 257, dtype=torch.float64)
    first = torch.cat([grid, 4.0 * torch.randn(256, generator=g, dtype=torch.float64)])
    if n_inputs == 1:
        return [first.to(dtype)]
    second = torch.cat([grid[torch.randperm(257, generator=g)],
                        4.0 * torch.randn(256, generator=g, dtype=torch.float64)])
    return [first.to(dtype), second.to(dtype)]


def as_float64(params: dict) -> dict:
    return {k: v.double() if isinstance(v, torch.Tensor) else v for k, v in params.items()}


@pytest.mark.parametrize("dtype", LOW, ids=str)
@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_low_precision_within_spec_tolerance(case: Case, dtype: torch.dtype) -> None:
    spec = case.spec
    inputs = grid_inputs(len(spec.inputs), dtype)
    params = round_params(spec, case.params, dtype)
    out = call_op(spec, inputs, params)
    assert out.dtype == dtype
    expected = spec.reference(*(t.double() for t in inputs), **as_float64(params))
    assert_within(out, expected, spec.tolerance(dtype), f"{case.id} {dtype}")


# --- hazards -------------------------------------------------------------------------------

HAZARD_CASES: list[Case] = [
    *CASES,
    Case("GoLU", {"gamma": 100.0}), Case("GoLU", {"beta": 1e-3, "gamma": 5.0}),
    Case("GoLU", {"alpha": 2.0, "beta": 0.0, "gamma": 10.0}), Case("GoLU", {"gamma": 0.0}),
    Case("GoLU", {"beta": 50.0, "gamma": 0.1}),
    *(Case(n, {"sigma": s}) for n in ("GELU_s", "SiLU_s", "ArcTan", "ArcTan_Approx", "ZiLU",
                                       "ZiLU_Approx") for s in (100.0, 1000.0, -100.0)),
    Case("paSwishU", {"alpha": 1.0, "beta": 100.0}),
]


def fp16_hazard_values(dtype: torch.dtype) -> torch.Tensor:
    """OPS.md's hazards, inside the fp16 range: +-0, fp16 subnormals and tiny, the GoLU and
    Mish thresholds, and large values up to the fp16 max / min; rounded to ``dtype``."""
    fp16 = torch.finfo(torch.float16)
    magnitudes = [fp16.tiny * fp16.eps, 3 * fp16.tiny * fp16.eps, fp16.tiny, 1e-4, 0.5, 1.0, 11.0,
                  11.09, 12.0, 20.0, 21.0, 100.0, 1000.0, 6e4, fp16.max]
    values = [0.0, -0.0, *magnitudes, *(-m for m in magnitudes)]
    return torch.tensor(values, dtype=torch.float64).to(dtype)


def dtype_extremes(dtype: torch.dtype) -> torch.Tensor:
    """The dtype's own max / min, smallest normal and subnormal (beyond fp16 for bf16, fp32)."""
    fi = torch.finfo(dtype)
    magnitudes = [fi.tiny * fi.eps, fi.tiny, fi.max]
    return torch.tensor([*magnitudes, *(-m for m in magnitudes)], dtype=torch.float64).to(dtype)


def golu_left_tail(dtype: torch.dtype) -> torch.Tensor:
    # x in [-65504, -11]: exp(-gamma x) overflows fp16 from about x = -11.09 / gamma on
    linear = torch.linspace(-65504.0, -11.0, 301, dtype=torch.float64)
    geometric = -11.0 * 2.0 ** torch.arange(0.0, 12.5, 0.125, dtype=torch.float64)
    return torch.cat([linear, geometric]).to(dtype)


def hazard_inputs(case: Case, values: torch.Tensor) -> list[torch.Tensor]:
    if len(case.spec.inputs) == 1:
        if case.name == "GoLU":
            return [torch.cat([values, golu_left_tail(values.dtype)])]
        return [values]
    v, u = torch.meshgrid(values, values, indexing="ij")  # every value against every gate input
    return [v.flatten(), u.flatten()]


def check_finite_where_representable(case: Case, inputs: list[torch.Tensor],
                                     dtype: torch.dtype,
                                     ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """No NaN at all, no inf where the float64 value rounds to a finite one; returns the op's
    output, the float64 truth and where it is representable."""
    spec = case.spec
    params = round_params(spec, case.params, dtype)
    truth = formula(spec, inputs, params)           # independent float64, on the rounded inputs
    assert not torch.isnan(truth).any(), "the float64 formula itself must be defined here"
    out = call_op(spec, inputs, params)
    assert out.dtype == dtype
    representable = torch.isfinite(truth.to(dtype))
    for bad, what in ((torch.isnan(out), "NaN"), (representable & ~torch.isfinite(out), "inf")):
        at = torch.nonzero(bad).flatten()[:5]
        assert not bad.any(), (f"{case.id} {dtype}: {what} where float64 is finite, at inputs "
                               f"{[[t[i].item() for t in inputs] for i in at]}")
    return out, truth, representable


ALL_LOW = [*LOW, torch.float32]


@pytest.mark.parametrize("dtype", ALL_LOW, ids=str)
@pytest.mark.parametrize("case", HAZARD_CASES, ids=lambda c: c.id)
def test_fp16_range_hazards_finite_and_accurate(case: Case, dtype: torch.dtype) -> None:
    inputs = hazard_inputs(case, fp16_hazard_values(dtype))
    out, truth, ok = check_finite_where_representable(case, inputs, dtype)
    # impl computes in fp32 and rounds once, so even here it keeps the spec's tolerance
    assert_within(out[ok], truth[ok], case.spec.tolerance(dtype), f"{case.id} {dtype} hazards")


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32], ids=str)
@pytest.mark.parametrize("case", HAZARD_CASES, ids=lambda c: c.id)
def test_dtype_extremes_stay_finite(case: Case, dtype: torch.dtype) -> None:
    # Values only: next to a gate that is itself an fp32 subnormal (Mish(-100) = -3.7e-42, 5 %
    # precision), a factor of 3e38 shows fp32's own limit, not the op's.
    values = torch.cat([fp16_hazard_values(dtype), dtype_extremes(dtype)])
    check_finite_where_representable(case, hazard_inputs(case, values), dtype)


def input_grads(case: Case, inputs: list[torch.Tensor], dtype: torch.dtype) -> list[torch.Tensor]:
    leaves = [t.detach().to(dtype).requires_grad_(True) for t in inputs]
    out = call_op(case.spec, leaves, round_params(case.spec, case.params, dtype))
    grads = torch.autograd.grad(out, leaves, torch.ones_like(out))
    return list(grads)


@pytest.mark.parametrize("dtype", ALL_LOW, ids=str)
@pytest.mark.parametrize("case", HAZARD_CASES, ids=lambda c: c.id)
def test_hazard_gradients_stay_finite(case: Case, dtype: torch.dtype) -> None:
    # Inside the fp16 range. (At |u| near bf16 / fp32 max, autograd through u * sigmoid(u)-like
    # gates multiplies an overflowed grad * u by a derivative of exactly 0: a NaN no elementwise
    # composition avoids; there the forward is already at the edge of overflow.)
    inputs = hazard_inputs(case, fp16_hazard_values(dtype))
    exact = input_grads(case, [t.double() for t in inputs], torch.float64)
    for name, g in zip(case.spec.inputs, exact):
        assert torch.isfinite(g).all(), f"{case.id}: float64 d/d{name} not finite"
    for name, g, g64 in zip(case.spec.inputs, input_grads(case, inputs, dtype), exact):
        assert g.dtype == dtype
        bad = torch.isnan(g) | (torch.isfinite(g64.to(dtype)) & ~torch.isfinite(g))
        at = torch.nonzero(bad).flatten()[:5]
        assert not bad.any(), (
            f"{case.id} {dtype}: d/d{name} = {g[at].tolist()} (float64: {g64[at].tolist()}) "
            f"at inputs {[[t[i].item() for t in inputs] for i in at]}")


# --- tails ---------------------------------------------------------------------------------
# Where the upstream formula cancels (1 + erf(w), 0.5 + atan(z)/pi, 0.5 + 0.5 softsign(z) for
# large negative arguments) or a clamp assumed a parameter range (GoLU's inner exponent for
# beta < 1e-30), the op must keep the spec's tolerance against the independent formula.

def _neg_log_range(top: float) -> torch.Tensor:
    return -torch.logspace(0.0, math.log10(top), 200, dtype=torch.float64)


TAILS: list[tuple[Case, Callable[[], list[torch.Tensor]]]] = [
    (Case("GoLU", {"beta": 1e-35, "gamma": 5.0}),
     lambda: [torch.linspace(-40.0, 5.0, 181, dtype=torch.float64)]),
    (Case("GELU_s", {"sigma": 0.0576}),
     lambda: [torch.linspace(-120.0, -40.0, 161, dtype=torch.float64)]),
    (Case("GELU_s", {"sigma": 1.0}),
     lambda: [torch.linspace(-9.0, -3.0, 121, dtype=torch.float64)]),
    (Case("paGELU", {"alpha": 1.0}),
     lambda: [torch.full((121,), 30.0, dtype=torch.float64),
              torch.linspace(-8.0, -3.0, 121, dtype=torch.float64)]),
    (Case("paUnit", {"alpha": 1.0, "gate": "gelu"}),
     lambda: [torch.full((121,), 30.0, dtype=torch.float64),
              torch.linspace(-8.0, -3.0, 121, dtype=torch.float64)]),
    *((Case(name, {"sigma": s}), lambda: [_neg_log_range(65504.0)])
      for name in ("ZiLU", "ZiLU_Approx", "ArcTan", "ArcTan_Approx") for s in (1.0, 5.0, 100.0)),
    (Case("ZiLU", {"sigma": -0.5}), lambda: [-_neg_log_range(65504.0)]),
]


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.float16], ids=str)
@pytest.mark.parametrize("case,make_inputs", TAILS, ids=[c.id for c, _ in TAILS])
def test_tails_keep_tolerance(case: Case, make_inputs: Callable[[], list[torch.Tensor]],
                              dtype: torch.dtype) -> None:
    spec = case.spec
    inputs = [t.to(dtype) for t in make_inputs()]
    params = round_params(spec, case.params, dtype)
    out = call_op(spec, inputs, params)
    truth = formula(spec, inputs, params)
    ok = torch.isfinite(truth.to(dtype))
    assert ok.all() or dtype == torch.float16
    assert_within(out[ok], truth[ok], spec.tolerance(dtype), f"{case.id} {dtype} tail")


def test_zilu_family_far_left_limits() -> None:
    # ZiLU(x) -> -1/(pi sigma) and ZiLU_Approx(x) -> -1/(2 sigma) as x -> -inf (sigma > 0); the
    # cancelling forms gave 0 or noise there, and x times a gate underflowing where sigma x
    # overflows fp32 gave -0.28 for ZiLU(-3e38, sigma 5) (the limit is -0.064).
    for sigma in (1.0, 5.0, 1e3):
        x = torch.tensor([-1e30, -3e38 / sigma, -3e38, -3.4028235e38], dtype=torch.float32)
        s = torch.tensor(sigma)
        zilu = torch.ops.gatex.zilu(x, s).double()
        approx = torch.ops.gatex.zilu_approx(x, s).double()
        assert torch.allclose(zilu, torch.full_like(zilu, -1 / (math.pi * sigma)), rtol=1e-5)
        assert torch.allclose(approx, torch.full_like(approx, -0.5 / sigma), rtol=1e-5)
