"""Untrusted .pt2 programs and torch checkpoints: no code runs, every bad file is one line."""

from __future__ import annotations

import json
import os
import pickle
import zipfile
from pathlib import Path

import pytest
import torch
from torch import nn
from typer.testing import CliRunner

import gatex
from cli_checks import one_error_line
from gatex.cli import app
from gatex.errors import BadInputError, CheckpointError, UntrustedCheckpointError
from gatex.models import GoLU


class _RunsCode:
    """A pickle payload that creates ``marker`` when unpickled with a full unpickler."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):  # noqa: ANN204
        return (os.mkdir, (str(self.marker),))


def _golu_program(path: Path) -> Path:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 4), GoLU()).eval()
    torch.export.save(torch.export.export(model, (torch.randn(2, 8),)), str(path))
    return path


def _rewrite(src: Path, dst: Path, edit) -> Path:  # noqa: ANN001
    """Copy the zip ``src`` to ``dst``, passing each member through ``edit(name, data)``."""
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w") as zout:
        for info in zin.infolist():
            zout.writestr(info, edit(info.filename, zin.read(info)))
    return dst


def _pickled_weight_program(tmp_path: Path, marker: Path) -> Path:
    """A valid program whose weights config re-declares one weight as a code-running pickle."""
    ok = _golu_program(tmp_path / "ok.pt2")
    with zipfile.ZipFile(ok) as z:
        cfg_name = next(n for n in z.namelist() if n.endswith("model_weights_config.json"))
        cfg = json.loads(z.read(cfg_name))
    fqn = next(iter(cfg["config"]))
    cfg["config"][fqn]["use_pickle"] = True
    weight_file = cfg["config"][fqn]["path_name"]
    payload = pickle.dumps(_RunsCode(marker))

    def edit(name: str, data: bytes) -> bytes:
        if name == cfg_name:
            return json.dumps(cfg).encode()
        return payload if name.endswith("/" + weight_file) else data

    return _rewrite(ok, tmp_path / "evil.pt2", edit)


def test_valid_pt2_exports_and_passes_parity(tmp_path: Path) -> None:
    program = _golu_program(tmp_path / "golu.pt2")
    model = gatex.load_model(program)
    assert model.eval() is model  # ExportedProgram.module() alone refuses eval()
    x = torch.randn(2, 8)
    assert torch.allclose(model(x), torch.export.load(str(program)).module()(x))
    result = CliRunner().invoke(app, ["export", "--model", str(program), "--to", "onnx", "-o",
                                      str(tmp_path / "out"), "--input-shape", "2,8", "--static"])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "out" / "golu-portable-fp32.onnx").is_file()


def test_pt2_with_fixed_batch_exports_static_with_one_warning(tmp_path: Path) -> None:
    # the program fixes its batch: asked dynamic, the export falls back to static and says so
    program = _golu_program(tmp_path / "golu.pt2")
    result = CliRunner().invoke(app, ["export", "--model", str(program), "--to", "onnx", "-o",
                                      str(tmp_path / "out"), "--input-shape", "2,8"])
    assert result.exit_code == 0, result.output
    warnings = [line for line in result.output.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 1 and "batch cannot stay dynamic" in warnings[0]
    assert "exported static at 2" in warnings[0] and "--static" in warnings[0]


def test_pickled_weight_in_pt2_runs_no_code(tmp_path: Path) -> None:
    marker = tmp_path / "RAN"
    evil = _pickled_weight_program(tmp_path, marker)
    result = CliRunner().invoke(app, ["export", "--model", str(evil), "--to", "onnx", "-o",
                                      str(tmp_path / "out"), "--input-shape", "2,8", "--static"])
    assert result.exit_code == 2
    line = one_error_line(result)
    assert "stored as a pickle" in line and "--trust-checkpoint" in line
    assert not marker.exists(), "the payload ran"
    assert not (tmp_path / "out").exists()


def test_second_layer_catches_what_inspection_misses(tmp_path: Path, monkeypatch) -> None:
    """With the archive check bypassed, the weights-only unpickling still refuses the payload."""
    from gatex.artifacts import pt2

    marker = tmp_path / "RAN"
    evil = _pickled_weight_program(tmp_path, marker)
    with pytest.raises(UntrustedCheckpointError):
        pt2.inspect_archive(evil)
    monkeypatch.setattr(pt2, "inspect_archive", lambda path: None)
    with pytest.raises(UntrustedCheckpointError, match="needs code to load"):
        pt2.load_exported_program(evil)
    assert not marker.exists(), "the payload ran"
    assert torch.load is not None and torch.load.__module__ == "torch.serialization"


@pytest.mark.parametrize("member, match", [
    ("data/aotinductor/model/model.so", "compiled code"),   # a shared library torch would load
    ("data/weights/model.pt", "legacy pickled"),            # torch's old pickled weights file
])
def test_pt2_with_compiled_code_or_legacy_pickles_is_refused(tmp_path: Path, member: str,
                                                             match: str) -> None:
    ok = _golu_program(tmp_path / "ok.pt2")
    with zipfile.ZipFile(ok) as z:
        root = z.namelist()[0].split("/")[0]
    bad = tmp_path / "bad.pt2"
    with zipfile.ZipFile(ok) as zin, zipfile.ZipFile(bad, "w") as zout:
        for info in zin.infolist():
            zout.writestr(info, zin.read(info))
        zout.writestr(f"{root}/{member}", b"\x7fELF")
    with pytest.raises(UntrustedCheckpointError, match=match):
        gatex.load_model(bad)


def test_pt2_archive_too_large_unpacked_is_refused(tmp_path: Path, monkeypatch) -> None:
    program = _golu_program(tmp_path / "golu.pt2")
    monkeypatch.setenv("GATEX_MAX_MODEL_BYTES", "1000")
    with pytest.raises(BadInputError, match="over gatex.s limit"):
        gatex.load_model(program)


def test_random_bytes_checkpoint_is_corrupt_not_untrusted(tmp_path: Path) -> None:
    path = tmp_path / "rnd.pt"
    path.write_bytes(bytes(range(256)) * 40)
    for trust in (False, True):
        with pytest.raises(CheckpointError, match="corrupt") as info:
            gatex.read_checkpoint(path, trust_checkpoint=trust)
        assert not isinstance(info.value, UntrustedCheckpointError)
        assert "trust" not in str(info.value)


def test_trusted_checkpoint_needing_missing_module_is_bad_input(tmp_path: Path) -> None:
    path = tmp_path / "needs.pt"
    path.write_bytes(b"\x80\x02cgatex_no_such_module_xyz\nThing\nq\x00)\x81q\x01.")
    with pytest.raises(UntrustedCheckpointError, match="needs code to load"):
        gatex.read_checkpoint(path)
    with pytest.raises(CheckpointError, match="not importable here.*gatex_no_such_module_xyz"):
        gatex.read_checkpoint(path, trust_checkpoint=True)
