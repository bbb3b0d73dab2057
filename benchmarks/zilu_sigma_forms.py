"""What ZiLU's exact ONNX forms cost against the 4-pass form they replaced (onnxruntime CPU).

One model, two ZiLU layers with different sigmas (5 and -2, as any trained model has): y =
ZiLU_5(x) + ZiLU_-2(x) on ``--size`` fp32 elements. Three ONNX files of it, timed side by side,
interleaved round by round in a shuffled order, each ratio the median of the per-round ratios:

- ``portable``: gatex's default export. One ZiLU function for both nodes, so sigma is read at
  run time: R(x) + tail computed for either sign of sigma (9 passes a node),
- ``inline``: gatex's inline flavor, sigma a constant per node: R(x) + tail (7 passes a node),
- ``hardsigmoid``: the form both used before 2026-12-01, x * HardSigmoid(atan(sigma x)) (4
  passes a node), which cancels in the far tail (ZiLU(-1000, sigma 5) 4e-4 off) and is NaN
  at x = -inf. Built by hand with onnx.helper.

Every model's output is checked against the torch impl first (the old form on inputs where it
is still accurate, |x| <= 20). ``--op ZiLU_Approx`` times its two gatex forms only (run-time
sigma: s (relu(s x) - |q|), 8 passes; constant sigma: 7).

    python benchmarks/zilu_sigma_forms.py                 # 16M elements, 12 rounds, ~1 min
    python benchmarks/zilu_sigma_forms.py --op ZiLU_Approx --size 1048576 --repeats 5

Exit codes: 0 measured, 1 an output disagreed, 2 bad option, 3 onnxruntime missing.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import math
import random
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

SIGMAS = (5.0, -2.0)


def hardsigmoid_model(path: Path, sigmas: tuple[float, ...]) -> Path:
    import onnx
    from onnx import TensorProto, helper

    nodes, outs = [], []
    for i, sigma in enumerate(sigmas):
        nodes += [helper.make_node("Constant", [], [f"s{i}"], value=helper.make_tensor(
                      f"s{i}v", TensorProto.FLOAT, [], [sigma])),
                  helper.make_node("Mul", ["x", f"s{i}"], [f"z{i}"]),
                  helper.make_node("Atan", [f"z{i}"], [f"a{i}"]),
                  helper.make_node("HardSigmoid", [f"a{i}"], [f"g{i}"], alpha=1 / math.pi,
                                   beta=0.5),
                  helper.make_node("Mul", ["x", f"g{i}"], [f"y{i}"])]
        outs.append(f"y{i}")
    nodes.append(helper.make_node("Add", outs, ["y"]))
    graph = helper.make_graph(nodes, "zilu_hardsigmoid",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n"])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n"])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21)])
    model.ir_version = 10
    onnx.save(model, path)
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--op", choices=("ZiLU", "ZiLU_Approx"), default="ZiLU")
    parser.add_argument("--size", type=int, default=16 * 1024 * 1024)
    parser.add_argument("--repeats", type=int, default=12)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    if args.size < 1 or args.repeats < 1 or args.warmup < 0 or args.threads < 1:
        print("error: --size, --repeats and --threads must be >= 1, --warmup >= 0",
              file=sys.stderr)
        return 2
    try:
        import onnxruntime as ort
    except ImportError:
        print("error: onnxruntime is not installed: pip install 'gatex[onnx]'", file=sys.stderr)
        return 3
    import torch
    from torch import nn

    from gatex.exporters.onnx import trace_onnx, write_onnx
    from gatex import models

    layer = getattr(models, args.op)

    class Sum(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.layers = nn.ModuleList(layer(sigma=s) for s in SIGMAS)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.layers[0](x) + self.layers[1](x)

    model = Sum().eval()
    x = torch.from_numpy(np.random.default_rng(0).normal(0, 4, args.size).astype(np.float32))
    with torch.no_grad():
        want = model(x).numpy()
    options = ort.SessionOptions()
    options.intra_op_num_threads = args.threads
    options.log_severity_level = 3
    with tempfile.TemporaryDirectory(prefix="gatex-zilu-") as tmp:
        with contextlib.redirect_stderr(io.StringIO()):
            traced = trace_onnx(model, (x[:8],))
            paths = {flavor: write_onnx(traced, Path(tmp) / f"{flavor}.onnx",
                                        flavor=flavor).path for flavor in ("portable", "inline")}
        if args.op == "ZiLU":
            paths["hardsigmoid"] = hardsigmoid_model(Path(tmp) / "hardsigmoid.onnx", SIGMAS)
        sessions = {k: ort.InferenceSession(str(p), options, providers=["CPUExecutionProvider"])
                    for k, p in paths.items()}
        feeds = {k: {s.get_inputs()[0].name: x.numpy()} for k, s in sessions.items()}
        near = np.abs(x.numpy()) <= 20
        for name, session in sessions.items():
            got = session.run(None, feeds[name])[0]
            mask = near if name == "hardsigmoid" else slice(None)
            if not np.allclose(got[mask], want[mask], rtol=1e-5, atol=1e-5):
                print(f"error: {name} disagrees with the torch impl", file=sys.stderr)
                return 1
        names = list(sessions)
        for _ in range(args.warmup):
            for name in names:
                sessions[name].run(None, feeds[name])
        times: dict[str, list[float]] = {name: [] for name in names}
        rng = random.Random(0)
        for _ in range(args.repeats):
            rng.shuffle(names)
            for name in names:
                t0 = time.perf_counter()
                sessions[name].run(None, feeds[name])
                times[name].append(time.perf_counter() - t0)
    print(f"{args.op} sigma {SIGMAS[0]:g} + sigma {SIGMAS[1]:g} on {args.size:,} fp32 elements, "
          f"onnxruntime {ort.__version__} CPU, {args.threads} threads, {args.repeats} rounds")
    for name in ("portable", "inline", "hardsigmoid")[:len(times)]:
        print(f"  {name:12s} median {np.median(times[name]) * 1e3:8.1f} ms")
    pairs = (("portable", "inline"), ("portable", "hardsigmoid"), ("inline", "hardsigmoid"))
    for a, b in pairs[:1 if args.op != "ZiLU" else 3]:
        ratios = np.asarray(times[a]) / np.asarray(times[b])
        q1, med, q3 = np.percentile(ratios, [25, 50, 75])
        print(f"  {a}/{b}: {med:.2f}x [{q1:.2f}-{q3:.2f}]")
    return 0


if __name__ == "__main__":
    sys.exit(main())
