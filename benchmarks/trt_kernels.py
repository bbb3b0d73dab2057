"""Triton gate kernels on a CUDA GPU (issue 6, "Verification on a GPU machine"): bandwidth and
speed against torch, on ``--size`` elements (default 64M = 67,108,864), fp16 and fp32.

For every elementwise gatex op, in each dtype, one run measures interleaved, round by round:

- ``kernel``: the op through ``torch.ops.gatex`` (the registered Triton CUDA kernel),
- ``copy``: a device-to-device copy of one input (``out.copy_(x)``): the bandwidth yardstick,
- ``gelu``: torch's native ``F.gelu`` on the same tensor,

timed with CUDA events around the device work only (inputs and outputs allocated beforehand, no
host transfer inside the timed region), after a warm-up. Reported per op: the kernel's
achieved bandwidth (bytes read + written / time) as a fraction of the copy's, measured in the
same run (target >= 0.85), and its time relative to F.gelu (target <= 1.05; paGating ops read
two inputs, so their bytes are 1.5x gelu's and the bandwidth fraction is the fairer number).
Before timing, each op's output is checked against its torch impl with the spec tolerance.

    python benchmarks/trt_kernels.py                         # needs CUDA, triton
    python benchmarks/trt_kernels.py --ops GoLU,paGLU --size 16777216 --json out.json

Exit codes: 0 measured (targets met or not), 1 a kernel disagreed with its impl, 2 bad option,
3 no CUDA device or no triton.

Never run yet: it was written where there is no GPU (docs/tensorrt.md).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from typing import Any

TARGET_FRACTION = 0.85
TARGET_VS_GELU = 1.05


def _time_ms(fn: Any, rounds: int) -> list[float]:
    import torch

    times = []
    for _ in range(rounds):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end))
    return times


def _op_call(op: str, dtype: Any, size: int) -> tuple[Any, int, list[Any], list[Any]]:
    """(a thunk running the op on fresh CUDA inputs, the bytes it moves, its inputs, all its
    arguments)."""
    import torch

    from gatex.ops import REGISTRY

    spec = REGISTRY.get(op)
    g = torch.Generator(device="cuda").manual_seed(0)
    inputs = [torch.randn(size, device="cuda", dtype=dtype, generator=g) * 3
              for _ in spec.inputs]
    args: list[Any] = list(inputs)
    for p in spec.params:
        if p.learnable:
            value = 5.0 if p.name == "sigma" else 0.5
            args.append(torch.tensor(value, device="cuda", dtype=dtype))
        else:
            args.append("golu" if p.name == "gate" else p.default)
    fn = getattr(torch.ops.gatex, spec.torch_name)
    nbytes = (len(inputs) + 1) * size * inputs[0].element_size()
    return (lambda: fn(*args)), nbytes, inputs, args


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ops", default="all", help="comma-separated op names, or all")
    ap.add_argument("--size", type=int, default=64 * 2**20)
    ap.add_argument("--dtypes", default="fp16,fp32")
    ap.add_argument("--warmup", type=int, default=10)
    ap.add_argument("--rounds", type=int, default=50)
    ap.add_argument("--json", help="write the results here ('-': stdout)")
    args = ap.parse_args(argv)

    import torch

    from gatex.ops import REGISTRY
    from gatex.ops.kernels import KERNEL_OPS, kernel_status

    ok, why = kernel_status()
    if not torch.cuda.is_available() or not ok:
        print(f"error: needs a CUDA device and the Triton kernels ({why}; cuda: "
              f"{torch.cuda.is_available()})", file=sys.stderr)
        return 3
    ops = list(KERNEL_OPS) if args.ops == "all" else args.ops.split(",")
    dtypes = {"fp16": torch.float16, "fp32": torch.float32, "bf16": torch.bfloat16}
    try:
        chosen = [dtypes[d] for d in args.dtypes.split(",")]
        specs = [REGISTRY.get(o) for o in ops]
    except (KeyError, ValueError) as exc:
        print(f"error: bad option: {exc}", file=sys.stderr)
        return 2
    rows = []
    for dtype in chosen:
        x = torch.randn(args.size, device="cuda", dtype=dtype)
        out = torch.empty_like(x)
        copy = lambda: out.copy_(x)  # noqa: E731
        gelu = lambda: torch.nn.functional.gelu(x)  # noqa: E731
        for spec in specs:
            run, nbytes, inputs, call_args = _op_call(spec.name, dtype, args.size)
            n = len(spec.inputs)
            got = run()
            expected = spec.impl(*inputs, **dict(zip([p.name for p in spec.params],
                                                     call_args[n:])))
            if not spec.tolerance(dtype).allows(got, expected):
                print(f"error: {spec.name} {dtype}: the kernel disagrees with the impl",
                      file=sys.stderr)
                return 1
            for thunk in (run, copy, gelu):
                _time_ms(thunk, args.warmup)
            kernel_t, copy_t, gelu_t = [], [], []
            for _ in range(args.rounds):  # interleaved: drift hits all three alike
                kernel_t += _time_ms(run, 1)
                copy_t += _time_ms(copy, 1)
                gelu_t += _time_ms(gelu, 1)
            k, c, g = (statistics.median(t) for t in (kernel_t, copy_t, gelu_t))
            copy_bw = 2 * args.size * x.element_size() / (c * 1e-3)
            kernel_bw = nbytes / (k * 1e-3)
            rows.append({"op": spec.name, "dtype": str(dtype).removeprefix("torch."),
                         "kernel_ms": k, "copy_ms": c, "gelu_ms": g,
                         "kernel_GBps": kernel_bw / 1e9, "copy_GBps": copy_bw / 1e9,
                         "bandwidth_fraction": kernel_bw / copy_bw, "vs_gelu": k / g,
                         "meets_fraction": kernel_bw / copy_bw >= TARGET_FRACTION,
                         "meets_vs_gelu": k / g <= TARGET_VS_GELU})
            r = rows[-1]
            print(f"{r['op']:14s} {r['dtype']:8s} {k:7.3f} ms  {r['kernel_GBps']:7.1f} GB/s  "
                  f"{r['bandwidth_fraction']:.2f} of copy  {r['vs_gelu']:.2f}x gelu")
    doc = {"gpu": torch.cuda.get_device_name(), "size": args.size, "rows": rows,
           "targets": {"bandwidth_fraction": TARGET_FRACTION, "vs_gelu": TARGET_VS_GELU}}
    if args.json == "-":
        print(json.dumps(doc, indent=1))
    elif args.json:
        with open(args.json, "w") as f:
            json.dump(doc, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
