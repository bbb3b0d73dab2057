"""`gatex.testing.assert_parity`: passes on a good export, raises AssertionError whose first line
is the one-line verdict on a bad one; tolerances from the specs unless given (then the user's)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from runtime_cases import tiny_onnx, tiny_torch

from gatex.errors import BadInputError
from gatex.ops import Tolerance
from gatex.runtimes import OrtRuntime, TorchRuntime
from gatex.testing import assert_parity


def test_passes_on_a_good_export_with_the_spec_tolerance(tiny):
    model = tiny_torch(tiny.weights)
    result = assert_parity(tiny.onnx, model, torch.from_numpy(tiny.x))
    assert result and result.tolerance.origin == "spec"
    assert (result.tolerance.rtol, result.tolerance.atol) == (1e-4, 1e-5)  # GoLU + MatMul
    (out,) = result.outputs
    with torch.no_grad():
        want = model(torch.from_numpy(tiny.x)).numpy()
    with OrtRuntime(tiny.onnx) as rt:
        got = rt.run({"x": tiny.x})["logits"]
    assert out.max_abs == pytest.approx(float(np.abs(got - want).max()), rel=1e-12)
    # inputs as a mapping, a list, or a NumPy array are the same check
    for inputs in ({"x": tiny.x}, [tiny.x], tiny.x):
        assert assert_parity(str(tiny.onnx), model, inputs).outputs[0].max_abs == out.max_abs


def test_raises_with_the_one_line_verdict_on_a_bad_export(tiny):
    broken = tiny_onnx(tiny.weights, perturb={"fc2.bias": 0.05})
    with pytest.raises(AssertionError) as err:
        assert_parity(broken, tiny_torch(tiny.weights), tiny.x)
    first, *rest = str(err.value).splitlines()
    assert first.startswith("FAIL <in-memory ONNX model> on onnxruntime (CPU) vs torch "
                            "(eager, CPU): logits: ")
    assert "values outside rtol=0.0001, atol=1e-05" in first and "would pass with" in first
    assert any(" logits " in line and line.rstrip().endswith("FAIL") for line in rest)


def test_a_given_tolerance_is_used_and_labelled_the_users(tiny):
    broken = tiny_onnx(tiny.weights, perturb={"fc2.bias": 0.05})
    model = tiny_torch(tiny.weights)
    # 0.05 on a bias moves logits by about 0.05: a user bound of 0.1 passes, and says whose it is
    result = assert_parity(broken, model, tiny.x, tolerance=(0.0, 0.1))
    assert result.tolerance.origin == "user"
    assert result.tolerance.describe() == "rtol=0, atol=0.1 (given by the user)"
    with pytest.raises(AssertionError, match="given by the user"):
        assert_parity(broken, model, tiny.x, tolerance=Tolerance(0.0, 0.01))


def test_runtimes_the_caller_passes(tiny):
    model = tiny_torch(tiny.weights)
    unloaded = OrtRuntime(tiny.onnx)
    assert assert_parity(unloaded, model, tiny.x)
    assert not unloaded.loaded  # loaded for the check, closed after it
    with TorchRuntime(model) as reference:
        assert assert_parity(tiny.onnx, reference, tiny.x)
        assert reference.loaded  # the caller's open runtime stays open


def test_bad_arguments_are_bad_input(tiny):
    model = tiny_torch(tiny.weights)
    with pytest.raises(BadInputError, match="assert_parity runs .onnx files"):
        assert_parity("model.pt", model, tiny.x)
    with pytest.raises(BadInputError, match="cannot run a int"):
        assert_parity(3, model, tiny.x)
    with pytest.raises(BadInputError, match=r"takes 1 inputs \(x\); got 2"):
        assert_parity(tiny.onnx, model, [tiny.x, tiny.x])
