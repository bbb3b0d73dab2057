"""The terminal report stays readable at 80 columns (no cell cut to ``arti…``; what does not fit
is dropped and named), and the inputs line says where the inputs came from once."""

from __future__ import annotations

import numpy as np
import pytest

from gatex.ops import Tolerance
from gatex.comparison import ParityResult, ToleranceChoice, compare
from gatex.comparison.report import inputs_text, render_text, short_names

TOL = ToleranceChoice(Tolerance(1e-4, 1e-5), "float32", "spec", ("paGLU",), ("Gemm",))
LONG = "/very/long/directory/name/for/ci/artifacts/build-1234/exports"


def result(artifact: str, *, error: float = 0.0, emulated: bool = False, nan: bool = False,
           logits: bool = True) -> ParityResult:
    rng = np.random.default_rng(0)
    expected = rng.normal(0, 3, (450, 10) if logits else (450,)).astype(np.float32)
    actual = expected + np.float32(error)
    if nan:
        expected[3] = actual[3] = np.nan
    out = compare(actual, expected, TOL.tolerance, name="linear_4")
    return ParityResult(artifact, "coreml (MIL emulator, fp16)" if emulated else
                        "onnxruntime (CPU)", "torch (eager, CPU): zoo paGLU", "float32", TOL,
                        (out,), emulated=emulated, inputs="zoo held-out digits for paGLU",
                        samples=450)


def lines_of(text: str) -> list[str]:
    return text.splitlines()


@pytest.mark.parametrize("width", [60, 80, 100])
def test_narrow_terminals_never_cut_a_cell(width):
    results = [result(f"{LONG}/paGLU-portable-fp32.onnx"),
               result(f"{LONG}/paSwishU-inline-fp16.onnx", error=0.02),
               result(f"{LONG}/PaGRUCell-portable-fp32.onnx", nan=True)]
    text = render_text(results, width=width)
    assert "…" not in text
    assert all(len(line) <= width for line in lines_of(text))
    rows = [line for line in lines_of(text) if " linear_4 " in line and "FAIL linear_4" not in line]
    assert len(rows) == 3
    for row, name, verdict in zip(rows, ("paGLU-portable-fp32.onnx", "paSwishU-inline-fp16.onnx",
                                         "PaGRUCell-portable-fp32.onnx"),
                                  ("pass", "FAIL", "pass")):
        assert row.split()[0] == name and row.split()[-1] == verdict
    # the failing row's max abs is there, whole
    assert "0.02" in rows[1].split()
    header = next(line for line in lines_of(text) if line.startswith("artifact"))
    if width >= 80:  # an output holds NaNs: that column is the last to go
        assert "NaN a/e" in header and "10/10" in rows[2].split()
    else:            # and when it goes, the caption says so
        assert "NaN a/e" not in header and "NaN a/e (gatex parity --json" in " ".join(text.split())


def test_dropped_columns_are_named_and_wide_terminals_show_everything():
    results = [result("a/paGLU-portable-fp32.onnx"), result("b/paGTU-portable-fp32.onnx")]
    narrow = render_text(results, width=80)
    words = " ".join(narrow.split())
    assert "not shown at 80 columns: cosine" in words
    assert "(gatex parity --json or --markdown has every metric)" in words
    wide = render_text(results, width=200)
    header = next(line for line in lines_of(wide) if line.startswith("artifact"))
    assert header.split("  ") and all(
        h in header for h in ("artifact", "runtime", "output", "max abs", "max rel", "cosine",
                              "max ULP", "top-1", "NaN a/e", "verdict"))
    assert "not shown" not in wide
    # the runtime and reference are always printed, under the table, per artifact
    for text in (narrow, wide):
        assert "paGLU-portable-fp32.onnx: onnxruntime (CPU) vs torch (eager, CPU): zoo paGLU" \
            in text


def test_one_artifact_is_the_title_and_an_emulated_one_says_so():
    text = render_text([result(f"{LONG}/paGLU-coreml-fp16.mlpackage", emulated=True)], width=80)
    title = lines_of(text)[0].strip()
    assert title == "gatex parity: paGLU-coreml-fp16.mlpackage (emulated)"
    assert "coreml (MIL emulator, fp16) (emulated) vs torch" in text
    assert "…" not in text


def test_an_empty_column_goes_first():
    # 1-D outputs have no top-1: at 80 columns that column is dropped before any metric
    text = render_text([result("x.onnx", logits=False)], width=80)
    header = next(line for line in lines_of(text) if line.startswith("output"))
    assert "top-1" not in header and "max ULP" in header and "cosine" in header


def test_inputs_line_names_the_source_once(pa_glu_export):
    text = render_text([pa_glu_export.parity], width=80)
    (line,) = [ln for ln in lines_of(text) if "inputs:" in ln]
    assert line == "  inputs: zoo held-out digits for paGLU (450 samples)"
    assert inputs_text(ParityResult("a", "r", "t", "float32", TOL, (), samples=12)) == \
        "12 samples"
    assert inputs_text(ParityResult("a", "r", "t", "float32", TOL, ())) == "-"


def test_colliding_basenames_keep_their_paths():
    results = [result("run1/model.onnx"), result("run2/model.onnx"), result("run2/other.onnx")]
    assert short_names(results) == ["run1/model.onnx", "run2/model.onnx", "other.onnx"]
