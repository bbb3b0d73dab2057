"""ZiLU against native Gelu on onnxruntime CPU: every exact form we know, what each pass costs,
and so where the 3x-Gelu target stops (issue 16).

ZiLU(x) = x (0.5 + atan(sigma x) / pi), sigma = 5 (the learnable sigma's initial value). Each
form below is one ONNX model over ``--sizes`` fp32 elements (each size its own run), timed side by side with one native
``Gelu`` node and with single-op models (Atan, Relu, a Mul by a constant, an Add of two
tensors) whose times are the pass costs the floor is computed from:

- ``gatex-inline`` / ``gatex-portable``: what ``gatex export`` writes (inline flavor and the
  default). R(x) + Clip(x) atan(-1/(sigma Clip(x))) / pi, R = relu: Clip, Div, Atan, Mul,
  Mul, Relu, Add (7 passes),
- ``prelu``: PRelu(x G, S) with G = HardSigmoid(a, 1/pi, 1), S = HardSigmoid(a, 1/pi, 0),
  a = atan(-1/(sigma max(x, -L))): the same value with the step folded into PRelu (7 passes),
- ``no-clip``: gatex's form without its Clip (6 passes): exact for finite x, NaN at +-inf,
- ``hardsigmoid``: x * HardSigmoid(atan(sigma x)) (4 passes), gatex's form until 2026-12-01:
  0.5 + atan(z)/pi cancels for z << 0 (ZiLU(-1000) 4e-4 off, ZiLU(-1e30) = 0).

Before timing, each form is checked against the float64 torch impl at the spec's fp32
tolerance on the timed input (N(0, 3^2)) and on probes of the tails (-3e38 .. 3e38, +-inf):
``exact`` means it passes both. A form that is wrong on the timed input is an error (exit 1);
one that is wrong only in the tails is timed and reported as not exact.

    python benchmarks/zilu_gelu.py                      # 256K and 16M elements, ~2 min
    python benchmarks/zilu_gelu.py --sizes 1048576 --repeats 5 --json -

Exit codes: 0 measured (target met or not), 1 a form disagreed on the timed input, 2 bad
option, 3 onnxruntime missing.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))   # the sibling onnx_ops.py

SIGMA = 5.0
GELU_TARGET = 3.0
L = 1e30                                   # gatex's clip of x in the tail term (sigma 5, fp32)
PROBES = (-3e38, -1e30, -65504.0, -1000.0, -20.0, -0.5, 0.0, 0.5, 20.0, 1000.0, 1e30, 3e38,
          -math.inf, math.inf)
SINGLE_OPS = ("Atan", "Relu", "Mul", "Add")
# 256K elements (1 MiB) is one activation of a ResNet-18 stage or a BERT-base FFN at batch 1 and
# stays in this machine's caches; 16M (64 MiB) streams from memory, where every pass is paid
SIZES = (256 * 1024, 16 * 1024 * 1024)


def _model(path: Path, nodes: list[tuple], consts: dict[str, float], inputs: int = 1) -> Path:
    """A 1-D fp32 model from (op, inputs, output[, attrs]) tuples; consts are fp32 scalars."""
    import onnx
    from onnx import TensorProto, helper

    names = ["x", "x2"][:inputs]
    graph = helper.make_graph(
        [helper.make_node(op, ins, [out], **(rest[0] if rest else {}))
         for op, ins, out, *rest in nodes], path.stem,
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, ["n"]) for n in names],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n"])],
        initializer=[helper.make_tensor(k, TensorProto.FLOAT, [], [v]) for k, v in consts.items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21)], ir_version=10)
    onnx.checker.check_model(model, full_check=True)
    onnx.save(model, path)
    return path


def hand_forms(tmp: Path) -> dict[str, Path]:
    """The hand-built forms and single-op models (see the module docstring)."""
    inv_pi, c = 1.0 / math.pi, -1.0 / SIGMA
    tail = [("Div", ["c", "xc"], "w"), ("Atan", ["w"], "a"), ("Mul", ["xc", "a"], "p"),
            ("Mul", ["p", "inv_pi"], "t"), ("Relu", ["x"], "r"), ("Add", ["r", "t"], "y")]
    no_clip = [("Identity", ["x"], "xc")] + tail
    prelu = [("Max", ["x", "lo"], "xc"), ("Div", ["c", "xc"], "w"), ("Atan", ["w"], "a"),
             ("HardSigmoid", ["a"], "g", {"alpha": inv_pi, "beta": 1.0}),
             ("HardSigmoid", ["a"], "s", {"alpha": inv_pi, "beta": 0.0}),
             ("Mul", ["xc", "g"], "v"), ("PRelu", ["v", "s"], "y")]
    old = [("Mul", ["x", "sigma"], "z"), ("Atan", ["z"], "a"),
           ("HardSigmoid", ["a"], "g", {"alpha": inv_pi, "beta": 0.5}), ("Mul", ["x", "g"], "y")]
    forms = {
        "prelu": _model(tmp / "prelu.onnx", prelu, {"c": c, "lo": -L}),
        "no-clip": _model(tmp / "no-clip.onnx", no_clip, {"c": c, "inv_pi": inv_pi}),
        "hardsigmoid": _model(tmp / "hardsigmoid.onnx", old, {"inv_pi": inv_pi, "sigma": SIGMA}),
    }
    singles = {
        "Atan": _model(tmp / "Atan.onnx", [("Atan", ["x"], "y")], {}),
        "Relu": _model(tmp / "Relu.onnx", [("Relu", ["x"], "y")], {}),
        "Mul": _model(tmp / "Mul.onnx", [("Mul", ["x", "sigma"], "y")], {"sigma": SIGMA}),
        "Add": _model(tmp / "Add.onnx", [("Add", ["x", "x2"], "y")], {}, inputs=2),
    }
    return {**forms, **singles}


def gatex_forms(tmp: Path) -> dict[str, Path]:
    import torch
    from onnx_ops import export_gatex

    from gatex import models

    layer = models.ZiLU(sigma=SIGMA).eval()
    example = [torch.randn(16)]
    return {f"gatex-{flavor}": export_gatex(layer, example, tmp / f"gatex-{flavor}.onnx", flavor)
            for flavor in ("inline", "portable")}


def check_form(name: str, path: Path, data: np.ndarray, want: np.ndarray,
               probes: np.ndarray, want_probes: np.ndarray, tolerance: Any) -> dict[str, Any]:
    """Max relative error on the timed input and on the tail probes; exact or the first miss.
    A miss on the timed input raises (a fast wrong model is not a result)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    result: dict[str, Any] = {}
    for label, x, ref in (("input", data, want), ("tails", probes, want_probes)):
        got = session.run(None, {session.get_inputs()[0].name: x})[0].astype(np.float64)
        with np.errstate(invalid="ignore"):
            ok = (got == ref) | (np.abs(got - ref) <= tolerance.atol + tolerance.rtol * np.abs(ref))
        finite = np.isfinite(ref) & np.isfinite(got)
        rel = np.abs(got[finite] - ref[finite]) / np.maximum(np.abs(ref[finite]), 1e-30)
        result[f"{label}_max_rel"] = float(rel.max()) if rel.size else 0.0
        if not ok.all():
            i = int(np.argmin(ok))
            miss = f"ZiLU({x[i]:g}) = {got[i]:.6g}, want {ref[i]:.6g}"
            if label == "input":
                raise SystemExit(f"error: {name} disagrees with the torch impl: {miss}")
            result["miss"] = miss
    result["exact"] = "miss" not in result
    return result


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default=",".join(map(str, SIZES)),
                        help="comma-separated fp32 element counts (default: %(default)s)")
    parser.add_argument("--repeats", type=int, default=15, help="timed rounds")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2, help="intra_op_num_threads")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", metavar="FILE", help="write the report; - is stdout")
    return parser.parse_args(argv)


def run(args: argparse.Namespace) -> dict[str, Any]:
    from onnx_ops import machine

    rng = np.random.default_rng(args.seed)
    return {"machine": machine(), "threads": args.threads, "repeats": args.repeats,
            "sigma": SIGMA, "target_x_gelu": GELU_TARGET,
            "sizes": [run_size(size, args, rng) for size in args.size_list]}


def run_size(size: int, args: argparse.Namespace, rng: np.random.Generator) -> dict[str, Any]:
    """Every form at one size, side by side with Gelu and the single-op models."""
    import torch
    from onnx_ops import Runner, gelu_model, measure

    from gatex.ops import REGISTRY
    from gatex.ops.zilu import zilu_impl

    spec = REGISTRY.get("ZiLU")
    data = (rng.standard_normal(size, dtype=np.float32) * 3.0)
    other = rng.standard_normal(size, dtype=np.float32)
    probes = np.asarray(PROBES, dtype=np.float32)

    def reference(x: np.ndarray) -> np.ndarray:
        return zilu_impl(torch.from_numpy(x).double(), sigma=SIGMA).numpy()

    with tempfile.TemporaryDirectory(prefix="gatex-zilu-gelu-") as tmp_name:
        tmp = Path(tmp_name)
        paths = {**gatex_forms(tmp), **hand_forms(tmp), "Gelu": gelu_model(tmp / "gelu.onnx")}
        forms = [k for k in paths if k not in SINGLE_OPS and k != "Gelu"]
        want, want_probes = reference(data), reference(probes)
        checks = {k: check_form(k, paths[k], data, want, probes, want_probes,
                                spec.tolerance("float32")) for k in forms}
        del want
        runners = {k: Runner(p, [data, other] if k == "Add" else [data], args.threads,
                             tmp / f"{k}.ort.onnx") for k, p in paths.items()}
        timing = measure(runners, args.warmup, args.repeats, rng)
        kernels = {k: _kernels(tmp / f"{k}.ort.onnx") for k in forms}
    cost = {op: timing.ratio(op, "Gelu")["median"] for op in SINGLE_OPS}
    rows = []
    for k in forms:
        # the floor: each kernel onnxruntime runs at the cost of its kind's single-op model
        # (Atan; a two-tensor op as Add; any other pass as the Mul by a constant)
        predicted = sum(cost["Atan"] if op == "Atan" else cost["Add"] if tensors == 2
                        else cost["Mul"] for op, tensors in kernels[k])
        rows.append({"form": k, "kernels": [op for op, _ in kernels[k]], **checks[k],
                     "median_ms": timing.median_ms(k), "x_gelu": timing.ratio(k, "Gelu"),
                     "predicted_x_gelu": predicted})
    exact = [r for r in rows if r["exact"]]
    best = min(exact, key=lambda r: r["x_gelu"]["median"])
    return {"elements": size, "gelu_ms": timing.median_ms("Gelu"), "pass_x_gelu": cost,
            "single_ms": {op: timing.median_ms(op) for op in SINGLE_OPS}, "forms": rows,
            "best_exact": best["form"], "best_x_gelu": best["x_gelu"]["median"],
            "met": best["x_gelu"]["median"] <= GELU_TARGET}


def _kernels(path: Path) -> list[tuple[str, int]]:
    """The kernels onnxruntime runs (its optimized model), each with how many of its inputs are
    full tensors (not initializers, constants or shapes): 2 reads twice the bytes."""
    import onnx

    graph = onnx.load(str(path)).graph
    scalars = {t.name for t in graph.initializer} | {
        o for n in graph.node if n.op_type in ("Constant", "Shape") for o in n.output}
    return [(n.op_type, sum(1 for i in n.input if i and i not in scalars))
            for n in graph.node if n.op_type not in ("Constant", "Shape")]


def print_report(report: dict[str, Any]) -> None:
    m = report["machine"]
    print(f"ZiLU (sigma {report['sigma']:g}) vs native Gelu on onnxruntime "
          f"{m['onnxruntime']} CPU, {report['threads']} threads, {report['repeats']} rounds; "
          f"{m['cpu']}, {m['logical_cores']} cores, {m['date']}")
    for size in report["sizes"]:
        print(f"\n{size['elements']:,} elements: Gelu {size['gelu_ms']:.2f} ms; one pass, "
              "x Gelu: " + ", ".join(f"{op} {v:.2f}" for op, v in size["pass_x_gelu"].items()))
        print(f"{'form':15s} {'kernels':48s} {'exact':18s} {'ms':>7s} {'x Gelu':>17s} "
              f"{'passes':>6s}")
        for r in size["forms"]:
            q = r["x_gelu"]
            exact = "yes" if r["exact"] else "no: " + r["miss"].split(" =")[0]
            print(f"{r['form']:15s} {' '.join(r['kernels']):48s} {exact:18s} "
                  f"{r['median_ms']:7.2f} {q['median']:5.2f}x [{q['p25']:.2f}-{q['p75']:.2f}] "
                  f"{r['predicted_x_gelu']:5.2f}x")
        print(f"best exact form: {size['best_exact']} at {size['best_x_gelu']:.2f}x Gelu; "
              f"target <= {report['target_x_gelu']:g}x: {'met' if size['met'] else 'missed'}")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        args.size_list = [int(v) for v in args.sizes.split(",")]
    except ValueError:
        args.size_list = [0]
    if min(args.size_list) < 16 or args.repeats < 1 or args.warmup < 0 or args.threads < 1:
        print("error: --sizes must be integers >= 16, --repeats and --threads >= 1, --warmup >= 0",
              file=sys.stderr)
        return 2
    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        print("error: onnxruntime is not installed: pip install 'gatex[onnx]'", file=sys.stderr)
        return 3
    try:
        report = run(args)
    except SystemExit as exc:          # a form disagreed on the timed input
        print(exc, file=sys.stderr)
        return 1
    print_report(report)
    if args.json:
        text = json.dumps(report, indent=2)
        if args.json == "-":
            print(text)
        else:
            Path(args.json).write_text(text + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
