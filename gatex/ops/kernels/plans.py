"""What the one Triton kernel family computes for each elementwise gatex op: a `GatePlan`.

Every elementwise op is one formula, evaluated in fp32 whatever the input dtype:

    y = V(v) * M(g(z)),   z = u              (paGating: v, u two inputs)
                          z = clamp(p u)     (ZiLU family: p = sigma, clamped to fp32's range)
    V: v | tanh(v) | 1                       M: g | p g + (1 - p) (p = alpha) | c2 g

The plan names V, g and M and the scalars; the kernels (`triton_gates`) switch on them at
compile time, so each op compiles to its own straight-line code with no branch left. This module
imports neither triton nor torch's CUDA: it is the part of the kernels that CPU tests can check.
The math of each gate follows the op's torch ``impl`` in ``gatex/ops/<family>.py`` (the truth).

No op is named here: each elementwise op file registers its plan maker as its ``tensorrt``
lowering (`gatex.ops.spec.TensorrtLowering`, built with `alpha_plan` / `sigma_plan`), and a
catalogued gate names its kernel gate (`gatex.ops.lowering.gates.Gate.kernel`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from enum import IntEnum
from typing import Any

from gatex.errors import BadInputError, GatexError
from gatex.ops.lowering.gates import CATALOGUE
from gatex.ops.registry import REGISTRY


class Value(IntEnum):
    """V(v): the factor the gate multiplies."""

    V = 0        # v itself (x for the one-input ops)
    TANH = 1     # tanh(v): paGTU
    ONE = 2      # no factor: the op is the (mixed) gate alone (ArcTan, GoLU's full form)


class Gate(IntEnum):
    """g(z): computed in fp32 with the hazard handling of the torch impls."""

    SIGMOID = 0        # 1 / (1 + e^-z)
    TANH = 1
    RELU = 2
    GELU = 3           # exact: z Phi(z) as 0.5 z erfc(-z / sqrt 2), z clamped at -40
    GELU_TANH = 4      # 0.5 z (1 + tanh(k (z + 0.044715 z^3))) = z sigmoid(2 k (...))
    MISH = 5           # z tanh(softplus(z)), softplus threshold 20
    SWISH = 6          # z sigmoid(c0 z): c0 = beta (paSwishU), 1 (SiLU)
    SOFTSIGN = 7       # z / (1 + |z|)
    GOLU = 8           # z exp(-exp(t)), t = min(min(-c1 z, 1000) + c0, 80); c0 = log beta,
                       # c1 = gamma
    ARCTAN = 9         # 0.5 + atan(z)/pi, as -atan(1/z)/pi for z < -1
    ARCTAN_APPROX = 10  # (0.5 + max(z, 0)) / (1 + |z|)
    PHI = 11           # 0.5 erfc(-z / sqrt 2): the normal CDF (GELU_s's gate)
    IDENTITY = 12      # z: a gate computed before the op (GateNorm, a user callable)


class Mix(IntEnum):
    """M(g): how the gate enters the product."""

    NONE = 0     # g
    ALPHA = 1    # p g + (1 - p), p = alpha (a tensor: scalar or per channel); with LIFT, for
                 # p <= 0.5: p (g + 1) + (1 - 2p), g + 1 computed without cancellation
    SCALE = 2    # c2 g (GoLU's alpha)


@dataclass(frozen=True)
class GatePlan:
    """One op's instance of the kernel family (see the module docstring)."""

    op: str
    value: Value
    gate: Gate
    mix: Mix
    two_inputs: bool         # v and u are separate tensors (paGating); else both are x
    p_param: str | None      # the tensor parameter read per element: "alpha", "sigma" or None
    sigma_from_p: bool       # z = p * u (ZiLU family)
    clamp_z: bool            # z clamped to +-FLT_MAX (ZiLU family, the arctan gates)
    c0: float = 1.0
    c1: float = 1.0
    c2: float = 1.0
    lift: bool = False       # Mix.ALPHA with the lifted gate g + 1 where p <= 0.5 (gates.py)

    def constexprs(self) -> dict[str, Any]:
        """The compile-time switches every kernel of the family takes."""
        return {"VALUE": int(self.value), "GATE": int(self.gate), "MIX": int(self.mix),
                "SIGMA_FROM_P": self.sigma_from_p, "CLAMP_Z": self.clamp_z, "LIFT": self.lift}


def named_gate(name: str) -> tuple[Gate, float, float, bool, bool]:
    """(kernel gate, c0, c1, clamp_z, lift) of the catalogued gate ``name``
    (`gatex.ops.lowering.gates`); `BadInputError` for a gate the kernel lacks."""
    try:
        gate = CATALOGUE[name]
    except GatexError as exc:
        raise BadInputError(str(exc)) from None
    if gate.kernel is None:
        raise BadInputError(f"gate {name!r} has no Triton kernel; the gates that do: "
                            f"{', '.join(n for n, g in CATALOGUE.items() if g.kernel)}")
    if gate.lifted and gate.lo != -1.0:
        raise BadInputError(f"gate {name!r}: the kernel lifts only gates bounded below by -1")
    c0, c1, clamp = gate.kernel_constants
    return Gate[gate.kernel], c0, c1, clamp, gate.lifted


def kernel_gates() -> dict[str, tuple[Gate, float, float, bool, bool]]:
    """Every catalogued gate the kernel computes, by name (derived from the catalogue)."""
    return {name: named_gate(name) for name, g in CATALOGUE.items() if g.kernel}


def alpha_plan(op: str, gate: str | None = None, value: Value = Value.V
               ) -> Callable[[Mapping[str, Any]], GatePlan]:
    """The plan maker of a paGating op: ``value`` times the alpha mix of ``gate`` (None: the
    ``gate`` parameter names it, as paUnit's does)."""
    def plan(params: Mapping[str, Any]) -> GatePlan:
        kernel_gate, c0, c1, clamp, lift = named_gate(gate or params.get("gate", "sigmoid"))
        return GatePlan(op, value, kernel_gate, Mix.ALPHA, two_inputs=True, p_param="alpha",
                        sigma_from_p=False, clamp_z=clamp, c0=c0, c1=c1, lift=lift)

    return plan


def sigma_plan(op: str, gate: Gate, value: Value) -> Callable[[Mapping[str, Any]], GatePlan]:
    """The plan maker of a ZiLU-family op: ``value`` times ``gate`` of clamp(sigma x)."""
    def plan(params: Mapping[str, Any]) -> GatePlan:
        return GatePlan(op, value, gate, Mix.NONE, two_inputs=False, p_param="sigma",
                        sigma_from_p=True, clamp_z=True)

    return plan


def kernel_ops() -> tuple[str, ...]:
    """Every op with a Triton kernel (and a TensorRT plugin): those whose ``tensorrt`` lowering
    has a plan, in registry order."""
    return tuple(spec.name for spec in REGISTRY
                 if getattr(spec.lowerings.get("tensorrt"), "plugin", False))


def __getattr__(name: str) -> Any:
    if name == "KERNEL_OPS":  # derived when asked: op files register after this module loads
        return kernel_ops()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def has_kernel(op: str) -> bool:
    return op in kernel_ops()


def log_beta(beta: float) -> float:
    """GoLU's log(beta), -inf for beta = 0 (gate 1), as ``golu_impl``."""
    return math.log(beta) if beta > 0 else -math.inf


def plan_for(op: str, params: Mapping[str, Any]) -> GatePlan:
    """The plan of ``op`` (a spec name) for its scalar ``params`` (tensor ones are ignored),
    from the op's ``tensorrt`` lowering.

    >>> plan_for("paGLU", {}).gate
    <Gate.SIGMOID: 0>
    """
    lowering = REGISTRY.get(op).lowerings.get("tensorrt") if op in REGISTRY else None
    if lowering is None or lowering.plan is None:
        raise BadInputError(f"op {op!r} has no Triton kernel; the elementwise ops that do: "
                            f"{', '.join(kernel_ops())}")
    return lowering.plan(params)
