"""Models past protobuf's 2 GB limit are saved with external data (threshold lowered to test)."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest

import gatex
from gatex.exporters import onnx as onnx_exporter
from gatex.models import zoo


def test_large_model_uses_external_data(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(onnx_exporter, "EXTERNAL_DATA_BYTES", 1_000)
    result = gatex.export("GoLU", out_dir=tmp_path)
    assert result.artifact.external_data
    data = tmp_path / (result.path.name + ".data")
    assert data.stat().st_size > 10_000
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([result.path.name, data.name])
    assert result.parity, result.parity.summary()
    model = onnx.load(str(result.path), load_external_data=False)
    assert any(init.data_location == onnx.TensorProto.EXTERNAL for init in model.graph.initializer)
    x, _ = zoo.held_out("GoLU")
    session = ort.InferenceSession(str(result.path), providers=["CPUExecutionProvider"])
    out = session.run(None, {session.get_inputs()[0].name: x.numpy()})[0]
    assert np.isfinite(out).all()


def test_python_api_export_and_parity(tmp_path) -> None:
    result = gatex.export("ZiLU", out_dir=tmp_path)
    assert result.ops == ("ZiLU",) and result.parity
    verdict = gatex.parity(str(result.path))
    assert verdict and verdict.samples == 450
