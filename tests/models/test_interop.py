"""A gatex module stays exportable by the user's own tools (issue 14, part 3).

Traced by a tool that cannot carry a custom op (``torch.onnx.export``, dynamo and legacy;
``torch.jit.trace``; ``torch.compile``), a gatex module runs its op's impl as standard aten ops,
so those tools take it as they take the upstream module, with the same numbers;
``torch.export`` and gatex's own exporters (`gatex.ops.keep_ops`) see one ``gatex::`` node per
unit; ``torch.jit.script`` fails with one line naming the alternatives.

One zoo model per op (the zoo is derived from the registry, so a new op is covered here too).
"""

from __future__ import annotations

import io
import warnings

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from model_cases import gatex_targets

import gatex.models
import gatex.ops
from gatex.errors import NotScriptableError
from gatex.models import zoo

UNITS = [e.unit for e in zoo.ENTRIES]
FAST = {"paGLU", "GoLU", "ZiLU", "PaGRUCell", "CGConv2d"}  # one per family in the default run


def _marked(units: list[str]) -> list:
    return [u if u in FAST else pytest.param(u, marks=pytest.mark.slow) for u in units]


def _model_and_input(unit: str) -> tuple[torch.nn.Module, torch.Tensor]:
    model = zoo.load(unit)
    (x,) = zoo.example_inputs(unit, batch=3)
    return model, x


def _run_onnx(data: bytes, x: torch.Tensor) -> np.ndarray:
    model = onnx.load_from_string(data)
    assert not [n.op_type for n in model.graph.node if n.domain.startswith("gatex")]
    session = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
    return session.run(None, {session.get_inputs()[0].name: x.numpy()})[0]


def _close(got: np.ndarray | torch.Tensor, want: torch.Tensor, unit: str) -> None:
    tol = gatex.ops.get_op(unit).tolerance("float32")
    np.testing.assert_allclose(np.asarray(got, dtype=np.float64), want.double().numpy(),
                               rtol=max(tol.rtol, 1e-5), atol=max(tol.atol, 1e-5))


@pytest.mark.parametrize("unit", _marked(UNITS))
def test_plain_torch_onnx_dynamo(unit: str) -> None:
    model, x = _model_and_input(unit)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        program = torch.onnx.export(model, (x,), dynamo=True, verbose=False)
    _close(_run_onnx(program.model_proto.SerializeToString(), x), model(x).detach(), unit)


@pytest.mark.parametrize("unit", _marked(UNITS))
def test_plain_torch_onnx_legacy(unit: str) -> None:
    model, x = _model_and_input(unit)
    f = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (x,), f, dynamo=False)
    _close(_run_onnx(f.getvalue(), x), model(x).detach(), unit)


@pytest.mark.parametrize("unit", _marked(UNITS))
def test_jit_trace_runs_standard_ops(unit: str) -> None:
    model, x = _model_and_input(unit)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        traced = torch.jit.trace(model, (x,))
    assert "gatex::" not in str(traced.inlined_graph)
    other = torch.rand_like(x)  # not the example: the trace must not have baked values in
    _close(traced(other).detach(), model(other).detach(), unit)


@pytest.mark.parametrize("unit", ["GoLU", pytest.param("paGLU", marks=pytest.mark.slow)])
def test_torch_compile_matches_eager(unit: str) -> None:
    model, x = _model_and_input(unit)
    compiled = torch.compile(model)
    with torch.no_grad():
        _close(compiled(x), model(x), unit)


@pytest.mark.parametrize("unit", ["GoLU", "paGLU", "PaGRUCell"])
def test_jit_script_fails_in_one_line_naming_the_alternatives(unit: str) -> None:
    model, _ = _model_and_input(unit)
    with pytest.raises(NotScriptableError) as info:
        torch.jit.script(model)
    message = str(info.value)
    assert "\n" not in message and "torch.jit.trace" in message and "torch.export" in message


def test_torch_export_keeps_the_ops_so_a_saved_program_stays_gatexs(tmp_path) -> None:
    model, x = _model_and_input("GoLU")
    n_units = sum(isinstance(m, gatex.models.GoLU) for m in model.modules())
    for strict in (False, True):
        program = torch.export.export(model, (x,), strict=strict)
        assert gatex_targets(program) == ["gatex.golu.default"] * n_units, strict
    torch.export.save(program, tmp_path / "golu.pt2")
    loaded = torch.export.load(tmp_path / "golu.pt2")
    torch.testing.assert_close(loaded.module()(x), model(x))


def test_keep_ops_keeps_them_for_every_tracer() -> None:
    model, x = _model_and_input("GoLU")
    with gatex.ops.keep_ops(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        traced = torch.jit.trace(model, (x,))
    assert "gatex::golu" in str(traced.inlined_graph)


def test_eager_call_is_the_op() -> None:
    # eager runs the custom op itself (its CUDA kernel where there is one): the profiler sees it
    model, x = _model_and_input("GoLU")
    with torch.profiler.profile() as prof:
        model(x)
    assert any(e.name == "gatex::golu" for e in prof.events())


class _UpstreamNet(torch.nn.Module):
    """Upstream units of every family (tests/upstream.py), as a user's model holds them."""

    def __init__(self) -> None:
        import upstream as up

        super().__init__()
        torch.manual_seed(0)
        self.conv = up.CGConv2d(4, 8, 3, padding=1)
        self.act = up.ZiLU(sigma=None)
        self.pa = up.paGLU(8 * 6 * 6, 16, alpha=0.6)
        self.golu = up.GoLU()
        self.cell = up.PaGRUCell(16, 12)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.act(self.conv(x)).flatten(1)
        return self.cell(self.golu(self.pa(h)))


def test_plain_torch_onnx_after_adapt_matches_the_upstream_model() -> None:
    net = _UpstreamNet().eval()
    x = torch.randn(2, 4, 6, 6, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        want = net(x)
    adapted, report = gatex.models.adapt(net)
    assert len(report.replaced) == 5 and not report.unknown
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        program = torch.onnx.export(adapted, (x,), dynamo=True, verbose=False)
    got = _run_onnx(program.model_proto.SerializeToString(), x)
    np.testing.assert_allclose(got, want.numpy(), rtol=1e-4, atol=1e-5)
