"""Plugin or decomposition: which gatex ops become TensorRT plugins (``--plugins auto|all|none``).

TensorRT fuses a chain of pointwise ops into one kernel, so an op's standard-op decomposition
costs one memory pass like the plugin does, and unlike a plugin it can fuse into the producing
GEMM or convolution. A plugin pays where the decomposition is numerically unsafe in the engine's
precision: there it computes in fp32 and rounds once. The ``auto`` policy measures that, per op
and precision, instead of guessing:

- the op's ONNX decomposition (the portable flavor's function body,
  `gatex.ops.lowering.onnx.inline_nodes`, with the model's parameter values) runs in
  ``onnx.reference`` with every op rounded to the precision (NumPy evaluates fp16/bf16 ops in
  that dtype): the model of an unfused execution, and an upper bound for a fused one that
  keeps fp32 inside;
- on hazard inputs (OPS.md: +-0, the dtype's smallest normal, 1e-4 .. 1000, GoLU's 11.09,
  Mish's 20, up to fp16's 65504, a dense grid on [-30, 30]; every (v, u) pair for paGating);
- against the op's torch impl in float64, with the op spec's tolerance for that precision.

The decomposition is unsafe where any output leaves the tolerance or is inf/NaN where the
float64 value, rounded to the precision, is finite. TensorRT's own kernels (its fp16 exp and
erf, what it fuses) were never measured: there is no TensorRT where gatex was written.
Speed never decides here for the same reason (docs/tensorrt.md).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from gatex._io import json_safe
from gatex.errors import require_choice
from gatex.ops.kernels.plans import has_kernel
from gatex.ops.lowering import onnx as onnx_build
from gatex.ops.registry import REGISTRY

PRECISIONS = ("fp32", "fp16", "bf16")
POLICIES = ("auto", "all", "none")
HAZARD_MAGNITUDES = (1e-4, 0.1, 0.5, 1.0, 2.0, 5.0, 11.0, 11.09, 12.0, 20.0, 21.0, 50.0, 100.0,
                     1000.0, 6e4, 65504.0)


@dataclass(frozen=True)
class DecompositionCheck:
    """How far an op's decomposition, rounded per op to ``precision``, is from the op."""

    op: str
    precision: str
    params: dict[str, Any]
    n_ops: int                    # standard ops in the decomposition
    n_inputs: int                 # hazard inputs evaluated
    worst_ratio: float            # max |got - expected| / (atol + rtol |expected|)
    faults: int                   # inf/NaN outputs where the rounded expected value is finite
    worst_inputs: tuple[float, ...]
    worst_got: float
    worst_expected: float

    @property
    def safe(self) -> bool:
        return self.faults == 0 and self.worst_ratio <= 1.0

    def describe(self) -> str:
        at = ", ".join(f"{v:.6g}" for v in self.worst_inputs)
        shown = ", ".join(f"{k}={v}" for k, v in self.params.items())
        where = f"{self.op}({at}{'; ' + shown if shown else ''})"
        if self.faults:
            return (f"the {self.n_ops}-op decomposition gives inf/NaN for {self.faults} of "
                    f"{self.n_inputs} hazard inputs, e.g. {where} = {self.worst_got:.6g} "
                    f"instead of {self.worst_expected:.6g}")
        verdict = "stays within" if self.safe else "leaves"
        return (f"the {self.n_ops}-op decomposition {verdict} the {self.precision} "
                f"tolerance: worst {self.worst_ratio:.3g}x the allowed error over "
                f"{self.n_inputs} hazard inputs, at {where} = {self.worst_got:.6g} instead of "
                f"{self.worst_expected:.6g}")


@dataclass(frozen=True)
class PluginDecision:
    """One row of the decision table: op, precision, plugin or not, and why."""

    op: str
    precision: str
    plugin: bool
    reason: str
    checks: tuple[DecompositionCheck, ...] = field(default=(), repr=False)

    @property
    def choice(self) -> str:
        return "plugin" if self.plugin else "decomposed"

    def as_json(self) -> dict[str, Any]:
        """Strict JSON: a non-finite number (a decomposition that gave inf or NaN) is written
        as the string "inf", "-inf" or "nan", not as JSON's missing Infinity / NaN."""
        return {"op": self.op, "precision": self.precision, "choice": self.choice,
                "reason": self.reason,
                "measured": [json_safe(asdict(c) | {"safe": c.safe}, _nonfinite_text)
                             for c in self.checks]}


def _nonfinite_text(value: float) -> str:
    return "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf")


def check_choice(precision: str, policy: str) -> None:
    require_choice(precision, PRECISIONS, "TensorRT precision")
    require_choice(policy, POLICIES, "plugin policy")


def _hazard_grid(precision: str, n_linear: int) -> Any:
    import numpy as np
    import torch

    dtype = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}[precision]
    mags = [float(torch.finfo(dtype).tiny), *HAZARD_MAGNITUDES]
    values = [0.0, *mags, *(-m for m in mags), *np.linspace(-30.0, 30.0, n_linear)]
    return torch.tensor(values, dtype=torch.float64).to(dtype)


@functools.lru_cache(maxsize=256)
def _measure(op: str, params_key: tuple[tuple[str, Any], ...], precision: str
             ) -> DecompositionCheck:
    import numpy as np
    import onnx
    import torch
    from onnx import helper
    from onnx.reference import ReferenceEvaluator


    spec = REGISTRY.get(op)
    params = dict(params_key)
    elem = {"fp32": onnx.TensorProto.FLOAT, "fp16": onnx.TensorProto.FLOAT16,
            "bf16": onnx.TensorProto.BFLOAT16}[precision]
    node = helper.make_node(spec.name, list(spec.inputs), ["y"], domain=onnx_build.DOMAIN,
                            name="op")
    nodes = onnx_build.inline_nodes(spec, node, params, elem)
    graph = helper.make_graph(
        nodes, "decomposition",
        [helper.make_tensor_value_info(i, elem, None) for i in spec.inputs],
        [helper.make_tensor_value_info("y", elem, None)])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 22)])
    if len(spec.inputs) == 2:
        grid = _hazard_grid(precision, 61)
        pairs = torch.cartesian_prod(grid, grid)
        inputs = [pairs[:, 0].contiguous(), pairs[:, 1].contiguous()]
    else:
        inputs = [_hazard_grid(precision, 601)]
    np_dtype = helper.tensor_dtype_to_np_dtype(elem)
    feeds = {name: t.float().numpy().astype(np_dtype) for name, t in zip(spec.inputs, inputs)}
    with np.errstate(all="ignore"):
        got = ReferenceEvaluator(model).run(None, feeds)[0].astype(np.float64)
    got = torch.from_numpy(got)
    ref_params = {k: torch.tensor(float(v), dtype=torch.float64)
                  if spec.param(k).learnable else v for k, v in params.items()}
    expected = spec.impl(*(t.double() for t in inputs), **ref_params)
    torch_dtype = inputs[0].dtype
    representable = torch.isfinite(expected.to(torch_dtype).double())
    faults = representable & ~torch.isfinite(got)
    tol = spec.tolerance(torch_dtype)
    both = representable & torch.isfinite(got)
    ratio = torch.where(both, (got - expected).abs() / (tol.atol + tol.rtol * expected.abs()),
                        torch.zeros_like(got))
    i = int(torch.nonzero(faults)[0]) if faults.any() else int(torch.argmax(ratio))
    return DecompositionCheck(
        op, precision, params, sum(n.op_type != "Constant" for n in nodes), len(got),
        float(ratio.max()), int(faults.sum()), tuple(float(t[i]) for t in inputs),
        float(got[i]), float(expected[i]))


def measure_decomposition(op: str, params: Mapping[str, Any], precision: str
                          ) -> DecompositionCheck:
    """Measure ``op``'s decomposition with ``params`` in ``precision`` (see the module docstring).

    >>> measure_decomposition("ZiLU", {"sigma": 1.0}, "fp16").safe
    False
    """
    check_choice(precision, "auto")
    return _measure(op, tuple(sorted(params.items())), precision)


def decide(op: str, variants: Iterable[Mapping[str, Any]], precision: str, policy: str
           ) -> PluginDecision:
    """Plugin or decomposition for ``op`` in ``precision``, given the parameter values its nodes
    carry (``variants``; every node of the op gets the same choice)."""
    check_choice(precision, policy)
    if not has_kernel(op):
        return PluginDecision(op, precision, False,
                              "no plugin: not an elementwise op (no Triton kernel); TensorRT "
                              "runs its standard-op decomposition")
    checks = tuple(measure_decomposition(op, v, precision) for v in variants)
    unsafe = [c for c in checks if not c.safe]
    worst = max(checks, key=lambda c: (c.faults, c.worst_ratio if math.isfinite(c.worst_ratio)
                                       else math.inf), default=None)
    measured = worst.describe() if worst is not None else "not measured (no node)"
    if policy == "all":
        return PluginDecision(op, precision, True, f"plugin (--plugins all); {measured}", checks)
    if policy == "none":
        note = " — UNSAFE, kept as asked" if unsafe else ""
        return PluginDecision(op, precision, False,
                              f"decomposed (--plugins none); {measured}{note}", checks)
    if unsafe:
        return PluginDecision(op, precision, True,
                              f"plugin: {measured}; the plugin computes in fp32 and rounds "
                              "once", checks)
    return PluginDecision(op, precision, False,
                          f"decomposed: {measured}; TensorRT fuses its pointwise ops into one "
                          "kernel (and into the producer where it can)", checks)


def decision_table(variants: Mapping[str, list[dict[str, Any]]], precision: str, policy: str
                   ) -> list[PluginDecision]:
    """One `PluginDecision` per op of ``variants`` (op -> the parameter sets of its nodes)."""
    return [decide(op, variants[op], precision, policy) for op in sorted(variants)]
