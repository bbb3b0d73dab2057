"""``gatex export --to onnx`` from the command line: a user model with upstream-style modules
round-trips (adapted, exported, checked), and every bad input is one stderr line with its exit
code (2 bad input, 3 backend unavailable, 1 check failed), no traceback, nothing left behind."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from export_cases import REPO_ROOT, ZooExports
from typer.testing import CliRunner

from gatex.cli import app
from gatex.errors import BadInputError
from gatex.exporters import onnx as onnx_exporter

# Upstream-style modules (the class names, attributes and math of guglxni/paGating's paGLU and
# automl/GoLU's GoLUCUDA, as tests/upstream.py has them), written into the user's own file.
USER_MODELS = textwrap.dedent('''
    import torch
    from torch import nn


    class paGLU(nn.Module):
        def __init__(self, input_dim, output_dim, alpha=0.5):
            super().__init__()
            self.value_proj = nn.Linear(input_dim, output_dim)
            self.gate_proj = nn.Linear(input_dim, output_dim)
            self.use_gate_norm = False
            self.gate_norm = None
            self.alpha_fn = None
            self.alpha_param = None
            self.register_buffer("alpha_fixed", torch.tensor(float(alpha)))

        def forward(self, x):
            a = self.alpha_fixed
            return self.value_proj(x) * (a * torch.sigmoid(self.gate_proj(x)) + (1.0 - a))


    class GoLUCUDA(nn.Module):
        def __init__(self, alpha=1.0, beta=1.0, gamma=1.0):
            super().__init__()
            self.alpha, self.beta, self.gamma = alpha, beta, gamma

        def forward(self, x):
            return self.alpha * x * torch.exp(-self.beta * torch.exp(-self.gamma * x))


    class Net(nn.Module):
        def __init__(self, alpha=0.3):
            super().__init__()
            torch.manual_seed(0)
            self.glu = paGLU(16, 32, alpha)
            self.act = GoLUCUDA(gamma=0.7)
            self.head = nn.Linear(32, 5)

        def forward(self, x):
            return self.head(self.act(self.glu(x)))


    def build():
        return Net()


    def bad_alpha():
        return Net(alpha=2.0)


    class Plain(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(16, 4)

        def forward(self, x):
            return torch.relu(self.fc(x))
''')

# A custom op no backend knows: torch.onnx has no translation and gatex has no lowering.
UNLOWERABLE = textwrap.dedent('''
    import torch
    from torch import nn


    @torch.library.custom_op("gatex_test_user::wobble", mutates_args=())
    def wobble(x: torch.Tensor) -> torch.Tensor:
        return x * 2


    @wobble.register_fake
    def _(x):
        return torch.empty_like(x)


    class Wobbly(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(16, 4)

        def forward(self, x):
            return wobble(self.fc(x))
''')


@pytest.fixture(scope="module")
def user_files(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("user-models")
    (root / "user_models.py").write_text(USER_MODELS)
    (root / "unlowerable.py").write_text(UNLOWERABLE)
    (root / "broken.py").write_text("def build(:\n    pass\n")
    (root / "corrupt.pt2").write_bytes(b"not a zip archive")
    (root / "weights.txt").write_text("0.5\n")
    (root / "a_file").write_text("")
    return root


def gatex_process(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    """The real entry point in a fresh process (the checkout's gatex)."""
    env = {k: v for k, v in os.environ.items() if k != "GATEX_DEBUG"}
    env.update(PYTHONPATH=str(REPO_ROOT), COLUMNS="200")
    return subprocess.run([sys.executable, "-m", "gatex", *args], cwd=cwd, env=env, text=True,
                          capture_output=True, timeout=300, stdin=subprocess.DEVNULL, check=False)


def test_user_model_round_trip(user_files: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    proc = gatex_process("export", "--model", f"{user_files / 'user_models.py'}:build",
                         "--input-shape", "4,16", "--to", "onnx", "-o", str(out), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    # nothing on stderr: no torch.onnx chatter (torchvision is not installed. Skipping ...)
    assert proc.stderr == ""
    assert "gatex ops: GoLU, paGLU" in proc.stdout
    assert " pass " in proc.stdout and "FAIL" not in proc.stdout.upper()
    files = sorted(p.name for p in out.iterdir())
    assert files == ["build-portable-fp32.onnx"]  # no temporary file left

    model = onnx.load(str(out / files[0]))
    onnx.checker.check_model(model, full_check=True)
    gated = [(n.op_type, {a.name: round(a.f, 6) for a in n.attribute}) for n in model.graph.node
             if n.domain == "gatex"]
    assert gated == [("paGLU", {"alpha": 0.3}),
                     ("GoLU", {"alpha": 1.0, "beta": 1.0, "gamma": 0.7})]
    assert "gatex.unit" not in {p.key for p in model.metadata_props}

    # the numbers: the ONNX file against the user's own (upstream-style, un-adapted) module
    sys.path.insert(0, str(user_files))
    try:
        import user_models
    finally:
        sys.path.remove(str(user_files))
    x = torch.randn(64, 16, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        expected = user_models.build()(x).numpy()
    session = ort.InferenceSession(str(out / files[0]), providers=["CPUExecutionProvider"])
    (got,) = session.run(None, {session.get_inputs()[0].name: x.numpy()})
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)


def test_unlowerable_op_is_named_with_its_place(user_files: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    proc = gatex_process("export", "--model", f"{user_files / 'unlowerable.py'}:Wobbly",
                         "--input-shape", "4,16", "-o", str(out), cwd=tmp_path)
    assert proc.returncode == 2
    assert proc.stdout == ""
    (line,) = proc.stderr.splitlines()  # one line: no torch log, no traceback
    assert line.startswith("error: cannot lower op gatex_test_user::wobble ")
    call_line = UNLOWERABLE.splitlines().index("        return wobble(self.fc(x))") + 1
    assert "(Wobbly)" in line
    assert f"{user_files / 'unlowerable.py'}:{call_line} in forward" in line
    assert not out.exists() or not any(out.iterdir())


def invoke(*args: str):
    return CliRunner().invoke(app, ["export", *args], env={"COLUMNS": "200"})


def _cases(files: str) -> list[tuple[list[str], int, str]]:
    """(arguments, exit code, text the one stderr line holds); FILES is the user-file folder."""
    model = f"{files}/user_models.py"
    return [
        (["--unit", "paGLUU"], 2, "no zoo model for unit 'paGLUU'; did you mean paGLU"),
        (["--unit", "paGLU", "--to", "foo"], 2, "unknown export target 'foo'"),
        (["--unit", "paGLU", "--to", "trt", "--precision", "int8"], 2,
         "unknown TensorRT precision 'int8'"),
        (["--unit", "paGLU", "--flavor", "fused"], 2, "unknown ONNX flavor 'fused'"),
        (["--unit", "paGLU", "--dtype", "int8"], 2, "unknown dtype 'int8'"),
        (["--unit", "paGLU", "--opset", "12"], 2, "opset 12 is not supported"),
        (["--unit", "paGLU", "--opset", "99"], 2, "opset 99 is not supported"),
        (["--unit", "paGLU", "--opset", "0"], 2, "opset 0 is not supported"),
        (["--model", f"{model}:bad_alpha", "--input-shape", "4,16"], 2,
         "module glu (gatex_user_user_models.paGLU): paGLU parameter 'alpha' must be in [0, 1]; "
         "got 2.0"),
        (["--model", f"{files}/missing.py:build", "--input-shape", "4,16"], 2,
         f"model file {files}/missing.py does not exist"),
        (["--model", f"{files}/broken.py:build", "--input-shape", "4,16"], 2,
         "SyntaxError: invalid syntax"),
        (["--model", f"{files}/corrupt.pt2", "--input-shape", "4,16"], 2,
         "is not a loadable torch.export program"),
        (["--model", f"{files}/weights.txt", "--input-shape", "4,16"], 2,
         "unsupported model file type .txt"),
        (["--model", model, "--input-shape", "4,16"], 2, "names a file, not the model in it"),
        (["--model", f"{model}:nothing", "--input-shape", "4,16"], 2,
         "has no attribute 'nothing'"),
        (["--model", f"{model}:build", "--input-shape", "4,x"], 2,
         "--input-shape '4,x' is not a list of positive sizes"),
        (["--model", f"{model}:build", "--input-shape", "0,16"], 2,
         "--input-shape '0,16' is not a list of positive sizes"),
        (["--model", f"{model}:build"], 2, "--model needs its inputs"),
        (["--model", f"{model}:build", "--input-shape", "4,7"], 2,
         "torch.export cannot trace the model on inputs of shape (4, 7): RuntimeError"),
        (["--model", f"{model}:Plain", "--input-shape", "4,16"], 2, "holds no gatex op"),
        (["--unit", "GoLU", "-o", f"{files}/a_file/sub"], 2,
         f"cannot write to {files}/a_file/sub: Not a directory"),
        (["--unit", "GoLU", "-o", f"{files}/a_file"], 2,
         f"cannot write to {files}/a_file: it is a file, not a directory"),
    ]


CASE_COUNT = len(_cases("F"))


@pytest.mark.parametrize("index", range(CASE_COUNT),
                         ids=[" ".join(a).replace("F/", "") for a, _, _ in _cases("F")])
def test_bad_input_is_one_line_and_leaves_nothing(user_files: Path, tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch,
                                                  index: int) -> None:
    monkeypatch.chdir(tmp_path)
    args, code, text = _cases(str(user_files))[index]
    out = tmp_path / "out"
    if "-o" not in args:
        args = [*args, "-o", str(out)]
    before = sorted(p.name for p in user_files.iterdir())
    result = invoke(*args)
    assert result.exit_code == code, (result.stdout, result.stderr)
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert text in lines[0]
    assert "Traceback" not in result.output
    assert not out.exists() or not any(out.iterdir())
    assert sorted(p.name for p in user_files.iterdir()) == before
    assert sorted(p.name for p in tmp_path.iterdir()) in ([], ["out"])


def test_failed_parity_exits_1_naming_output_and_amount(tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    # a wrong lowering (SiLU where GoLU belongs) must not pass: exit 1, the output named, by
    # how much, and the artifact kept for gatex parity --locate
    from gatex.ops import REGISTRY

    def silu(b, x, **params):  # noqa: ANN001, ANN003, ANN202
        return b.op("Mul", x, b.op("Sigmoid", x))

    monkeypatch.setitem(REGISTRY.get("GoLU").lowerings, "onnx", silu)
    result = invoke("--unit", "GoLU", "-o", str(tmp_path))
    assert result.exit_code == 1
    (line,) = result.stderr.splitlines()
    assert re.fullmatch(
        r"error: parity failed: FAIL GoLU-portable-fp32\.onnx on onnxruntime \(CPU\) vs torch "
        r"\(eager, CPU\): (\w+): (\d+) of 4500 values outside rtol=0\.0001, atol=1e-05 "
        r"\(max_abs ([0-9.e-]+) at .*; would pass with atol >= .*", line), line
    output, outside, max_abs = re.fullmatch(r".*\): (\w+): (\d+) of .*\(max_abs ([0-9.e-]+) .*",
                                            line).groups()
    model = onnx.load(str(tmp_path / "GoLU-portable-fp32.onnx"))
    assert output == model.graph.output[0].name
    assert int(outside) > 1000 and float(max_abs) > 0.1
    assert "FAIL" in result.stdout  # the table says it too
    assert [p.name for p in tmp_path.iterdir()] == ["GoLU-portable-fp32.onnx"]


def test_failed_save_leaves_no_file(zoo_exports: ZooExports, tmp_path: Path,
                                    monkeypatch: pytest.MonkeyPatch) -> None:
    def half_written(proto, path, *args, **kwargs):  # noqa: ANN001, ANN202
        Path(path).write_bytes(proto.SerializeToString()[:100])
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(onnx_exporter.onnx, "save_model", half_written)
    with pytest.raises(BadInputError, match="No space left on device"):
        onnx_exporter.write_onnx(zoo_exports.traced("GoLU", "fp32"), tmp_path / "g.onnx")
    assert list(tmp_path.iterdir()) == []


def test_check_that_cannot_run_removes_the_artifact(zoo_exports: ZooExports, tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    import gatex.pipeline as exporters

    def no_runtime(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        from gatex.errors import BackendUnavailableError

        raise BackendUnavailableError("onnxruntime is not installed")

    monkeypatch.setattr(onnx_exporter, "trace_onnx",
                        lambda *a, **k: zoo_exports.traced("GoLU", "fp32"))
    monkeypatch.setattr(exporters, "check_onnx", no_runtime)
    result = invoke("--unit", "GoLU", "-o", str(tmp_path))
    assert result.exit_code == 3
    assert result.stderr == "error: onnxruntime is not installed\n"
    assert list(tmp_path.iterdir()) == []
    # with --no-check the same export stays
    result = invoke("--unit", "GoLU", "-o", str(tmp_path), "--no-check")
    assert result.exit_code == 0, result.stderr
    assert [p.name for p in tmp_path.iterdir()] == ["GoLU-portable-fp32.onnx"]
    assert "parity: not checked (--no-check)" in result.stdout


def test_an_artifact_of_another_model_is_not_replaced_unless_forced(tmp_path: Path) -> None:
    """Two user models with the same factory name write the same file name: the second export
    is refused (exit 2, the file untouched) until --name or --force says what is meant."""
    for name in ("a", "b"):
        (tmp_path / f"{name}.py").write_text(
            "import torch\nfrom gatex.models import paGLU\n\n\ndef build():\n"
            "    torch.manual_seed(0)\n    return torch.nn.Sequential(paGLU(16, 8))\n")
    out = tmp_path / "out"
    a, b = f"{tmp_path / 'a.py'}:build", f"{tmp_path / 'b.py'}:build"
    common = ("--input-shape", "4,16", "-o", str(out), "--no-check", "-q")
    first = invoke("--model", a, *common)
    assert first.exit_code == 0, first.output
    written = (out / "build-portable-fp32.onnx").read_bytes()
    model = onnx.load(str(out / "build-portable-fp32.onnx"))
    recorded = {p.key: p.value for p in model.metadata_props}["gatex.model"]
    assert recorded == f"{(tmp_path / 'a.py').resolve()}:build"
    again = invoke("--model", a, *common)
    assert again.exit_code == 0, again.output  # the same model may replace its own artifact
    other = invoke("--model", b, *common)
    assert other.exit_code == 2
    assert other.stderr.splitlines() == [
        f"error: {out / 'build-portable-fp32.onnx'} exists, written from {recorded}, "
        f"not from {(tmp_path / 'b.py').resolve()}:build; give --name NAME for another file, "
        "or --force to replace it"]
    assert (out / "build-portable-fp32.onnx").read_bytes() == written
    named = invoke("--model", b, "--name", "b", *common)
    assert named.exit_code == 0 and (out / "b-portable-fp32.onnx").is_file(), named.output
    forced = invoke("--model", b, "--force", *common)
    assert forced.exit_code == 0, forced.output
    model = onnx.load(str(out / "build-portable-fp32.onnx"))
    assert {p.key: p.value for p in model.metadata_props}["gatex.model"].endswith("b.py:build")


def test_export_reports_its_stages_and_their_times_and_q_silences_them(tmp_path: Path) -> None:
    seen: list[str] = []
    from gatex.pipeline import export

    result = export("GoLU", out_dir=tmp_path, on_stage=seen.append)
    assert list(dict.fromkeys(seen)) == ["prepare", "trace", "write", "check"]
    assert set(result.timings) == {"prepare", "trace", "write", "check"}
    assert all(t >= 0 for t in result.timings.values())
    loud = invoke("--unit", "GoLU", "-o", str(tmp_path))
    assert loud.exit_code == 0, loud.output
    (line,) = [ln for ln in loud.stdout.splitlines() if ln.startswith("stages: ")]
    assert "trace " in line and "check " in line and "(total " in line
    quiet = invoke("--unit", "GoLU", "-o", str(tmp_path), "-q")
    assert quiet.exit_code == 0 and "stages:" not in quiet.stdout and " pass " in quiet.stdout
