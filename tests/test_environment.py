"""`gatex.environment.probe`: what is installed, importing no more than it must, never crashing."""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import platform
import sys

import numpy
import pytest
import torch

from gatex import environment
from gatex.environment import installed_version, probe


def test_installed_version_reads_metadata_without_importing():
    assert installed_version("numpy") == (True, numpy.__version__)
    assert installed_version("gatex_no_such_module_xyz") == (False, None)


@pytest.mark.skipif(importlib.util.find_spec("sklearn") is None,
                    reason="scikit-learn not installed")
def test_installed_version_maps_module_to_distribution_name():
    # import name sklearn, distribution scikit-learn: found through packages_distributions()
    from importlib.metadata import version

    assert installed_version("sklearn") == (True, version("scikit-learn"))


def test_report_is_frozen_and_json_ready():
    report = probe()
    with pytest.raises(dataclasses.FrozenInstanceError):
        report.torch_version = "0"  # type: ignore[misc]
    data = json.loads(json.dumps(report.as_dict()))
    assert data["python_version"] == platform.python_version()
    assert data["python_executable"] == sys.executable
    assert data["torch_version"] == torch.__version__
    assert report.component("torch").version == torch.__version__
    with pytest.raises(KeyError, match="no component"):
        report.component("jax")


def test_absent_backends_say_what_gatex_does_instead():
    report = probe()
    if not report.component("tensorrt").available:
        assert "build script" in report.component("tensorrt").note
    if platform.system() != "Darwin":
        assert not report.coreml_can_predict
        assert "MIL emulator" in report.component("coreml-predict").note
    if not torch.cuda.is_available():
        assert report.cuda_devices == () and not report.component("cuda").available


def test_probe_imports_no_optional_package_but_onnxruntime(run_python):
    proc = run_python("-c", (
        "import sys; from gatex.environment import probe; probe(); "
        "print(sorted({m.split('.')[0] for m in sys.modules} & "
        "{'onnx', 'onnxscript', 'coremltools', 'tensorrt', 'triton', 'cupy'}))"))
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"


def test_broken_packages_are_reported_not_raised(monkeypatch):
    # None in sys.modules makes `import name` raise ImportError, like a broken install.
    monkeypatch.setitem(sys.modules, "torch", None)
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    report = probe()
    assert report.torch_version is None
    assert not report.component("torch").available
    assert "torch fails to import" in report.component("torch").note
    ort = report.component("onnxruntime")
    assert not ort.available and report.onnxruntime_providers == ()
    if installed_version("onnxruntime")[0]:
        assert "fails to import" in ort.note
    else:
        assert "not installed" in ort.note


def test_cuda_note_names_the_devices_or_why_not():
    facts = environment._TorchFacts("2.13.0+cu130", True, "13.0", ("NVIDIA H100", "NVIDIA H100"),
                                    False, "")
    assert environment._cuda_note(facts) == "NVIDIA H100, NVIDIA H100"
    cpu = dataclasses.replace(facts, cuda_available=False, cuda_version=None, cuda_devices=())
    assert "CPU build of torch" in environment._cuda_note(cpu)


def test_the_fast_probe_agrees_with_torch_and_imports_no_torch(run_python):
    """``probe(deep=False)`` (gatex doctor) reads torch's version and CUDA build from its files
    and the GPUs from the driver; on this machine it says what torch itself says."""
    fast, deep = probe(deep=False), probe()
    for field in ("torch_version", "cuda_version", "cuda_available", "cuda_devices"):
        assert getattr(fast, field) == getattr(deep, field), field
    assert fast.component("torch").available
    proc = run_python("-c", (
        "import sys; from gatex.environment import probe; r = probe(deep=False); "
        "print('torch' in sys.modules, r.torch_version)"))
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["False", torch.__version__]


def test_the_fast_probe_reads_a_cuda_build_and_the_drivers_gpus(tmp_path, monkeypatch):
    version = tmp_path / "torch" / "version.py"
    version.parent.mkdir()
    (version.parent / "__init__.py").write_text("raise ImportError('never imported')\n")
    version.write_text("from typing import Optional\n__version__ = '2.13.0+cu130'\n"
                       "cuda: Optional[str] = '13.0'\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "torch", raising=False)
    monkeypatch.setattr(environment, "_nvidia_devices", lambda: ("NVIDIA H200",))
    facts = environment._torch_facts_from_files()
    assert (facts.version, facts.cuda_version, facts.cuda_available, facts.cuda_devices) == \
        ("2.13.0+cu130", "13.0", True, ("NVIDIA H200",))
    monkeypatch.undo()
    for hidden in ("", "-1"):   # CUDA_VISIBLE_DEVICES hides every GPU from CUDA
        monkeypatch.setenv("CUDA_VISIBLE_DEVICES", hidden)
        assert environment._nvidia_devices() == ()
