"""Files that point outside themselves, inflate, lie about their shapes, or do not fit the model:
each is one line and exit 2, and nothing outside the artifact is read."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import stat
import zipfile
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from onnx import external_data_helper
from typer.testing import CliRunner

from cli_checks import one_error_line
from gatex.cli import app
from gatex.errors import BadInputError

REPO = Path(__file__).resolve().parents[2]
MODELS = '''
import torch
from torch import nn
import gatex.models as gm

def golu_beta_negative():
    m = nn.Sequential(nn.Linear(8, 8), gm.GoLU())
    m[1].beta = -1.0
    return m

def paglu_alpha_buffer():
    m = nn.Sequential(gm.paGLU(8, 8))
    for name, b in m.named_buffers():
        if "alpha" in name:
            b.fill_(1.5)
    return m

def paglu():
    torch.manual_seed(0)
    return nn.Sequential(gm.paGLU(8, 8))

def wide():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(64, 10), gm.GoLU())

def narrow():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(16, 10), gm.GoLU())
'''


def cli(*args: str):
    return CliRunner().invoke(app, list(args), env={"COLUMNS": "200"})


@pytest.fixture
def models(tmp_path: Path) -> Path:
    path = tmp_path / "models.py"
    path.write_text(MODELS)
    return path


# -- op parameters set or loaded after construction ---------------------------------------------

@pytest.mark.parametrize("factory, message", [
    ("golu_beta_negative", "GoLU parameter 'beta' must be in [0, inf]; got -1.0"),
    ("paglu_alpha_buffer", "paGLU parameter 'alpha' must be in [0, 1]; got 1.5"),
])
def test_out_of_range_parameters_fail_export(tmp_path: Path, models: Path, factory: str,
                                             message: str) -> None:
    result = cli("export", "--model", f"{models}:{factory}", "--to", "onnx", "-o",
                 str(tmp_path / "out"), "--input-shape", "2,8")
    assert result.exit_code == 2
    line = one_error_line(result)
    assert message in line and "module '" in line
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_checkpoint_with_alpha_out_of_range_fails_export(tmp_path: Path, models: Path) -> None:
    from safetensors.torch import save_file

    spec = importlib.util.spec_from_file_location("sec_models", models)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    state = dict(module.paglu().state_dict())
    key = next(k for k in state if "alpha" in k)
    state[key] = torch.full_like(state[key], 1.5)
    save_file(state, str(tmp_path / "w.safetensors"))
    result = cli("export", "--model", f"{models}:paglu", "--weights",
                 str(tmp_path / "w.safetensors"), "--to", "onnx", "-o", str(tmp_path / "out"),
                 "--input-shape", "2,8")
    assert result.exit_code == 2
    assert "must be in [0, 1]; got 1.5" in one_error_line(result)


def test_in_range_parameters_still_export(tmp_path: Path, models: Path) -> None:
    result = cli("export", "--model", f"{models}:paglu", "--to", "onnx", "-o",
                 str(tmp_path / "out"), "--input-shape", "2,8")
    assert result.exit_code == 0, result.output


# -- sizes are checked before allocating -------------------------------------------------------

def test_huge_input_shape_is_refused(tmp_path: Path, models: Path) -> None:
    result = cli("export", "--model", f"{models}:wide", "--to", "onnx", "-o",
                 str(tmp_path / "out"), "--input-shape", "100000,100000")
    assert result.exit_code == 2
    line = one_error_line(result)
    assert "37.3 GiB" in line and "GATEX_MAX_INPUT_BYTES" in line


def _npz_bomb(path: Path, elements: int) -> Path:
    """A deflated .npz whose one float32 array inflates to ``elements * 4`` bytes of zeros."""
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        with archive.open("input.npy", "w", force_zip64=True) as f:
            np.lib.format.write_array_header_1_0(
                f, {"descr": "<f4", "fortran_order": False, "shape": (elements // 64, 64)})
            chunk = bytes(1 << 22)
            for _ in range(elements * 4 // len(chunk)):
                f.write(chunk)
    return path


@pytest.fixture
def wide_onnx(tmp_path: Path, models: Path) -> Path:
    result = cli("export", "--model", f"{models}:wide", "--to", "onnx", "-o",
                 str(tmp_path / "out"), "--input-shape", "4,64", "--no-check")
    assert result.exit_code == 0, result.output
    return tmp_path / "out" / "wide-portable-fp32.onnx"


def test_npz_that_inflates_past_the_limit_is_refused(tmp_path: Path, models: Path,
                                                     wide_onnx: Path) -> None:
    bomb = _npz_bomb(tmp_path / "bomb.npz", (1 << 28) + 64)     # 1 MB on disk, 1 GiB inflated
    assert bomb.stat().st_size < 2 << 20
    result = cli("parity", str(wide_onnx), "--model", f"{models}:wide", "--inputs", str(bomb))
    assert result.exit_code == 2
    assert "over gatex's limit of 1.0 GiB" in one_error_line(result)


def test_npz_with_zero_samples_is_refused(tmp_path: Path, models: Path, wide_onnx: Path) -> None:
    np.savez(tmp_path / "empty.npz", input=np.zeros((0, 64), np.float32))
    result = cli("parity", str(wide_onnx), "--model", f"{models}:wide", "--inputs",
                 str(tmp_path / "empty.npz"))
    assert result.exit_code == 2
    assert "holds no samples" in one_error_line(result)


def test_model_that_does_not_fit_the_artifact(tmp_path: Path, models: Path,
                                              wide_onnx: Path) -> None:
    result = cli("parity", str(wide_onnx), "--model", f"{models}:narrow")
    assert result.exit_code == 2
    line = one_error_line(result)
    assert "float32[450,64]" in line and "450x64 and 16x10" in line
    result = cli("bench", str(wide_onnx), "--model", f"{models}:narrow", "--input-shape", "1,16",
                 "--backend", "ort")
    assert result.exit_code == 2
    line = one_error_line(result)
    assert "[1, 16]" in line and "float32[" in line and ",64]" in line
    result = cli("bench", str(wide_onnx), "--model", f"{models}:narrow", "--input-shape", "1,64",
                 "--backend", "ort")
    assert result.exit_code == 2
    assert "1x64 and 16x10" in one_error_line(result)


# -- ONNX external data ------------------------------------------------------------------------

def _external_model(folder: Path) -> Path:
    """A small ONNX model (y = x @ W) whose W lives in an external data file beside it."""
    from onnx import TensorProto, helper, numpy_helper

    folder.mkdir(parents=True, exist_ok=True)
    w = numpy_helper.from_array(np.arange(64 * 8, dtype=np.float32).reshape(64, 8), "W")
    graph = helper.make_graph([helper.make_node("MatMul", ["x", "W"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 64])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 8])],
                              [w])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=10)
    path = folder / "m.onnx"
    onnx.save_model(model, str(path), save_as_external_data=True, location="m.onnx.data",
                    size_threshold=0)
    return path


def _point_to(path: Path, location: str) -> None:
    proto = onnx.load(str(path), load_external_data=False)
    for tensor in external_data_helper._get_all_tensors(proto):
        for entry in tensor.external_data:
            if entry.key == "location":
                entry.value = location
    path.write_bytes(proto.SerializeToString())


@pytest.mark.parametrize("how", ["dotdot", "absolute", "symlink", "past-the-end"])
def test_onnx_external_data_outside_the_folder_is_refused(tmp_path: Path, how: str) -> None:
    from gatex.artifacts.onnx_file import read_onnx

    secret = tmp_path / "secret.bin"
    secret.write_bytes(bytes(64 * 8 * 4))
    path = _external_model(tmp_path / "model")
    if how == "dotdot":
        _point_to(path, "../secret.bin")
    elif how == "absolute":
        _point_to(path, str(secret))
    elif how == "symlink":
        (path.parent / "link.bin").symlink_to(secret)
        _point_to(path, "link.bin")
    else:
        (path.parent / "m.onnx.data").write_bytes(bytes(100))
    match = "bytes 0..2048 run past the end" if how == "past-the-end" else "outside"
    with pytest.raises(BadInputError, match=match):
        read_onnx(path)
    for command in (["inspect", str(path)], ["parity", str(path), "--rtol", "1", "--atol", "1"],
                    ["bench", str(path), "--backend", "ort", "--iterations", "2"]):
        result = cli(*command)
        assert result.exit_code == 2, (command, result.output)
        assert ("outside" in one_error_line(result)) or how == "past-the-end"


def test_onnx_external_data_inside_the_folder_still_loads(tmp_path: Path) -> None:
    from gatex.artifacts.onnx_file import read_onnx

    path = _external_model(tmp_path / "model")
    weights = onnx.numpy_helper.to_array(read_onnx(path).graph.initializer[0])
    assert weights.shape == (64, 8) and weights[1, 0] == 8


# -- CoreML packages ---------------------------------------------------------------------------

ct = pytest.importorskip("coremltools")


@pytest.fixture(scope="module")
def package(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("coreml")
    result = cli("export", "--unit", "GoLU", "--to", "coreml", "-o", str(out), "--no-check")
    assert result.exit_code == 0, result.output
    return out / "GoLU-fp16.mlpackage"


def _copy(package: Path, tmp_path: Path) -> Path:
    dst = tmp_path / "evil.mlpackage"
    shutil.copytree(package, dst)
    return dst


@pytest.mark.parametrize("entry", ["weights", "model"])
def test_mlpackage_manifest_pointing_outside_is_refused(tmp_path: Path, package: Path,
                                                        entry: str) -> None:
    evil = _copy(package, tmp_path)
    data = evil / "Data" / "com.apple.CoreML"
    moved = tmp_path / "elsewhere"
    moved.mkdir()
    name = "weights" if entry == "weights" else "model.mlmodel"
    shutil.move(str(data / name), str(moved / name))
    manifest = json.loads((evil / "Manifest.json").read_text())
    for item in manifest["itemInfoEntries"].values():
        if item["path"].endswith(name):
            item["path"] = f"../../elsewhere/{name}"
    (evil / "Manifest.json").write_text(json.dumps(manifest))
    for command in (["inspect", str(evil)], ["parity", str(evil)]):
        result = cli(*command)
        assert result.exit_code == 2, result.output
        assert "outside" in one_error_line(result)


def test_mlpackage_symlink_out_of_the_package_is_refused(tmp_path: Path, package: Path) -> None:
    evil = _copy(package, tmp_path)
    weights = evil / "Data" / "com.apple.CoreML" / "weights"
    shutil.move(str(weights), str(tmp_path / "weights"))
    weights.symlink_to(tmp_path / "weights")
    result = cli("inspect", str(evil))
    assert result.exit_code == 2
    assert "outside" in one_error_line(result)


def test_mlprogram_blob_path_escaping_is_refused(tmp_path: Path, package: Path) -> None:
    from gatex.artifacts.mlpackage import _blob_file_names, check_blob_paths

    model = ct.models.MLModel(str(package), skip_model_load=True)
    spec = model.get_spec()
    names = _blob_file_names(spec.mlProgram)
    assert names and all(n.startswith("@model_path/weights/") for n in names)
    check_blob_paths(package, spec, model.weights_dir)      # the real package passes
    stack = [spec.mlProgram]
    while stack:                                            # rewrite the first blob's path
        msg = stack.pop()
        if type(msg).__name__ == "BlobFileValue":
            msg.fileName = "@model_path/weights/../../../../secret.bin"
            break
        for field, value in msg.ListFields():
            if field.type == field.TYPE_MESSAGE:
                if hasattr(value, "ListFields"):
                    stack.append(value)
                elif hasattr(value, "items"):
                    stack.extend(v for v in value.values() if hasattr(v, "ListFields"))
                else:
                    stack.extend(value)
    with pytest.raises(BadInputError, match="weight blob.*outside"):
        check_blob_paths(package, spec, model.weights_dir)


# -- Keras .h5 ---------------------------------------------------------------------------------

h5py = pytest.importorskip("h5py")


def _keras_helpers():
    spec = importlib.util.spec_from_file_location(
        "keras_weight_tests", REPO / "tests" / "models" / "test_keras_weights.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _expect_bad(path: Path, *parts: str) -> None:
    from gatex.models.keras_weights import load_gated_bert

    with pytest.raises(BadInputError) as info:
        load_gated_bert(path)
    assert "\n" not in str(info.value)
    for part in parts:
        assert part in str(info.value), str(info.value)


def test_keras_external_link_and_storage_are_refused(tmp_path: Path) -> None:
    helpers = _keras_helpers()
    weights = helpers.random_weights()
    other = tmp_path / "other.h5"
    with h5py.File(other, "w") as f:
        f["bias"] = np.ones(256, np.float32)
    linked = tmp_path / "linked.weights.h5"
    helpers.write_keras3(linked, weights)
    with h5py.File(linked, "a") as f:
        f["layers/extra"] = h5py.ExternalLink(str(other), "/bias")
    _expect_bad(linked, "external link", "other.h5")

    raw = tmp_path / "raw.bin"
    raw.write_bytes(np.ones(256, np.float32).tobytes())
    stored = tmp_path / "stored.weights.h5"
    helpers.write_keras3(stored, weights)
    with h5py.File(stored, "a") as f:
        f.create_dataset("layers/outside", shape=(256,), dtype="f4",
                         external=[(str(raw), 0, 1024)])
    _expect_bad(stored, "external file", "raw.bin")


def test_keras_declared_but_unstored_and_wrong_rank_are_refused(tmp_path: Path) -> None:
    helpers = _keras_helpers()
    weights = helpers.random_weights()
    optimizer = tmp_path / "optimizer.h5"
    helpers.write_keras2(optimizer, weights)
    with h5py.File(optimizer, "a") as f:     # 10^5 x 10^5 floats declared, nothing written
        f.create_dataset("optimizer_weights/m", shape=(100_000, 100_000), dtype="f4",
                         chunks=(1000, 1000))
    assert optimizer.stat().st_size < 50 << 20
    _expect_bad(optimizer, "optimizer_weights/m", "37.3 GiB")

    embed = tmp_path / "embed.h5"
    helpers.write_keras2(embed, weights)
    with h5py.File(embed, "a") as f:         # 10^7 x 256 declared in a small file
        f.create_dataset("model_weights/huge", shape=(10_000_000, 256), dtype="f4",
                         chunks=(1000, 256))
    _expect_bad(embed, "declares 10240000000 bytes but the file stores 0")

    scalar = {k: dict(v) for k, v in weights.items()}
    scalar["token_embedding"]["embeddings"] = np.float32(3.0)
    path = tmp_path / "scalar.weights.h5"
    helpers.write_keras3(path, scalar)
    _expect_bad(path, "'token_embedding' embeddings has shape ()", "2-D array is expected")


# -- what gatex writes ---------------------------------------------------------------------------

def test_exported_files_follow_the_umask(tmp_path: Path) -> None:
    old = os.umask(0o022)
    try:
        result = cli("export", "--unit", "GoLU", "--to", "onnx", "-o", str(tmp_path))
        assert result.exit_code == 0, result.output
        result = cli("parity", str(tmp_path / "GoLU-portable-fp32.onnx"), "--json",
                     str(tmp_path / "p.json"))
        assert result.exit_code == 0, result.output
        onnx_mode = stat.S_IMODE((tmp_path / "GoLU-portable-fp32.onnx").stat().st_mode)
        json_mode = stat.S_IMODE((tmp_path / "p.json").stat().st_mode)
        assert onnx_mode == json_mode == 0o644
        os.umask(0o077)
        result = cli("export", "--unit", "GoLU", "--to", "onnx", "-o", str(tmp_path / "private"))
        assert result.exit_code == 0, result.output
        mode = stat.S_IMODE((tmp_path / "private" / "GoLU-portable-fp32.onnx").stat().st_mode)
        assert mode == 0o600
    finally:
        os.umask(old)
    assert not [p for p in tmp_path.rglob(".*") if p.name.endswith(".tmp")]


def test_staged_dir_gets_umask_modes(tmp_path: Path) -> None:
    from gatex import _io

    old = os.umask(0o022)
    try:
        with _io.staged_dir(tmp_path / "bundle") as staged:
            staged.mkdir()
            (staged / "a.txt").write_text("x")
            (staged / "run.sh").write_text("#!/bin/sh\n")
            (staged / "run.sh").chmod(0o700)
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "bundle").stat().st_mode) == 0o755
    assert stat.S_IMODE((tmp_path / "bundle" / "a.txt").stat().st_mode) == 0o644
    assert stat.S_IMODE((tmp_path / "bundle" / "run.sh").stat().st_mode) == 0o755
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bundle"]


def test_no_commit_after_an_interrupt_a_library_swallowed(tmp_path: Path, monkeypatch) -> None:
    """coremltools' import can swallow a KeyboardInterrupt; the interrupt is still recorded,
    so the artifact is not renamed into place afterwards and its staging file goes."""
    from gatex import _io

    monkeypatch.setattr(_io, "_interrupted", [])
    target = tmp_path / "m.onnx"
    with pytest.raises(KeyboardInterrupt):
        with _io.staged_file(target) as tmp:
            tmp.write_bytes(b"model")
            _io.note_interrupt("SIGINT")     # the handler ran; the library ate its exception
    assert not target.exists()
    assert list(tmp_path.iterdir()) == []
