"""``gatex parity``: default inputs, several artifacts, verdict files (JUnit, JSON schema
gatex.parity/1, Markdown), how the tolerance is chosen and labelled, NaN inputs, and bad input
(one line, exit 2, nothing written)."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from runtime_cases import break_gatex_node, golu_only_onnx, save, zoo_golu_onnx
from typer.testing import CliRunner

from gatex.cli import app
from gatex.models import zoo
from gatex.ops import REGISTRY
from gatex.ops.spec import REDUCTION_TOLERANCES
from cli_checks import one_error_line


def parity(*args: object, columns: int = 200):
    return CliRunner().invoke(app, ["parity", *map(str, args)], env={"COLUMNS": str(columns)})


@pytest.fixture(scope="module")
def broken_zoo_golu(tmp_path_factory) -> Path:
    """The zoo GoLU graph with its second GoLU node's output scaled by 1.25."""
    return save(break_gatex_node(zoo_golu_onnx(), 1),
                tmp_path_factory.mktemp("broken") / "GoLU-broken.onnx")


@pytest.fixture(scope="module")
def golu_only(tmp_path_factory) -> dict[str, Path]:
    """x -> GoLU (no MatMul anywhere), exact and with its output scaled by 1 + 3e-5, and inputs
    that reach GoLU's saturated range (|y| up to 6)."""
    d = tmp_path_factory.mktemp("golu_only")
    x = np.linspace(-6, 6, 16 * 64, dtype=np.float32).reshape(16, 64)
    np.savez(d / "x.npz", x=x)
    return {"exact": save(golu_only_onnx(), d / "golu.onnx"),
            "scaled": save(golu_only_onnx(scale=1 + 3e-5), d / "golu-scaled.onnx"),
            "inputs": d / "x.npz"}


GOLU_MODEL = ("--model", "gatex.models:GoLU")


# -- default inputs, several artifacts, verdict files ---------------------------------------------

def test_default_inputs_are_the_held_out_digits_of_the_recorded_unit(zoo_golu, tmp_path):
    result = parity(zoo_golu, "--json", tmp_path / "v.json")
    assert result.exit_code == 0, result.output
    (r,) = json.loads((tmp_path / "v.json").read_text())["results"]
    assert r["inputs"]["source"] == "zoo held-out digits for GoLU"
    assert r["inputs"]["samples"] == 450 and r["inputs"]["nan_counts"] == {}
    assert r["reference"] == "torch (eager, CPU): zoo GoLU"
    # the numbers are the artifact's and the zoo model's on those 450 digits
    x = zoo.held_out("GoLU")[0]
    import onnxruntime

    got = onnxruntime.InferenceSession(str(zoo_golu)).run(None, {"x": x.numpy()})[0]
    with torch.no_grad():
        want = zoo.load("GoLU")(x).numpy()
    (out,) = r["outputs"]
    assert out["shape"] == [450, 10] and out["passed"]
    assert out["max_abs"] == pytest.approx(float(np.abs(got - want).max()), rel=1e-12)
    assert out["top1"] == float(np.mean(got.argmax(1) == want.argmax(1))) == 1.0
    assert "inputs: zoo held-out digits for GoLU (450 samples)" in result.stdout


def test_several_artifacts_in_one_call_and_every_verdict_file(zoo_golu, broken_zoo_golu,
                                                             tmp_path):
    files = {"--json": tmp_path / "v.json", "--junit": tmp_path / "junit.xml",
             "--markdown": tmp_path / "summary.md"}
    result = parity(zoo_golu, broken_zoo_golu, *(x for kv in files.items() for x in kv))
    assert result.exit_code == 1, result.output
    line = one_error_line(result)
    assert line.startswith(f"error: parity failed: FAIL {broken_zoo_golu}")
    assert "logits:" in line and "would pass with" in line

    doc = json.loads(files["--json"].read_text())
    assert doc["passed"] is False
    assert [(r["artifact"], r["passed"]) for r in doc["results"]] == [
        (str(zoo_golu), True), (str(broken_zoo_golu), False)]

    # JUnit: one testsuite per artifact, one testcase per artifact x output, failures marked
    root = ET.parse(files["--junit"]).getroot()
    assert root.tag == "testsuites" and (root.get("tests"), root.get("failures")) == ("2", "1")
    suites = root.findall("testsuite")
    assert [s.get("name") for s in suites] == [str(zoo_golu), str(broken_zoo_golu)]
    for suite, failed in zip(suites, (False, True)):
        (case,) = suite.findall("testcase")
        assert case.get("name") == "logits"
        assert (case.find("failure") is not None) is failed
        assert suite.get("failures") == str(int(failed))
        props = {p.get("name"): p.get("value") for p in suite.iter("property")}
        assert props["tolerance_origin"] == "spec" and props["emulated"] == "false"
        assert props["inputs"] == "zoo held-out digits for GoLU (450 samples)"
    failure = suites[1].find("testcase/failure")
    assert failure.get("type") == "ParityFailure"
    assert failure.get("message").startswith("logits: 4500 of 4500 values outside")
    assert "max_abs:" in failure.text

    md = files["--markdown"].read_text()
    lines = md.splitlines()
    assert lines[0] == "## gatex parity: FAILED"
    assert lines[2] == ("| artifact | runtime | output | max abs | max rel | cosine | max ULP | "
                        "top-1 | NaN a/e | verdict |")
    rows = [ln for ln in lines if ln.startswith(f"| {zoo_golu.parent}") or
            ln.startswith(f"| {broken_zoo_golu.parent}")]
    assert len(rows) == 2
    assert rows[0].endswith("| 0/0 | pass |") and rows[1].endswith("| 0/0 | FAIL |")
    assert f"| {doc['results'][1]['outputs'][0]['max_abs']:.3g} |" in rows[1]
    assert "  - FAIL logits: 4500 of 4500 values outside" in md


# JSON Schema (draft 2020-12 subset: type, properties, required, additionalProperties, items,
# enum, const) of gatex.parity/1 as documented in gatex/runtimes/report.py. Written out here so
# that any change to the format must change this test too.
NUM = {"type": ["number", "null"]}
COUNTS = {"type": "object", "additionalProperties": False,
          "required": ["actual", "expected", "mismatched"],
          "properties": {k: {"type": "integer"} for k in ("actual", "expected", "mismatched")}}
OP_ENTRY = {"type": "object", "additionalProperties": False,
            "required": ["index", "op", "node", "module", "passed", "max_abs", "max_rel",
                         "message"],
            "properties": {"index": {"type": "integer"}, "op": {"type": "string"},
                           "node": {"type": "string"}, "module": {"type": "string"},
                           "passed": {"type": "boolean"}, "max_abs": NUM, "max_rel": NUM,
                           "message": {"type": "string"}}}
OUTPUT = {
    "type": "object", "additionalProperties": False,
    "required": ["name", "passed", "message", "shape", "expected_shape", "dtype", "max_abs",
                 "max_rel", "mean_abs", "cosine", "max_ulp", "nan", "inf", "outside", "worst",
                 "top1", "needed"],
    "properties": {
        "name": {"type": "string"}, "passed": {"type": "boolean"}, "message": {"type": "string"},
        "shape": {"type": "array", "items": {"type": "integer"}},
        "expected_shape": {"type": "array", "items": {"type": "integer"}},
        "dtype": {"type": "string"}, "max_abs": NUM, "max_rel": NUM, "mean_abs": NUM,
        "cosine": NUM, "max_ulp": {"type": ["integer", "null"]}, "nan": COUNTS, "inf": COUNTS,
        "outside": {"type": "integer"},
        "worst": {"type": ["object", "null"], "additionalProperties": False,
                  "required": ["index", "actual", "expected"],
                  "properties": {"index": {"type": "array", "items": {"type": "integer"}},
                                 "actual": NUM, "expected": NUM}},
        "top1": NUM,
        "needed": {"type": ["object", "null"], "additionalProperties": False,
                   "required": ["atol", "rtol"], "properties": {"atol": NUM, "rtol": NUM}},
        # optional (added within gatex.parity/1): the precision floor of fp16/bf16 artifacts
        "floor": {"type": ["object", "null"], "additionalProperties": False,
                  "required": ["dtype", "torch_max_abs", "torch_atol", "rtol", "factor", "atol",
                               "raised"],
                  "properties": {"dtype": {"enum": ["float16", "bfloat16"]},
                                 "torch_max_abs": NUM, "torch_atol": NUM,
                                 "rtol": {"type": "number"}, "factor": {"type": "number"},
                                 "atol": NUM, "raised": {"type": "boolean"}}},
        # optional (added within gatex.parity/1): elements the user excused (--max-outliers)
        "outliers_allowed": {"type": "integer"}}}
DECISION_LAYER = {
    "type": "object", "additionalProperties": False,
    "required": ["index", "op", "name", "module", "node", "elements", "flips", "boundary_flips",
                 "beyond", "violations", "worst_ratio", "passed"],
    "properties": {"index": {"type": "integer"}, "op": {"type": "string"},
                   "name": {"enum": ["gate", "levels", "wlevels"]},
                   "module": {"type": "string"}, "node": {"type": "string"},
                   "elements": {"type": "integer"}, "flips": {"type": "integer"},
                   "boundary_flips": {"type": "integer"}, "beyond": {"type": "integer"},
                   "violations": {"type": "integer"}, "worst_ratio": {"type": "number"},
                   "passed": {"type": "boolean"}}}
RESULT = {
    "type": "object", "additionalProperties": False,
    "required": ["artifact", "runtime", "reference", "emulated", "dtype", "passed", "tolerance",
                 "inputs", "outputs", "locate", "notes"],
    "properties": {
        "artifact": {"type": "string"}, "runtime": {"type": "string"},
        "reference": {"type": "string"}, "emulated": {"type": "boolean"},
        "dtype": {"enum": ["float32", "float16", "bfloat16", "float64"]},
        "passed": {"type": "boolean"},
        "tolerance": {
            "type": "object", "additionalProperties": False,
            "required": ["rtol", "atol", "dtype", "origin", "ops", "reductions", "text"],
            "properties": {"rtol": {"type": "number"}, "atol": {"type": "number"},
                           "dtype": {"type": "string"},
                           "origin": {"enum": ["spec", "user", "user+spec", "spec+floor",
                                               "user+spec+floor"]},
                           "ops": {"type": "array", "items": {"type": "string"}},
                           "reductions": {"type": "array", "items": {"type": "string"}},
                           "text": {"type": "string"},
                           # optional (added within gatex.parity/1): --max-outliers
                           "outliers": {"type": "number"},
                           "outlier_ops": {"type": "array", "items": {"type": "string"}}}},
        "inputs": {"type": "object", "additionalProperties": False,
                   "required": ["source", "samples", "nan_counts"],
                   "properties": {"source": {"type": "string"},
                                  "samples": {"type": ["integer", "null"]},
                                  "nan_counts": {"type": "object",
                                                 "additionalProperties": {"type": "integer"}}}},
        "outputs": {"type": "array", "items": OUTPUT},
        "locate": {
            "type": ["object", "null"], "additionalProperties": False,
            "required": ["matched", "reason", "summary", "first_divergence", "ops"],
            "properties": {
                "matched": {"type": "boolean"}, "reason": {"type": "string"},
                "summary": {"type": "string"},
                "first_divergence": {
                    "type": ["object", "null"], "additionalProperties": False,
                    "required": ["index", "op", "node", "module"],
                    "properties": {"index": {"type": "integer"}, "op": {"type": "string"},
                                   "node": {"type": "string"}, "module": {"type": "string"}}},
                "ops": {"type": "array", "items": OP_ENTRY},
                # optional (added within gatex.parity/1): the first wrong decision
                "decision": {"type": "string"}}},
        "notes": {"type": "array", "items": {"type": "string"}},
        # optional (added within gatex.parity/1): decision-forced parity (CG/PG models)
        "decisions": {
            "type": ["object", "null"], "additionalProperties": False,
            "required": ["forced", "passed", "reason", "summary", "seconds", "first_beyond",
                         "layers"],
            "properties": {
                "forced": {"type": "boolean"}, "passed": {"type": "boolean"},
                "reason": {"type": "string"}, "summary": {"type": "string"},
                "seconds": {"type": "number"},
                "first_beyond": {"anyOf": [{"type": "null"}, DECISION_LAYER]},
                "layers": {"type": "array", "items": DECISION_LAYER}}},
        # optional (added within gatex.parity/1): the pruned-weights check (GatedDense models)
        "pruned": {
            "type": ["object", "null"], "additionalProperties": False,
            "required": ["passed", "summary", "layers"],
            "properties": {
                "passed": {"type": "boolean"}, "summary": {"type": "string"},
                "layers": {"type": "array", "items": {
                    "type": "object", "additionalProperties": False,
                    "required": ["name", "pruned", "removed", "violations", "first", "note"],
                    "properties": {"name": {"type": "string"}, "pruned": {"type": "integer"},
                                   "removed": {"type": "integer"},
                                   "violations": {"type": "integer"},
                                   "first": {"type": ["array", "null"],
                                             "items": {"type": "integer"}},
                                   "note": {"type": ["string", "null"]}}}}}}}}
SCHEMA = {"type": "object", "additionalProperties": False,
          "required": ["schema", "gatex_version", "passed", "results"],
          "properties": {"schema": {"const": "gatex.parity/1"},
                         "gatex_version": {"type": "string"}, "passed": {"type": "boolean"},
                         "results": {"type": "array", "items": RESULT}}}

JSON_TYPES = {"object": dict, "array": list, "string": str, "boolean": bool, "null": type(None)}


def schema_errors(value, schema, where="$") -> list[str]:
    """Violations of ``schema`` by ``value`` (the subset of JSON Schema used above)."""
    errors = []
    if "const" in schema and value != schema["const"]:
        errors.append(f"{where}: {value!r} != {schema['const']!r}")
    if "enum" in schema and value not in schema["enum"]:
        errors.append(f"{where}: {value!r} not in {schema['enum']}")
    if "type" in schema:
        types = schema["type"] if isinstance(schema["type"], list) else [schema["type"]]

        def is_a(t):
            if t == "integer":
                return isinstance(value, int) and not isinstance(value, bool)
            if t == "number":
                return isinstance(value, (int, float)) and not isinstance(value, bool)
            return isinstance(value, JSON_TYPES[t])

        if not any(is_a(t) for t in types):
            return [f"{where}: {value!r} is not {'/'.join(types)}"]
    if isinstance(value, dict):
        props = schema.get("properties", {})
        errors += [f"{where}: missing {k!r}" for k in schema.get("required", ()) if k not in value]
        for k, v in value.items():
            if k in props:
                errors += schema_errors(v, props[k], f"{where}.{k}")
            elif schema.get("additionalProperties") is False:
                errors.append(f"{where}: unexpected key {k!r}")
            elif isinstance(schema.get("additionalProperties"), dict):
                errors += schema_errors(v, schema["additionalProperties"], f"{where}.{k}")
    if isinstance(value, list) and "items" in schema:
        for i, item in enumerate(value):
            errors += schema_errors(item, schema["items"], f"{where}[{i}]")
    return errors


def test_schema_validator_rejects_what_it_should():
    assert schema_errors({"schema": "gatex.parity/2", "gatex_version": "1", "passed": 1,
                          "results": [], "extra": 0}, SCHEMA) == [
        "$.schema: 'gatex.parity/2' != 'gatex.parity/1'", "$.passed: 1 is not boolean",
        "$: unexpected key 'extra'"]
    assert schema_errors({"actual": 1, "expected": True}, COUNTS) == [
        "$: missing 'mismatched'", "$.expected: True is not integer"]


def test_json_verdict_follows_the_pinned_schema(zoo_golu, broken_zoo_golu, tiny, tmp_path):
    # a pass, a failure with --locate (needed tolerance, worst element, locate entries), NaN
    # inputs with a user tolerance, and an fp16 artifact (its precision floor): every optional
    # part of the format is filled somewhere
    a, b, c = tmp_path / "a.json", tmp_path / "b.json", tmp_path / "c.json"
    assert parity(zoo_golu, broken_zoo_golu, "--locate", "--json", a).exit_code == 1
    fp16 = save(zoo_golu_onnx(dtype=onnx.TensorProto.FLOAT16), tmp_path / "GoLU-fp16.onnx")
    assert parity(fp16, "--json", c).exit_code == 0
    x = tiny.x.copy()
    x[0, :3] = np.nan
    np.savez(tmp_path / "nan.npz", x=x)
    assert parity(tiny.onnx, "--model", tiny.model_ref, "--weights", tiny.weights_path,
                  "--inputs", tmp_path / "nan.npz", "--rtol", "1e-3", "--atol", "1e-4",
                  "--json", b).exit_code == 0
    for path in (a, b, c):
        doc = json.loads(path.read_text())
        assert schema_errors(doc, SCHEMA) == [], path
    assert json.loads(c.read_text())["results"][0]["outputs"][0]["floor"]["raised"]
    broken = json.loads(a.read_text())["results"][1]
    assert broken["locate"]["first_divergence"]["index"] == 1
    assert broken["outputs"][0]["needed"]["atol"] > 0 and broken["outputs"][0]["worst"]
    assert json.loads(b.read_text())["results"][0]["inputs"]["nan_counts"] == {"x": 3}


# -- tolerances: chosen from the specs, never widened, the user's labelled as the user's ----------

def tolerance_of(tmp_path: Path, *args: object) -> tuple[dict, int]:
    path = tmp_path / "t.json"
    result = parity(*args, "--json", path)
    assert result.exit_code in (0, 1), result.output
    return json.loads(path.read_text())["results"][0], result.exit_code


def test_without_reductions_the_tolerance_is_the_op_spec(golu_only, tmp_path):
    r, code = tolerance_of(tmp_path, golu_only["exact"], *GOLU_MODEL, "--inputs",
                           golu_only["inputs"])
    spec = REGISTRY.get("GoLU").tolerance("float32")
    t = r["tolerance"]
    assert code == 0 and (t["rtol"], t["atol"]) == (spec.rtol, spec.atol) == (1e-5, 1e-6)
    assert (t["ops"], t["reductions"], t["origin"]) == (["GoLU"], [], "spec")
    assert t["text"] == "rtol=1e-05, atol=1e-06 (float32; loosest spec of GoLU)"


def test_a_matmul_brings_in_the_reduction_tolerance(tiny, tmp_path):
    r, code = tolerance_of(tmp_path, tiny.onnx, "--model", tiny.model_ref, "--weights",
                           tiny.weights_path, "--inputs", tiny.inputs)
    golu, red = REGISTRY.get("GoLU").tolerance("float32"), REDUCTION_TOLERANCES["float32"]
    t = r["tolerance"]
    assert code == 0 and t["ops"] == ["GoLU"] and t["reductions"] == ["MatMul", "addmm"]
    assert (t["rtol"], t["atol"]) == (max(golu.rtol, red.rtol), max(golu.atol, red.atol))


def test_an_error_above_the_op_spec_fails_even_though_a_looser_one_exists(golu_only, tmp_path):
    # 3e-5 relative is inside the reduction tolerance (1e-4) but outside GoLU's (1e-5): a
    # model without reductions must fail, and say what would have passed
    r, code = tolerance_of(tmp_path, golu_only["scaled"], *GOLU_MODEL, "--inputs",
                           golu_only["inputs"])
    (out,) = r["outputs"]
    assert code == 1 and not out["passed"]
    assert (r["tolerance"]["rtol"], r["tolerance"]["atol"]) == (1e-5, 1e-6)
    assert 2.5e-5 < out["needed"]["rtol"] < 3.1e-5
    assert 3e-5 * 0.99 < out["max_rel"] < 5e-5  # fp32 rounding of the products adds a little


def test_user_tolerance_is_labelled_the_users_in_every_report(golu_only, tmp_path):
    files = {"--json": tmp_path / "v.json", "--junit": tmp_path / "v.xml",
             "--markdown": tmp_path / "v.md"}
    result = parity(golu_only["scaled"], *GOLU_MODEL, "--inputs", golu_only["inputs"],
                    "--rtol", "1e-4", "--atol", "1e-6", *(x for kv in files.items() for x in kv))
    assert result.exit_code == 0, result.output  # the user's looser bound is the one applied
    text = "rtol=0.0001, atol=1e-06 (given by the user)"
    t = json.loads(files["--json"].read_text())["results"][0]["tolerance"]
    assert (t["origin"], t["text"], t["rtol"], t["atol"]) == ("user", text, 1e-4, 1e-6)
    props = {p.get("name"): p.get("value") for p in ET.parse(files["--junit"]).iter("property")}
    assert props["tolerance"] == text and props["tolerance_origin"] == "user"
    assert f"tolerance {text}" in files["--markdown"].read_text()
    assert f"tolerance: {text}" in result.stdout


def test_one_user_bound_keeps_the_other_from_the_spec(golu_only, tmp_path):
    r, code = tolerance_of(tmp_path, golu_only["scaled"], *GOLU_MODEL, "--inputs",
                           golu_only["inputs"], "--rtol", "5e-5")
    t = r["tolerance"]
    assert code == 0 and (t["origin"], t["rtol"], t["atol"]) == ("user+spec", 5e-5, 1e-6)
    assert t["text"] == ("rtol=5e-05, atol=1e-06 (float32; given by the user, the rest from the "
                         "specs of GoLU)")


def test_a_dtype_other_than_the_outputs_is_noted(golu_only, tmp_path):
    r, _ = tolerance_of(tmp_path, golu_only["scaled"], *GOLU_MODEL, "--inputs",
                        golu_only["inputs"], "--dtype", "fp16")
    spec = REGISTRY.get("GoLU").tolerance("float16")
    assert (r["dtype"], r["tolerance"]["rtol"], r["tolerance"]["atol"]) == (
        "float16", spec.rtol, spec.atol)
    assert r["notes"] == ["tolerances are the float16 ones, as asked (--dtype); the artifact "
                          "outputs float32"]


# -- NaN inputs: reported, not refused ------------------------------------------------------------

def test_nan_inputs_are_reported_in_the_verdict_and_the_table(tiny, tmp_path):
    x = tiny.x.copy()
    x[2, 5] = np.nan
    np.savez(tmp_path / "nan.npz", x=x)
    files = {"--json": tmp_path / "v.json", "--junit": tmp_path / "v.xml",
             "--markdown": tmp_path / "v.md"}
    result = parity(tiny.onnx, "--model", tiny.model_ref, "--weights", tiny.weights_path,
                    "--inputs", tmp_path / "nan.npz", *(x for kv in files.items() for x in kv),
                    columns=80)
    assert result.exit_code == 0, result.output  # NaN rows propagate alike on both sides
    r = json.loads(files["--json"].read_text())["results"][0]
    (out,) = r["outputs"]
    assert r["inputs"]["nan_counts"] == {"x": 1}
    assert (out["nan"]["actual"], out["nan"]["expected"], out["nan"]["mismatched"]) == (10, 10, 0)
    header = next(ln for ln in result.stdout.splitlines() if ln.startswith("output"))
    row = next(ln for ln in result.stdout.splitlines() if ln.startswith("logits"))
    assert "NaN a/e" in header and "10/10" in row.split()  # kept even at 80 columns
    assert "warning: input 'x' holds 1 NaN values (reported, not refused)" in result.stdout
    props = {p.get("name"): p.get("value") for p in ET.parse(files["--junit"]).iter("property")}
    assert props["input_nans"] == "x=1"
    assert "warning: input `x` holds 1 NaN values" in files["--markdown"].read_text()


# -- bad input: one line, exit 2, nothing written -------------------------------------------------

def npz(tmp_path: Path, **arrays) -> Path:
    path = tmp_path / "in.npz"
    np.savez(path, **arrays)
    return path


def tiny_args(tiny, inputs) -> list[object]:
    return [tiny.onnx, "--model", tiny.model_ref, "--weights", tiny.weights_path, "--inputs",
            inputs]


def corrupt(tmp_path: Path, name: str) -> Path:
    path = tmp_path / name
    path.write_bytes(b"\x08\x01\x12\x04junk" * 20)
    return path


BAD = {
    "wrong shape": (lambda t, d, z: tiny_args(t, npz(d, x=t.x[:, :32])),
                    r"input 'x' expects float32\[N,64\], got float32\[32,32\]"),
    "wrong dtype": (lambda t, d, z: tiny_args(t, npz(d, x=t.x.astype(np.float64))),
                    r"input 'x' expects float32\[N,64\], got float64\[32,64\]"),
    "unknown input name": (lambda t, d, z: tiny_args(t, npz(d, x=t.x, y=t.x)),
                           r"unknown input 'y'; the model takes 'x' \(float32\[N,64\]\)"),
    "missing input": (lambda t, d, z: tiny_args(t, npz(d)),
                      r"missing input 'x' \(float32\[N,64\]\)"),
    "strings": (lambda t, d, z: tiny_args(t, npz(d, x=np.array(["a"] * 64))),
                r"input 'x' must be a numeric array"),
    "pickled npz": (lambda t, d, z: tiny_args(t, npz(d, x=np.array([{}], dtype=object))),
                    r"in.npz is not a readable .npz of arrays"),
    "corrupt npz": (lambda t, d, z: tiny_args(t, corrupt(d, "in.npz")),
                    r"in.npz is not a readable .npz of arrays"),
    "missing npz": (lambda t, d, z: tiny_args(t, d / "absent.npz"),
                    r"inputs file .*absent.npz does not exist"),
    "missing artifact": (lambda t, d, z: [d / "absent.onnx"],
                         r"artifact .*absent.onnx does not exist"),
    "corrupt artifact": (lambda t, d, z: [corrupt(d, "bad.onnx"), "--unit", "GoLU"],
                         r"onnxruntime cannot load .*bad.onnx: \[ONNXRuntimeError\]"),
    "unknown suffix": (lambda t, d, z: [corrupt(d, "model.pt")],
                       r"gatex parity reads \.onnx.* artifacts; got \.pt"),
    "unknown reference": (lambda t, d, z: [z, "--reference", "tensorflow"],
                          r"unknown reference 'tensorflow'; gatex parity compares against torch"),
    "no metadata, no model": (lambda t, d, z: [t.onnx],
                              r"records no gatex.unit in its metadata; pass --unit NAME or "
                              r"--model module:attr"),
    "unknown unit": (lambda t, d, z: [z, "--unit", "NoSuchUnit"], r"NoSuchUnit"),
    "bad dtype": (lambda t, d, z: [z, "--dtype", "int8"], r"unknown dtype 'int8'"),
    "negative rtol": (lambda t, d, z: [z, "--rtol", "-1"], r"rtol must be a finite number >= 0"),
    "verdict below a file": (lambda t, d, z: [z, "--junit", corrupt(d, "f") / "v.xml"],
                             r"cannot write .*v.xml: .*f is not a directory"),
    "verdict is a directory": (lambda t, d, z: [z, "--markdown", d],
                               r"cannot write .*: it is a directory"),
    "second artifact bad": (lambda t, d, z: [z, corrupt(d, "bad.onnx")],
                            r"onnxruntime cannot load .*bad.onnx"),
    "verdict over the artifact": (lambda t, d, z: [z, "--junit", z],
                                  r"the verdict file .*GoLU.onnx would overwrite an input"),
    "verdict over the inputs": (lambda t, d, z: [*tiny_args(t, t.inputs), "--markdown", t.inputs],
                                r"the verdict file .*x.npz would overwrite an input"),
    "two verdicts, one path": (lambda t, d, z: [z, "--junit", d / "out" / "verdict.json"],
                               r"two verdict files would both be written to .*verdict.json"),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_input_is_one_line_exit_2_and_nothing_written(case, tiny, zoo_golu, tmp_path):
    build, message = BAD[case]
    args = build(tiny, tmp_path, zoo_golu)
    verdict = tmp_path / "out" / "verdict.json"
    verdict.parent.mkdir()  # a missing verdict folder is itself bad input (test_cli_start.py)
    before = set(tmp_path.rglob("*"))
    result = parity(*args, "--json", verdict)
    assert result.exit_code == 2, result.output
    line = one_error_line(result)
    import re

    assert re.search(message, line), line
    assert set(tmp_path.rglob("*")) == before  # no verdict, no temporary file


def test_bad_input_leaves_the_artifact_and_inputs_untouched(tiny, zoo_golu):
    before = zoo_golu.read_bytes(), tiny.inputs.read_bytes()
    assert parity(zoo_golu, "--json", zoo_golu).exit_code == 2
    assert parity(*tiny_args(tiny, tiny.inputs), "--json", tiny.inputs).exit_code == 2
    assert (zoo_golu.read_bytes(), tiny.inputs.read_bytes()) == before


def test_unknown_unit_names_the_choices(zoo_golu):
    line = one_error_line(parity(zoo_golu, "--unit", "NoSuchUnit"))
    assert "GoLU" in line and "paGLU" in line


def test_a_unit_other_than_the_recorded_one_runs_and_is_noted(zoo_golu, tmp_path):
    # the artifact is the GoLU MLP; paGLU's zoo model is another network: the check runs, fails
    # (exit 1, not a crash) and the verdict says which reference was used instead of which
    result = parity(zoo_golu, "--unit", "paGLU", "--json", tmp_path / "v.json")
    assert result.exit_code == 1
    assert one_error_line(result).startswith(f"error: parity failed: FAIL {zoo_golu}")
    r = json.loads((tmp_path / "v.json").read_text())["results"][0]
    assert r["reference"] == "torch (eager, CPU): zoo paGLU"
    assert r["notes"] == ["the artifact records gatex.unit=GoLU; compared with the zoo paGLU "
                          "model as asked (--unit)"]


def test_the_artifact_file_is_left_untouched(zoo_golu, tmp_path):
    before = zoo_golu.read_bytes()
    assert parity(zoo_golu, "--locate", "--json", tmp_path / "v.json").exit_code == 0
    assert zoo_golu.read_bytes() == before
    assert onnx.load(str(zoo_golu)).graph.output[0].name == "logits"


# -- the pruned-weights check (models with GatedDense layers) -------------------------------------

@pytest.fixture(scope="module")
def gated_dense_artifacts(tmp_path_factory) -> dict[str, Path]:
    """The zoo GatedDense model exported compacted with sparse weights to ONNX and CoreML, and
    the plain ONNX export with one pruned weight switched back on: gate 1, kernel 1e-20 (so
    the outputs still agree)."""
    import gatex

    d = tmp_path_factory.mktemp("gated_dense")
    out = {to: gatex.export("GatedDense", to=to, out_dir=d, compact=True,
                            sparse_weights=True).path for to in ("onnx", "coreml")}
    plain = gatex.export("GatedDense", out_dir=d / "plain").path
    model = zoo.load("GatedDense")
    i, j = map(int, np.argwhere(model.dense2.gates.numpy() == 0)[3])
    proto = onnx.load(plain)
    for init in proto.graph.initializer:
        if init.name in ("dense2.gates", "dense2.kernel"):
            g = onnx.numpy_helper.to_array(init).copy()
            g[i, j] = 1.0 if init.name.endswith("gates") else 1e-20
            init.CopyFrom(onnx.numpy_helper.from_array(g, init.name))
    out["unzeroed"] = save(proto, d / "GatedDense-unzeroed.onnx")
    out["at"] = (i, j)
    return out


@pytest.mark.parametrize("kind", ["onnx", "coreml"])
def test_parity_runs_the_pruned_weights_check_with_the_recorded_compaction(
        gated_dense_artifacts, kind, tmp_path):
    path = tmp_path / "v.json"
    result = parity(gated_dense_artifacts[kind], "--json", path)
    assert result.exit_code == 0, result.output
    assert "pruned weights: ok" in result.stdout and "removed in GatedDense" in result.stdout
    doc = json.loads(path.read_text())
    assert schema_errors(doc, SCHEMA) == []
    record = doc["results"][0]["pruned"]
    assert record["passed"] and [x["name"] for x in record["layers"]] == ["dense1", "dense2",
                                                                          "head"]
    # compaction removed units of dense1 and dense2: their pruned weights went with them
    removed = {x["name"]: x["removed"] for x in record["layers"]}
    assert removed["dense1"] > 0 and removed["dense2"] > 0
    assert all(x["violations"] == 0 and x["note"] is None for x in record["layers"])


def test_parity_fails_on_an_unzeroed_pruned_weight_even_when_outputs_agree(
        gated_dense_artifacts, tmp_path):
    path = tmp_path / "v.json"
    result = parity(gated_dense_artifacts["unzeroed"], "--json", path)
    assert result.exit_code == 1, result.output
    line = one_error_line(result)
    i, j = gated_dense_artifacts["at"]
    assert "pruned weights: FAILED in GatedDense-unzeroed.onnx: dense2: 1 weights pruned in " \
           f"the source are non-zero in the artifact (first at [in {i}, out {j}])" in line
    doc = json.loads(path.read_text())
    assert schema_errors(doc, SCHEMA) == []
    r = doc["results"][0]
    assert all(o["passed"] for o in r["outputs"]) and not r["passed"] and not doc["passed"]
    dense2 = next(x for x in r["pruned"]["layers"] if x["name"] == "dense2")
    assert (dense2["violations"], dense2["first"]) == (1, [i, j])


def test_models_without_gated_dense_get_no_pruned_check(zoo_golu, tmp_path):
    path = tmp_path / "v.json"
    result = parity(zoo_golu, "--json", path)
    assert result.exit_code == 0 and "pruned weights" not in result.stdout
    assert json.loads(path.read_text())["results"][0]["pruned"] is None


def test_max_outliers_is_the_users_share_for_any_model(zoo_golu, tmp_path):
    """--max-outliers excuses a share of each output's elements, reported as the user's; none
    by default (hard decisions are proved by decision-forced parity, tests/runtimes/
    test_decision_parity.py)."""
    path = tmp_path / "mine.json"
    mine = parity(zoo_golu, "--max-outliers", "1", "--json", path)
    assert mine.exit_code == 0, mine.stdout
    doc = json.loads(path.read_text())["results"][0]
    assert doc["tolerance"]["outliers"] == 0.01
    assert doc["tolerance"]["outlier_ops"] == ["given by the user"]
    assert doc["outputs"][0]["outliers_allowed"] == 45     # 1 % of 450 x 10 logits
    assert doc["decisions"] is None                        # GoLU makes no hard decisions
    plain = tmp_path / "plain.json"
    assert parity(zoo_golu, "--json", plain).exit_code == 0
    assert json.loads(plain.read_text())["results"][0]["tolerance"]["outliers"] == 0.0


@pytest.mark.parametrize(("args", "message"), [
    (["--max-outliers", "100"], "--max-outliers must be a percentage in [0, 100)"),
    (["--max-outliers", "-1"], "--max-outliers must be a percentage in [0, 100)"),
    (["--decisions", "loose"], "--decisions"),
])
def test_max_outliers_bad_values_are_one_line(tmp_path, args, message):
    result = parity(tmp_path / "missing.onnx", *args)
    assert result.exit_code == 2
    assert message in one_error_line(result)


def test_plugin_flavor_runs_with_its_plugins_decomposed(tmp_path):
    """A --flavor plugin ONNX needs TensorRT's plugins; without them gatex parity runs its
    plugin nodes as their decompositions on onnxruntime and says so (emulated, with a note)."""
    from gatex.pipeline import export

    path = export("GoLU", to="onnx", flavor="plugin", out_dir=tmp_path, check=False).path
    result = parity(path, "--json", tmp_path / "v.json")
    assert result.exit_code == 0, result.stdout
    assert "TensorRT plugins decomposed: GoLU" in result.stdout
    doc = json.loads((tmp_path / "v.json").read_text())["results"][0]
    assert doc["emulated"] and doc["passed"]
    assert any("not the plugin kernels" in n for n in doc["notes"])
