"""Dynamic dimensions beyond batch (issue 14, part 6) and the CLI's typed inputs (part 7).

A small token model (embedding + position table + a paGLU FFN, GPT-2's layout in miniature)
exports with batch and sequence dynamic, keeps the user's names as ONNX dim_params, and
matches torch at sequence lengths it was not traced at.
"""

from __future__ import annotations

import warnings

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from torch import nn

import gatex
from gatex import models
from gatex.cli.options import parse_input
from gatex.errors import BadInputError, GatexWarning
from gatex.exporters import dynamic
from gatex.exporters.onnx import trace_onnx, write_onnx

VOCAB, MAX_SEQ = 100, 64


class TinyLM(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.emb = nn.Embedding(VOCAB, 16)
        self.pos = nn.Embedding(MAX_SEQ, 16)
        self.ff = models.paGLU(16, 16, alpha=0.7)

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        return self.ff(self.emb(input_ids) + self.pos(torch.arange(input_ids.shape[1])))


class Pinned(nn.Module):
    """Its code fixes axis 1 to 32 (a view): that axis cannot stay dynamic."""

    def __init__(self) -> None:
        super().__init__()
        self.act = models.GoLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(x.view(x.shape[0], 4, 8)).sum(1)


def _dims(value: onnx.ValueInfoProto) -> list[str | int]:
    return [d.dim_param or d.dim_value for d in value.type.tensor_type.shape.dim]


def test_resolve_takes_torchs_forms_and_names_shared_dimensions_once() -> None:
    ids, mask = torch.zeros(2, 8, dtype=torch.long), torch.ones(2, 8, dtype=torch.long)
    seq = torch.export.Dim("seq", max=MAX_SEQ)
    axes = dynamic.resolve((ids, mask), dynamic_shapes=[{0: "batch", 1: seq}, {0: "batch",
                                                                                1: "seq"}])
    assert axes.names == ("batch", "seq") and axes.bound("seq") == (1, MAX_SEQ)
    by_name = dynamic.resolve((ids, mask), dynamic_shapes={"input_ids": {1: "seq"}},
                              forward=lambda input_ids, attention_mask: None)
    assert by_name.axes == (((1, "seq"),), ())
    assert dynamic.resolve((ids,), dynamic_batch=False) == dynamic.STATIC
    assert dynamic.resolve((ids,)).axes == (((0, "batch"),),)


@pytest.mark.parametrize("shapes, match", [
    ([{2: "seq"}], "has 2 dimensions"),
    ([{0: "batch"}, {0: "batch"}], "one entry per input"),
    ([{1: "bad name"}], "plain identifier"),
    ({"nope": {0: "batch"}}, "does not take"),
])
def test_resolve_refuses_bad_axes_in_one_line(shapes: object, match: str) -> None:
    with pytest.raises(BadInputError, match=match):
        dynamic.resolve((torch.zeros(2, 8),), dynamic_shapes=shapes,
                        forward=lambda input_ids: None)


def test_parse_cli_axes_per_input_and_for_all() -> None:
    assert dynamic.parse_cli(["0=batch,1=seq"], 2).axes == (((0, "batch"), (1, "seq")),) * 2
    named = dynamic.parse_cli(["mask:1=seq"], 2, ("ids", "mask"))
    assert named.axes == ((), ((1, "seq"),))
    assert dynamic.parse_cli(["none"], 1) == dynamic.STATIC
    for bad in ("1", "x=seq", "3:0=batch", "0=1seq"):
        with pytest.raises(BadInputError, match="--dynamic"):
            dynamic.parse_cli([bad], 2, ("ids", "mask"))


def test_token_model_exports_with_batch_and_seq_named_and_runs_every_length(tmp_path) -> None:
    model = TinyLM().eval()
    ids = torch.randint(0, VOCAB, (1, 32), generator=torch.Generator().manual_seed(1))
    traced = trace_onnx(model, (ids,), dynamic_shapes=[{0: "batch", 1: "seq"}])
    assert _dims(traced.proto.graph.input[0]) == ["batch", "seq"]
    assert _dims(traced.proto.graph.output[0]) == ["batch", "seq", 16]
    path = write_onnx(traced, tmp_path / "lm.onnx").path
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    for batch, seq in [(1, 1), (1, 7), (3, 33), (2, MAX_SEQ)]:
        x = torch.randint(0, VOCAB, (batch, seq), generator=torch.Generator().manual_seed(seq))
        got = session.run(None, {"input_ids": x.numpy()})[0]
        np.testing.assert_allclose(got, model(x).detach().numpy(), rtol=1e-5, atol=1e-6)


def test_export_checks_each_dynamic_dimension_at_a_second_size(tmp_path) -> None:
    ids = torch.randint(0, VOCAB, (2, 32), generator=torch.Generator().manual_seed(2))
    result = gatex.export(TinyLM().eval(), (ids,), out_dir=tmp_path,
                          dynamic_shapes=[{0: "batch", 1: "seq"}])
    assert result.passed and result.warnings == ()
    assert result.parity.notes == ("dynamic batch: also within tolerance at batch = 1",
                                   "dynamic seq: also within tolerance at seq = 31")


def test_a_dimension_the_code_pins_is_exported_static_with_one_warning(tmp_path) -> None:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        traced = trace_onnx(Pinned(), (torch.randn(1, 32),),
                            dynamic_shapes=[{0: "batch", 1: "feat"}])
    ours = [str(w.message) for w in caught if issubclass(w.category, GatexWarning)]
    assert ours == ["dimension feat cannot stay dynamic (the model's code fixes it to 32); "
                    "exported static at 32 (name other axes with --dynamic, or pass --static)"]
    assert traced.dynamic.axes == (((0, "batch"),),)
    assert _dims(traced.proto.graph.input[0]) == ["batch", 32]
    result = gatex.export(Pinned(), (torch.randn(1, 32),), out_dir=tmp_path,
                          dynamic_shapes=[{0: "batch", 1: "feat"}])
    assert result.passed and len(result.warnings) == 1 and "feat" in result.warnings[0]


def test_coreml_exports_from_a_batch_1_example(tmp_path) -> None:
    pytest.importorskip("coremltools")
    model = nn.Sequential(nn.Linear(64, 32), models.GoLU(), models.paGLU(32, 10)).eval()
    result = gatex.export(model, (torch.randn(1, 64),), to="coreml", out_dir=tmp_path)
    assert result.passed
    assert result.parity.notes == ("dynamic batch: also within tolerance at batch = 2",)


# -- the CLI's --input specs ---------------------------------------------------------------------

def test_input_specs_make_tensors_of_their_dtype_shape_and_range() -> None:
    g = torch.Generator().manual_seed(0)
    ids = parse_input("input_ids:int64[2,32]:0..1000").make(g)
    assert ids.dtype == torch.int64 and ids.shape == (2, 32)
    assert int(ids.min()) >= 0 and int(ids.max()) < 1000
    x = parse_input("float16[3,4]:-1..1").make(g)
    assert x.dtype == torch.float16 and float(x.abs().max()) <= 1
    assert parse_input("mask:bool[2,8]").make(g).dtype == torch.bool


@pytest.mark.parametrize("text, match", [
    ("int64[2,32]", "needs its range"),
    ("x:int65[2]:0..3", "unknown dtype"),
    ("int64[2]:5..1", "is empty"),
    ("int64[2]:0..2.5", "must be integers"),
    ("float32[0,3]", "positive sizes"),
    ("ids", "is not"),
])
def test_bad_input_specs_are_one_line(text: str, match: str) -> None:
    with pytest.raises(BadInputError, match=match) as info:
        parse_input(text)
    assert "\n" not in str(info.value)


LM_FILE = '''
import torch
from torch import nn
import gatex.models as gm


class LM(nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.emb = nn.Embedding(100, 16)
        self.pos = nn.Embedding(64, 16)
        self.ff = gm.paGLU(16, 16)

    def forward(self, input_ids):
        return self.ff(self.emb(input_ids) + self.pos(torch.arange(input_ids.shape[1])))


def build():
    return LM()


def example_inputs():
    return torch.randint(0, 100, (2, 16))
'''


def _cli(*args: object):
    from typer.testing import CliRunner

    from gatex.cli import app

    return CliRunner().invoke(app, [str(a) for a in args], env={"COLUMNS": "200"})


def test_cli_exports_a_token_model_with_typed_inputs_and_named_axes(tmp_path) -> None:
    (tmp_path / "lm.py").write_text(LM_FILE)
    result = _cli("export", "--model", f"{tmp_path / 'lm.py'}:build",
                  "--input", "input_ids:int64[2,32]:0..100", "--dynamic", "0=batch,1=seq",
                  "-o", tmp_path / "out", "-q")
    assert result.exit_code == 0, result.output
    assert "also within tolerance at seq = 31" in result.output
    model = onnx.load(str(tmp_path / "out" / "build-portable-fp32.onnx"))
    assert _dims(model.graph.input[0]) == ["batch", "seq"]
    # no --input: the file's example_inputs(); a bad spec: one line, exit 2, nothing written
    hook = _cli("export", "--model", f"{tmp_path / 'lm.py'}:build", "-o", tmp_path / "hook",
                "-q", "--force")
    assert hook.exit_code == 0, hook.output
    bad = _cli("export", "--model", f"{tmp_path / 'lm.py'}:build",
               "--input", "input_ids:int64[2,32]", "-o", tmp_path / "bad")
    assert bad.exit_code == 2 and "needs its range" in bad.output
    assert not (tmp_path / "bad").exists()


def test_bench_of_a_token_model_takes_its_inputs(tmp_path, run_python) -> None:
    from gatex.benchmarking.run import bench

    ids = torch.randint(0, VOCAB, (2, 32), generator=torch.Generator().manual_seed(3))
    path = gatex.export(TinyLM().eval(), (ids,), out_dir=tmp_path,
                        dynamic_shapes=[{0: "batch", 1: "seq"}]).path
    with pytest.raises(BadInputError, match="--input input_ids:int64"):
        bench([path], backends="ort", iterations=2, warmup=1)
    result = bench([path], backends="ort", iterations=3, warmup=1, reference=False,
                   inputs=[ids.numpy()], inputs_note="ids")
    (row,) = result.rows
    assert row.status == "ok", row.reason
    assert result.settings["batch_size"] == 2 and result.settings["inputs"] == "ids"


@pytest.mark.slow
def test_cli_bench_of_a_token_model_with_input_specs(tmp_path, run_python) -> None:
    ids = torch.randint(0, VOCAB, (2, 32), generator=torch.Generator().manual_seed(3))
    path = gatex.export(TinyLM().eval(), (ids,), out_dir=tmp_path,
                        dynamic_shapes=[{0: "batch", 1: "seq"}]).path
    (tmp_path / "lm.py").write_text(LM_FILE)
    proc = run_python("-m", "gatex", "bench", str(path), "--model",
                      f"{tmp_path / 'lm.py'}:build", "--input", "input_ids:int64[1,32]:0..100",
                      "--backend", "torch,ort", "--iterations", "3", "--warmup", "1",
                      "--json", str(tmp_path / "b.json"), timeout=300)
    assert proc.returncode == 0, proc.stderr
    import json

    rows = {r["backend"]: r for r in json.loads((tmp_path / "b.json").read_text())["backends"]}
    assert rows["torch"]["status"] == rows["ort"]["status"] == "ok"


def test_tensorrt_bundle_carries_a_profile_per_named_dimension(tmp_path) -> None:
    from gatex.exporters.tensorrt import EngineNotBuilt
    from gatex.ops.kernels.trt_bundle import _profile_shapes

    ids = torch.randint(0, VOCAB, (2, 32), generator=torch.Generator().manual_seed(4))
    seq = torch.export.Dim("seq", max=MAX_SEQ)
    try:
        gatex.export(TinyLM().eval(), (ids,), to="trt", precision="fp32", out_dir=tmp_path,
                     dynamic_shapes=[{0: "batch", 1: seq}])
        pytest.skip("TensorRT is installed here: the engine was built")
    except EngineNotBuilt as exc:
        bundle, onnx_path = exc.artifact.bundle, exc.artifact.onnx_path
    import json

    plan = json.loads((bundle / "plan.json").read_text())
    assert plan["profiles"] == {"input_ids": {"names": ["batch", "seq"],
                                              "profile": [[1, 32, 512], [1, 32, MAX_SEQ]]}}
    model = onnx.load(str(onnx_path))
    assert _dims(model.graph.input[0]) == ["batch", "seq"]
    # build_engine.py's shapes for TensorRT (-1: dynamic): batch from --min/opt/max-batch
    shapes = _profile_shapes((-1, -1), (1, 8, 64), plan["profiles"]["input_ids"])
    assert shapes == ((1, 1), (8, 32), (64, MAX_SEQ))
    assert _profile_shapes((-1, 16), (1, 8, 64), None) == ((1, 16), (8, 16), (64, 16))
