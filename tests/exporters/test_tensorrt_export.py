"""``gatex export --to trt``: the bundle (ONNX, plan, build script, README, kernels), the measured
plugin policy, the plugin definitions against tensorrt.plugin's documented schemas, exit 3 where
TensorRT is missing. TensorRT itself is not installed here; nothing below runs it.

The bundles' ONNX is run with ``onnx.reference`` (every op in the graph's own precision), the
gatex plugin nodes evaluated by the op's torch impl in that precision: what the plugin computes
(the kernels themselves are checked against the same impls in tests/ops/test_kernels.py). The
result is judged like any gatex artifact (`compare_runtimes`: spec tolerances, and for fp16/bf16
the measured precision floor).
"""

from __future__ import annotations

import importlib.util
import inspect
import json
import math
import subprocess
import sys
import typing
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import onnx
import pytest

from gatex.ops.kernels import kernel_ops
import torch
from onnx import helper
from typer.testing import CliRunner

from decision_flips import xfail_on_decision_flips

from gatex.cli import app
from gatex.errors import BackendUnavailableError, BadInputError
from gatex.exporters.tensorrt import EngineNotBuilt, export_tensorrt
from gatex.models import zoo
from gatex.ops import REGISTRY
from gatex.ops.kernels import trt_bundle
from gatex.ops.kernels.policy import decide, measure_decomposition
from gatex.pipeline.check import compare_runtimes
from gatex.runtimes import TorchRuntime
from gatex.runtimes.base import Runtime, TensorSpec

HAS_TRT = importlib.util.find_spec("tensorrt") is not None
HAS_TRITON = importlib.util.find_spec("triton") is not None
NO_TRT_ONLY = pytest.mark.skipif(HAS_TRT, reason="TensorRT is installed here: an engine is built")
TORCH_DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


def export_bundle(unit: str, out: Path, precision: str, plugins: str):
    model = zoo.load(unit)
    x, _ = zoo.held_out(unit)
    return export_tensorrt(model, (x[:4],), out, name=unit, precision=precision,
                           plugins=plugins, unit=unit, build=False)


@pytest.fixture(scope="module")
def bundles(tmp_path_factory) -> dict[str, Any]:
    out = tmp_path_factory.mktemp("trt")
    return {
        "paGLU-fp32-all": export_bundle("paGLU", out, "fp32", "all"),
        "paMishU-bf16-none": export_bundle("paMishU", out, "bf16", "none"),
        # the zoo GELU_s's learned sigma makes its fp16 decomposition unsafe: a plugin
        "GELU_s-fp16-auto": export_bundle("GELU_s", out, "fp16", "auto"),
    }


def gatex_nodes(proto: onnx.ModelProto) -> list[onnx.NodeProto]:
    return [n for n in proto.graph.node if n.domain == "gatex"]


# --- the ONNX in the bundle -------------------------------------------------------------------

def test_plugin_nodes_carry_the_plugin_mapping_and_no_local_functions(bundles) -> None:
    art = bundles["paGLU-fp32-all"]
    proto = onnx.load(art.onnx_path)
    assert len(proto.functions) == 0          # TensorRT's parser would prefer a function
    nodes = gatex_nodes(proto)
    assert [n.op_type for n in nodes] == ["paGLU", "paGLU"]    # the zoo net's two units
    for node in nodes:
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        assert attrs == {"alpha": 0.5, "plugin_namespace": b"gatex", "plugin_version": b"1",
                         "aot": 1}
        assert len(node.input) == 2           # v and u; alpha folded into the attribute
    assert [o.domain for o in proto.opset_import if o.domain] == ["gatex"]
    meta = {p.key: p.value for p in proto.metadata_props}
    assert meta["gatex.unit"] == "paGLU" and meta["gatex.dtype"] == "fp32"
    assert meta["gatex.trt.plugins"] == "all"
    assert [d["op"] for d in json.loads(meta["gatex.trt.decisions"])] == ["paGLU"]
    onnx.checker.check_model(proto, full_check=True)


def test_precision_is_in_the_graph_types(bundles) -> None:
    for key, elem in (("paGLU-fp32-all", onnx.TensorProto.FLOAT),
                      ("paMishU-bf16-none", onnx.TensorProto.BFLOAT16),
                      ("GELU_s-fp16-auto", onnx.TensorProto.FLOAT16)):
        proto = onnx.load(bundles[key].onnx_path)
        io = [*proto.graph.input, *proto.graph.output]
        assert {v.type.tensor_type.elem_type for v in io} == {elem}, key
        floats = {t.data_type for t in proto.graph.initializer} - {onnx.TensorProto.INT64}
        assert floats == {elem}, key


def test_none_inlines_every_op_and_drops_the_gatex_domain(bundles) -> None:
    art = bundles["paMishU-bf16-none"]
    proto = onnx.load(art.onnx_path)
    assert gatex_nodes(proto) == [] and len(proto.functions) == 0
    assert all(o.domain in ("", "ai.onnx") for o in proto.opset_import)
    assert [o.version for o in proto.opset_import] == [22]   # bf16 needs opset 22
    assert art.plugins == () and art.decisions[0].choice == "decomposed"
    assert "--plugins none" in art.decisions[0].reason


class ReferenceRuntime(Runtime):
    """A bundle's ONNX in onnx.reference; gatex plugin nodes run the op's torch impl in the
    node's dtype (what the plugin computes)."""

    name = "onnx.reference (gatex plugins as torch impls)"

    def __init__(self, path: Path) -> None:
        super().__init__()
        self.model = path

    def _load(self) -> None:
        from onnx.reference import ReferenceEvaluator

        self.proto = onnx.load(self.model)
        self.session = ReferenceEvaluator(self.proto, new_ops=[
            _plugin_op(n.op_type) for n in gatex_nodes(self.proto)])

    def _input_specs(self) -> tuple[TensorSpec, ...]:
        def spec(v):
            dims = tuple(d.dim_value if d.HasField("dim_value") else None
                         for d in v.type.tensor_type.shape.dim)
            return TensorSpec(v.name, helper.tensor_dtype_to_np_dtype(
                v.type.tensor_type.elem_type).name, dims)

        return tuple(spec(v) for v in self.proto.graph.input)

    def _output_names(self) -> tuple[str, ...]:
        return tuple(o.name for o in self.proto.graph.output)

    def _run(self, feeds):
        out = self.session.run(None, feeds)
        return dict(zip(self._output_names(), out))


def _plugin_op(op_type: str):
    from onnx.reference.op_run import OpRun

    from gatex.runtimes.torch_runtime import from_numpy, to_numpy

    spec = REGISTRY.get(op_type)

    def _run(self, *inputs, **attrs):
        tensors = [from_numpy(np.asarray(a)) for a in inputs]
        params = {p.name: torch.tensor(attrs[p.name], dtype=tensors[0].dtype) if p.learnable
                  else attrs[p.name] for p in spec.params}
        if isinstance(params.get("gate"), bytes):
            params["gate"] = params["gate"].decode()
        return (to_numpy(spec.impl(*tensors, **params)),)

    return type(op_type, (OpRun,), {"op_domain": "gatex", "_run": _run})


@pytest.mark.parametrize("key", ["paGLU-fp32-all", "paMishU-bf16-none", "GELU_s-fp16-auto"])
def test_bundle_onnx_computes_the_model(bundles, key) -> None:
    art = bundles[key]
    unit = key.split("-")[0]
    x, _ = zoo.held_out(unit)
    from gatex.runtimes.torch_runtime import to_numpy

    with ReferenceRuntime(art.onnx_path) as artifact, TorchRuntime(zoo.load(unit)) as reference:
        name = artifact.input_specs[0].name
        feeds = {name: to_numpy(x[:128].to(TORCH_DTYPES[art.precision]))}
        result = compare_runtimes(artifact, reference, feeds, artifact_name=art.onnx_path.name,
                                  dtype={"fp32": "float32", "fp16": "float16",
                                         "bf16": "bfloat16"}[art.precision])
    assert result, result.summary()


# --- the plugin policy ------------------------------------------------------------------------

def test_auto_policy_is_measured_per_op_and_precision() -> None:
    # ZiLU's decomposition R(x) + x atan(-1/(sigma x)) / pi has no cancellation (the former
    # 0.5 + atan(z)/pi lost |x| eps / 2 for z << 0, 460x the fp32 tolerance on the hazard inputs,
    # and needed a plugin): measured safe in every precision, so TensorRT may fuse it
    for precision in ("fp32", "fp16", "bf16"):
        d = decide("ZiLU", [{"sigma": 1.0}], precision, "auto")
        (check,) = d.checks
        assert not d.plugin and check.faults == 0 and check.worst_ratio < 0.5, \
            (precision, d.reason)
    # GoLU's exp(-exp(t)) stays finite and within tolerance even in fp16 (no plugin needed)
    golu = decide("GoLU", [{"alpha": 1.0, "beta": 1.0, "gamma": 1.0}], "fp16", "auto")
    assert not golu.plugin and golu.checks[0].faults == 0 and golu.checks[0].worst_ratio < 1
    # paGLU with alpha = 1 in fp16: sigmoid(-17) is an fp16 subnormal, times v = 65504
    pa = decide("paGLU", [{"alpha": 0.5}, {"alpha": 1.0}], "fp16", "auto")
    assert pa.plugin and [c.safe for c in pa.checks] == [True, False]
    assert pa.checks[1].worst_inputs == (65504.0, -17.0)
    assert not decide("paGLU", [{"alpha": 0.5}], "fp16", "auto").plugin
    assert not decide("paGLU", [{"alpha": 1.0}], "fp32", "auto").plugin


def test_policies_all_none_and_ops_without_kernel() -> None:
    assert decide("GoLU", [{}], "fp16", "all").plugin
    none = decide("paGLU", [{"alpha": 1.0}], "fp16", "none")   # unsafe in fp16 (see above)
    assert not none.plugin and "UNSAFE, kept as asked" in none.reason
    for policy in ("auto", "all", "none"):
        d = decide("CGConv2d", [{}], "fp16", policy)
        assert not d.plugin and "not an elementwise op" in d.reason and d.checks == ()
    with pytest.raises(BadInputError, match="unknown TensorRT precision 'fp8'"):
        decide("GoLU", [{}], "fp8", "auto")
    with pytest.raises(BadInputError, match="unknown plugin policy 'some'"):
        decide("GoLU", [{}], "fp16", "some")


def test_measurement_flags_a_broken_decomposition(monkeypatch) -> None:
    # a GoLU lowering 1 % off must read as unsafe (the measurement has teeth)
    good = measure_decomposition("GoLU", {"gamma": 2.0}, "fp32")
    spec = REGISTRY.get("GoLU")
    lower = spec.lowerings["onnx"]
    monkeypatch.setitem(spec.lowerings, "onnx", lambda b, x, **p: b.mul(lower(b, x, **p), 1.01))
    bad = measure_decomposition("GoLU", {"gamma": 3.0}, "fp32")   # uncached parameters
    assert good.safe and not bad.safe and bad.worst_ratio > 100


def test_the_decision_table_is_in_plan_json_and_the_readme(bundles) -> None:
    art = bundles["GELU_s-fp16-auto"]
    plan = json.loads((art.bundle / "plan.json").read_text())
    assert plan["schema"] == "gatex.trt-plan/1" and plan["unit"] == "GELU_s"
    assert plan["precision"] == "fp16" and plan["policy"] == "auto"
    (row,) = plan["decisions"]
    assert row["op"] == "GELU_s" and row["choice"] == "plugin"
    # inf for an input near fp16's max: the measurement says so, in strict JSON
    assert all(m["faults"] > 0 and m["safe"] is False and m["worst_got"] == "inf"
               for m in row["measured"])
    json.loads((art.bundle / "plan.json").read_text(),
               parse_constant=lambda c: pytest.fail(f"plan.json holds {c}: not strict JSON"))
    assert plan["plugins"] == [{"name": "GELU_s", "inputs": ["x"],
                                "attributes": {"sigma": "float"}}]
    readme = (art.bundle / "README.md").read_text()
    assert "| GELU_s | plugin |" in readme
    assert "trtexec --loadEngine=GELU_s-trt-fp16.engine" in readme


# --- the bundle on disk and the command line ---------------------------------------------------

def test_bundle_files_and_build_script_is_the_standalone_module(bundles) -> None:
    art = bundles["GELU_s-fp16-auto"]
    expected = {"GELU_s-trt-fp16.onnx", "plan.json", "build_engine.py", "README.md"}
    if HAS_TRITON:
        expected.add("kernels.json")
    assert set(art.files) == expected == {p.name for p in art.bundle.iterdir()}
    assert (art.bundle / "build_engine.py").read_text() == inspect.getsource(trt_bundle)
    assert art.kernels_precompiled is HAS_TRITON


def test_a_bundle_without_plugins_ships_no_kernels_and_says_so(bundles) -> None:
    art = bundles["paMishU-bf16-none"]
    assert art.plugins == () and not art.kernels_precompiled
    assert "kernels.json" not in {p.name for p in art.bundle.iterdir()}
    readme = (art.bundle / "README.md").read_text()
    assert "No op is a plugin here" in readme and "kernels.json" not in readme


@pytest.mark.skipif(not HAS_TRITON, reason="triton is not installed: no kernels.json")
def test_kernels_json_holds_one_ptx_kernel_per_plugin_node(bundles) -> None:
    from gatex.ops.kernels.ptx import entry_params

    art = bundles["paGLU-fp32-all"]
    (kernel,) = json.loads((art.bundle / "kernels.json").read_text())["kernels"]
    assert kernel["plugin"] == "paGLU" and kernel["dtype"] == "fp32"   # both nodes share it
    assert set(kernel["attributes"]) == {"alpha"}
    # inputs v, u, then n, then the output: exactly what TensorRT's AOT launch passes
    assert len(entry_params(kernel["ptx"], kernel["name"])) == kernel["n_params"] == 4
    find = trt_bundle.kernels_from_file(art.bundle / "kernels.json")
    assert find("paGLU", {"alpha": kernel["attributes"]["alpha"] * (1 + 1e-8)}, "fp32") == kernel
    with pytest.raises(KeyError, match="no fp16 kernel for paGLU"):
        find("paGLU", kernel["attributes"], "fp16")


def test_build_script_runs_standalone_and_says_what_is_missing(bundles) -> None:
    art = bundles["GELU_s-fp16-auto"]
    script = art.bundle / "build_engine.py"
    # -I: isolated from gatex and the checkout; the script needs only the standard library
    # until it builds, and then tensorrt
    help_run = subprocess.run([sys.executable, "-I", str(script), "--help"], capture_output=True,
                              text=True, timeout=60, check=False)
    assert help_run.returncode == 0 and "--max-batch" in help_run.stdout
    if HAS_TRT:
        return
    run = subprocess.run([sys.executable, "-I", str(script)], capture_output=True, text=True,
                         timeout=60, check=False)
    assert run.returncode == 1
    assert run.stderr.strip().splitlines() == ["error: No module named 'tensorrt'"]
    assert not list(art.bundle.glob("*.engine"))


@NO_TRT_ONLY
def test_cli_without_tensorrt_writes_the_bundle_and_exits_3(tmp_path) -> None:
    out = tmp_path / "out"
    result = CliRunner().invoke(app, ["export", "--unit", "GoLU", "--to", "trt", "--precision",
                                      "fp16", "-o", str(out)], env={"COLUMNS": "200"})
    assert result.exit_code == 3, result.output
    (line,) = result.stderr.strip().splitlines()
    bundle = out / "GoLU-trt-fp16"
    assert line.startswith("error: TensorRT is not installed here, so no engine was built; "
                           f"wrote the bundle {bundle}/")
    assert f"run python {bundle / 'build_engine.py'}" in line
    assert "TensorRT plan: fp16, --plugins auto" in result.stdout
    assert "GoLU" in result.stdout and "decomposed" in result.stdout
    assert sorted(p.name for p in out.iterdir()) == ["GoLU-trt-fp16"]   # no temporary left
    assert (bundle / "GoLU-trt-fp16.onnx").is_file() and (bundle / "plan.json").is_file()


@NO_TRT_ONLY
def test_library_raises_engine_not_built_with_the_artifact(tmp_path) -> None:
    model = zoo.load("paReGLU")
    x, _ = zoo.held_out("paReGLU")
    with pytest.raises(EngineNotBuilt) as info:
        export_tensorrt(model, (x[:4],), tmp_path, name="net", precision="fp32", plugins="none")
    assert isinstance(info.value, BackendUnavailableError) and info.value.exit_code == 3
    art = info.value.artifact
    assert art.engine_path is None and art.path == art.onnx_path == tmp_path / "net-trt-fp32" / \
        "net-trt-fp32.onnx"
    assert "\n" not in str(info.value)


def test_bundle_is_written_atomically(tmp_path, monkeypatch) -> None:
    model, (x, _) = zoo.load("paGTU"), zoo.held_out("paGTU")
    first = export_tensorrt(model, (x[:4],), tmp_path, name="m", precision="fp32",
                            plugins="none", build=False)
    before = {p.name: p.read_bytes() for p in first.bundle.iterdir()}

    def broken(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(onnx, "save_model", broken)
    with pytest.raises(BadInputError, match="cannot write the bundle .*No space left on device"):
        export_tensorrt(model, (x[:4],), tmp_path, name="m", precision="fp32", plugins="all",
                        build=False)
    # the failed export left the earlier bundle as it was, and no temporary behind
    assert [p.name for p in tmp_path.iterdir()] == ["m-trt-fp32"]
    assert {p.name: p.read_bytes() for p in first.bundle.iterdir()} == before


@pytest.mark.parametrize(("args", "message"), [
    (["--precision", "fp8"], "unknown TensorRT precision 'fp8'; choose one of fp32, fp16, bf16"),
    (["--plugins", "most"], "unknown plugin policy 'most'; choose one of auto, all, none"),
    (["--dtype", "fp16"], "--dtype is not for --to trt; TensorRT export takes --precision"),
    (["--flavor", "inline", "--target", "iOS17"], "--flavor, --target are not for --to trt"),
    (["--precision", "bf16", "--opset", "21"], "--precision bf16 needs opset 22 or newer"),
])
def test_cli_bad_trt_options_exit_2_and_write_nothing(tmp_path, args, message) -> None:
    result = CliRunner().invoke(app, ["export", "--unit", "GoLU", "--to", "trt", "-o",
                                      str(tmp_path), *args], env={"COLUMNS": "200"})
    assert result.exit_code == 2, result.output
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith("error: ") and message in line
    assert list(tmp_path.iterdir()) == []


def test_plugins_option_belongs_to_trt(tmp_path) -> None:
    result = CliRunner().invoke(app, ["export", "--unit", "GoLU", "--plugins", "all", "-o",
                                      str(tmp_path)])
    assert result.exit_code == 2 and "--plugins goes with --to trt" in result.stderr


# --- the plugin definitions against tensorrt.plugin's documented schemas ----------------------

class FakeTensorDesc:
    """Stands in for trtp.TensorDesc: a dtype and a symbolic element count."""

    def __init__(self, dtype: str = "half") -> None:
        self.dtype = dtype
        self.shape_expr = SimpleNamespace(numel=lambda: "N")

    def like(self) -> FakeTensorDesc:
        return FakeTensorDesc(self.dtype)


def fake_tensorrt() -> tuple[Any, Any, dict[str, dict[str, Any]]]:
    """(trt, trtp, registry): a tensorrt.plugin whose decorators check the signatures the API
    reference documents (register: TensorDescs then typed attributes, no defaults; autotune:
    (inputs, outputs); impl: (inputs, attrs, outputs, stream); aot_impl: (inputs, attrs,
    outputs, tactic) with the 4-tuple return annotation) and record the functions."""
    registry: dict[str, dict[str, Any]] = {}

    class SymIntExprs(list):
        def __init__(self, n: int) -> None:
            super().__init__([None] * n)

    class KernelLaunchParams(SimpleNamespace):
        pass

    class AutoTuneCombination:
        def __init__(self, types: str, layouts: str = "") -> None:
            self.types, self.layouts = types, layouts

    def register(plugin_id):
        def deco(fn):
            assert plugin_id not in registry, f"{plugin_id} defined twice"
            sig = inspect.signature(fn)
            tensors, attrs = [], {}
            for name, p in sig.parameters.items():
                assert p.default is inspect.Parameter.empty, f"{name} has a default"
                if p.annotation is FakeTensorDesc:
                    assert not attrs, "TensorDescs come before attributes"
                    tensors.append(name)
                else:
                    assert p.annotation in (int, float, bytes, bool, str), (name, p.annotation)
                    attrs[name] = p.annotation
            assert sig.return_annotation is FakeTensorDesc
            registry[plugin_id] = {"register": fn, "tensors": tensors, "attrs": attrs}
            return fn
        return deco

    def checked(kind, tail):
        def decorator(plugin_id):
            def deco(fn):
                entry = registry[plugin_id]
                names = list(inspect.signature(fn).parameters)
                attrs = [a for a in entry["attrs"] if a in names]
                assert names == [*entry["tensors"], *attrs, *tail], (kind, names)
                entry[kind] = fn
                return fn
            return deco
        return decorator

    trtp = SimpleNamespace(
        TensorDesc=FakeTensorDesc, SymIntExprs=SymIntExprs, SymExprs=SymIntExprs,
        KernelLaunchParams=KernelLaunchParams, AutoTuneCombination=AutoTuneCombination,
        SymInt32=lambda e: ("int32", e), cdiv=lambda a, b: ("cdiv", a, b), register=register,
        autotune=checked("autotune", ["outputs"]), impl=checked("impl", ["outputs", "stream"]),
        aot_impl=checked("aot_impl", ["outputs", "tactic"]))
    trt = SimpleNamespace(float32="float", float16="half", bfloat16="bf16")
    return trt, trtp, registry


def test_plugin_definitions_follow_the_documented_schemas(monkeypatch) -> None:
    from gatex.ops.kernels.trt_plugins import jit_impl, plugin_table

    monkeypatch.setattr(trt_bundle, "_DEFINED", set())   # a fresh process, as far as it knows
    trt, trtp, registry = fake_tensorrt()
    table = plugin_table()
    compiled = []

    def kernel_for(name, attributes, dtype):
        compiled.append((name, attributes, dtype))
        return {"name": f"k_{name}", "ptx": ".entry k()", "block": 1024, "num_warps": 4,
                "shared": 0}

    ids = trt_bundle.define_plugins(trtp, trt, table, kernel_for, jit_impl)
    assert ids == [f"gatex::{p['name']}" for p in table] and len(ids) == len(kernel_ops())
    golu = registry["gatex::GoLU"]
    assert golu["tensors"] == ["x"] and golu["attrs"] == {"alpha": float, "beta": float,
                                                         "gamma": float}
    assert registry["gatex::paUnit"]["attrs"] == {"alpha": float, "gate": str}
    assert registry["gatex::paSwishU"]["tensors"] == ["v", "u"]
    ret = inspect.signature(golu["aot_impl"]).return_annotation
    assert typing.get_origin(ret) is tuple and len(typing.get_args(ret)) == 4
    assert typing.get_args(ret)[2] is trtp.KernelLaunchParams
    # the register function describes the output like the first input
    assert golu["register"](FakeTensorDesc("bf16"), alpha=1.0, beta=1.0, gamma=1.0).dtype == "bf16"
    (combo,) = registry["gatex::paGLU"]["autotune"](FakeTensorDesc(), FakeTensorDesc(),
                                                    outputs=(FakeTensorDesc(),))
    assert combo.types == "FP32|FP16|BF16, FP32|FP16|BF16, FP32|FP16|BF16"
    # aot_impl: the kernel for these attributes and dtype, grid cdiv(n, block), n as int32
    name, ptx, launch, extra = golu["aot_impl"](FakeTensorDesc("half"), 0.5, 2.0, 1.0,
                                                outputs=(FakeTensorDesc(),), tactic=0)
    assert compiled == [("GoLU", {"alpha": 0.5, "beta": 2.0, "gamma": 1.0}, "fp16")]
    assert (name, ptx) == (b"k_GoLU", b".entry k()")
    assert launch.grid_x == ("cdiv", "N", 1024) and launch.block_x == 128
    assert launch.shared_mem == 0 and list(extra) == [("int32", "N")]
    # a second bundle in the same process: no second definition (the registry takes one), and
    # the plugins now take their kernels from the new source
    again = trt_bundle.define_plugins(trtp, trt, table[:1], lambda n, a, d: {
        "name": "other", "ptx": "", "block": 256, "num_warps": 8, "shared": 0}, None)
    assert again == ids[:1]
    name, _, launch, _ = golu["aot_impl"](FakeTensorDesc("float"), 1.0, 1.0, 1.0,
                                          outputs=(FakeTensorDesc(),), tactic=0)
    assert name == b"other" and launch.grid_x == ("cdiv", "N", 256) and launch.block_x == 256


def test_trt_plugins_import_without_tensorrt_and_register_says_what_is_missing() -> None:
    code = ("import sys, gatex.ops.kernels.trt_plugins as p, gatex.ops.kernels.trt_bundle, "
            "gatex.exporters.tensorrt, gatex.runtimes.tensorrt_runtime\n"
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('tensorrt', 'triton')))\n"
            "try:\n    p.register_trt_plugins()\nexcept Exception as e:\n"
            "    print(type(e).__name__, e.exit_code, e)\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr
    imported, *rest = proc.stdout.strip().splitlines()
    assert imported == "[]"
    if not HAS_TRT:
        assert rest == ["BackendUnavailableError 3 TensorRT is not installed here (gatex never "
                        "installs it: it needs an NVIDIA GPU and NVIDIA's tensorrt packages)"]


@pytest.mark.gpu
@pytest.mark.skipif(not (HAS_TRT and torch.cuda.is_available()),
                    reason=f"needs TensorRT and a CUDA device (tensorrt installed: {HAS_TRT}, "
                           f"cuda: {torch.cuda.is_available()})")
@pytest.mark.parametrize("precision", ["fp32", "fp16", "bf16"])
def test_engine_builds_and_matches_torch(tmp_path, precision) -> None:
    from gatex import pipeline as exporters

    result = exporters.export("ZiLU", to="trt", out_dir=tmp_path, precision=precision,
                              plugins="all")
    assert result.artifact.engine_path.is_file()
    assert result.parity, result.parity.summary()


# -- the bundle's graph on onnxruntime, plugins decomposed (what can run without TensorRT) -------

def plugin_graph(unit: str, precision: str, plugins: str = "all") -> onnx.ModelProto:
    """The ONNX a TensorRT bundle holds for ``unit`` (every elementwise op a plugin node), built
    as export_tensorrt builds it, without compiling the kernels to PTX."""
    from gatex.exporters.onnx import trace_onnx
    from gatex.exporters.tensorrt import _decide, build_trt_onnx

    model = zoo.load(unit).eval()
    opset = 22 if precision == "bf16" else 21
    traced = trace_onnx(model, (zoo.held_out(unit)[0][:4],),
                        dtype="fp16" if precision == "fp16" else "fp32", opset=opset)
    decisions = _decide(traced.proto, precision, plugins)
    return build_trt_onnx(traced.proto, precision, decisions, ops=traced.ops, unit=unit,
                          opset=opset, policy=plugins)


@pytest.mark.parametrize("precision", ["fp32", pytest.param("fp16", marks=pytest.mark.slow)])
@pytest.mark.parametrize("unit", list(zoo.ZOO))
def test_bundle_graph_with_plugins_decomposed_passes_parity(tmp_path, unit, precision):
    """Every zoo unit's TensorRT graph (plugins=all) runs on onnxruntime with each plugin node
    replaced by its decomposition and matches torch: the casts, wiring and attributes around
    the plugins are right, though the plugin kernels themselves are not what ran."""
    from gatex.artifacts.onnx_nodes import plugin_nodes
    from gatex.pipeline.check import check_artifact

    proto = plugin_graph(unit, precision)
    path = tmp_path / f"{unit}-{precision}.onnx"
    onnx.save(proto, path)
    result = check_artifact(path, unit=unit)
    if not result:
        verdict = result.outputs[0]
        xfail_on_decision_flips(unit, verdict.outside, math.prod(verdict.shape), result.summary())
    assert result, result.summary()
    plugged = sorted({n.op_type for n in plugin_nodes(proto)})
    assert result.emulated is bool(plugged)      # PaGRUCell, CG/PG: no plugin, ORT runs it all
    if plugged:
        assert f"TensorRT plugins decomposed: {', '.join(plugged)}" in result.runtime
        assert any("not the plugin kernels" in n for n in result.notes)
    assert (result.outputs[0].top1 or 0) >= 0.995


def test_decomposing_needs_typed_inputs():
    from gatex.artifacts.onnx_nodes import decompose_plugin_nodes

    proto = plugin_graph("ZiLU", "fp32")
    for v in proto.graph.input:     # untype the input: nothing downstream can be typed
        v.type.tensor_type.elem_type = onnx.TensorProto.UNDEFINED
    with pytest.raises(BadInputError, match="cannot tell the dtype of plugin node"):
        decompose_plugin_nodes(proto)


def test_a_bf16_bundle_graph_cannot_run_here_and_says_why(tmp_path):
    path = tmp_path / "ZiLU-bf16.onnx"
    onnx.save(plugin_graph("ZiLU", "bf16"), path)
    result = CliRunner().invoke(app, ["parity", str(path)])
    assert result.exit_code == 2
    (line,) = result.stderr.strip().splitlines()
    assert f"{path} (its TensorRT plugins decomposed)" in line
    assert "a bf16 graph: onnxruntime's CPU provider has no bf16 kernels" in line
