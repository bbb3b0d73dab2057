"""Shared helpers for the module tests: upstream-layout state_dicts and a float64 closeness check.

State dicts are built from the key layout in OPS.md (not from gatex modules), so a module
whose keys or shapes drift from upstream's fails to load them.
"""

from __future__ import annotations

import torch

import gatex.ops  # noqa: F401  (registers the ops)
from gatex.ops import REGISTRY

F64 = torch.float64


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def randn(*shape: int, g: torch.Generator, scale: float = 1.0) -> torch.Tensor:
    return torch.randn(shape, generator=g, dtype=F64) * scale


def linear_state(prefix: str, in_dim: int, out_dim: int, g: torch.Generator
                 ) -> dict[str, torch.Tensor]:
    return {f"{prefix}.weight": randn(out_dim, in_dim, g=g, scale=0.7),
            f"{prefix}.bias": randn(out_dim, g=g, scale=0.3)}


def pa_state(in_dim: int, out_dim: int, g: torch.Generator, *, alpha: str | float = 0.5,
             raw_alpha: float = 0.3, gate_norm: bool = False) -> dict[str, torch.Tensor]:
    """An upstream paGating unit's state_dict (OPS.md section 1)."""
    sd = {**linear_state("value_proj", in_dim, out_dim, g),
          **linear_state("gate_proj", in_dim, out_dim, g)}
    if alpha == "learnable":
        sd["alpha_param"] = torch.tensor(raw_alpha, dtype=F64)
    elif isinstance(alpha, float):
        sd["alpha_fixed"] = torch.tensor(alpha, dtype=F64)
    if gate_norm:
        sd["gate_norm.weight"] = 1.0 + randn(out_dim, g=g, scale=0.2)
        sd["gate_norm.bias"] = randn(out_dim, g=g, scale=0.2)
    return sd


def assert_close_to_spec(actual: torch.Tensor, expected: torch.Tensor, op: str,
                         dtype: str = "float64") -> None:
    """|actual - expected| <= atol + rtol |expected| with the op spec's tolerance for dtype."""
    tol = REGISTRY.get(op).tolerance(dtype)
    assert actual.shape == expected.shape, (actual.shape, expected.shape)
    torch.testing.assert_close(actual.double(), expected.double(), rtol=tol.rtol, atol=tol.atol)


def gatex_targets(program: torch.export.ExportedProgram) -> list[str]:
    """The gatex:: call_function targets of an exported graph, one entry per node."""
    return [str(n.target) for n in program.graph.nodes
            if n.op == "call_function" and str(n.target).startswith("gatex.")]
