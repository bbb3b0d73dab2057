"""The portable and inline files run where gatex is not installed: plain onnxruntime and
onnx.reference, in a process in which ``import gatex`` fails, with outputs within the op specs'
tolerance of the torch model. fp16: the parity verdict gatex reports is the one measured here,
and a failure says which output and by how much."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from export_cases import (
    DTYPES,
    NP_DTYPES,
    REFERENCE_SAMPLES,
    UNITS,
    ZooExports,
    is_slow,
    matrix_param,
    run_without_gatex,
    spec_tolerance,
    violations,
)
from torch import nn

from decision_flips import xfail_on_decision_flips

from gatex.pipeline import check_onnx
from gatex.exporters.onnx import export_onnx
from gatex.models import GoLU
from gatex.ops import REGISTRY

RUNNABLE = ("portable", "inline")
BACKENDS = ("onnxruntime", "reference")


class TwoGoLUs(nn.Module):
    """Two GoLU nodes that differ only in a float parameter: the portable function reads it from
    each node's attributes instead of folding it (one function per op type)."""

    def __init__(self) -> None:
        super().__init__()
        self.a, self.b = GoLU(gamma=1.0), GoLU(alpha=0.5, gamma=2.5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.a(x) + self.b(-x)


Outputs = dict[tuple[str, str, str, str], np.ndarray]


def _run(zoo_exports: ZooExports, work: Path, entries: list[tuple[str, str]],
         extra: dict[str, Path] | None = None) -> Outputs:
    """Run the zoo exports ``entries`` (unit, dtype) in every runnable flavor, and the ``extra``
    fp32 models on a GoLU sweep, in one subprocess without gatex: outputs by
    (name, flavor, dtype, backend)."""
    jobs, keys = [], []

    def add(name: str, path: Path, x: np.ndarray, flavor: str, dtype: str) -> None:
        for backend in BACKENDS:
            rows = x if backend == "onnxruntime" else x[:REFERENCE_SAMPLES]
            inputs = work / f"{name}-{dtype}-{backend}-in.npz"
            if not inputs.exists():
                np.savez(inputs, x=rows)
            out = work / f"{name}-{flavor}-{dtype}-{backend}-out.npz"
            jobs.append({"model": str(path), "inputs": str(inputs), "outputs": str(out),
                         "backend": backend})
            keys.append((name, flavor, dtype, backend))

    for unit, dtype in entries:
        x = zoo_exports.digits(unit).numpy().astype(NP_DTYPES[dtype])
        for flavor in RUNNABLE:
            add(unit, zoo_exports.artifact(unit, flavor, dtype).path, x, flavor, dtype)
    for flavor, path in (extra or {}).items():
        add("TwoGoLUs", path, SWEEP.numpy(), flavor, "fp32")
    report = run_without_gatex(jobs, work)
    assert report["gatex_modules"] == []
    return {key: np.load(job["outputs"])["out0"] for key, job in zip(keys, jobs)}


SWEEP = torch.linspace(-20.0, 20.0, 401).reshape(-1, 1)


@pytest.fixture(scope="module")
def two_golus(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    work = tmp_path_factory.mktemp("two-golus")
    return {flavor: export_onnx(TwoGoLUs(), (SWEEP[:4],), work / f"{flavor}.onnx",
                                flavor=flavor).path for flavor in RUNNABLE}


@pytest.fixture(scope="module")
def no_gatex(zoo_exports: ZooExports, two_golus: dict[str, Path],
             tmp_path_factory: pytest.TempPathFactory) -> Outputs:
    """The default set: every unit in fp32, `FP16_FAST` in fp16, and the two-GoLU model."""
    entries = [(u, d) for d in DTYPES for u in UNITS if not is_slow(u, d)]
    return _run(zoo_exports, tmp_path_factory.mktemp("no-gatex"), entries, two_golus)


@pytest.fixture(scope="module")
def no_gatex_slow(zoo_exports: ZooExports, tmp_path_factory: pytest.TempPathFactory) -> Outputs:
    entries = [(u, d) for d in DTYPES for u in UNITS if is_slow(u, d)]
    return _run(zoo_exports, tmp_path_factory.mktemp("no-gatex-slow"), entries)


def outputs_of(request: pytest.FixtureRequest, unit: str, dtype: str) -> Outputs:
    return request.getfixturevalue("no_gatex_slow" if is_slow(unit, dtype) else "no_gatex")


def runs(dtype: str) -> list:
    return [matrix_param(u, f, b, dtype=dtype) for u in UNITS for f in RUNNABLE for b in BACKENDS]


@pytest.mark.parametrize("unit, flavor, backend, dtype", runs("fp32"))
def test_fp32_runs_without_gatex_within_spec_tolerance(request, zoo_exports: ZooExports,
                                                       unit: str, flavor: str, backend: str,
                                                       dtype: str) -> None:
    out = outputs_of(request, unit, dtype)[(unit, flavor, dtype, backend)]
    expected = zoo_exports.torch_output(unit, dtype, len(out))
    assert out.dtype == np.float32 and out.shape == expected.shape
    bad, max_abs = violations(out, expected, spec_tolerance((unit,), dtype))
    xfail_on_decision_flips(unit, bad, out.size, f"max_abs {max_abs:.3g}")
    assert bad == 0, f"{bad} values off, max_abs {max_abs:.3g}"
    assert (out.argmax(1) == expected.argmax(1)).all()


@pytest.mark.parametrize("unit, flavor, backend, dtype", runs("fp16"))
def test_fp16_runs_without_gatex(request, zoo_exports: ZooExports, unit: str, flavor: str,
                                 backend: str, dtype: str) -> None:
    out = outputs_of(request, unit, dtype)[(unit, flavor, dtype, backend)]
    expected = zoo_exports.torch_output(unit, dtype, len(out))
    assert out.dtype == np.float16 and np.isfinite(out).all()
    # fp16 against the fp32 model: the same function, each value off by fp16 rounding through
    # the layers. Measured: cosine >= 0.99997 and top-1 >= 449/450 (onnxruntime), >= 63/64
    # (onnx.reference) for every unit; a wrong gate or parameter would move the logits by
    # whole percents (cosine < 0.999).
    a, e = out.astype(np.float64), expected.astype(np.float64)
    cosine = float(np.sum(a * e) / np.linalg.norm(a) / np.linalg.norm(e))
    assert cosine >= 0.9999, cosine
    assert float(np.mean(out.argmax(1) == expected.argmax(1))) >= 0.98


@pytest.mark.parametrize("flavor", RUNNABLE)
def test_attribute_read_function_variant_runs_everywhere(no_gatex: Outputs,
                                                         two_golus: dict[str, Path],
                                                         flavor: str) -> None:
    model = onnx.load(str(two_golus[flavor]))
    if flavor == "portable":
        (body,) = model.functions
        reads = {a.ref_attr_name for n in body.node for a in n.attribute if a.ref_attr_name}
        assert reads == {"alpha", "gamma"}  # the two parameters the nodes disagree on
    with torch.no_grad():
        expected = TwoGoLUs()(SWEEP).numpy()
    for backend in BACKENDS:
        out = no_gatex[("TwoGoLUs", flavor, "fp32", backend)]
        np.testing.assert_allclose(out, expected[:len(out)], rtol=1e-5, atol=1e-6,
                                   err_msg=backend)


# -- fp16 parity: what gatex reports is what is measured ---------------------------------------

# Measured with onnxruntime 1.32 on the 450 held-out digits, against the fp32 model with the fp16
# spec tolerance alone (rtol 1e-2, atol 5e-3): CGConv2d and PGConv2d miss it by hundreds of
# elements (max_abs 0.21 / 0.16), six paGating units by a few (0.04 to 0.06); the other 11 pass.
# The fp16 file is not what loses the accuracy: torch's own fp16 model (model.half()) misses
# the same tolerance by as much or more (CGConv2d 308 elements (0.20), PGConv2d 1023 (0.145)).
# It is fp16 inference of these networks against the fp32 model, through several layers; the
# hard gates of CGConv2d/PGConv2d turn a rounding difference near the threshold into a whole
# added partial sum. The measured precision floor (2x the atol torch's own fp16 run needs)
# then passes all 19: CGConv2d needs atol 0.174 (torch fp16: 0.175), PGConv2d 0.127 (0.110).
# CGConv2d needed 0.574 before the exporter folded the stem's BatchNorm in fp32 (torch.onnx's
# optimizer folded it on the fp16 copy, rounding every step: see test_onnx_fold.py).
# Decision-forced parity (issue 15) no longer needs the floor for them: against torch fp32 with
# the artifact's gates and levels forced they pass the spec's fp16 tolerance as they are.
FP16_SPEC_FAILURES = ("CGConv2d", "PGConv2d")


def torch_half_output(zoo_exports: ZooExports, unit: str) -> np.ndarray:
    """torch's own fp16 model (model.half()) on the digits, as fp32 values."""
    import copy

    x = zoo_exports.digits(unit).half()
    with torch.no_grad():
        half = copy.deepcopy(zoo_exports.model(unit)).half()(x).float().numpy()
    return half


@pytest.mark.parametrize("unit, dtype", [matrix_param(u, dtype="fp16") for u in UNITS])
def test_fp16_parity_verdict_is_the_measured_one(zoo_exports: ZooExports, unit: str,
                                                 dtype: str) -> None:
    artifact = zoo_exports.artifact(unit, "portable", dtype)
    result = check_onnx(zoo_exports.model(unit), artifact.path, (zoo_exports.digits(unit),))
    assert result.samples == 450
    (verdict,) = result.outputs
    spec = spec_tolerance((unit,), "fp16")
    applied = verdict.tolerance
    if REGISTRY.get(unit).decisions:   # decision-forced: torch fp32 with the artifact's
        assert result.decisions.forced and result.decisions.passed, result.decisions.summary()
        assert applied == spec and verdict.floor is None and verdict.outside == 0
        assert result, result.summary()
        # elementwise against torch's own decisions the same file misses the spec by far
        session = ort.InferenceSession(str(artifact.path), providers=["CPUExecutionProvider"])
        (out,) = session.run(None, {"x": zoo_exports.digits(unit).numpy().astype(np.float16)})
        spec_bad, _ = violations(out, zoo_exports.torch_output(unit, "fp16"), spec)
        assert spec_bad > 100 or unit not in FP16_SPEC_FAILURES
        return
    # rtol is the spec's; atol is the spec's, or a precision floor that says so and whose
    # number is torch's own fp16 error measured here (never a silent widening)
    assert applied.rtol == spec.rtol
    floor = getattr(verdict, "floor", None)
    if applied.atol != spec.atol:
        assert floor is not None and floor.raised and applied.atol > spec.atol
        half = torch_half_output(zoo_exports, unit).astype(np.float64)
        ref = zoo_exports.torch_output(unit, "fp16").astype(np.float64)
        _, torch_error = violations(half, ref, spec)
        assert floor.torch_max_abs == pytest.approx(torch_error, rel=1e-3)
        # the floor is 2x the atol torch's fp16 output needs at the spec rtol (not its max_abs)
        torch_atol = max(0.0, float(np.max(np.abs(half - ref) - spec.rtol * np.abs(ref))))
        assert floor.torch_atol == pytest.approx(torch_atol, rel=1e-3)
        assert applied.atol == pytest.approx(floor.factor * floor.torch_atol)
        assert "torch's own fp16 error" in verdict.message
    # the verdict and max_abs are what onnxruntime's output measures against the fp32 model
    session = ort.InferenceSession(str(artifact.path), providers=["CPUExecutionProvider"])
    (out,) = session.run(None, {"x": zoo_exports.digits(unit).numpy().astype(np.float16)})
    expected = zoo_exports.torch_output(unit, "fp16")
    bad, max_abs = violations(out, expected, applied)
    assert bool(result) == (bad == 0) and verdict.outside == bad
    assert verdict.max_abs == pytest.approx(max_abs, rel=1e-6)
    if not result:
        summary = result.summary()
        assert summary.startswith("FAIL") and f"{verdict.name}: {bad} of 4500 values" in summary
        assert f"max_abs {max_abs:.3g}" in summary
    spec_bad, _ = violations(out, expected, spec)
    if unit in FP16_SPEC_FAILURES:
        assert spec_bad > 100


@pytest.mark.parametrize("unit", FP16_SPEC_FAILURES)
def test_fp16_conv_gates_fail_in_torch_fp16_too(zoo_exports: ZooExports, unit: str) -> None:
    """The reason the conv gates fail the fp16 spec tolerance is fp16 itself: torch's fp16
    model misses it by hundreds of elements too."""
    bad, _ = violations(torch_half_output(zoo_exports, unit),
                        zoo_exports.torch_output(unit, "fp16"), spec_tolerance((unit,), "fp16"))
    assert bad > 100
