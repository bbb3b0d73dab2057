"""ONNX per-op benchmark (issue 3, "Performance"): gatex's lowerings on onnxruntime CPU.

For every elementwise gatex op, on ``--size`` fp32 elements (default 16M), one run measures
side by side, interleaved round by round in a shuffled order:

- ``portable``: the one-op model gatex exports (custom node + model-local function),
- ``inline``: the same model, inline flavor (standard ops only),
- ``naive``: the op's formula as upstream code writes it (the op spec's ``reference``), in
  plain torch, exported by ``torch.onnx.export`` with torch's defaults (the dynamo
  exporter in torch 2.13, graph optimization on) at the same opset,
- ``gelu``: a model of one native ONNX ``Gelu`` node on a tensor of the same size,

and prints each ratio as the median of the per-round ratios (paired in time, so drift of a
shared machine cancels), with its interquartile range. Targets (issue 3): gatex / naive <= 1,
gatex / Gelu <= 3. Then a pre-LN transformer block (d=256, seq 128, batch 8, 4 heads, FFN 4x)
with GoLU in the FFN against the same block with native GELU, both exported by gatex
(portable): target latency ratio <= 1.10.

paGating ops take two inputs (value v and gate u) of ``--size`` elements each and write one
output of ``--size`` elements: the element count is per output (their models read twice the
bytes a one-input op reads). Every variant's output is checked against the float64 reference
within the op's fp32 tolerance before anything is timed: a fast wrong model is not reported.

    python benchmarks/onnx_ops.py                       # full size, 8-9 minutes on 2 cores
    python benchmarks/onnx_ops.py --ops GoLU,paGLU --size 65536 --repeats 5 --json -

Exit codes: 0 measured (targets missed or not), 1 an output disagreed with its reference,
2 bad option, 3 onnx / onnxruntime missing.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import io
import json
import logging
import os
import platform
import sys
import tempfile
import time
import warnings
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from gatex.errors import BadInputError, CheckFailedError, GatexError

OPSET = 21
GELU_TARGET = 3.0        # gatex lowering / native Gelu
NAIVE_TARGET = 1.0       # gatex lowering / naive torch.onnx export
BLOCK_TARGET = 1.10      # GoLU block / GELU block
ZILU_FAMILY = ("GELU_s", "SiLU_s", "ArcTan", "ArcTan_Approx", "ZiLU", "ZiLU_Approx")
PAGATING = ("paGLU", "paGTU", "paReGLU", "paGELU", "paMishU", "paSiLU", "paSwishU", "paUnit")
ELEMENTWISE_OPS = ("GoLU", *ZILU_FAMILY, *PAGATING)
# Parameters benchmarked: upstream's defaults, except sigma = 5.0 (the ZiLU family's default is
# a learnable sigma initialised to 5.0; a fixed sigma = 1 would fold its Mul away) and paUnit's
# gate = golu (the zoo's paUnit; its default sigmoid gate would repeat paGLU).
PARAMS: dict[str, dict[str, Any]] = {
    "GoLU": {"alpha": 1.0, "beta": 1.0, "gamma": 1.0},
    **{name: {"sigma": 5.0} for name in ZILU_FAMILY},
    **{name: {"alpha": 0.5} for name in PAGATING},
    "paSwishU": {"alpha": 0.5, "beta": 1.0},
    "paUnit": {"alpha": 0.5, "gate": "golu"},
}
VARIANTS = ("portable", "inline", "naive", "gelu")
INPUT_SCALE = 3.0        # inputs ~ N(0, 3^2): the gates' transition and both tails


# -- models ---------------------------------------------------------------------------------
class GatexOp(nn.Module):
    """One gatex op as a model: the ``gatex::`` custom op, learnable parameters as 0-d buffers
    (which the exporter folds into attributes, as for any trained model)."""

    def __init__(self, spec: Any, params: dict[str, Any]) -> None:
        super().__init__()
        self.spec = spec
        self.fixed: dict[str, Any] = {}
        for p in spec.params:
            value = params.get(p.name, p.default)
            if p.learnable:
                self.register_buffer(p.name, torch.tensor(float(value)))
            else:
                self.fixed[p.name] = value

    def forward(self, x: torch.Tensor, u: torch.Tensor | None = None) -> torch.Tensor:
        inputs = (x,) if u is None else (x, u)
        params = [getattr(self, p.name) if p.learnable else self.fixed[p.name]
                  for p in self.spec.params]
        return self.spec.torch_op(*inputs, *params)


class NaiveOp(nn.Module):
    """The op's formula as upstream code writes it, in plain torch (``spec.reference``)."""

    def __init__(self, spec: Any, params: dict[str, Any]) -> None:
        super().__init__()
        self.spec, self.params = spec, dict(params)

    def forward(self, x: torch.Tensor, u: torch.Tensor | None = None) -> torch.Tensor:
        inputs = (x,) if u is None else (x, u)
        return self.spec.reference(*inputs, **self.params)


class PreLNBlock(nn.Module):
    """x + MHA(LN(x)), then x + FFN(LN(x)) with FFN = Linear(d, 4d), activation, Linear(4d, d)."""

    def __init__(self, activation: nn.Module, d: int = 256, heads: int = 4, ffn_mult: int = 4):
        super().__init__()
        self.heads = heads
        self.ln1, self.ln2 = nn.LayerNorm(d), nn.LayerNorm(d)
        self.qkv, self.proj = nn.Linear(d, 3 * d), nn.Linear(d, d)
        self.fc1, self.fc2 = nn.Linear(d, ffn_mult * d), nn.Linear(ffn_mult * d, d)
        self.act = activation

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, s, d = x.shape
        qkv = self.qkv(self.ln1(x)).view(b, s, 3, self.heads, d // self.heads)
        q, k, v = qkv.permute(2, 0, 3, 1, 4)
        attn = F.scaled_dot_product_attention(q, k, v)
        x = x + self.proj(attn.transpose(1, 2).reshape(b, s, d))
        return x + self.fc2(self.act(self.fc1(self.ln2(x))))


# -- export ---------------------------------------------------------------------------------
@contextlib.contextmanager
def _quiet():
    """torch.onnx prints progress lines and warnings; the benchmark's output is its table."""
    onnx_log = logging.getLogger("torch.onnx")
    level = onnx_log.level
    onnx_log.setLevel(logging.ERROR)  # "torchvision is not installed. Skipping ..."
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            yield
    finally:
        onnx_log.setLevel(level)


def export_gatex(model: nn.Module, example: Sequence[torch.Tensor], path: Path,
                 flavor: str) -> Path:
    """What ``gatex export`` writes for ``model`` (fp32, dynamic first dimension)."""
    from gatex.exporters.onnx import export_onnx

    with _quiet():
        export_onnx(model, example, path, flavor=flavor, dtype="fp32", opset=OPSET)
    return path


def export_naive(model: nn.Module, example: Sequence[torch.Tensor], path: Path) -> Path:
    """``torch.onnx.export`` with torch's defaults (dynamo), the same opset and dynamic dim."""
    n = torch.export.Dim("n", min=2)
    with _quiet():
        torch.onnx.export(model, tuple(example), str(path), opset_version=OPSET,
                          dynamic_shapes=tuple({0: n} for _ in example))
    return path


def gelu_model(path: Path) -> Path:
    """One native ONNX Gelu node (opset 20+) over a 1-D fp32 tensor."""
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("Gelu", ["x"], ["y"])], "native_gelu",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n"])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n"])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)],
                              ir_version=10)
    onnx.checker.check_model(model, full_check=True)
    onnx.save_model(model, path)
    return path


# -- onnxruntime ----------------------------------------------------------------------------
def import_ort() -> Any:
    """onnxruntime (and onnx); either missing is gatex's BackendUnavailableError (exit 3)."""
    from gatex.runtimes.locate import import_onnx
    from gatex.runtimes.onnxruntime_runtime import import_onnxruntime

    import_onnx()
    return import_onnxruntime()


class Runner:
    """One onnxruntime session bound to fixed inputs and a preallocated output (I/O binding), so
    a timed run is the graph's kernels only: no output allocation, no copy to NumPy."""

    def __init__(self, path: Path, inputs: Sequence[np.ndarray], threads: int,
                 optimized_path: Path | None = None) -> None:
        ort = import_ort()
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.log_severity_level = 3
        # sessions take turns: a finished session's threads must not spin on the cores the
        # next one needs
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        if optimized_path is not None:
            options.optimized_model_filepath = str(optimized_path)
        self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        names = [i.name for i in self.session.get_inputs()]
        if len(names) != len(inputs):
            raise CheckFailedError(f"{path.name} takes {len(names)} inputs, not {len(inputs)}")
        self.inputs = list(inputs)  # the bound OrtValues share these arrays' memory
        self.binding = self.session.io_binding()
        for name, array in zip(names, inputs):
            self.binding.bind_ortvalue_input(name, ort.OrtValue.ortvalue_from_numpy(array))
        out_shape = np.broadcast_shapes(*(a.shape for a in inputs))
        self.output = np.empty(out_shape, dtype=np.float32)
        self.binding.bind_ortvalue_output(self.session.get_outputs()[0].name,
                                          ort.OrtValue.ortvalue_from_numpy(self.output))
        self.nodes = _optimized_nodes(optimized_path) if optimized_path else ()

    def __call__(self) -> float:
        """Run once; seconds."""
        start = time.perf_counter()
        self.session.run_with_iobinding(self.binding)
        return time.perf_counter() - start


def _optimized_nodes(path: Path) -> tuple[str, ...]:
    """The node types onnxruntime actually runs (after inlining and fusions)."""
    import onnx

    model = onnx.load(str(path))
    return tuple(n.op_type for n in model.graph.node if n.op_type != "Constant")


# -- timing and statistics ------------------------------------------------------------------
@dataclass
class Timing:
    """Seconds per run, round by round, of several runners measured interleaved."""

    times: dict[str, list[float]] = field(default_factory=dict)

    def median_ms(self, key: str) -> float:
        return float(np.median(self.times[key])) * 1e3

    def iqr_pct(self, key: str) -> float:
        t = np.asarray(self.times[key])
        q1, q3 = np.percentile(t, [25, 75])
        return float((q3 - q1) / np.median(t) * 100)

    def ratios(self, num: str, den: str) -> np.ndarray:
        return np.asarray(self.times[num]) / np.asarray(self.times[den])

    def ratio(self, num: str, den: str) -> dict[str, float]:
        """Median of the per-round ratios and their 25th/75th percentiles."""
        r = self.ratios(num, den)
        q1, med, q3 = np.percentile(r, [25, 50, 75])
        return {"median": float(med), "p25": float(q1), "p75": float(q3)}


def measure(runners: dict[str, Runner], warmup: int, repeats: int,
            rng: np.random.Generator) -> Timing:
    """Warm up every runner, then ``repeats`` rounds, each running every runner once in a fresh
    random order (no runner always follows the same one)."""
    for _ in range(warmup):
        for run in runners.values():
            run()
    timing = Timing({k: [] for k in runners})
    keys = list(runners)
    for _ in range(repeats):
        for i in rng.permutation(len(keys)):
            timing.times[keys[i]].append(runners[keys[i]]())
    return timing


def verdict(ratio: float, target: float) -> str:
    if ratio <= target:
        return "met"
    return f"missed by {(ratio / target - 1) * 100:.0f}%"


# -- the op benchmark -----------------------------------------------------------------------
def check_output(name: str, variant: str, got: np.ndarray, expected: np.ndarray,
                 tolerance: Any) -> float:
    """Max abs error against the float64 reference; `CheckFailedError` past the fp32 tolerance."""
    err = np.abs(got.astype(np.float64) - expected)
    bad = err > tolerance.atol + tolerance.rtol * np.abs(expected)
    if bad.any():
        i = int(np.argmax(bad))
        raise CheckFailedError(
            f"{name} {variant}: {int(bad.sum())} outputs outside rtol={tolerance.rtol:g} "
            f"atol={tolerance.atol:g} of the float64 reference (first at index {i}: got "
            f"{got.flat[i]!r}, expected {expected.flat[i]!r}); not benchmarking a wrong model")
    return float(err.max())


def bench_op(name: str, size: int, workdir: Path, gelu: Runner, args: argparse.Namespace,
             rng: np.random.Generator) -> dict[str, Any]:
    from gatex.ops import REGISTRY

    spec = REGISTRY.get(name)
    params = PARAMS[name]
    n_in = len(spec.inputs)
    data = [(rng.standard_normal(size, dtype=np.float32) * INPUT_SCALE) for _ in range(n_in)]
    example = [torch.randn(16) for _ in range(n_in)]
    paths = {
        "portable": export_gatex(GatexOp(spec, params), example, workdir / f"{name}.portable.onnx",
                                 "portable"),
        "inline": export_gatex(GatexOp(spec, params), example, workdir / f"{name}.inline.onnx",
                               "inline"),
        "naive": export_naive(NaiveOp(spec, params), example, workdir / f"{name}.naive.onnx"),
    }
    if args.baseline and (Path(args.baseline) / f"{name}.portable.onnx").is_file():
        paths["baseline"] = Path(args.baseline) / f"{name}.portable.onnx"
    runners: dict[str, Runner] = {k: Runner(p, data, args.threads, workdir / f"{name}.{k}.ort.onnx")
                                  for k, p in paths.items()}
    with torch.no_grad():
        expected = spec.reference(*(torch.from_numpy(d).double() for d in data), **params).numpy()
    errors = {}
    for k, run in runners.items():
        run()
        errors[k] = check_output(name, k, run.output, expected, spec.tolerance("float32"))
    del expected
    timing = measure({**runners, "gelu": gelu}, args.warmup, args.repeats, rng)
    ratios = {f"{a}/{b}": timing.ratio(a, b) for a in ("portable", "inline")
              for b in ("naive", "gelu")}
    if "baseline" in runners:
        ratios["portable/baseline"] = timing.ratio("portable", "baseline")
    result = {
        "op": name, "params": params, "inputs": n_in, "elements": size,
        "ort_nodes": {k: list(r.nodes) for k, r in runners.items()},
        "max_abs_error": errors,
        "times_s": timing.times,
        "median_ms": {k: timing.median_ms(k) for k in timing.times},
        "iqr_pct": {k: timing.iqr_pct(k) for k in timing.times},
        "ratio": ratios,
    }
    worst_naive = max(ratios[f"{f}/naive"]["median"] for f in ("portable", "inline"))
    worst_gelu = max(ratios[f"{f}/gelu"]["median"] for f in ("portable", "inline"))
    # where onnxruntime runs the same kernels for gatex and the naive export, the ratio is noise
    same = all(runners[f].nodes == runners["naive"].nodes for f in ("portable", "inline"))
    result["targets"] = {
        "not_slower_than_naive": {"target": NAIVE_TARGET, "ratio": worst_naive,
                                  "same_kernels": same,
                                  "verdict": "met (same kernels)" if same else
                                  verdict(worst_naive, NAIVE_TARGET)},
        "within_3x_gelu": {"target": GELU_TARGET, "ratio": worst_gelu,
                           "verdict": verdict(worst_gelu, GELU_TARGET)},
    }
    del runners
    return result


# -- the transformer block ------------------------------------------------------------------
def bench_block(workdir: Path, args: argparse.Namespace,
                rng: np.random.Generator) -> dict[str, Any]:
    from gatex.models import GoLU

    torch.manual_seed(0)
    golu_block = PreLNBlock(GoLU(), d=args.block_dim).eval()
    gelu_block = PreLNBlock(nn.GELU(), d=args.block_dim).eval()
    gelu_block.load_state_dict(golu_block.state_dict())  # same weights: only the activation differs
    shape = (args.block_batch, args.block_seq, args.block_dim)
    x = (rng.standard_normal(shape, dtype=np.float32))
    example = [torch.randn(2, args.block_seq, args.block_dim)]
    runners = {}
    errors = {}
    for key, block in (("golu", golu_block), ("gelu", gelu_block)):
        path = export_gatex(block, example, workdir / f"block_{key}.onnx", "portable")
        runners[key] = Runner(path, [x], args.threads, workdir / f"block_{key}.ort.onnx")
        runners[key]()
        with torch.no_grad():
            expected = block(torch.from_numpy(x)).double().numpy()
        errors[key] = float(np.abs(runners[key].output - expected).max())
        if errors[key] > 1e-3:
            raise CheckFailedError(f"transformer block ({key}): onnxruntime differs from torch by "
                                   f"{errors[key]:.3g}; not benchmarking a wrong model")
    timing = measure(runners, args.warmup, args.block_repeats, rng)
    ratio = timing.ratio("golu", "gelu")
    return {
        "shape": list(shape), "heads": 4, "ffn": 4 * args.block_dim, "norm": "pre-LN",
        "activation_elements": args.block_batch * args.block_seq * 4 * args.block_dim,
        "max_abs_error": errors,
        # what onnxruntime runs for each activation: the node types one block has and the other not
        "ort_activation_nodes": {
            a: sorted((Counter(runners[a].nodes) - Counter(runners[b].nodes)).elements())
            for a, b in (("golu", "gelu"), ("gelu", "golu"))},
        "times_s": timing.times,
        "median_ms": {k: timing.median_ms(k) for k in runners},
        "iqr_pct": {k: timing.iqr_pct(k) for k in runners},
        "ratio": {"golu/gelu": ratio},
        "target": {"target": BLOCK_TARGET, "ratio": ratio["median"],
                   "verdict": verdict(ratio["median"], BLOCK_TARGET)},
    }


# -- report ---------------------------------------------------------------------------------
def machine() -> dict[str, Any]:
    import onnx
    import onnxruntime

    cpu = platform.processor() or "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    return {"cpu": cpu, "logical_cores": os.cpu_count(), "platform": platform.platform(),
            "python": platform.python_version(), "torch": torch.__version__,
            "onnx": onnx.__version__, "onnxruntime": onnxruntime.__version__,
            "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")}


def _ms(value: float) -> str:
    return f"{value:.3g}" if value < 100 else f"{value:.0f}"


def _r(ratio: dict[str, float]) -> str:
    return f"{ratio['median']:.2f}x [{ratio['p25']:.2f}-{ratio['p75']:.2f}]"


def op_rows(ops: list[dict[str, Any]]) -> tuple[list[str], list[list[str]]]:
    head = ["op", "portable ms", "inline ms", "naive ms", "Gelu ms", "portable/naive",
            "inline/naive", "portable/Gelu", "inline/Gelu", "vs naive (<=1)", "vs Gelu (<=3x)"]
    baseline = any("portable/baseline" in o["ratio"] for o in ops)
    if baseline:
        head += ["baseline ms", "portable/baseline"]
    rows = []
    for o in ops:
        m, r, t = o["median_ms"], o["ratio"], o["targets"]
        row = [o["op"], *(_ms(m[k]) for k in VARIANTS),
               _r(r["portable/naive"]), _r(r["inline/naive"]), _r(r["portable/gelu"]),
               _r(r["inline/gelu"]), t["not_slower_than_naive"]["verdict"],
               t["within_3x_gelu"]["verdict"]]
        if baseline:
            row += [_ms(m["baseline"]), _r(r["portable/baseline"])] if "baseline" in m else ["", ""]
        rows.append(row)
    return head, rows


def kernel_rows(ops: list[dict[str, Any]]) -> tuple[list[str], list[list[str]]]:
    """The node types onnxruntime runs per variant (one memory pass each)."""
    keys = [k for k in ("portable", "inline", "naive", "baseline")
            if any(k in o["ort_nodes"] for o in ops)]
    head = ["op", *(f"{k} kernels" for k in keys)]
    return head, [[o["op"], *(" ".join(o["ort_nodes"].get(k, [])) for k in keys)] for o in ops]


def block_rows(block: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    m = block["median_ms"]
    head = ["block", "GoLU ms", "GELU ms", "GoLU/GELU", "target <= 1.10"]
    shape = "x".join(str(s) for s in block["shape"])
    return head, [[f"pre-LN d={block['shape'][2]} ({shape})", _ms(m["golu"]), _ms(m["gelu"]),
                   _r(block["ratio"]["golu/gelu"]),
                   block["target"]["verdict"]]]


def markdown(report: dict[str, Any]) -> str:
    def table(head: list[str], rows: list[list[str]]) -> str:
        lines = ["| " + " | ".join(head) + " |",
                 "|" + "|".join("---" if i == 0 else "---:" for i in range(len(head))) + "|"]
        lines += ["| " + " | ".join(r) + " |" for r in rows]
        return "\n".join(lines)

    m, s = report["machine"], report["settings"]
    out = [f"Measured {m['date']} on {m['cpu']} ({m['logical_cores']} logical cores), "
           f"onnxruntime {m['onnxruntime']} CPU, intra_op_num_threads={s['threads']}, "
           f"torch {m['torch']}, onnx {m['onnx']}; {s['size']:,} fp32 elements per output, "
           f"{s['warmup']} warm-up + {s['repeats']} interleaved rounds per op "
           f"({s['block_repeats']} for the block). Times are medians; ratios are medians of "
           "per-round ratios with [25th-75th percentile].", ""]
    if report["ops"]:
        out += [table(*op_rows(report["ops"])), "", table(*kernel_rows(report["ops"])), ""]
    if report.get("block"):
        out += [table(*block_rows(report["block"])), ""]
    return "\n".join(out)


def print_report(report: dict[str, Any], stream: Any) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console(file=stream, width=220)
    m, s = report["machine"], report["settings"]
    console.print(f"{m['cpu']}, {m['logical_cores']} cores; onnxruntime {m['onnxruntime']} CPU, "
                  f"intra_op_num_threads={s['threads']}; {s['size']:,} fp32 elements; "
                  f"{s['repeats']} rounds (median, ratio = median of per-round ratios "
                  "[p25-p75])", markup=False, highlight=False)
    for head, rows in ([op_rows(report["ops"])] if report["ops"] else []) + (
            [block_rows(report["block"])] if report.get("block") else []):
        table = Table(*head)
        for row in rows:
            table.add_row(*row)
        console.print(table)


# -- command line ---------------------------------------------------------------------------
def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--ops", default=",".join(ELEMENTWISE_OPS),
                   help="comma-separated ops (default: all elementwise ops); 'none' for no op")
    p.add_argument("--size", type=int, default=16 * 1024 * 1024,
                   help="fp32 elements per output (default 16M)")
    p.add_argument("--repeats", type=int, default=20, help="timed rounds per op (default 20)")
    p.add_argument("--warmup", type=int, default=3, help="untimed rounds first (default 3)")
    p.add_argument("--threads", type=int, default=2, help="intra_op_num_threads (default 2)")
    p.add_argument("--block", action=argparse.BooleanOptionalAction, default=True,
                   help="also benchmark the transformer block (default on)")
    p.add_argument("--block-batch", type=int, default=8)
    p.add_argument("--block-seq", type=int, default=128)
    p.add_argument("--block-dim", type=int, default=256, help="model width, a multiple of 4")
    p.add_argument("--block-repeats", type=int, default=60)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", metavar="FILE",
                   help="write the full report (raw times too); - is stdout")
    p.add_argument("--markdown", metavar="FILE", help="write the tables as Markdown")
    p.add_argument("--keep", metavar="DIR", help="keep the exported models in DIR")
    p.add_argument("--baseline", metavar="DIR",
                   help="also time DIR/<op>.portable.onnx (kept by --keep from an earlier "
                        "commit) and print portable/baseline: lowerings before and after")
    return p.parse_args(argv)


def validate(args: argparse.Namespace) -> list[str]:
    from gatex.ops import REGISTRY

    ops = [] if args.ops.strip().lower() == "none" else [o.strip() for o in args.ops.split(",")
                                                         if o.strip()]
    names = []
    for op in ops:
        name = REGISTRY.get(op).name  # UnknownOpError (exit 2) with suggestions
        if name not in ELEMENTWISE_OPS:
            raise BadInputError(f"{name} is not an elementwise op; benchmark one of "
                                f"{', '.join(ELEMENTWISE_OPS)}")
        names.append(name)
    if not names and not args.block:
        raise BadInputError("nothing to measure: give --ops or leave --block on")
    for opt in ("size", "repeats", "threads", "block_batch", "block_seq", "block_repeats"):
        if getattr(args, opt) < 1:
            raise BadInputError(f"--{opt.replace('_', '-')} must be >= 1; got {getattr(args, opt)}")
    if args.size < 2:
        raise BadInputError(f"--size must be >= 2 (the models' first dimension is dynamic, "
                            f"from 2); got {args.size}")
    if args.warmup < 0:
        raise BadInputError(f"--warmup must be >= 0; got {args.warmup}")
    if args.block_dim < 4 or args.block_dim % 4:
        raise BadInputError(f"--block-dim must be a positive multiple of 4 (4 heads); "
                            f"got {args.block_dim}")
    for opt in ("json", "markdown"):
        target = getattr(args, opt)
        if target and target != "-" and not Path(target).resolve().parent.is_dir():
            raise BadInputError(f"--{opt} {target}: directory {Path(target).parent} does not exist")
    return names


def run(args: argparse.Namespace) -> dict[str, Any]:
    ops = validate(args)
    import_ort()
    torch.set_num_threads(args.threads)
    rng = np.random.default_rng(args.seed)
    report: dict[str, Any] = {
        "machine": machine(),
        "settings": {"size": args.size, "repeats": args.repeats, "warmup": args.warmup,
                     "threads": args.threads, "block_repeats": args.block_repeats,
                     "opset": OPSET, "input": f"N(0, {INPUT_SCALE:g}^2) fp32",
                     "ratio": "median of per-round ratios (variants interleaved, shuffled)"},
        "ops": [], "block": None,
    }
    with contextlib.ExitStack() as stack:
        if args.keep:
            workdir = Path(args.keep)
            workdir.mkdir(parents=True, exist_ok=True)
        else:
            workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="gatex-bench-")))
        if ops:
            gelu_input = rng.standard_normal(args.size, dtype=np.float32) * INPUT_SCALE
            gelu = Runner(gelu_model(workdir / "gelu.onnx"), [gelu_input], args.threads,
                          workdir / "gelu.ort.onnx")
            for name in ops:
                print(f"measuring {name} ...", file=sys.stderr, flush=True)
                report["ops"].append(bench_op(name, args.size, workdir, gelu, args, rng))
            del gelu
        if args.block:
            print("measuring the transformer block ...", file=sys.stderr, flush=True)
            report["block"] = bench_block(workdir, args, rng)
    return report


def _write(target: str, text: str) -> None:
    if target == "-":
        sys.stdout.write(text)
        return
    path = Path(target)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.resolve().parent)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.replace(tmp, path)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        report = run(args)
    except GatexError as exc:
        if os.environ.get("GATEX_DEBUG"):
            raise
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    # the table goes to stdout unless the JSON does
    print_report(report, sys.stderr if args.json == "-" else sys.stdout)
    if args.json:
        _write(args.json, json.dumps(report, indent=1) + "\n")
    if args.markdown:
        _write(args.markdown, markdown(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
