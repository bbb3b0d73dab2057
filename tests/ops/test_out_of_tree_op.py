"""The public extension point: an op defined outside gatex, in one file, through every backend.

tests/plugin_ops/ is what a user's package would install: ``gatex_softsign_unit.py`` defines
paSoftsignExt (spec, reference, impl, lowerings from the gate catalogue) and registers it with
`gatex.ops.register`; its dist-info declares it in the ``gatex.ops`` entry-point group, so a
gatex process finds it with no import of its own. ``softsign_model.py`` is the user's model.
Every command runs in a fresh process with that folder on PYTHONPATH (the op never enters this
process's registry, so the registry-wide tests stay about gatex's own ops).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]
PLUGIN = ROOT / "tests" / "plugin_ops"
MODEL = f"{PLUGIN / 'softsign_model.py'}:build"


def run(*args: str, cwd: Path, extra_path: Path = PLUGIN, env: dict | None = None,
        python: bool = False) -> subprocess.CompletedProcess:
    full_env = {k: v for k, v in os.environ.items() if k != "GATEX_DEBUG"}
    full_env.update(PYTHONPATH=os.pathsep.join([str(extra_path), str(ROOT)]), COLUMNS="200",
                    **(env or {}))
    command = [sys.executable, *args] if python else [sys.executable, "-m", "gatex", *args]
    return subprocess.run(command, cwd=cwd, env=full_env, text=True, capture_output=True,
                          timeout=600, stdin=subprocess.DEVNULL, check=False)


@pytest.fixture(scope="module")
def exports(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The user's model exported to ONNX, CoreML and TensorRT (bundle) once for the module."""
    work = tmp_path_factory.mktemp("plugin")
    for to, extra in (("onnx", ()), ("coreml", ()), ("trt", ("--plugins", "all"))):
        proc = run("export", "--model", MODEL, "--input-shape", "4,16", "--to", to,
                   "-o", "out", *extra, cwd=work)
        # trt: no TensorRT here, so the bundle is written and the engine is not built (exit 3)
        assert proc.returncode == (3 if to == "trt" else 0), proc.stderr
        assert "gatex ops: paSoftsignExt" in proc.stdout or to == "trt", proc.stdout
        assert " pass " in proc.stdout or to == "trt", proc.stdout
    np.savez(work / "x.npz", input=np.random.default_rng(0).standard_normal((32, 16))
             .astype(np.float32))
    return work


def test_units_lists_the_op_on_every_backend_found_by_its_entry_point(tmp_path: Path) -> None:
    proc = run("units", "--json", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    ops = {op["name"]: op for op in json.loads(proc.stdout)}
    assert ops["paSoftsignExt"]["backends"] == ["torch", "onnx", "coreml", "tensorrt"]
    assert ops["paSoftsignExt"]["family"] == "softsign_unit"
    # without the package on the path the op does not exist
    proc = run("units", "--json", cwd=tmp_path, extra_path=tmp_path)
    assert "paSoftsignExt" not in {op["name"] for op in json.loads(proc.stdout)}


def test_onnx_and_coreml_exports_hold_the_op_and_pass_parity(exports: Path) -> None:
    import onnx

    model = onnx.load(str(exports / "out" / "build-portable-fp32.onnx"))
    assert [n.op_type for n in model.graph.node if n.domain == "gatex"] == ["paSoftsignExt"] * 2
    assert {f.name for f in model.functions} == {"paSoftsignExt"}
    proc = run("parity", "out/build-portable-fp32.onnx", "out/build-fp16.mlpackage",
               "--model", MODEL, "--inputs", "x.npz", "--json", "p.json", cwd=exports)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    verdict = json.loads((exports / "p.json").read_text())
    assert verdict["passed"] and len(verdict["results"]) == 2


def test_tensorrt_bundle_carries_the_op_as_a_plugin_with_its_kernel(exports: Path) -> None:
    bundle = exports / "out" / "build-trt-fp16"
    plan = json.loads((bundle / "plan.json").read_text())
    decisions = {d["op"]: d["choice"] for d in plan["decisions"]}
    assert decisions == {"paSoftsignExt": "plugin"}
    assert [p["name"] for p in plan["plugins"]] == ["paSoftsignExt"]
    kernels = json.loads((bundle / "kernels.json").read_text())
    # the op's Triton kernel compiled to PTX (triton compiles without a GPU), one per alpha value
    assert {k["plugin"] for k in kernels["kernels"]} == {"paSoftsignExt"}
    assert sorted(k["attributes"]["alpha"] for k in kernels["kernels"]) == [0.5, 0.7998046875]
    assert all(".entry gatex_pasoftsignext_fp16" in k["ptx"] for k in kernels["kernels"])


def test_bench_runs_the_op_on_torch_and_onnxruntime(exports: Path) -> None:
    proc = run("bench", "out/build-portable-fp32.onnx", "--model", MODEL, "--input-shape",
               "4,16", "--backend", "torch,ort", "--iterations", "5", "--warmup", "1",
               "--json", "b.json", cwd=exports)
    assert proc.returncode == 0, proc.stderr
    rows = json.loads((exports / "b.json").read_text())["backends"]
    assert [(r["backend"], r["status"]) for r in rows] == [("torch", "ok"), ("ort", "ok")]


TRITON_CHILD = textwrap.dedent("""
    import torch, gatex.ops as ops
    from gatex.ops.kernels.launch import gated
    spec = ops.get_op("paSoftsignExt")
    u = torch.tensor([-1.1e5, -3e4, -11.0, -1.0, 0.0, 0.5, 3.0, 1e4] * 4)
    v = torch.full_like(u, 6e4)
    worst = 0.0
    for alpha in (0.5, 0.25, 0.8, 1.0):
        a = torch.tensor(alpha)
        got = gated("paSoftsignExt", v, u, alpha=a)
        want = spec.impl(v.double(), u.double(), alpha=a.double())
        tol = spec.tolerance(torch.float32)
        ok = bool(tol.allows(got, want))
        worst = max(worst, float((got.double() - want).abs().max()))
        print("alpha", alpha, "ok" if ok else "FAIL", flush=True)
    print("worst", worst)
""")


def test_the_triton_kernel_computes_the_op(tmp_path: Path) -> None:
    """The op's plan (from its ``tensorrt`` lowering) drives gatex's Triton kernel; under Triton's
    interpreter on the CPU it matches the op's impl, also where alpha = 0.5 would cancel."""
    pytest.importorskip("triton", reason="the kernels need the triton extra")
    proc = run("-c", TRITON_CHILD, cwd=tmp_path, python=True,
               env={"TRITON_INTERPRET": "1", "GATEX_TRITON": "0"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = proc.stdout.splitlines()
    assert [line for line in lines if line.startswith("alpha")] == \
        [f"alpha {a} ok" for a in (0.5, 0.25, 0.8, 1.0)], proc.stdout


def test_a_broken_entry_point_is_one_warning_and_gatex_still_works(tmp_path: Path) -> None:
    dist = tmp_path / "broken_ops-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: broken-ops\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text("[gatex.ops]\nbroken = broken_ops\n")
    (tmp_path / "broken_ops.py").write_text("raise RuntimeError('this plugin is broken')\n")
    proc = run("units", "--json", cwd=tmp_path, extra_path=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr.splitlines() == [
        "warning: gatex.ops entry point 'broken' (broken_ops) failed to load: RuntimeError: "
        "this plugin is broken"]
    assert "GoLU" in {op["name"] for op in json.loads(proc.stdout)}


def test_register_derives_the_schema_and_refuses_a_second_op_of_one_name() -> None:
    import gatex.ops as ops
    from gatex.errors import DuplicateRegistrationError

    assert ops.schema_for(ops.get_op("paSwishU")) == \
        "(Tensor v, Tensor u, Tensor alpha, float beta=1.0) -> Tensor"
    assert ops.schema_for(ops.get_op("GatedDense")) == \
        "(Tensor x, Tensor kernel, Tensor gates, Tensor? bias, str activation='linear') -> Tensor"
    with pytest.raises(DuplicateRegistrationError, match="collides with gatex::paGLU"):
        ops.register(ops.get_op("paGLU"))
