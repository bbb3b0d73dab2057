"""What the one Triton kernel family computes for each elementwise gatex op: a `GatePlan`.

Every elementwise op is one formula, evaluated in fp32 whatever the input dtype:

    y = V(v) * M(g(z)),   z = u              (paGating: v, u two inputs)
                          z = clamp(p u)     (ZiLU family: p = sigma, clamped to fp32's range)
    V: v | tanh(v) | 1                       M: g | p g + (1 - p) (p = alpha) | c2 g

The plan names V, g and M and the scalars; the kernels (`triton_gates`) switch on them at
compile time, so each op compiles to its own straight-line code with no branch left. This module
imports neither triton nor torch's CUDA: it is the part of the kernels that CPU tests can check.
The math of each gate follows the op's torch ``impl`` in ``gatex/ops/<family>.py`` (the truth).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from enum import IntEnum
from typing import Any

from gatex.errors import BadInputError


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


class Mix(IntEnum):
    """M(g): how the gate enters the product."""

    NONE = 0     # g
    ALPHA = 1    # p g + (1 - p), p = alpha (a tensor: scalar or per channel)
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

    def constexprs(self) -> dict[str, Any]:
        """The compile-time switches every kernel of the family takes."""
        return {"VALUE": int(self.value), "GATE": int(self.gate), "MIX": int(self.mix),
                "SIGMA_FROM_P": self.sigma_from_p, "CLAMP_Z": self.clamp_z}


# paUnit's gate names (gatex.ops.pagating.GATES) -> (gate, c0, c1, clamp_z); golu with its
# defaults (log beta = 0, gamma = 1), the arctan gates with sigma = 1 (clamped like impl's _z)
NAMED_GATES: Mapping[str, tuple[Gate, float, float, bool]] = {
    "sigmoid": (Gate.SIGMOID, 1.0, 1.0, False),
    "tanh": (Gate.TANH, 1.0, 1.0, False),
    "relu": (Gate.RELU, 1.0, 1.0, False),
    "gelu": (Gate.GELU, 1.0, 1.0, False),
    "gelu_tanh": (Gate.GELU_TANH, 1.0, 1.0, False),
    "mish": (Gate.MISH, 1.0, 1.0, False),
    "silu": (Gate.SWISH, 1.0, 1.0, False),
    "softsign": (Gate.SOFTSIGN, 1.0, 1.0, False),
    "golu": (Gate.GOLU, 0.0, 1.0, False),
    "arctan": (Gate.ARCTAN, 1.0, 1.0, True),
    "arctan_approx": (Gate.ARCTAN_APPROX, 1.0, 1.0, True),
}

# paGating units -> (gate name, value transform)
PAGATING_UNITS: Mapping[str, tuple[str, Value]] = {
    "paGLU": ("sigmoid", Value.V),
    "paGTU": ("tanh", Value.TANH),
    "paReGLU": ("relu", Value.V),
    "paGELU": ("gelu", Value.V),
    "paMishU": ("mish", Value.V),
    "paSiLU": ("silu", Value.V),
}

# ZiLU family -> (gate, value transform): all gate clamp(sigma x)
ZILU_OPS: Mapping[str, tuple[Gate, Value]] = {
    "GELU_s": (Gate.PHI, Value.V),
    "SiLU_s": (Gate.SIGMOID, Value.V),
    "ArcTan": (Gate.ARCTAN, Value.ONE),
    "ArcTan_Approx": (Gate.ARCTAN_APPROX, Value.ONE),
    "ZiLU": (Gate.ARCTAN, Value.V),
    "ZiLU_Approx": (Gate.ARCTAN_APPROX, Value.V),
}

KERNEL_OPS: tuple[str, ...] = ("GoLU", *ZILU_OPS, *PAGATING_UNITS, "paSwishU", "paUnit")
"""Every elementwise gatex op: each has a Triton kernel (and a TensorRT plugin)."""


def has_kernel(op: str) -> bool:
    return op in KERNEL_OPS


def log_beta(beta: float) -> float:
    """GoLU's log(beta), -inf for beta = 0 (gate 1), as ``golu_impl``."""
    return math.log(beta) if beta > 0 else -math.inf


def plan_for(op: str, params: Mapping[str, Any]) -> GatePlan:
    """The plan of ``op`` (a spec name) for its scalar ``params`` (tensor ones are ignored).

    >>> plan_for("paGLU", {}).gate
    <Gate.SIGMOID: 0>
    """
    if op in PAGATING_UNITS or op in ("paSwishU", "paUnit"):
        if op == "paSwishU":
            gate, c0, c1, clamp = Gate.SWISH, float(params.get("beta", 1.0)), 1.0, False
            value = Value.V
        elif op == "paUnit":
            name = params.get("gate", "sigmoid")
            if name not in NAMED_GATES:
                raise BadInputError(f"paUnit gate {name!r} has no kernel; known: "
                                    f"{', '.join(NAMED_GATES)}")
            (gate, c0, c1, clamp), value = NAMED_GATES[name], Value.V
        else:
            name, value = PAGATING_UNITS[op]
            gate, c0, c1, clamp = NAMED_GATES[name]
        return GatePlan(op, value, gate, Mix.ALPHA, two_inputs=True, p_param="alpha",
                        sigma_from_p=False, clamp_z=clamp, c0=c0, c1=c1)
    if op == "GoLU":
        return GatePlan(op, Value.ONE, Gate.GOLU, Mix.SCALE, two_inputs=False, p_param=None,
                        sigma_from_p=False, clamp_z=False,
                        c0=log_beta(float(params.get("beta", 1.0))),
                        c1=float(params.get("gamma", 1.0)), c2=float(params.get("alpha", 1.0)))
    if op in ZILU_OPS:
        gate, value = ZILU_OPS[op]
        return GatePlan(op, value, gate, Mix.NONE, two_inputs=False, p_param="sigma",
                        sigma_from_p=True, clamp_z=True)
    raise BadInputError(f"op {op!r} has no Triton kernel; the elementwise ops that do: "
                        f"{', '.join(KERNEL_OPS)}")
