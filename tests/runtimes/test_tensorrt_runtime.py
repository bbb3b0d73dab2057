"""The TensorRT runtime (``.engine`` / ``.plan``): the Runtime contract before loading, bad
files, exit 3 without TensorRT through ``gatex parity`` and ``gatex bench``, and gatex's plan
read back from an engine's name. No TensorRT here: the engine-running test is GPU-only."""

from __future__ import annotations

import importlib.util
import json

import pytest
import torch
from typer.testing import CliRunner

from gatex.cli import app
from gatex.errors import BackendUnavailableError, BadInputError
from gatex.exporters.tensorrt import engine_plan
from gatex.ops.kernels import trt_bundle
from gatex.runtimes import RuntimeNotLoadedError
from gatex.runtimes import tensorrt_runtime
from gatex.runtimes.tensorrt_runtime import TensorrtRuntime, engine_metadata
from cli_checks import one_error_line

HAS_TRT = importlib.util.find_spec("tensorrt") is not None


def test_not_loaded_runtime_refuses_use(tmp_path) -> None:
    rt = TensorrtRuntime(tmp_path / "m.engine")
    for use in (lambda: rt.run({}), lambda: rt.input_specs, lambda: rt.output_names,
                lambda: rt.metadata):
        with pytest.raises(RuntimeNotLoadedError, match="TensorrtRuntime"):
            use()
    assert not rt.loaded and rt.label == "tensorrt (cuda:0)"


def test_bad_files_are_bad_input_before_tensorrt_is_needed(tmp_path) -> None:
    with pytest.raises(BadInputError, match="does not exist"):
        TensorrtRuntime(tmp_path / "missing.plan").load()
    (tmp_path / "model.onnx").write_bytes(b"x")
    with pytest.raises(BadInputError, match="a TensorRT engine is a .engine or .plan file"):
        TensorrtRuntime(tmp_path / "model.onnx").load()


@pytest.mark.skipif(HAS_TRT, reason="TensorRT is installed here")
def test_load_without_tensorrt_is_backend_unavailable(tmp_path) -> None:
    engine = tmp_path / "m.engine"
    engine.write_bytes(b"not an engine")
    with pytest.raises(BackendUnavailableError) as info:
        TensorrtRuntime(engine).load()
    assert info.value.exit_code == 3
    assert str(info.value) == ("TensorRT is not installed here (gatex never installs it: it "
                               "needs an NVIDIA GPU and NVIDIA's tensorrt packages), so TensorRT "
                               "engines cannot run")


@pytest.mark.skipif(HAS_TRT, reason="TensorRT is installed here")
@pytest.mark.parametrize("suffix", [".engine", ".plan"])
def test_gatex_parity_on_an_engine_exits_3_with_one_line(tmp_path, suffix) -> None:
    engine = tmp_path / f"m{suffix}"
    engine.write_bytes(b"not an engine")
    result = CliRunner().invoke(app, ["parity", str(engine), "--json", str(tmp_path / "v.json")])
    assert result.exit_code == 3, result.output
    assert "TensorRT is not installed here" in one_error_line(result)
    assert not (tmp_path / "v.json").exists()


@pytest.mark.skipif(HAS_TRT, reason="TensorRT is installed here")
def test_gatex_bench_on_an_engine_reports_trt_unavailable(tmp_path) -> None:
    engine = tmp_path / "m.engine"
    engine.write_bytes(b"not an engine")
    result = CliRunner().invoke(app, ["bench", str(engine), "--backend", "trt"])
    assert result.exit_code == 3, result.output
    assert "backend trt is not available: TensorRT is not installed" in one_error_line(result)


def test_engine_name_carries_gatex_plan() -> None:
    plan = {"gatex": "0.1.0", "unit": "ZiLU", "precision": "fp16", "policy": "auto",
            "decisions": [{"op": "ZiLU", "choice": "plugin", "reason": "measured"}]}
    # the name build_engine gives the network (and TensorRT the engine), read back
    name = trt_bundle.ENGINE_NAME_PREFIX + json.dumps(engine_plan(plan), separators=(",", ":"))
    assert tensorrt_runtime.ENGINE_NAME_PREFIX == trt_bundle.ENGINE_NAME_PREFIX
    meta = engine_metadata(name)
    assert meta["gatex.unit"] == "ZiLU" and meta["gatex.dtype"] == "fp16"
    assert meta["gatex.trt.plugins"] == "auto"
    assert json.loads(meta["gatex.trt.decisions"]) == {"ZiLU": "plugin"}
    assert engine_metadata("my_network") == {}
    assert engine_metadata("gatex {not json") == {}


@pytest.mark.gpu
@pytest.mark.skipif(not (HAS_TRT and torch.cuda.is_available()),
                    reason=f"needs TensorRT and a CUDA device (tensorrt installed: {HAS_TRT}, "
                           f"cuda: {torch.cuda.is_available()})")
def test_engine_runs_and_gatex_parity_passes(tmp_path) -> None:
    from gatex import pipeline as exporters

    result = exporters.export("paGLU", to="trt", out_dir=tmp_path, precision="fp16",
                              check=False)
    engine = result.artifact.engine_path
    with TensorrtRuntime(engine) as rt:
        assert rt.metadata["gatex.unit"] == "paGLU" and rt.compute_dtype == "float16"
        assert [s.dtype for s in rt.input_specs] == ["float16"]
    outcome = CliRunner().invoke(app, ["parity", str(engine)])
    assert outcome.exit_code == 0, outcome.output
