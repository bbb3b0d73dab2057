"""torch.export keeps each gatex module as exactly one gatex:: node, and the program runs."""

from __future__ import annotations

import copy
import io
from collections.abc import Callable

import pytest
import torch
from model_cases import gatex_targets, gen, randn
from torch import nn

import gatex.ops
from gatex import models

VEC = (lambda: torch.randn(3, 6),)
IMG = (lambda: torch.randn(2, 8, 6, 6),)

# (module factory, example input factories, expected gatex op)
CASES: dict[str, tuple[Callable[[], nn.Module], tuple, str]] = {
    "paGLU": (lambda: models.paGLU(6, 4), VEC, "paglu"),
    "paGTU": (lambda: models.paGTU(6, 4, use_gate_norm=True), VEC, "pagtu"),
    "paSwishU": (lambda: models.paSwishU(6, 4, beta=2.0), VEC, "paswishu"),
    "paReGLU": (lambda: models.paReGLU(6, 4, alpha="learnable"), VEC, "pareglu"),
    "paGELU": (lambda: models.paGELU(6, 4), VEC, "pagelu"),
    "paMishU": (lambda: models.paMishU(6, 4), VEC, "pamishu"),
    "paSiLU": (lambda: models.paSiLU(6, 4), VEC, "pasilu"),
    "paUnit": (lambda: models.paUnit(6, 4, gate="golu"), VEC, "paunit"),
    "paGating2D": (lambda: models.paGating2D("paGLU", 8, 3), IMG, "paglu"),
    "PrePostNormWrapper": (lambda: models.PrePostNormWrapper(models.paSiLU(6, 4), 6, 4, True,
                                                             True), VEC, "pasilu"),
    "PaGRUCell": (lambda: models.PaGRUCell(6, 5),
                  (VEC[0], lambda: torch.randn(3, 5)), "pagru_cell"),
    "PaGRUCell-static": (lambda: models.PaGRUCell(6, 5, alpha_mode=0.5),
                         (VEC[0], lambda: torch.randn(3, 5)), "pagru_cell"),
    "GoLU": (lambda: models.GoLU(beta=0.5), VEC, "golu"),
    "GELU_s": (lambda: models.GELU_s(), VEC, "gelu_s"),
    "SiLU_s": (lambda: models.SiLU_s(sigma=2.0), VEC, "silu_s"),
    "ArcTan": (lambda: models.ArcTan(), VEC, "arctan"),
    "ArcTan_Approx": (lambda: models.ArcTan_Approx(sigma=3.0), VEC, "arctan_approx"),
    "ZiLU": (lambda: models.ZiLU(), VEC, "zilu"),
    "ZiLU_Approx": (lambda: models.ZiLU_Approx(sigma=1.5), VEC, "zilu_approx"),
    "GatedDense": (lambda: models.GatedDense(6, 4, activation="gelu"), VEC, "gated_dense"),
    "GatedDense-linear-nobias": (lambda: models.GatedDense(6, 4, bias=False), VEC, "gated_dense"),
    "CGConv2d": (lambda: models.CGConv2d(8, 4, 3, padding=1, th=0.0), IMG, "cg_conv2d"),
    "PGConv2d": (lambda: models.PGConv2d(8, 4, 3, padding=1), IMG, "pg_conv2d"),
    "PGConv2d-defaults": (lambda: models.PGConv2d(8, 4, 3), IMG, "pg_conv2d"),
}


@pytest.mark.parametrize("name", list(CASES))
def test_export_keeps_one_gatex_node(name: str) -> None:
    make, inputs, op = CASES[name]
    torch.manual_seed(0)
    module = make().eval()
    example = tuple(f() for f in inputs)
    with gatex.ops.keep_ops():  # as gatex's exporters trace (other tracers see aten ops)
        program = torch.export.export(module, example)
    assert gatex_targets(program) == [f"gatex.{op}.default"]
    with torch.no_grad():
        torch.testing.assert_close(program.module()(*example), module(*example), rtol=0, atol=0)


@pytest.mark.parametrize("name", list(CASES))
def test_modules_survive_pickling_and_deepcopy(name: str) -> None:
    make, inputs, _op = CASES[name]
    torch.manual_seed(0)
    module = make().eval()
    example = tuple(f() for f in inputs)
    buffer = io.BytesIO()
    torch.save(module, buffer)
    buffer.seek(0)
    for clone in (torch.load(buffer, weights_only=False), copy.deepcopy(module)):
        torch.testing.assert_close(clone(*example), module(*example), rtol=0, atol=0)


def test_exported_cell_takes_the_hidden_state_as_an_input() -> None:
    cell = models.PaGRUCell(4, 3).eval()
    x, h = torch.randn(2, 4), torch.randn(2, 3)
    program = torch.export.export(cell, (x, h))
    user_inputs = [s.arg.name for s in program.graph_signature.input_specs
                   if s.kind == torch.export.graph_signature.InputKind.USER_INPUT]
    assert len(user_inputs) == 2
    h2 = torch.randn(2, 3)
    torch.testing.assert_close(program.module()(x, h2), cell(x, h2), rtol=0, atol=0)
    assert not torch.allclose(program.module()(x, h2), program.module()(x, h))


def test_gate_norm_and_custom_gates_keep_the_mix_as_a_gatex_op() -> None:
    # the norm sits between gate and mix (or the gate is a user callable): the gate runs as
    # standard ops, the mix is paUnit with the identity gate
    for module in (models.paGLU(6, 4, use_gate_norm=True),
                   models.paUnit(6, 4, lambda u: u / (1 + u.abs()))):
        program = torch.export.export(module.eval(), (randn(3, 6, g=gen(0)).float(),))
        assert gatex_targets(program) == ["gatex.paunit.default"]


def test_pact_relu_exports_without_gatex_ops() -> None:
    program = torch.export.export(models.PactReLU(), (torch.randn(5),))
    assert gatex_targets(program) == []
