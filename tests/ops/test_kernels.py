"""The Triton gate kernels (gatex/ops/kernels): plans, host-side broadcasting, and every kernel x
dtype against the independent float64 formulas of ops_cases within the op spec's tolerance,
including OPS.md's hazard inputs.

Without a GPU the kernels run in Triton's interpreter (``TRITON_INTERPRET=1``: the kernels'
own arithmetic executed with NumPy on the CPU). The interpreter must be chosen before triton is
first imported, so those checks run in one child process (this file run as a script) and the
tests here read its report. They skip, saying why, where triton is not installed (CI installs
gatex without the ``triton`` extra: its wheel is about 290 MB, 1 GB installed). Tests marked
``gpu`` run the compiled kernels on a CUDA device and skip without one.

What the interpreter cannot show: GPU-only code generation (``tl.exp`` as ex2.approx, fused
multiply-adds, flushed subnormals) and fp32 -> bf16 rounding, which the interpreter truncates
where the GPU rounds to nearest (within the bf16 tolerance here, one bf16 ulp at most).
"""

from __future__ import annotations

import importlib.util
import json
import math
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
from ops_cases import CASES, Case, assert_within, call_op, formula, round_params

from gatex.ops import REGISTRY
from gatex.ops.kernels import KERNEL_OPS, kernel_status, plan_for, register_cuda_kernels
from gatex.ops.kernels.launch import collapse
from gatex.ops.kernels.plans import Gate, Mix, Value, kernel_gates

HERE = Path(__file__).resolve()
TRITON = importlib.util.find_spec("triton") is not None
NO_TRITON = "triton is not installed (pip install 'gatex[triton]'): Triton kernels not checked"
DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}

# Hazard cases beyond ops_cases.CASES (OPS.md: GoLU's overflowing inner exponent, huge sigma
# making sigma x overflow, paSwishU's sharp gate)
EXTRA_CASES = [
    Case("GoLU", {"gamma": 100.0}), Case("GoLU", {"beta": 1e-3, "gamma": 5.0}),
    Case("GoLU", {"gamma": 0.0}), Case("GoLU", {"beta": 50.0, "gamma": 0.1}),
    *(Case(n, {"sigma": s}) for n in ("GELU_s", "SiLU_s", "ArcTan", "ArcTan_Approx", "ZiLU",
                                       "ZiLU_Approx") for s in (100.0, 1000.0, -100.0)),
    Case("paSwishU", {"alpha": 1.0, "beta": 100.0}),
]
ALL_CASES = [*CASES, *EXTRA_CASES]


# --- plans and host side: no triton needed --------------------------------------------------

def test_every_elementwise_op_has_a_kernel_and_no_other_op_does() -> None:
    elementwise = {s.name for s in REGISTRY if s.elementwise}
    assert set(KERNEL_OPS) == elementwise
    assert len(KERNEL_OPS) == len(set(KERNEL_OPS))
    for spec in REGISTRY:
        if not spec.elementwise:
            with pytest.raises(ValueError, match="has no Triton kernel"):
                plan_for(spec.name, {})


def test_plans_carry_the_ops_scalars() -> None:
    golu = plan_for("GoLU", {"alpha": 0.7, "beta": 2.0, "gamma": 0.5})
    assert (golu.value, golu.gate, golu.mix) == (Value.ONE, Gate.GOLU, Mix.SCALE)
    assert (golu.c0, golu.c1, golu.c2) == (math.log(2.0), 0.5, 0.7)
    assert plan_for("GoLU", {"beta": 0.0}).c0 == -math.inf          # gate 1, as golu_impl
    swish = plan_for("paSwishU", {"beta": 2.5})
    assert (swish.gate, swish.c0, swish.mix, swish.p_param) == (Gate.SWISH, 2.5, Mix.ALPHA,
                                                                 "alpha")
    assert plan_for("paGTU", {}).value == Value.TANH
    zilu = plan_for("ZiLU_Approx", {})
    assert (zilu.p_param, zilu.sigma_from_p, zilu.clamp_z) == ("sigma", True, True)
    assert plan_for("ArcTan", {}).value == Value.ONE
    for name, (gate, _, _, _, lift) in kernel_gates().items():
        plan = plan_for("paUnit", {"gate": name})
        assert (plan.gate, plan.lift) == (gate, name in ("tanh", "softsign"))
    assert plan_for("paGTU", {}).lift and not plan_for("paGLU", {}).lift
    with pytest.raises(ValueError, match="unknown gate 'swirl'"):
        plan_for("paUnit", {"gate": "swirl"})


@pytest.mark.parametrize(("shape", "strides", "sizes", "merged"), [
    ((2, 3, 4), [(12, 4, 1)], [24], [[1]]),                                 # contiguous: 1 dim
    ((2, 3, 4), [(12, 4, 1), (0, 0, 1)], [6, 4], [[4, 1], [0, 1]]),         # per-channel alpha
    ((2, 3, 4), [(12, 4, 1), (0, 0, 0)], [24], [[1], [0]]),                 # scalar alpha
    ((4, 3), [(1, 4)], [4, 3], [[1, 4]]),                                   # transposed
    ((2, 1, 5), [(5, 5, 1), (0, 0, 1)], [2, 5], [[5, 1], [0, 1]]),          # size-1 dim dropped
    ((1, 1), [(1, 1)], [1], [[0]]),                                         # one element
])
def test_collapse_merges_dims_every_tensor_walks_contiguously(shape, strides, sizes, merged):
    assert collapse(shape, strides) == (sizes, merged)


def test_no_cuda_kernels_registered_without_triton_or_when_turned_off(monkeypatch) -> None:
    import gatex.ops.kernels as kernels

    monkeypatch.setattr(kernels, "triton_installed", lambda: False)
    assert kernel_status() == (False, "triton is not installed (pip install 'gatex[triton]')")
    assert register_cuda_kernels() == ()
    monkeypatch.setenv("GATEX_TRITON", "0")
    assert kernel_status() == (False, "turned off by GATEX_TRITON=0")
    assert register_cuda_kernels() == ()


# --- the interpreter child: every kernel x dtype on the CPU --------------------------------

def hazard_values(dtype: torch.dtype) -> torch.Tensor:
    """OPS.md's hazards and a dense grid, finite, rounded to ``dtype``: +-0, subnormals, the GoLU
    threshold 11.09 and its fp16 tail down to -65504, Mish's 20, large values up to the fp16
    max, and for fp32/bf16 up to 1e30 (the dtype's own max is in `check_extreme_inputs`)."""
    fp16, own = torch.finfo(torch.float16), torch.finfo(dtype)
    mags = [fp16.tiny * fp16.eps, fp16.tiny, 1e-4, 0.5, 1.0, 11.0, 11.09, 12.0, 20.0, 21.0,
            100.0, 1000.0, 6e4, fp16.max]
    if dtype != torch.float16:
        mags += [own.tiny * own.eps, own.tiny, 1e10, 1e30]
    golu_tail = [-11.0 * 2.0 ** (k / 2) for k in range(25)]
    values = [0.0, -0.0, *mags, *(-m for m in mags), *golu_tail,
              *torch.linspace(-30.0, 30.0, 241).tolist()]
    return torch.tensor(values, dtype=torch.float64).to(dtype)


def case_inputs(case: Case, dtype: torch.dtype) -> list[torch.Tensor]:
    x = hazard_values(dtype)
    if len(case.spec.inputs) == 1:
        return [x]
    # every (v, u) pair of a coarse grid, plus v and u both over the full hazard set
    coarse = torch.cat([x[:40:3], x[-241::20]])
    pairs = torch.cartesian_prod(coarse, coarse)
    v = torch.cat([pairs[:, 0], x.flip(0)])
    u = torch.cat([pairs[:, 1], x])
    return [v.contiguous(), u.contiguous()]


def kernel_params(case: Case, dtype: torch.dtype) -> dict[str, Any]:
    # as a .to(dtype) model holds them; alpha/sigma stay tensors of dtype
    return round_params(case.spec, case.params, dtype)


def check_case(case: Case, dtype: torch.dtype, run: Any) -> None:
    """``run(spec, inputs, params)`` against the float64 formula (spec tolerance) and against the
    torch impl in ``dtype`` (the same inf and NaN)."""
    spec = case.spec
    inputs = case_inputs(case, dtype)
    params = kernel_params(case, dtype)
    out = run(spec, inputs, params)
    assert out.dtype == dtype and out.shape == inputs[0].shape
    torch_out = call_op(spec, inputs, params)
    assert torch.equal(torch.isnan(out), torch.isnan(torch_out)), "NaN where torch has none"
    expected = formula(spec, inputs, params)
    rounded = expected.to(dtype)
    overflow = torch.isinf(rounded) & torch.isfinite(expected)  # the true value is past max
    assert torch.equal(out[overflow], rounded[overflow]), "overflow gives the wrong inf"
    assert_within(out[~overflow], expected[~overflow], spec.tolerance(dtype), "vs float64")


def check_extreme_inputs(case: Case, dtype: torch.dtype, run: Any) -> None:
    """+-inf, NaN and the dtype's max: NaN and inf exactly where the torch impl has them, other
    values within the spec tolerance of it. (At the max, sigma x overflows and the impls clamp
    it: they, and the kernels, leave the float64 formula there by design, gatex/ops/zilu.py.)"""
    spec = case.spec
    big = torch.finfo(dtype).max
    special = torch.tensor([math.inf, -math.inf, math.nan, big, -big, 1.0, -1.0, 0.0],
                           dtype=dtype)
    inputs = [special] if len(spec.inputs) == 1 else \
        [t.contiguous() for t in torch.cartesian_prod(special, special).T]
    params = kernel_params(case, dtype)
    out, torch_out = run(spec, inputs, params), call_op(spec, inputs, params)
    assert torch.equal(torch.isnan(out), torch.isnan(torch_out)), (out, torch_out)
    finite = ~torch.isnan(torch_out)
    assert torch.equal(out[finite].isinf(), torch_out[finite].isinf())
    assert_within(out[finite], torch_out[finite], spec.tolerance(dtype), "vs torch impl")


def _kernel(spec, inputs, params):
    from gatex.ops.kernels.launch import gated

    return gated(spec.name, *inputs, **params)


def _flat(spec, inputs, params):
    # the TensorRT plugin kernel: parameters compiled in as constants
    from gatex.ops.kernels.launch import gated_flat

    plan = plan_for(spec.name, {k: v for k, v in params.items() if not isinstance(v, torch.Tensor)})
    p = float(params[plan.p_param]) if plan.p_param else 0.0
    return gated_flat(plan, inputs, p)


def _broadcast_checks() -> dict[str, str]:
    """Broadcast, strided and mixed-dtype calls: the kernel equals the torch impl on the same
    tensors (within the spec tolerance; NaN and inf alike)."""
    from gatex.ops.kernels.launch import gated

    g = torch.Generator().manual_seed(3)
    n, c = 6, 5
    v, u = torch.randn(n, c, generator=g) * 4, torch.randn(n, c, generator=g) * 4
    x4 = torch.randn(2, c, 3, 4, generator=g) * 6
    wide = torch.randn(2, 3, 2, 3, 2, 3, generator=g).permute(5, 3, 1, 0, 2, 4)  # no merges
    calls = {
        "per-channel alpha (C,)": ("paGLU", (v, u), {"alpha": torch.rand(c, generator=g)}),
        "per-channel alpha fp32, v/u fp16": ("paMishU", (v.half(), u.half()),
                                             {"alpha": torch.rand(c, generator=g)}),
        "alpha (N,1) broadcast": ("paGELU", (v, u), {"alpha": torch.rand(n, 1, generator=g)}),
        "v (1,C) against u (N,C)": ("paGTU", (v[:1], u), {"alpha": torch.tensor(0.3)}),
        "transposed v and u": ("paSiLU", (v.T, u.T), {"alpha": torch.tensor(0.8)}),
        "sliced (strided) v and u": ("paReGLU", (v[:, :4:2], u[:, 1::2]),
                                     {"alpha": torch.tensor(1.0)}),
        "per-channel sigma (C,1,1) NCHW": ("ZiLU", (x4,), {"sigma": torch.rand(c, 1, 1) * 5}),
        "sigma bf16 scalar": ("ZiLU_Approx", (x4.bfloat16(),), {"sigma": torch.tensor(
            5.0, dtype=torch.bfloat16)}),
        "sigma broadcast grows the output": ("GELU_s", (x4[0, 0],), {"sigma": torch.tensor(
            [[[1.0]], [[5.0]]])}),
        "6-d permuted (more than 4 dims)": ("GoLU", (wide,), {"alpha": 1.0, "beta": 1.0,
                                                             "gamma": 1.0}),
        "paUnit golu gate, fp16": ("paUnit", (v.half(), u.half()), {"alpha": torch.tensor(
            0.6, dtype=torch.float16), "gate": "golu"}),
        "empty": ("SiLU_s", (torch.empty(0, 3),), {"sigma": torch.tensor(2.0)}),
    }
    report = {}
    for what, (op, inputs, params) in calls.items():
        spec = REGISTRY.get(op)
        try:
            out = gated(op, *inputs, **params)
            expected = spec.impl(*inputs, **params)
            assert out.shape == expected.shape and out.dtype == expected.dtype, \
                (out.shape, expected.shape, out.dtype, expected.dtype)
            assert out.is_contiguous()
            assert_within(out, expected, spec.tolerance(out.dtype), what)
            report[what] = ""
        except Exception as exc:  # noqa: BLE001  (reported to the parent test)
            report[what] = f"{type(exc).__name__}: {exc}"
    return report


def _registration_checks() -> dict[str, str]:
    """The Triton kernels registered as an op's implementation (here the CPU one, through the
    interpreter) are what ``torch.ops.gatex.*`` runs; float64 falls back to the torch impl."""
    import gatex.ops.kernels.launch as launch

    ran: list[str] = []
    original = launch.run_plan

    def spy(plan, inputs, p):
        ran.append(plan.op)
        return original(plan, inputs, p)

    launch.run_plan = spy
    report = {}
    try:
        registered = register_cuda_kernels(device_type="cpu", force=True)
        report["all ops registered"] = "" if registered == KERNEL_OPS else repr(registered)
        report["second registration is a no-op"] = \
            "" if register_cuda_kernels(device_type="cpu", force=True) == () else "registered again"
        x = torch.linspace(-20, 20, 101)
        for op, args in (("golu", (x, 0.7, 2.0, 0.5)), ("zilu", (x, torch.tensor(5.0))),
                         ("paglu", (x, x.flip(0), torch.tensor(0.3))),
                         ("paunit", (x, x.flip(0), torch.tensor(0.6), "mish"))):
            spec = REGISTRY.get(op)
            ran.clear()
            out = getattr(torch.ops.gatex, op)(*args)
            n = len(spec.inputs)
            expected = spec.impl(*args[:n], **dict(zip([p.name for p in spec.params], args[n:])))
            ok = ran == [spec.name] and bool(spec.tolerance(torch.float32).allows(out, expected))
            report[f"torch.ops.gatex.{op} runs the kernel"] = "" if ok else f"ran {ran}"
        ran.clear()
        out = torch.ops.gatex.golu(x.double(), 1.0, 1.0, 1.0)
        report["float64 falls back to the impl"] = \
            "" if ran == [] and out.dtype == torch.float64 else f"ran {ran}, {out.dtype}"
    finally:
        launch.run_plan = original
    return report


def interpreter_report() -> dict[str, str]:
    """Every check, by id: '' when it passed, else the failure (run in the child)."""
    report: dict[str, str] = {}
    for case in ALL_CASES:
        for dname, dtype in DTYPES.items():
            for kind, run in (("kernel", _kernel), ("flat", _flat)):
                for check in (check_case, check_extreme_inputs):
                    key = f"{kind}:{check.__name__}:{case.id}:{dname}"
                    try:
                        check(case, dtype, run)
                        report[key] = ""
                    except Exception as exc:  # noqa: BLE001
                        report[key] = f"{type(exc).__name__}: {str(exc)[:500]}"
    # the check has teeth: the paGLU kernel judged against paSiLU's formula fails
    try:
        check_case(Case("paSiLU", {"alpha": 1.0}), torch.float32,
                   lambda spec, inputs, params: _kernel(REGISTRY.get("paGLU"), inputs, params))
        report["teeth"] = "a wrong kernel passed the check"
    except AssertionError:
        report["teeth"] = ""
    report.update({f"broadcast:{k}": v for k, v in _broadcast_checks().items()})
    report.update({f"registration:{k}": v for k, v in _registration_checks().items()})
    return report


@pytest.fixture(scope="module")
def interpreter() -> dict[str, str]:
    if not TRITON:
        pytest.skip(NO_TRITON)
    env = {**os.environ, "TRITON_INTERPRET": "1", "GATEX_TRITON": "0"}
    proc = subprocess.run([sys.executable, str(HERE), "--interpreter-report"], env=env,
                          capture_output=True, text=True, timeout=600, cwd=HERE.parents[2],
                          check=False)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("REPORT ")]
    assert proc.returncode == 0 and lines, proc.stderr[-3000:]
    return json.loads(lines[-1].removeprefix("REPORT "))


def _ids(kind: str, check: str) -> list[tuple[str, str]]:
    return [(f"{kind}:{check}:{c.id}:{d}", f"{c.id}-{d}") for c in ALL_CASES for d in DTYPES]


@pytest.mark.parametrize("key", [k for k, _ in _ids("kernel", "check_case")],
                         ids=[i for _, i in _ids("kernel", "check_case")])
def test_kernel_within_spec_tolerance_of_float64_on_hazard_inputs(interpreter, key) -> None:
    assert interpreter[key] == ""


@pytest.mark.parametrize("kind", ["kernel", "flat"])
def test_every_kernel_and_dtype_checked(interpreter, kind) -> None:
    # the flat (TensorRT plugin) kernels and the inf/NaN inputs, gathered per kind
    failed = {k: v for k, v in interpreter.items() if k.startswith(kind + ":") and v}
    checked = [k for k in interpreter if k.startswith(kind + ":")]
    assert len(checked) == 2 * len(ALL_CASES) * len(DTYPES)
    assert failed == {}


def test_the_check_fails_a_wrong_kernel(interpreter) -> None:
    assert interpreter["teeth"] == ""


def test_broadcast_strided_and_mixed_dtype_calls(interpreter) -> None:
    broadcast = {k: v for k, v in interpreter.items() if k.startswith("broadcast:")}
    assert len(broadcast) == 12
    assert {k: v for k, v in broadcast.items() if v} == {}


def test_registered_kernels_are_what_the_torch_ops_run(interpreter) -> None:
    registration = {k: v for k, v in interpreter.items() if k.startswith("registration:")}
    assert len(registration) == 7
    assert {k: v for k, v in registration.items() if v} == {}


# --- AOT: the TensorRT plugin kernels compiled to PTX (Triton compiles for a named GPU without
# having one; its bundled ptxas then assembles the PTX, as the CUDA driver would) -------------

def _ptxas(ptx: str, arch: str, tmp_path: Path) -> subprocess.CompletedProcess:
    import triton

    ptxas = Path(triton.__file__).parent / "backends" / "nvidia" / "bin" / "ptxas"
    if not ptxas.is_file():
        pytest.skip(f"triton ships no ptxas at {ptxas}")
    src = tmp_path / f"k_{arch}.ptx"
    src.write_text(ptx)
    return subprocess.run([str(ptxas), f"-arch={arch}", str(src), "-o", str(src.with_suffix(
        ".cubin"))], capture_output=True, text=True, timeout=120, check=False)


PTX_CASES = [("GoLU", {"alpha": 1.0, "beta": 0.0, "gamma": 1.0}, "fp16"),   # log beta = -inf
             ("paUnit", {"alpha": 0.6, "gate": "gelu_tanh"}, "bf16"),
             ("ZiLU_Approx", {"sigma": 5.0}, "fp32")]


@pytest.mark.skipif(not TRITON, reason=NO_TRITON)
@pytest.mark.parametrize(("op", "attributes", "dtype"), PTX_CASES,
                         ids=[f"{o}-{d}" for o, _, d in PTX_CASES])
def test_plugin_kernel_compiles_to_ptx_with_tensorrts_parameter_list(op, attributes, dtype,
                                                                     tmp_path) -> None:
    from gatex.ops.kernels.ptx import compile_plugin_kernel, entry_params

    k = compile_plugin_kernel(op, attributes, dtype)
    n_inputs = len(REGISTRY.get(op).inputs)
    params = entry_params(k.ptx, k.name)
    # (inputs..., n, output): Triton's unused scratch pointers are gone
    assert len(params) == k.n_params == n_inputs + 2
    assert params == [f"{k.name}_param_{i}" for i in range(n_inputs + 2)]
    assert k.name.startswith(f"gatex_{op.lower()}_{dtype}_") and ".version 8.0" in k.ptx
    assert ".target sm_80" in k.ptx and k.num_warps * 32 == 128 and k.shared == 0
    for arch in ("sm_80", "sm_90"):     # forward compatible: sm_80 PTX assembles for Hopper
        proc = _ptxas(k.ptx, arch, tmp_path)
        assert proc.returncode == 0, proc.stderr
    # another parameter value is another kernel, with its own name
    other = compile_plugin_kernel(op, {**attributes, **{"alpha": 0.25}} if "alpha" in
                                  attributes else {"sigma": 2.0}, dtype)
    assert other.name != k.name


@pytest.mark.slow
@pytest.mark.skipif(not TRITON, reason=NO_TRITON)
@pytest.mark.parametrize("dtype", list(DTYPES))
def test_every_plugin_kernel_compiles(dtype, tmp_path) -> None:
    from gatex.ops.kernels.ptx import compile_plugin_kernel

    for case in CASES:
        k = compile_plugin_kernel(case.name, {**case.spec.defaults(), **case.params}, dtype)
        proc = _ptxas(k.ptx, "sm_90", tmp_path)
        assert proc.returncode == 0, (case.id, proc.stderr)


def test_strip_unused_params_refuses_a_used_parameter() -> None:
    from gatex.ops.kernels.ptx import strip_unused_params

    ptx = (".visible .entry k(\n\t.param .u64 k_param_0,\n\t.param .u64 k_param_1\n)\n{\n"
           "\tld.param.b64 %rd1, [k_param_1];\n}")
    with pytest.raises(ValueError, match="parameter k_param_1 of k is used"):
        strip_unused_params(ptx, "k", 1)
    kept = strip_unused_params(ptx.replace("[k_param_1]", "[k_param_0]"), "k", 1)
    assert "k_param_1" not in kept and "k_param_0" in kept


# --- GPU: the compiled kernels behind torch.ops.gatex on CUDA --------------------------------

GPU = torch.cuda.is_available()


@pytest.mark.gpu
@pytest.mark.skipif(not (GPU and TRITON), reason="needs a CUDA device and triton "
                    f"(cuda available: {GPU}, triton installed: {TRITON})")
@pytest.mark.parametrize("dname", list(DTYPES))
def test_cuda_kernels_match_the_float64_formulas(dname) -> None:
    assert register_cuda_kernels() == () or True   # registered at import where possible
    assert kernel_status()[0], kernel_status()[1]
    dtype = DTYPES[dname]

    def on_cuda(spec, inputs, params):
        cuda = {k: v.cuda() if isinstance(v, torch.Tensor) else v for k, v in params.items()}
        return call_op(spec, [t.cuda() for t in inputs], cuda).cpu()

    failures = {}
    for case in ALL_CASES:
        for check in (check_case, check_extreme_inputs):
            try:
                check(case, dtype, on_cuda)
            except AssertionError as exc:
                failures[f"{case.id} {check.__name__}"] = str(exc)[:300]
    assert failures == {}


BENCHMARK = HERE.parents[2] / "benchmarks" / "trt_kernels.py"


@pytest.mark.skipif(GPU, reason="a CUDA device is present: the GPU test runs the benchmark")
def test_bandwidth_benchmark_without_a_gpu_exits_3_with_one_line() -> None:
    proc = subprocess.run([sys.executable, str(BENCHMARK), "--size", "1024"],
                          capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 3
    (line,) = proc.stderr.strip().splitlines()
    assert line.startswith("error: needs a CUDA device and the Triton kernels")


@pytest.mark.gpu
@pytest.mark.skipif(not (GPU and TRITON), reason="needs a CUDA device and triton "
                    f"(cuda available: {GPU}, triton installed: {TRITON})")
def test_bandwidth_benchmark_runs_on_the_gpu(tmp_path) -> None:
    out = tmp_path / "bench.json"
    proc = subprocess.run([sys.executable, str(BENCHMARK), "--size", str(2**20), "--rounds",
                           "3", "--warmup", "1", "--json", str(out)], capture_output=True,
                          text=True, timeout=600, check=False)
    assert proc.returncode == 0, proc.stderr
    rows = json.loads(out.read_text())["rows"]
    assert len(rows) == 2 * len(KERNEL_OPS)
    assert all(r["kernel_ms"] > 0 and r["bandwidth_fraction"] > 0 for r in rows)


if __name__ == "__main__" and sys.argv[1:] == ["--interpreter-report"]:
    assert os.environ.get("TRITON_INTERPRET") == "1", "run with TRITON_INTERPRET=1"
    import warnings

    warnings.simplefilter("ignore")  # NumPy overflow warnings from the interpreter
    print("REPORT " + json.dumps(interpreter_report()))
