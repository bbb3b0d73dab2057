"""Every op gatex ships is complete: a lowering (or a reasoned ``unsupported``) for every backend,
an independent float64 formula or structural test, hazard cases, a module class, a zoo entry
with shipped weights, and a row in the README's zoo table. All derived from the registry, so an
op that a table misses fails here rather than being silently skipped."""

from __future__ import annotations

from pathlib import Path

import pytest

from gatex import models
from gatex.models import zoo
from gatex.ops import BACKENDS, BUILTIN_OPS, REGISTRY
from gatex.ops.kernels import kernel_ops
from gatex.ops.lowering.gates import CATALOGUE

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("name", BUILTIN_OPS)
def test_every_backend_has_a_lowering_or_a_reason(name: str) -> None:
    spec = REGISTRY.get(name)
    for backend in BACKENDS[1:]:
        reason = spec.unsupported_reasons.get(backend, "")
        assert backend in spec.lowerings or len(reason) > 20, (name, backend)
    # TensorRT: a plugin plan exactly for the elementwise ops (the Triton kernel family)
    assert spec.lowerings["tensorrt"].plugin == spec.elementwise == (name in kernel_ops())


@pytest.mark.parametrize("name", BUILTIN_OPS)
def test_every_op_has_its_tests_and_its_zoo_model(name: str) -> None:
    import sys

    sys.path.insert(0, str(ROOT / "tests" / "ops"))
    try:
        import ops_cases
    finally:
        sys.path.remove(str(ROOT / "tests" / "ops"))
    spec = REGISTRY.get(name)
    if spec.elementwise:  # the independent formula, and the cases the op tests run
        assert name in ops_cases.FORMULAS
        assert any(c.name == name and c.spec.defaults() | c.params == c.spec.defaults()
                   for c in ops_cases.CASES), "a case at the op's defaults"
    else:
        assert name in ops_cases.STRUCTURAL
    assert name in models.UNIT_MODULES, "a module class named after the op in gatex.models"
    entry = zoo.entry(name)
    assert entry.weights_path.is_file(), \
        f"no shipped weights: python -m gatex.models.zoo.train --unit {name}"
    table = (ROOT / "README.md").read_text().split("<!-- zoo-table -->", 1)[1]
    assert f"| {name} |" in table.split("<!-- /zoo-table -->", 1)[0], \
        "README zoo table: python -m gatex.models.zoo.train --readme README.md"


def test_every_catalogued_gate_reaches_paunit_and_the_kernels() -> None:
    assert REGISTRY.get("paUnit").param("gate").choices == tuple(CATALOGUE)
    assert all(g.kernel for g in CATALOGUE.values()), "a gate without a Triton kernel gate"


@pytest.mark.parametrize("name", [n for n in BUILTIN_OPS if REGISTRY.get(n).decisions])
def test_every_deciding_op_marks_its_decisions_in_onnx(name: str) -> None:
    """An op with hard decisions (`OpSpec.decisions`) marks each in its ONNX function, so
    decision-forced parity can read them back; its torch reference records each on the tape."""
    import json

    import onnx
    import torch

    from gatex.ops import decisions
    from gatex.ops.lowering import onnx as onnx_build

    spec = REGISTRY.get(name)
    params = {p.name: p.default for p in spec.params}
    present = [True] * len(onnx_build.node_inputs(spec))
    function = onnx_build.build_function(spec, params, onnx.TensorProto.FLOAT, 21, present)
    (prop,) = [p for p in function.metadata_props if p.key == onnx_build.DECISIONS_KEY]
    marked = json.loads(prop.value)
    assert set(spec.decisions) <= set(marked)
    produced = {o for n in function.node for o in n.output}
    assert set(marked.values()) <= produced
    # the reference, on a small conv-shaped call, records every decision the spec names
    x = torch.randn(2, 4, 5, 5)
    args = {"x": x, "weight": torch.randn(3, 4, 3, 3), "mask": torch.ones(3, 4, 3, 3),
            "threshold": torch.zeros(3)}
    with decisions.recording("float32") as tape:
        spec.reference(*(args[i] for i in spec.inputs))
    (call,) = tape.calls
    assert tuple(call.decisions) == spec.decisions and call.op == spec.name
