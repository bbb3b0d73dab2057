"""gatex.load_model / read_checkpoint: zoo units, user models, .pt2, untrusted checkpoints."""

from __future__ import annotations

import collections
import textwrap
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file
from torch import nn

import gatex
from gatex.errors import BadInputError, CheckpointError, UnknownOpError, UntrustedCheckpointError
from gatex.models import zoo


class _Custom:  # a class a weights_only unpickler refuses
    def __init__(self) -> None:
        self.value = 3


def _linear_state() -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    return dict(nn.Linear(4, 3).state_dict())


def test_read_checkpoint_formats(tmp_path: Path) -> None:
    sd = _linear_state()
    save_file(sd, str(tmp_path / "w.safetensors"))
    torch.save(sd, tmp_path / "plain.pt")
    torch.save({"state_dict": sd, "epoch": 3}, tmp_path / "wrapped.pt")
    torch.save({"model_state_dict": sd, "optimizer": {"lr": 0.1}}, tmp_path / "wrapped2.pth")
    for name in ("w.safetensors", "plain.pt", "wrapped.pt", "wrapped2.pth"):
        got = gatex.read_checkpoint(tmp_path / name)
        assert got.keys() == sd.keys()
        for k in sd:
            assert torch.equal(got[k], sd[k]), (name, k)


def test_pickle_needing_code_is_refused_without_trust(tmp_path: Path) -> None:
    path = tmp_path / "evil.pt"
    torch.save({"state_dict": _linear_state(), "extra": _Custom()}, path)
    with pytest.raises(UntrustedCheckpointError, match="needs code to load") as info:
        gatex.read_checkpoint(path)
    assert "trust" in str(info.value) and "\n" not in str(info.value)
    assert set(gatex.read_checkpoint(path, trust_checkpoint=True)) == {"weight", "bias"}


@pytest.mark.parametrize("content", [b"", b"not a checkpoint at all", b"PK\x03\x04garbage"])
def test_corrupt_checkpoints(tmp_path: Path, content: bytes) -> None:
    for suffix in (".pt", ".safetensors"):
        path = tmp_path / f"bad{suffix}"
        path.write_bytes(content)
        with pytest.raises(CheckpointError):
            gatex.read_checkpoint(path)


def test_missing_checkpoint_and_not_a_state_dict(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="does not exist"):
        gatex.read_checkpoint(tmp_path / "nope.pt")
    torch.save([1, 2, 3], tmp_path / "list.pt")
    with pytest.raises(CheckpointError, match="no state_dict"):
        gatex.read_checkpoint(tmp_path / "list.pt")


def test_zoo_unit_loads_case_insensitively() -> None:
    model = gatex.load_model("paglu")
    assert not model.training
    x, y = zoo.held_out("paGLU")
    assert zoo.accuracy(model, x, y) >= 0.90


def test_unknown_unit_suggests() -> None:
    with pytest.raises(UnknownOpError, match="paGLU"):
        gatex.load_model("paGLUU")


def _user_file(tmp_path: Path) -> Path:
    path = tmp_path / "user_model.py"
    path.write_text(textwrap.dedent("""
        import torch
        from torch import nn

        class GoLUCUDA(nn.Module):          # upstream-style GoLU (automl/GoLU)
            def __init__(self, alpha=1.0, beta=1.0, gamma=1.0):
                super().__init__()
                self.alpha, self.beta, self.gamma = alpha, beta, gamma
            def forward(self, x):
                return self.alpha * x * torch.exp(-self.beta * torch.exp(-self.gamma * x))

        def build():
            return nn.Sequential(nn.Linear(4, 3), GoLUCUDA(beta=0.5), nn.Linear(3, 2))

        INSTANCE = build()
        NOT_A_MODEL = 42
    """))
    return path


def test_user_model_from_file_factory_and_weights(tmp_path: Path) -> None:
    path = _user_file(tmp_path)
    torch.manual_seed(1)
    reference = gatex.loading.import_object(f"{path}:build")().double()
    save_file({k: v.float() for k, v in reference.state_dict().items()},
              str(tmp_path / "w.safetensors"))
    model = gatex.load_model(f"{path}:build", weights=tmp_path / "w.safetensors").double()
    assert type(model[1]).__module__.startswith("gatex.models")
    assert model[1].beta == 0.5
    x = torch.randn(5, 4, dtype=torch.float64)
    torch.testing.assert_close(model(x), reference.float().double()(x))


def test_user_model_instance_attr(tmp_path: Path) -> None:
    model = gatex.load_model(f"{_user_file(tmp_path)}:INSTANCE")
    assert not model.training


@pytest.mark.parametrize("ref, message", [
    ("no_such_module_xyz:build", "cannot import"),
    ("{dir}/missing.py:build", "does not exist"),
    ("{file}:missing_attr", "has no attribute"),
    ("{file}:NOT_A_MODEL", "neither an nn.Module"),
])
def test_user_model_bad_references(tmp_path: Path, ref: str, message: str) -> None:
    file = _user_file(tmp_path)
    with pytest.raises(BadInputError, match=message):
        gatex.load_model(ref.format(dir=tmp_path, file=file))


def test_weights_that_do_not_fit(tmp_path: Path) -> None:
    save_file({"0.weight": torch.zeros(7, 7)}, str(tmp_path / "w.safetensors"))
    with pytest.raises(CheckpointError):
        gatex.load_model(f"{_user_file(tmp_path)}:build", weights=tmp_path / "w.safetensors")


def test_exported_program_round_trip(tmp_path: Path) -> None:
    model = gatex.load_model("GoLU")
    example = zoo.example_inputs("GoLU", batch=4)
    program = torch.export.export(model, example)
    torch.export.save(program, tmp_path / "golu.pt2")
    loaded = gatex.load_model(tmp_path / "golu.pt2")
    torch.testing.assert_close(loaded(*example), model(*example))
    targets = collections.Counter(str(n.target) for n in program.graph.nodes
                                  if n.op == "call_function")
    assert targets["gatex.golu.default"] == 2


def test_exported_program_errors(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="does not exist"):
        gatex.load_model(tmp_path / "missing.pt2")
    (tmp_path / "bad.pt2").write_bytes(b"junk")
    with pytest.raises(CheckpointError, match="not a loadable"):
        gatex.load_model(tmp_path / "bad.pt2")
