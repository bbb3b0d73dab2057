"""The Runtime contract (template, context manager, feed validation) and the torch and
onnxruntime runtimes, on the hand-built tiny graphs and on a real zoo export."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from runtime_cases import golu_only_onnx, tiny_torch

from gatex.errors import BackendUnavailableError, BadInputError, CheckpointError
from gatex.models import GoLU, zoo
from gatex.ops import REGISTRY
from gatex.ops.spec import REDUCTION_TOLERANCES
from gatex.runtimes import (
    OrtRuntime,
    Runtime,
    RuntimeNotLoadedError,
    TensorSpec,
    TorchRuntime,
)
from gatex.pipeline.check import compare_runtimes


def golu64(x: np.ndarray) -> np.ndarray:
    """GoLU(alpha=beta=gamma=1) in float64: x * exp(-exp(-x))."""
    x = x.astype(np.float64)
    return x * np.exp(-np.exp(-x))


def tiny64(weights: dict[str, np.ndarray], x: np.ndarray) -> np.ndarray:
    w = {k: v.astype(np.float64) for k, v in weights.items()}
    h = golu64(x @ w["fc1.weight"].T + w["fc1.bias"])
    return golu64(h @ w["fc2.weight"].T + w["fc2.bias"])


# -- the template ---------------------------------------------------------------------------------

class Doubler(Runtime):
    """y = 2x, declaring x as float32[N,3]; counts loads and closes."""

    name = "doubler"

    def __init__(self) -> None:
        super().__init__()
        self.loads = self.closes = 0

    def _load(self) -> None:
        self.loads += 1

    def _close(self) -> None:
        self.closes += 1

    def _run(self, feeds):
        return {"y": feeds["x"] * 2}

    def _input_specs(self):
        return (TensorSpec("x", "float32", ("N", 3)),)

    def _output_names(self):
        return ("y",)


def test_using_a_runtime_before_load_is_an_error():
    rt = Doubler()
    x = np.ones((2, 3), np.float32)
    for use in (lambda: rt.run({"x": x}), lambda: rt.input_specs, lambda: rt.output_names,
                lambda: rt.validate_feeds({"x": x})):
        with pytest.raises(RuntimeNotLoadedError, match=r"with runtime:.*load\(\)"):
            use()
    assert rt.loads == 0  # nothing was loaded behind the caller's back


def test_context_manager_loads_once_and_closes_even_on_error():
    rt = Doubler()
    with pytest.raises(ZeroDivisionError):
        with rt as entered:
            assert entered is rt and rt.loaded
            rt.load()  # a second load does nothing
            np.testing.assert_array_equal(rt.run({"x": np.ones((2, 3), np.float32)})["y"], 2)
            1 / 0  # noqa: B018
    assert (rt.loads, rt.closes, rt.loaded) == (1, 1, False)
    with pytest.raises(RuntimeNotLoadedError):  # closed stays closed
        rt.run({"x": np.ones((2, 3), np.float32)})
    rt.close()  # closing twice is harmless
    assert rt.closes == 1
    with rt:  # and it can be loaded again
        assert rt.run({"x": np.full((1, 3), 3, np.float32)})["y"].tolist() == [[6, 6, 6]]
    assert (rt.loads, rt.closes) == (2, 2)


@pytest.mark.parametrize("feeds, message", [
    ({"x": np.ones((2, 3), np.float64)}, r"input 'x' expects float32\[N,3\], got float64\[2,3\]"),
    ({"x": np.ones((2, 4), np.float32)}, r"input 'x' expects float32\[N,3\], got float32\[2,4\]"),
    ({"x": np.ones(3, np.float32)}, r"expects float32\[N,3\], got float32\[3\]"),
    ({"y": np.ones((2, 3), np.float32)}, r"unknown input 'y'; the model takes 'x' \(float32\[N,3\]\)"),
    ({}, r"missing input 'x' \(float32\[N,3\]\)"),
    ({"x": np.array(["a", "b"])}, r"input 'x' must be a numeric array; got dtype <U1"),
    ([np.ones((2, 3), np.float32)], r"feeds must map input names to arrays; got list"),
])
def test_feeds_are_checked_against_the_declared_inputs(feeds, message):
    with Doubler() as rt, pytest.raises(BadInputError, match=message) as err:
        rt.run(feeds)
    assert "\n" not in str(err.value)


def test_feeds_are_never_cast_and_dynamic_dims_take_any_size():
    with Doubler() as rt:
        for n in (1, 7, 450):
            assert rt.run({"x": np.ones((n, 3), np.float32)})["y"].shape == (n, 3)
        # a torch tensor is a valid feed; it arrives as the same values
        y = rt.run({"x": torch.arange(6, dtype=torch.float32).reshape(2, 3)})["y"]
        np.testing.assert_array_equal(y, np.arange(6, dtype=np.float32).reshape(2, 3) * 2)


def test_nan_inputs_are_counted_not_refused():
    x = np.ones((4, 3), np.float32)
    x[1, 2] = x[3, 0] = np.nan
    with Doubler() as rt:
        y = rt.run({"x": x})["y"]
        assert rt.last_input_nans == {"x": 2}
        assert int(np.isnan(y).sum()) == 2
        rt.run({"x": np.ones((1, 3), np.float32)})
        assert rt.last_input_nans == {}


def test_tensor_spec():
    spec = TensorSpec("x", "float16", ("N", 64))
    assert spec.describe() == "float16[N,64]"
    assert spec.accepts_shape((5, 64)) and not spec.accepts_shape((5, 63))
    assert not spec.accepts_shape((5, 64, 1))
    assert spec.static_batch is None and TensorSpec("x", "float32", (8, 64)).static_batch == 8
    assert TensorSpec("x", "float32", None).accepts_shape((1, 2, 3))
    assert TensorSpec("x", "float32", (None, 2)).describe() == "float32[?,2]"


# -- onnxruntime ----------------------------------------------------------------------------------

def test_ort_runs_the_tiny_graph_to_its_float64_math(tiny):
    with OrtRuntime(tiny.onnx) as rt:
        assert rt.input_specs == (TensorSpec("x", "float32", ("N", 64)),)
        assert rt.output_names == ("logits",)
        assert rt.label == "onnxruntime (CPU)"
        assert rt.session.get_providers() == ["CPUExecutionProvider"]
        y = rt.run({"x": tiny.x})["logits"]
    assert y.dtype == np.float32 and y.shape == (32, 10)
    np.testing.assert_allclose(y, tiny64(tiny.weights, tiny.x), rtol=1e-5, atol=1e-5)


def test_ort_accepts_a_model_proto_and_bytes_and_reads_metadata(zoo_golu):
    import onnx

    proto = onnx.load(str(zoo_golu))
    x = zoo.held_out("GoLU")[0][:16].numpy()
    outs = []
    for source in (zoo_golu, str(zoo_golu), proto, proto.SerializeToString()):
        with OrtRuntime(source) as rt:
            assert rt.metadata == {"gatex.unit": "GoLU"}
            outs.append(rt.run({"x": x})["logits"])
    for y in outs[1:]:
        np.testing.assert_array_equal(y, outs[0])


def test_ort_fp16_graph_declares_and_returns_fp16():
    import onnx

    model = golu_only_onnx(dtype=onnx.TensorProto.FLOAT16)
    x = np.linspace(-8, 8, 4 * 64, dtype=np.float16).reshape(4, 64)
    with OrtRuntime(model) as rt:
        assert rt.output_specs == (TensorSpec("y", "float16", ("N", 64)),)
        with pytest.raises(BadInputError, match=r"expects float16\[N,64\], got float32"):
            rt.run({"x": x.astype(np.float32)})
        y = rt.run({"x": x})["y"]
    assert y.dtype == np.float16
    np.testing.assert_allclose(y.astype(np.float64), golu64(x), rtol=4e-3, atol=1e-3)


class FakeOrt:
    def __init__(self, providers):
        self._providers = providers

    def get_available_providers(self):
        return list(self._providers)


CPU_ONLY = ["AzureExecutionProvider", "CPUExecutionProvider"]
WITH_CUDA = ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"]


@pytest.mark.parametrize("device, available, chosen", [
    ("cpu", CPU_ONLY, ["CPUExecutionProvider"]),
    ("cpu", WITH_CUDA, ["CPUExecutionProvider"]),      # parity stays deterministic on CPU
    ("auto", CPU_ONLY, ["CPUExecutionProvider"]),
    ("auto", WITH_CUDA, ["CUDAExecutionProvider", "CPUExecutionProvider"]),
    ("cuda", WITH_CUDA, ["CUDAExecutionProvider", "CPUExecutionProvider"]),
])
def test_execution_provider_choice(device, available, chosen):
    assert OrtRuntime("unused.onnx", device=device)._providers(FakeOrt(available)) == chosen


def test_cuda_without_the_cuda_provider_is_backend_unavailable():
    with pytest.raises(BackendUnavailableError, match="no CUDAExecutionProvider.*onnxruntime-gpu"):
        OrtRuntime("unused.onnx", device="cuda")._providers(FakeOrt(CPU_ONLY))


@pytest.mark.parametrize("kwargs, message", [
    ({"device": "tpu"}, "unknown onnxruntime device 'tpu'; choose one of cpu, cuda, auto"),
    ({"optimization": "max"}, "unknown optimization level 'max'"),
    ({"threads": -1}, "threads must be >= 0"),
])
def test_ort_option_errors(kwargs, message):
    with pytest.raises(BadInputError, match=message):
        OrtRuntime("unused.onnx", **kwargs)


def test_ort_missing_corrupt_and_foreign_models(tmp_path):
    with pytest.raises(BadInputError, match="does not exist or is not a file"):
        OrtRuntime(tmp_path / "absent.onnx").load()
    corrupt = tmp_path / "corrupt.onnx"
    corrupt.write_bytes(b"\x08\x07garbage" * 10)
    with pytest.raises(CheckpointError, match=f"onnxruntime cannot load {corrupt}") as err:
        OrtRuntime(corrupt).load()
    assert "\n" not in str(err.value) and err.value.exit_code == 2
    with pytest.raises(BadInputError, match="needs a path, bytes or onnx.ModelProto; got dict"):
        OrtRuntime({"not": "a model"}).load()


# -- torch ----------------------------------------------------------------------------------------

def test_torch_runtime_matches_the_module_and_records_gatex_ops(tiny):
    model = tiny_torch(tiny.weights)
    with TorchRuntime(model, record_values=True) as rt:
        assert rt.input_specs is None  # an eager module declares no inputs
        y = rt.run({"x": tiny.x})["output"]
        assert rt.output_names == ("output",)
        calls = rt.last_op_calls
        assert rt.last_reductions == ("addmm",)
    with torch.no_grad():
        expected = model(torch.from_numpy(tiny.x)).numpy()
    np.testing.assert_array_equal(y, expected)
    assert [(c.index, c.op, c.module) for c in calls] == [(0, "GoLU", "act1"), (1, "GoLU", "act2")]
    np.testing.assert_array_equal(calls[1].outputs[0], y)  # the last op's value is the output
    with torch.no_grad():
        h = model.act1(model.fc1(torch.from_numpy(tiny.x))).numpy()
    np.testing.assert_array_equal(calls[0].outputs[0], h)


def test_torch_runtime_output_names():
    class Pair(torch.nn.Module):
        def forward(self, x):
            return x + 1, {"twice": x * 2}

    class Named(torch.nn.Module):
        def forward(self, x):
            return {"a": x, "b": -x}

    x = np.ones((2, 2), np.float32)
    with TorchRuntime(Pair()) as rt:
        assert list(rt.run({"x": x})) == ["output_0", "output_1"]
    with TorchRuntime(Named()) as rt:
        assert {k: v.tolist() for k, v in rt.run({"x": x}).items()} == {
            "a": [[1, 1], [1, 1]], "b": [[-1, -1], [-1, -1]]}
    with TorchRuntime(Pair(), output_names=["p", "q"]) as rt:
        assert list(rt.run({"x": x})) == ["p", "q"]
    with TorchRuntime(Pair(), output_names=["p"]) as rt, \
            pytest.raises(BadInputError, match="returned 2 outputs but 1 output names"):
        rt.run({"x": x})


def test_torch_runtime_errors():
    with pytest.raises(BadInputError, match="needs an nn.Module; got str"):
        TorchRuntime("model.pt")
    with TorchRuntime(GoLU()) as rt, pytest.raises(BadInputError, match="after the first run"):
        rt.output_names  # noqa: B018
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA; the no-CUDA message cannot be seen here")
    with pytest.raises(BackendUnavailableError, match="no CUDA device"):
        TorchRuntime(GoLU(), device="cuda").load()


# -- a zoo export through both runtimes -----------------------------------------------------------

def test_zoo_export_on_ort_matches_torch_within_the_spec_tolerance(pa_glu_export):
    x = zoo.held_out("paGLU")[0].numpy()
    with OrtRuntime(pa_glu_export.path) as ort_rt, TorchRuntime(zoo.load("paGLU")) as torch_rt:
        result = compare_runtimes(ort_rt, torch_rt, {"x": x})
        got = ort_rt.run({"x": x})
        want = torch_rt.run({"x": x})["output"]
    assert result.passed, result.summary()
    (name,) = got
    np.testing.assert_allclose(got[name], want, rtol=1e-4, atol=1e-5)
    tol = result.tolerance
    spec, reduction = REGISTRY.get("paGLU").tolerance("float32"), REDUCTION_TOLERANCES["float32"]
    assert tol.ops == ("paGLU",) and tol.origin == "spec"
    assert set(tol.reductions) == {"Gemm", "addmm"}
    assert (tol.rtol, tol.atol) == (max(spec.rtol, reduction.rtol), max(spec.atol, reduction.atol))
    (out,) = result.outputs
    assert out.top1 == 1.0 and out.nan_actual == out.nan_expected == 0
    assert out.max_abs == pytest.approx(float(np.max(np.abs(got[name] - want))))
    assert result.samples == 450
