"""The parity engine's numbers: ULP distance, metrics, the pass rule, needed tolerances, NaN/Inf,
top-1, and how tolerances are chosen from the op specs."""

from __future__ import annotations

import ml_dtypes
import numpy as np
import pytest

from gatex.errors import BadInputError, UnknownOpError
from gatex.ops import REGISTRY, Tolerance
from gatex.ops.spec import REDUCTION_TOLERANCES
from gatex.comparison import (
    ParityResult,
    ToleranceChoice,
    choose_tolerance,
    compare,
    compare_outputs,
    tolerance_for,
    ulp_distance,
)

F32_TOL = Tolerance(rtol=1e-5, atol=1e-6)


def ulp(a, b, dtype) -> int:
    return int(np.max(ulp_distance(np.asarray(a), np.asarray(b), dtype)))


# -- ULP distance ---------------------------------------------------------------------------------

@pytest.mark.parametrize("np_dtype, name", [(np.float32, "float32"), (np.float16, "float16"),
                                            (np.float64, "float64")])
@pytest.mark.parametrize("start", [1.0, -1.0, 3.0e-3, 1000.0])
def test_adjacent_floats_are_one_ulp_apart(np_dtype, name, start):
    x = np_dtype(start)
    up = np.nextafter(x, np_dtype(np.inf))
    assert ulp(x, up, name) == 1
    assert ulp(up, x, name) == 1
    assert ulp(x, np.nextafter(up, np_dtype(np.inf)), name) == 2
    assert ulp(x, x, name) == 0


@pytest.mark.parametrize("np_dtype, name", [(np.float32, "float32"), (np.float16, "float16")])
def test_signed_zeros_and_the_smallest_subnormals(np_dtype, name):
    tiny = np.nextafter(np_dtype(0), np_dtype(1))  # smallest positive subnormal
    assert ulp(np_dtype(0.0), np_dtype(-0.0), name) == 0
    assert ulp(np_dtype(-0.0), tiny, name) == 1
    assert ulp(-tiny, tiny, name) == 2          # across zero: -tiny, 0, +tiny
    big = np.finfo(np_dtype).max
    assert ulp(big, np_dtype(np.inf), name) == 1


def test_fp16_ulp_counts_the_fp16_grid():
    # 1 and 1 + 2^-10 are adjacent in fp16 (10 mantissa bits); 2^-10 is 8192 fp32 ULPs there
    assert ulp(np.float16(1), np.float16(1 + 2**-10), "float16") == 1
    assert ulp(np.float32(1), np.float32(1 + 2**-10), "float32") == 2**13


def test_bf16_ulp_from_ml_dtypes_and_from_fp32():
    one = np.array([1.0], dtype=ml_dtypes.bfloat16)
    next_up = np.array([1.0 + 2**-7], dtype=ml_dtypes.bfloat16)  # 7 mantissa bits
    assert ulp(one, next_up, "bfloat16") == 1
    assert ulp(np.array([-0.0], ml_dtypes.bfloat16), np.array([0.0], ml_dtypes.bfloat16),
               "bfloat16") == 0
    # fp32 values are rounded to bf16 (nearest, ties to even) before counting
    assert ulp(np.float32(1.0), np.float32(1.0 + 2**-9), "bfloat16") == 0   # rounds down to 1
    assert ulp(np.float32(1.0), np.float32(1.0 + 3 * 2**-9), "bfloat16") == 1  # rounds up
    assert ulp(np.float32(1.0), np.float32(1.0 + 2**-8), "bfloat16") == 0   # tie -> even (1.0)
    # a tie rounds to even (1 + 2^-6)
    assert ulp(np.float32(1.0), np.float32(1.0 + 3 * 2**-8), "bfloat16") == 2


def test_ulp_rounds_the_reference_into_the_output_dtype():
    # a float64 reference is compared on the fp16 grid: its nearest fp16 is the artifact's value
    expected = np.float64(1.0) + 2**-12
    assert ulp(np.float16(1.0), expected, "float16") == 0
    # fp16 steps by 2^-9 on [2, 4): 2 + 2^-9 is one step away, 2 + 2^-8 two
    out = compare(np.float16([1.0, 2.0]), np.float64([1.0 + 2**-12, 2.0 + 2**-9]),
                  Tolerance(1e-2, 0.0))
    assert out.max_ulp == 1 and out.dtype == "float16"
    assert compare(np.float16([2.0]), np.float64([2.0 + 2**-8]), Tolerance(1e-2, 0.0)).max_ulp == 2


def test_ulp_of_an_unknown_dtype_is_bad_input():
    with pytest.raises(BadInputError, match="unknown dtype"):
        ulp_distance(np.float32(1), np.float32(1), "float8")


# -- metrics and the pass rule --------------------------------------------------------------------

def test_metrics_on_known_arrays():
    expected = np.array([1.0, -2.0, 0.0, 4.0], dtype=np.float32)
    actual = np.array([1.0, -2.5, 0.25, 4.0], dtype=np.float32)
    out = compare(actual, expected, Tolerance(rtol=0.0, atol=1.0), name="y")
    assert out.passed and bool(out)
    assert out.max_abs == 0.5
    assert out.mean_abs == pytest.approx((0 + 0.5 + 0.25 + 0) / 4)
    assert out.max_rel == 0.25                  # 0.5 / 2; the element with e = 0 is left out
    a64, e64 = actual.astype(np.float64), expected.astype(np.float64)  # metrics are in float64
    cos = float(np.dot(a64, e64) / (np.linalg.norm(a64) * np.linalg.norm(e64)))
    assert out.cosine == pytest.approx(cos, rel=1e-12)
    assert out.worst_index == (1,) and out.worst_actual == -2.5 and out.worst_expected == -2.0
    assert out.top1 is None                     # 1-D: not a batch of logits
    assert out.shape == (4,) and out.dtype == "float32"


def test_the_reference_scales_the_bound():
    # |a - e| <= atol + rtol |e|: asymmetric, the reference's magnitude counts
    # (float64 values: fp32's 1.1 is 1.10000002, just outside rtol 0.1 of 1.0)
    assert compare(np.float64([1.1]), np.float64([1.0]), Tolerance(0.1 + 1e-12, 0.0))
    assert not compare(np.float64([1.0]), np.float64([1.1]), Tolerance(0.09, 0.0))
    assert not compare(np.float32([1.1]), np.float32([1.0]), Tolerance(0.1, 0.0))


def test_failure_reports_the_tolerance_that_would_have_passed():
    expected = np.array([1.0, 10.0, 100.0, 0.5], dtype=np.float64)
    actual = expected + np.array([1e-3, 2e-3, 1e-2, 0.0])
    tol = Tolerance(rtol=1e-5, atol=1e-6)
    out = compare(actual, expected, tol, name="logits")
    assert not out and out.outside == 3
    # smallest atol at rtol 1e-5: max(diff - 1e-5 |e|) = 1e-2 - 1e-3 (third element; the
    # others need 1e-3 - 1e-5 and 2e-3 - 1e-4)
    assert out.needed.atol == pytest.approx(1e-2 - 1e-3, rel=1e-9)
    # smallest rtol at atol 1e-6: max((diff - 1e-6) / |e|) = (1e-3 - 1e-6) / 1
    assert out.needed.rtol == pytest.approx(1e-3 - 1e-6, rel=1e-9)
    # each reported value passes, and anything a little tighter fails
    assert compare(actual, expected, Tolerance(tol.rtol, out.needed.atol))
    assert not compare(actual, expected, Tolerance(tol.rtol, out.needed.atol * 0.999))
    assert compare(actual, expected, Tolerance(out.needed.rtol, tol.atol))
    assert not compare(actual, expected, Tolerance(out.needed.rtol * 0.999, tol.atol))
    assert "logits: 3 of 4 values outside rtol=1e-05, atol=1e-06" in out.message
    assert "would pass with atol >= 0.009 at rtol=1e-05, or rtol >= 0.000999" in out.message
    assert "\n" not in out.message


def test_no_rtol_helps_where_the_reference_is_zero():
    out = compare(np.float32([0.5, 1e-3]), np.float32([0.5, 0.0]), F32_TOL)
    assert not out
    assert out.needed.rtol is None
    assert out.needed.atol == pytest.approx(1e-3, rel=1e-6)
    assert "no rtol passes at this atol" in out.message


def test_nan_at_the_same_positions_passes_and_elsewhere_fails():
    e = np.array([1.0, np.nan, 3.0], dtype=np.float32)
    same = compare(e.copy(), e, F32_TOL)
    assert same and same.nan_actual == 1 and same.nan_expected == 1 and same.nan_mismatch == 0
    moved = compare(np.array([np.nan, 2.0, 3.0], np.float32), e, F32_TOL, name="y")
    assert not moved
    assert moved.nan_mismatch == 2 and moved.needed is None
    assert "NaN at 2 positions on one side only" in moved.message
    assert "no tolerance passes" in moved.message
    assert moved.max_abs == 0.0  # only the element finite on both sides is measured


def test_infinities_must_match_exactly():
    e = np.array([np.inf, -np.inf, 1.0], dtype=np.float32)
    assert compare(e.copy(), e, F32_TOL)
    flipped = compare(np.array([np.inf, np.inf, 1.0], np.float32), e, F32_TOL)
    assert not flipped and flipped.inf_mismatch == 1
    finite = compare(np.array([3e38, -np.inf, 1.0], np.float32), e, F32_TOL)
    assert not finite and finite.inf_mismatch == 1


def test_top1_agreement_for_logits():
    expected = np.array([[0.1, 0.9, 0.0], [0.8, 0.1, 0.1], [0.2, 0.3, 0.5], [1, 0, 0]],
                        dtype=np.float32)
    actual = expected.copy()
    actual[2] = [0.6, 0.3, 0.5]                 # one row's argmax changes
    out = compare(actual, expected, F32_TOL)
    assert out.top1 == 0.75
    assert compare(actual, expected, F32_TOL, classifier=False).top1 is None
    assert compare(expected[:, :1], expected[:, :1], F32_TOL).top1 is None  # one column


def test_shape_mismatch_fails_without_metrics():
    out = compare(np.zeros((2, 3), np.float32), np.zeros((2, 4), np.float32), F32_TOL, name="y")
    assert not out and out.max_abs is None
    assert out.message == "y: shape (2, 3) differs from the reference's (2, 4)"


def test_compare_outputs_by_name_and_missing_outputs():
    e = {"a": np.float32([1, 2]), "b": np.float32([3])}
    results = compare_outputs({"a": np.float32([1, 2]), "c": np.float32([0])}, e, F32_TOL)
    assert [(r.name, r.passed) for r in results] == [("a", True), ("b", False), ("c", False)]
    assert results[1].message == "b: missing from the artifact's outputs"
    assert results[2].message == "c: missing from the reference's outputs"


def test_parity_result_is_truthy_only_when_every_output_passes():
    choice = ToleranceChoice(F32_TOL, "float32", "user")
    ok = compare(np.float32([1]), np.float32([1]), F32_TOL, name="a")
    bad = compare(np.float32([2]), np.float32([1]), F32_TOL, name="b")
    make = lambda outs: ParityResult("m.onnx", "rt", "ref", "float32", choice, outs)  # noqa: E731
    assert make((ok,)) and not make((ok, bad)) and not make(())
    assert make((ok, bad)).failures() == (bad,)
    assert make((ok, bad)).summary().startswith("FAIL m.onnx on rt vs ref: b: 1 of 1 values")


# -- tolerances from the specs --------------------------------------------------------------------

def test_tolerance_is_the_loosest_spec_of_the_ops_used():
    golu, gru = REGISTRY.get("GoLU"), REGISTRY.get("PaGRUCell")
    choice = tolerance_for(["GoLU", "golu", "gatex::PaGRUCell"], "fp32")
    assert choice.rtol == max(golu.tolerance("float32").rtol, gru.tolerance("float32").rtol)
    assert choice.atol == max(golu.tolerance("float32").atol, gru.tolerance("float32").atol)
    assert choice.ops == ("GoLU", "PaGRUCell") and choice.origin == "spec"
    assert choice.dtype == "float32"
    alone = tolerance_for(["GoLU"], "float16")
    assert alone.tolerance == golu.tolerance("float16")   # one op: exactly its spec, not widened
    assert "loosest spec of GoLU" in alone.describe()


def test_standard_reductions_bring_in_the_reduction_tolerance_and_say_so():
    choice = tolerance_for(["GoLU"], "float32", reductions=["MatMul", "addmm"])
    assert choice.tolerance == REDUCTION_TOLERANCES["float32"]
    assert choice.reductions == ("MatMul", "addmm")
    assert "standard reductions (MatMul, addmm)" in choice.describe()


def test_tolerance_errors_are_bad_input():
    with pytest.raises(BadInputError, match="runs no gatex op"):
        tolerance_for([], "float32")
    with pytest.raises(BadInputError, match="unknown dtype"):
        tolerance_for(["GoLU"], "int8")
    with pytest.raises(UnknownOpError):
        tolerance_for(["NotAnOp"], "float32")


def test_user_tolerance_is_reported_as_the_users():
    both = choose_tolerance(["GoLU"], "fp32", rtol=0.5, atol=0.25)
    assert both.tolerance == Tolerance(0.5, 0.25) and both.origin == "user"
    assert "given by the user" in both.describe()
    half = choose_tolerance(["GoLU"], "fp32", atol=0.25)
    assert half.tolerance == Tolerance(REGISTRY.get("GoLU").tolerance("float32").rtol, 0.25)
    assert half.origin == "user+spec"
    nothing = choose_tolerance([], "fp32", rtol=1e-3, atol=1e-4)  # no ops needed when both given
    assert nothing.tolerance == Tolerance(1e-3, 1e-4)
    with pytest.raises(BadInputError, match="rtol must be a finite number >= 0"):
        choose_tolerance(["GoLU"], "fp32", rtol=-1.0, atol=0.0)


# -- the user's outlier allowance (--max-outliers) -------------------------------------------

def _with_flips(n: int, flips: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    e = rng.normal(size=n).astype(np.float32)
    a = e.copy()
    a[rng.choice(n, flips, replace=False)] += 0.01    # a flipped level: far outside fp32's tol
    return a, e


@pytest.mark.parametrize(("flips", "passed"), [(0, True), (5, True), (6, False), (40, False)])
def test_outliers_excuse_a_counted_share_and_no_more(flips, passed):
    a, e = _with_flips(1000, flips)
    r = compare(a, e, F32_TOL, outliers=0.005)          # floor(0.005 * 1000) = 5 allowed
    assert r.outliers_allowed == 5 and r.outside == flips
    assert bool(r) is passed
    if flips and passed:
        assert f"except {flips} of 1000 values" in r.message
        assert "within the 5 outliers allowed (--max-outliers)" in r.message
    if not passed:
        assert "5 outliers allowed (--max-outliers)" in r.message
    strict = compare(a, e, F32_TOL)                      # without the allowance: every element
    assert bool(strict) is (flips == 0) and strict.outliers_allowed == 0


def test_outliers_never_excuse_nan_or_inf_and_round_down():
    a, e = _with_flips(1000, 0)
    a[3] = np.nan
    assert not compare(a, e, F32_TOL, outliers=0.005)
    a[3], a[4] = e[3], np.inf
    assert not compare(a, e, F32_TOL, outliers=0.005)
    small_a, small_e = _with_flips(199, 1)               # floor(0.005 * 199) = 0: none excused
    r = compare(small_a, small_e, F32_TOL, outliers=0.005)
    assert r.outliers_allowed == 0 and not r


def test_tolerance_excuses_nothing_unless_the_user_asks():
    """Hard decisions are proved by decision-forced parity, not excused: no spec allowance."""
    pg = tolerance_for(["PGConv2d", "GoLU"], "float32")
    assert pg.outliers == 0.0 and pg.outlier_ops == ()
    assert "may be outside" not in pg.describe()
    assert REGISTRY.get("PGConv2d").decisions == ("wlevels", "levels", "gate")
    assert REGISTRY.get("CGConv2d").decisions == ("gate",)
    assert choose_tolerance(["PGConv2d"], "fp32", atol=1e-3).outliers == 0.0
    mine = pg.with_outliers(0.01)
    assert mine.outliers == 0.01 and mine.outlier_ops == ("given by the user",)
    assert "1 % of each output's elements may be outside" in mine.describe()
    assert pg.with_outliers(None).outliers == 0.0
    with pytest.raises(BadInputError, match="in \\[0, 100\\) percent"):
        pg.with_outliers(1.0)


def test_outlier_choice_on_off_or_the_users_share():
    pg = tolerance_for(["PGConv2d"], "float32")
    assert pg.with_outliers(None).outliers == 0.0
    assert pg.with_outliers(0).outliers == 0.0
    mine = tolerance_for(["GoLU"], "float32").with_outliers(0.02)
    assert (mine.outliers, mine.outlier_ops) == (0.02, ("given by the user",))
    assert "up to 2 % of each output's elements" in mine.describe()
    with pytest.raises(BadInputError, match=r"\[0, 100\) percent"):
        pg.with_outliers(1.5)
