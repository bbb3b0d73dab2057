"""Published reference values (OPS.md) and independent float64 formulas for every elementwise op.

Each op is checked twice: its ``spec.reference`` (the upstream formula) and its torch custom op
(``spec.torch_op``, which runs ``impl``), against numbers that do not come from gatex.
"""

from __future__ import annotations

import pytest
import torch
from ops_cases import CASES, Case, assert_within, call_op, formula, round_params

from gatex.ops import REGISTRY

X_PA = [-2, -1, -0.5, 0, 0.5, 1, 2]
X_GOLU = [-10, -5, -2, -1, -0.5, 0, 0.5, 1, 2, 5, 10]

# Copied digit for digit from OPS.md: the strings keep how many digits were published.
PUBLISHED = {
    "paGLU": (X_PA, {"alpha": 0.5}, [
        "-1.119202922", "-0.6344707107", "-0.3443851672", "0", "0.4056148328", "0.8655292893",
        "1.880797078"]),
    "paReGLU": (X_PA, {"alpha": 0.5}, ["-1", "-0.5", "-0.25", "0", "0.375", "1", "3"]),
    "paSiLU": (X_PA, {"alpha": 0.5}, [
        "-0.761594156", "-0.3655292893", "-0.2028074164", "0", "0.3278074164", "0.8655292893",
        "2.761594156"]),
    "GoLU": (X_GOLU, {}, [
        "-0", "-1.753694598e-64", "-0.001235957979", "-0.06598803585", "-0.09614782277", "0",
        "0.2726196059", "0.6922006276", "1.746846037", "4.96642351", "9.999546011"]),
    "ZiLU": (X_GOLU, {"sigma": 1.0}, [
        "-0.3172551743", "-0.3141647909", "-0.2951672353", "-0.25", "-0.1762081912", "0",
        "0.3237918088", "0.75", "1.704832765", "4.685835209", "9.682744826"]),
}


def call_published(name: str, x: torch.Tensor, params: dict, *, use_op: bool) -> torch.Tensor:
    spec = REGISTRY.get(name)
    inputs = [x] * len(spec.inputs)  # value_proj = gate_proj = identity
    if use_op:
        return call_op(spec, inputs, round_params(spec, params, x.dtype))
    return spec.reference(*inputs, **params)


@pytest.mark.parametrize("use_op", [False, True], ids=["reference", "torch_op"])
@pytest.mark.parametrize("name", sorted(PUBLISHED))
def test_published_values_float64(name: str, use_op: bool) -> None:
    xs, params, texts = PUBLISHED[name]
    got = call_published(name, torch.tensor(xs, dtype=torch.float64), params, use_op=use_op)
    assert got.dtype == torch.float64
    for x, g, text in zip(xs, got.tolist(), texts):
        # OPS.md prints with 10 significant digits (%.10g: trailing zeros dropped, "-0" kept),
        # so the float64 result must print as exactly the published string
        assert f"{g:.10g}" == text, f"{name}({x}) = {g!r}, OPS.md says {text}"


@pytest.mark.parametrize("use_op", [False, True], ids=["reference", "torch_op"])
@pytest.mark.parametrize("name", sorted(PUBLISHED))
def test_published_values_float32(name: str, use_op: bool) -> None:
    xs, params, texts = PUBLISHED[name]
    spec = REGISTRY.get(name)
    got = call_published(name, torch.tensor(xs, dtype=torch.float32), params, use_op=use_op)
    assert got.dtype == torch.float32
    expected = torch.tensor([float(t) for t in texts], dtype=torch.float64)
    assert_within(got, expected, spec.tolerance("float32"), f"{name} float32")


def test_golu_far_left_is_negative_zero() -> None:
    # OPS.md lists GoLU(-10) as "-0": x * exp(-e^10) underflows, keeping the sign of x
    for dtype in (torch.float64, torch.float32):
        got = torch.ops.gatex.golu(torch.tensor([-10.0], dtype=dtype))
        assert got.item() == 0.0 and torch.signbit(got).item(), dtype


def float64_inputs(n_inputs: int) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(1234)
    grid = torch.linspace(-6.0, 6.0, 97, dtype=torch.float64)
    if n_inputs == 1:
        return [torch.cat([grid, 3.0 * torch.randn(64, generator=g, dtype=torch.float64)])]
    v = torch.cat([grid, 3.0 * torch.randn(64, generator=g, dtype=torch.float64)])
    u = torch.cat([grid.flip(0), 3.0 * torch.randn(64, generator=g, dtype=torch.float64)])
    return [v, u]


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_matches_independent_formula_float64(case: Case) -> None:
    spec = case.spec
    inputs = float64_inputs(len(spec.inputs))
    params = round_params(spec, case.params, torch.float64)
    expected = formula(spec, inputs, params)
    tol = spec.tolerance("float64")
    assert_within(spec.reference(*inputs, **params), expected, tol, f"{case.id} reference")
    out = call_op(spec, inputs, params)
    assert out.dtype == torch.float64
    assert_within(out, expected, tol, f"{case.id} torch op")


def test_formulas_are_not_trivially_equal() -> None:
    # The formula table must tell ops apart: the same inputs give different outputs per op,
    # so a swapped gate (say sigmoid for tanh) cannot pass the comparison above.
    v, u = float64_inputs(2)
    outs = {}
    for case in CASES:
        if len(case.spec.inputs) == 2:
            outs[case.id] = formula(case.spec, [v, u], round_params(case.spec, case.params,
                                                                   torch.float64))
    # coincide by design: alpha = 0 removes the gate; Swish with beta = 1 is SiLU; paUnit with
    # a unit's gate is that unit (at the same alpha; the unit's gate from its module class);
    # arctan_approx = (1 + softsign) / 2, so softsign at alpha a is arctan_approx at alpha 2a
    from gatex.models.pagating import UNITS

    def same_by_design(a: Case, b: Case) -> bool:
        def canonical(c: Case) -> tuple:
            full = c.spec.defaults() | c.params
            gate = {"paUnit": full.get("gate"), "paSwishU": "silu" if full.get("beta") == 1.0
                    else None}.get(c.name, UNITS[c.name].gate_name if c.name in UNITS else None)
            alpha = full.get("alpha")
            if gate == "softsign" and isinstance(alpha, float) and 2 * alpha <= 1:
                gate, alpha = "arctan_approx", 2 * alpha
            value = c.spec.formula.split(" * ")[0]   # "v", or paGTU's "tanh(v)"
            return (value, gate, alpha) if gate else (c.id,)
        return canonical(a) == canonical(b)

    by_case = {c.id: c for c in CASES}
    ids = list(outs)
    for i, a in enumerate(ids):
        for b in ids[i + 1:]:
            if torch.allclose(outs[a], outs[b]):
                assert ("alpha=0.0" in a and "alpha=0.0" in b) or \
                    same_by_design(by_case[a], by_case[b]), (a, b)
