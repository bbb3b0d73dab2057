"""The gate catalogue (gatex.ops.lowering.gates) and its one mix, through every backend form.

``value * (alpha g(u) + 1 - alpha)`` cancels for a gate bounded below by -1 (tanh, softsign)
at alpha = 0.5, the default of paGTU and paUnit: with |v| = 6e4 fp32 gave 0 for 1.7e-5. Every
catalogued gate at several alphas, the default first, with a large value input, is checked here
in the torch impl, the ONNX lowering on onnxruntime (alpha folded and alpha read at run time)
and the CoreML lowering by coremltools' value inference; the Triton kernels get the same cases
from ops_cases.CASES in test_kernels.py.
"""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from ops_cases import PAUNIT_GATES, assert_within, pa_mix, sigmoid

from gatex.errors import DuplicateRegistrationError, UnknownOpError
from gatex.ops import REGISTRY
from gatex.ops.lowering import onnx as onnx_lowering
from gatex.ops.lowering.gates import CATALOGUE, Gate, GateCatalogue
from gatex.ops.spec import Tolerance

PAUNIT = REGISTRY.get("paUnit")
DEFAULT_ALPHA = PAUNIT.param("alpha").default
# alpha <= 0.5: alpha g + 1 - alpha has no zero of its own for any catalogued gate (every lo is
# >= -1), so the factor must keep its relative accuracy everywhere; a cancelling mix loses all
# of it (0 for 2.8e-10 at u = -11). Larger alphas have real zeros (tanh at alpha 0.75) and at
# alpha = 1 the factor is the gate alone: the op tests (ops_cases.CASES) judge those.
ALPHAS = [DEFAULT_ALPHA, 0.25, 0.49, 0.1]
# identity passes the caller's own gate (a GateNorm'd one): unbounded below, so its mix has real
# zeros at any alpha, and no form can avoid them
MIX_GATES = [g for g in CATALOGUE if g != "identity"]
OTHER_ALPHA = 0.3
U = np.concatenate([np.linspace(-30, 30, 121), [-1.1e5, -3e4, -12.0, -11.09, -11.0, -5.5, 1e4]])
V = 6e4
TOL = Tolerance(rtol=2e-6, atol=0.0)   # 16 fp32 ulps of the product, relative


# g + 1 for the gates bounded below by -1, in float64 (numpy's tanh(-30) + 1 is already 0)
PLUS_ONE = {"tanh": lambda u: 2.0 * sigmoid(2.0 * u),
            "softsign": lambda u: np.where(u < 0, 1.0 / (1.0 + np.abs(u)), 1.0 + u / (1.0 + u))}


def truth(gate: str, alpha: float) -> torch.Tensor:
    """value * (alpha g + 1 - alpha) in float64, written as alpha (g + 1) + 1 - 2 alpha for the
    gates bounded below by -1 so that float64 itself does not cancel."""
    v = np.full_like(U, V)
    with np.errstate(all="ignore"):
        if gate in PLUS_ONE:
            return torch.from_numpy(v * (alpha * PLUS_ONE[gate](U) + (1.0 - 2.0 * alpha)))
        return torch.from_numpy(pa_mix(v, PAUNIT_GATES[gate](U), alpha))


def test_every_catalogued_gate_has_an_independent_formula_and_every_form() -> None:
    assert set(CATALOGUE) == set(PAUNIT_GATES)
    assert PAUNIT.param("gate").choices == tuple(CATALOGUE)
    for gate in CATALOGUE.values():
        assert callable(gate.torch) and callable(gate.onnx) and callable(gate.mil), gate.name
        if gate.lo is not None and gate.lo < 0 and gate.lo * DEFAULT_ALPHA + 1 - DEFAULT_ALPHA == 0:
            assert gate.lifted, f"{gate.name}: the default mix cancels and the gate has no lift"
    assert {g.name for g in CATALOGUE.values() if g.lifted} == {"tanh", "softsign"}


def test_the_catalogue_refuses_a_second_gate_of_one_name_and_suggests_names() -> None:
    catalogue = GateCatalogue()
    gate = Gate("g", torch.sigmoid, lambda b, u: u, lambda m, u: u)
    catalogue.register(gate)
    with pytest.raises(DuplicateRegistrationError, match="'g' is already registered"):
        catalogue.register(gate)
    with pytest.raises(UnknownOpError, match="unknown gate 'tahn'; did you mean tanh"):
        CATALOGUE["tahn"]
    with pytest.raises(ValueError, match="a lifted form needs lo"):
        catalogue.register(Gate("h", torch.tanh, lambda b, u: u, lambda m, u: u,
                                lift_torch=torch.tanh))


@pytest.mark.parametrize("alpha", ALPHAS)
@pytest.mark.parametrize("gate", MIX_GATES)
def test_torch_impl_mix_does_not_cancel(gate: str, alpha: float) -> None:
    u = torch.from_numpy(U).float()
    v = torch.full_like(u, V)
    out = PAUNIT.torch_op(v, u, torch.tensor(alpha), gate)
    assert_within(out, truth(gate, alpha), TOL, f"torch {gate} alpha={alpha}")
    # a per-element alpha tensor takes the same branch per element as a scalar does
    alphas = torch.tensor([alpha, OTHER_ALPHA]).repeat(len(U) // 2 + 1)[:len(U)]
    out = PAUNIT.torch_op(v, u, alphas, gate)
    expected = torch.where(alphas == alpha, truth(gate, alpha), truth(gate, OTHER_ALPHA))
    assert_within(out, expected, TOL, f"torch {gate} per-element alpha")


def _onnx_run(gate: str, alpha: float, *, at_run_time: bool) -> np.ndarray:
    """The paUnit function body (alpha folded, or read from the node's attribute as when nodes
    of one model disagree on it) in a one-node model on onnxruntime."""
    f = onnx_lowering.build_function(PAUNIT, {"alpha": alpha, "gate": gate},
                                     onnx.TensorProto.FLOAT, 18, [True, True],
                                     generic=("alpha",) if at_run_time else ())
    node = onnx.helper.make_node("paUnit", ["v", "u"], ["y"], domain=onnx_lowering.DOMAIN,
                                 alpha=alpha, gate=gate)
    info = [onnx.helper.make_tensor_value_info(n, onnx.TensorProto.FLOAT, [None])
            for n in ("v", "u", "y")]
    model = onnx.helper.make_model(
        onnx.helper.make_graph([node], "g", info[:2], info[2:]), functions=[f],
        opset_imports=[onnx.helper.make_opsetid("", 18),
                       onnx.helper.make_opsetid(onnx_lowering.DOMAIN, 1)])
    model.ir_version = 10
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    feeds = {"v": np.full(U.shape, V, np.float32), "u": U.astype(np.float32)}
    return session.run(None, feeds)[0]


@pytest.mark.parametrize("at_run_time", [False, True], ids=["folded", "attribute"])
@pytest.mark.parametrize("alpha", ALPHAS)
@pytest.mark.parametrize("gate", MIX_GATES)
def test_onnx_mix_does_not_cancel(gate: str, alpha: float, at_run_time: bool) -> None:
    got = torch.from_numpy(_onnx_run(gate, alpha, at_run_time=at_run_time))
    assert_within(got, truth(gate, alpha), TOL, f"onnx {gate} alpha={alpha}")


def _mil_value(gate: str, alpha) -> np.ndarray | None:
    pytest.importorskip("coremltools")
    from coremltools.converters.mil import Builder as mb
    from coremltools.converters.mil.mil import Function

    from gatex.ops.lowering.mil import Mil

    with Function({}):
        v = mb.const(val=np.full(U.shape, V, np.float32))
        u = mb.const(val=U.astype(np.float32))
        with np.errstate(all="ignore"):
            out = PAUNIT.lowerings["coreml"](Mil(), v, u, alpha=alpha, gate=gate)
        return out.val


@pytest.mark.parametrize("alpha", ALPHAS)
@pytest.mark.parametrize("gate", [g for g in CATALOGUE if CATALOGUE[g].lifted])
def test_coreml_mix_does_not_cancel(gate: str, alpha: float) -> None:
    """Lifted gates through the MIL composite, alpha a number and a per-channel array (the
    select between the lifted and the plain form: 0.75 takes the plain one), by coremltools'
    value inference."""
    got = _mil_value(gate, alpha)
    assert got is not None, "a MIL op of this composite lost its value inference"
    assert_within(torch.from_numpy(np.asarray(got)), truth(gate, alpha), TOL,
                  f"coreml {gate} alpha={alpha}")
    per_element = np.where(np.arange(len(U)) % 2 == 0, alpha, 0.75).astype(np.float32)
    got = _mil_value(gate, per_element)
    expected = torch.where(torch.from_numpy(per_element == alpha), truth(gate, alpha),
                           truth(gate, 0.75))
    assert_within(torch.from_numpy(np.asarray(got)), expected, TOL, f"coreml {gate} array alpha")


def test_the_fix_has_teeth_the_plain_mix_cancels() -> None:
    """The plain form alpha tanh(u) + 1 - alpha, in fp32, is what the lift replaces: it fails the
    same comparison (this is the case the issue measured)."""
    u = torch.from_numpy(U).float()
    plain = V * (DEFAULT_ALPHA * torch.tanh(u) + (1 - DEFAULT_ALPHA))
    with pytest.raises(AssertionError, match="outside"):
        assert_within(plain, truth("tanh", DEFAULT_ALPHA), TOL, "plain")
