"""Shared tables for the op tests: independent float64 formulas (NumPy + math, never gatex code),
how to call each elementwise op, and a closeness check that reports the worst element.

The formulas are transcribed from /work/shared/OPS.md; they exist so that a wrong ``reference``
in gatex cannot agree with a wrong ``impl`` and pass.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

import gatex.ops  # noqa: F401  (registers every op)
from gatex.ops import REGISTRY, OpSpec
from gatex.ops.lowering.gates import CATALOGUE
from gatex.ops.spec import Tolerance

_erfc = np.vectorize(math.erfc, otypes=[np.float64])


def sigmoid(z: np.ndarray) -> np.ndarray:
    # exp of -|z| only: no overflow, and no 1 - 1 cancellation for large negative z
    e = np.exp(-np.abs(z))
    return np.where(z >= 0, 1.0 / (1.0 + e), e / (1.0 + e))


def normal_cdf(w: np.ndarray) -> np.ndarray:
    # 0.5 (1 + erf(w / sqrt 2)) written with erfc, which does not cancel for w << 0
    return 0.5 * _erfc(-w / math.sqrt(2.0))


def gelu_erf(u: np.ndarray) -> np.ndarray:
    return u * normal_cdf(u)


def gelu_tanh(u: np.ndarray) -> np.ndarray:
    return 0.5 * u * (1.0 + np.tanh(math.sqrt(2.0 / math.pi) * (u + 0.044715 * u ** 3)))


def mish(u: np.ndarray) -> np.ndarray:
    softplus = np.where(u > 20.0, u, np.logaddexp(0.0, np.minimum(u, 20.0)))
    return u * np.tanh(softplus)


def golu(x: np.ndarray, alpha: float = 1.0, beta: float = 1.0, gamma: float = 1.0) -> np.ndarray:
    if beta == 0.0:  # exp(-0 * inf) is 1 mathematically; keep 0 * inf out
        return alpha * x
    with np.errstate(over="ignore"):
        return alpha * x * np.exp(-beta * np.exp(-gamma * x))


def arctan_gate(z: np.ndarray) -> np.ndarray:
    # 0.5 + atan(z) / pi = atan2(1, -z) / pi, which keeps full precision for z << 0
    return np.arctan2(1.0, -z) / math.pi


def arctan_approx_gate(z: np.ndarray) -> np.ndarray:
    return (0.5 + np.maximum(z, 0.0)) / (1.0 + np.abs(z))


def pa_mix(value: np.ndarray, gate: np.ndarray, alpha: Any) -> np.ndarray:
    return value * (alpha * gate + (1.0 - alpha))


PAUNIT_GATES: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "sigmoid": sigmoid,
    "tanh": np.tanh,
    "relu": lambda u: np.maximum(u, 0.0),
    "gelu": gelu_erf,
    "gelu_tanh": gelu_tanh,
    "mish": mish,
    "silu": lambda u: u * sigmoid(u),
    "softsign": lambda u: u / (1.0 + np.abs(u)),
    "golu": golu,
    "arctan": arctan_gate,
    "arctan_approx": arctan_approx_gate,
    "identity": lambda u: u,
}

# OPS.md's ops, written out so a lost or renamed registration fails (test_ops_registry); the one
# place besides FORMULAS (or a structural test) that an op added in-tree is named in the tests
OPS_MD_NAMES = [
    "CGConv2d", "PGConv2d", "GatedDense", "GoLU", "GELU_s", "SiLU_s", "ArcTan", "ArcTan_Approx",
    "ZiLU", "ZiLU_Approx", "paGLU", "paGTU", "paReGLU", "paGELU", "paMishU", "paSiLU",
    "paSwishU", "paUnit", "PaGRUCell",
]

# name -> float64 formula taking the op's tensor inputs (np arrays) and params by keyword
FORMULAS: dict[str, Callable[..., np.ndarray]] = {
    "GoLU": golu,
    "GELU_s": lambda x, sigma: x * normal_cdf(sigma * x),
    "SiLU_s": lambda x, sigma: x * sigmoid(sigma * x),
    "ArcTan": lambda x, sigma: arctan_gate(sigma * x),
    "ArcTan_Approx": lambda x, sigma: arctan_approx_gate(sigma * x),
    "ZiLU": lambda x, sigma: x * arctan_gate(sigma * x),
    "ZiLU_Approx": lambda x, sigma: x * arctan_approx_gate(sigma * x),
    "paGLU": lambda v, u, alpha: pa_mix(v, sigmoid(u), alpha),
    "paGTU": lambda v, u, alpha: pa_mix(np.tanh(v), np.tanh(u), alpha),
    "paReGLU": lambda v, u, alpha: pa_mix(v, np.maximum(u, 0.0), alpha),
    "paGELU": lambda v, u, alpha: pa_mix(v, gelu_erf(u), alpha),
    "paMishU": lambda v, u, alpha: pa_mix(v, mish(u), alpha),
    "paSiLU": lambda v, u, alpha: pa_mix(v, u * sigmoid(u), alpha),
    "paSwishU": lambda v, u, alpha, beta: pa_mix(v, u * sigmoid(beta * u), alpha),
    "paUnit": lambda v, u, alpha, gate: pa_mix(v, PAUNIT_GATES[gate](u), alpha),
}

ELEMENTWISE = sorted(s.name for s in REGISTRY if s.elementwise)
STRUCTURAL = sorted(s.name for s in REGISTRY if not s.elementwise)


@dataclass(frozen=True)
class Case:
    """One elementwise op call: the spec, its parameter values, and a readable id."""

    name: str
    params: dict[str, Any] = field(default_factory=dict)

    @property
    def spec(self) -> OpSpec:
        return REGISTRY.get(self.name)

    @property
    def id(self) -> str:
        shown = ",".join(f"{k}={v}" for k, v in self.params.items())
        return f"{self.name}[{shown}]" if shown else self.name


# Each elementwise op with parameter sets worth covering (defaults plus non-trivial values).
CASES: list[Case] = [
    Case("GoLU"), Case("GoLU", {"alpha": 0.7, "beta": 2.0, "gamma": 0.5}),
    Case("GoLU", {"beta": 0.0}), Case("GoLU", {"gamma": 3.0}),
    *(Case(n, {"sigma": s}) for n in ("GELU_s", "SiLU_s", "ArcTan", "ArcTan_Approx", "ZiLU",
                                       "ZiLU_Approx") for s in (1.0, 5.0, -0.5)),
    *(Case(n, {"alpha": a}) for n in ("paGLU", "paGTU", "paReGLU", "paGELU", "paMishU", "paSiLU")
      for a in (0.0, 0.5, 1.0, 0.3)),
    Case("paSwishU", {"alpha": 0.5, "beta": 1.0}), Case("paSwishU", {"alpha": 0.8, "beta": 2.5}),
    *(Case("paUnit", {"alpha": 0.6, "gate": g}) for g in PAUNIT_GATES),
]
# Every op at its defaults and paUnit with every gate at its default alpha, derived from the
# registry and the gate catalogue, so a new op or gate is covered without an edit here (paUnit
# at 0.5 with tanh or softsign is where alpha g + 1 - alpha cancels, gatex.ops.lowering.gates).
CASES += [Case(name) for name in ELEMENTWISE]
CASES += [Case("paUnit", {"gate": g}) for g in CATALOGUE]
_seen: dict[tuple, Case] = {}
for _case in CASES:  # a derived case that repeats an explicit one (same values) goes
    _seen.setdefault((_case.name, tuple(sorted((_case.spec.defaults() | _case.params).items()))),
                     _case)
CASES = list(_seen.values())
assert {c.name for c in CASES} == set(ELEMENTWISE), "every elementwise op needs a case"


def round_params(spec: OpSpec, params: dict[str, Any], dtype: torch.dtype) -> dict[str, Any]:
    """Learnable params become tensors of ``dtype`` (as in a ``.half()`` model); others stay."""
    full = spec.defaults() | params
    out: dict[str, Any] = {}
    for p in spec.params:
        value = full[p.name]
        if p.learnable and not isinstance(value, torch.Tensor):
            value = torch.tensor(value, dtype=dtype)
        elif p.learnable:
            value = value.to(dtype)
        out[p.name] = value
    return out


def call_op(spec: OpSpec, inputs: Sequence[torch.Tensor], params: dict[str, Any]) -> torch.Tensor:
    """The torch custom op, positionally: tensor inputs, then params in spec order."""
    full = spec.defaults() | params
    return spec.torch_op(*inputs, *(full[p.name] for p in spec.params))


def to_numpy_params(params: dict[str, Any]) -> dict[str, Any]:
    """Params for `FORMULAS`: tensors become float64 arrays (exact: every low dtype fits)."""
    return {k: v.double().numpy() if isinstance(v, torch.Tensor) else v
            for k, v in params.items()}


def formula(spec: OpSpec, inputs: Sequence[torch.Tensor], params: dict[str, Any]) -> torch.Tensor:
    """The independent float64 formula on the (already rounded) inputs, as a float64 tensor."""
    arrays = [t.double().numpy() for t in inputs]
    full = to_numpy_params(spec.defaults() | params)
    return torch.from_numpy(np.asarray(FORMULAS[spec.name](*arrays, **full), dtype=np.float64))


def assert_within(actual: torch.Tensor, expected: torch.Tensor, tol: Tolerance,
                  what: str = "") -> None:
    """|actual - expected| <= atol + rtol |expected| elementwise (NaN only where expected is NaN).

    Same test as `Tolerance.allows`, but on failure names the worst element and the tolerance
    that would have been needed, so a failing test says how far off it is.
    """
    a, e = actual.double().detach(), expected.double().detach()
    assert a.shape == e.shape, f"{what}: shape {tuple(a.shape)} != expected {tuple(e.shape)}"
    nan_a, nan_e = torch.isnan(a), torch.isnan(e)
    assert torch.equal(nan_a, nan_e), (
        f"{what}: NaN mismatch at {torch.nonzero(nan_a ^ nan_e)[:5].tolist()}")
    both_inf = torch.isinf(a) & torch.isinf(e) & (torch.sign(a) == torch.sign(e))
    err = torch.where(nan_e | both_inf, 0.0, (a - e).abs())
    allowed = tol.atol + tol.rtol * e.abs()
    excess = torch.where(nan_e | both_inf, -1.0, err - allowed)
    if excess.numel() and float(excess.max()) > 0:
        i = int(torch.argmax(excess))
        ef, af, ee = a.flatten()[i].item(), e.flatten()[i].item(), err.flatten()[i].item()
        needed_rtol = (ee - tol.atol) / abs(af) if af else math.inf
        bad = int((excess > 0).sum())
        raise AssertionError(
            f"{what}: {bad} of {a.numel()} elements outside rtol={tol.rtol:g} atol={tol.atol:g}; "
            f"worst: got {ef!r}, expected {af!r}, |err|={ee:.3g} "
            f"(would need rtol {needed_rtol:.3g} at this atol)")
