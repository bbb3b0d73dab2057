"""Would fusing paGating's two projections pay on onnxruntime CPU? (issue 16)

    python benchmarks/fused_projections.py [--rounds 15] [--json -]

A paGating unit reads one input x through two projections, value v = x Wv + bv and gate
u = x Wu + bu, then mixes them (here paGLU's v * sigmoid(u)). The fused form is one
MatMul/Gemm on the concatenated weights [Wv; Wu] and a Split. Side by side in one run, each
round timing both in a fresh random order (20 calls each, onnxruntime CPU, 2 intra-op threads,
no spinning), the median ratio two-projections / fused per shape:

- the zoo's size (64 -> 64) and GPT-2 small's FFN (768 -> 3072), 2-D input (Gemm, what
  torch.onnx writes for a Linear on [batch, features]) at batch 1 and 64;
- GPT-2's block shape, 3-D input [1, 32, 768] (MatMul + Add, what torch.onnx writes for a
  Linear on [batch, seq, features]).

Outputs are checked equal (max abs difference printed) before anything is timed. The target
was >= 1.3x at batch 1 and no slower at batch 64; the numbers decide whether the exporter
should fuse.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import time

import numpy as np
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

CASES = [(64, 64, None, 1), (64, 64, None, 64), (768, 3072, None, 1), (768, 3072, None, 64),
         (768, 3072, 32, 1)]


def build(fused: bool, c: int, h: int, seq: int | None):
    rng = np.random.default_rng(0)
    wv, wu = (rng.standard_normal((h, c)).astype(np.float32) for _ in range(2))
    bv, bu = (rng.standard_normal(h).astype(np.float32) for _ in range(2))
    nodes, inits = [], []
    three = seq is not None

    def proj(w, b, out):
        if three:   # MatMul on the transposed weight, then Add (torch.onnx's 3-D Linear)
            inits.extend([numpy_helper.from_array(w.T.copy(), f"{out}_w"),
                          numpy_helper.from_array(b, f"{out}_b")])
            nodes.extend([helper.make_node("MatMul", ["x", f"{out}_w"], [f"{out}_m"]),
                          helper.make_node("Add", [f"{out}_m", f"{out}_b"], [out])])
        else:
            inits.extend([numpy_helper.from_array(w, f"{out}_w"),
                          numpy_helper.from_array(b, f"{out}_b")])
            nodes.append(helper.make_node("Gemm", ["x", f"{out}_w", f"{out}_b"], [out],
                                          transB=1))

    if fused:
        proj(np.concatenate([wv, wu]), np.concatenate([bv, bu]), "vu")
        inits.append(numpy_helper.from_array(np.array([h, h], np.int64), "sizes"))
        nodes.append(helper.make_node("Split", ["vu", "sizes"], ["v", "u"], axis=-1))
    else:
        proj(wv, bv, "v")
        proj(wu, bu, "u")
    nodes += [helper.make_node("Sigmoid", ["u"], ["s"]), helper.make_node("Mul", ["v", "s"], ["y"])]
    dims = ["B", "T"] if three else ["B"]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT,
                                                                         [*dims, c])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [*dims, h])],
                              inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21)])
    model.ir_version = 10
    options = ort.SessionOptions()
    options.intra_op_num_threads, options.inter_op_num_threads = 2, 1
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(model.SerializeToString(), options,
                                providers=["CPUExecutionProvider"])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--json", help="write the rows as JSON ('-': stdout)")
    args = parser.parse_args(argv)
    if args.rounds < 1:
        print("error: --rounds must be >= 1", file=sys.stderr)
        return 2
    rows = []
    for c, h, seq, batch in CASES:
        two, one = build(False, c, h, seq), build(True, c, h, seq)
        shape = (batch, c) if seq is None else (batch, seq, c)
        x = np.random.default_rng(1).standard_normal(shape).astype(np.float32)
        diff = float(np.abs(two.run(None, {"x": x})[0] - one.run(None, {"x": x})[0]).max())
        ratios = []
        for _ in range(args.rounds):
            seconds = {}
            for name, session in random.sample([("two", two), ("one", one)], 2):
                start = time.perf_counter()
                for _ in range(20):
                    session.run(None, {"x": x})
                seconds[name] = time.perf_counter() - start
            ratios.append(seconds["two"] / seconds["one"])
        row = {"in": c, "out": h, "shape": list(shape), "speedup": statistics.median(ratios),
               "max_abs_diff": diff}
        rows.append(row)
        print(f"{c:4} -> {h:4}  input {str(list(shape)):15} fused speedup "
              f"{row['speedup']:.2f}x  (max abs diff {diff:.2g})")
    if args.json:
        text = json.dumps(rows, indent=2) + "\n"
        sys.stdout.write(text) if args.json == "-" else open(args.json, "w").write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
