"""Sparse CoreML weights for a pruned Gated BERT: the GatedDense weights' stored bytes in a
``sparse_weights=True`` ML Program vs the dense one (and with ``compact=True``), and the
emulated outputs of both.

Model and pruning as benchmarks/gated_bert_sparse.py (the ONNX row): `GatedBert` ``--size``
(default tiny: 2 layers, hidden 256, 4 heads, FFN 512, vocab 30522, max_len 128), torch init
seed 0, ``--sparsity`` (default 0.99) of every GatedDense's gates zero at random (seed 0).

Four packages, each written by `gatex.export(to="coreml", precision=--precision)` (default
fp16, target iOS17) with its parity check (MIL emulator vs torch) and the pruned-weights check:

- ``dense``: the model as it is (the lowering folds K * G into one dense const per layer),
- ``sparse``: ``sparse_weights=True`` (coremltools' ``prune_weights`` at threshold 0: every
  weight of > 2048 elements that is >= 50 % exact zeros becomes ``constexpr_sparse_to_dense``,
  a bit mask of one bit per element plus the non-zero values),
- ``compact`` and ``compact+sparse``: the same after ``compact=True``.

"Gated-weight bytes" are what each GatedDense layer's weight (the var its ``linear`` reads,
found through the package's ``gatex.gated_weights`` record) stores: a dense const's values, or
a sparse op's non-zero values plus its mask (ceil(elements / 8) bytes) and shape. Expected at
1 % density: fp16 (2 B + 1/8 B per element) / 2 B = 7.25 %, fp32 (4 % + 1/8 B) / 4 B = 4.1 %:
the mask alone is 1/16 of the dense fp16 bytes. The ONNX target (<= 5 %) is printed beside it.
Each package's ``weight.bin`` size is reported too (64-byte aligned blobs with headers).

    python benchmarks/gated_bert_sparse_coreml.py              # about 2 minutes on 2 cores
    python benchmarks/gated_bert_sparse_coreml.py --precision fp32 --json -

Exit codes: 0 measured and every check passed (parity, pruned weights, sparse outputs equal to
the dense package's), 1 a check failed (the byte target is reported, not enforced: CoreML's
bit mask puts fp16 above it), 2 bad option.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

ONNX_TARGET = 0.05
KINDS = {"dense": {}, "sparse": {"sparse_weights": True}, "compact": {"compact": True},
         "compact+sparse": {"compact": True, "sparse_weights": True}}


def onnx_benchmark() -> Any:
    """benchmarks/gated_bert_sparse.py (its build and inputs)."""
    path = Path(__file__).resolve().parent / "gated_bert_sparse.py"
    spec = importlib.util.spec_from_file_location("gated_bert_sparse_bench", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def stored_bytes(op: Any) -> int:
    """Bytes a weight-producing MIL op stores: a const's values; a constexpr op's const inputs
    (a uint1 mask counted as packed bits)."""
    if op.op_type == "const":
        return int(np.asarray(op.outputs[0].val).nbytes)
    total = 0
    for var in op.inputs.values():
        value = np.asarray(var.val)
        if var.dtype.__name__ == "uint1":
            total += math.ceil(value.size / 8)
        else:
            total += int(value.nbytes)
    return total


def gated_weights(path: Path, layers: list[str]) -> dict[str, tuple[str, int, int]]:
    """{layer: (op type, stored bytes, elements)} of each GatedDense layer's weight."""
    from gatex.exporters.coreml import GATED_WEIGHTS_KEY, load_program, read_metadata

    names = json.loads(read_metadata(path)[GATED_WEIGHTS_KEY])
    program = load_program(path)
    producers = {op.outputs[0].name: op for op in program.functions["main"].operations
                 if op.outputs}
    out = {}
    for layer in layers:
        op = producers[names[layer]]
        out[layer] = (op.op_type, stored_bytes(op), int(np.prod(op.outputs[0].shape)))
    return out


def measure(model: Any, ids: Any, mask: Any, out_dir: Path, precision: str = "fp16"
            ) -> dict[str, Any]:
    """Export the four packages, read their gated weights, emulate them; the numbers."""
    import gatex
    from gatex.runtimes.coreml_emulator import emulate

    layers = list(model.gated_layers())
    out: dict[str, Any] = {"precision": precision, "gated_bytes": {}, "weight_bin_bytes": {},
                           "sparse_layers": {}, "units": {}, "parity": {}, "pruned_check": {}}
    outputs = {}
    for kind, options in KINDS.items():
        result = gatex.export(model, (ids, mask), to="coreml", precision=precision,
                              out_dir=out_dir, name=f"bert-{kind.replace('+', '-')}",
                              **options)
        weights = gated_weights(result.path, layers)
        out["gated_bytes"][kind] = sum(b for _, b, _ in weights.values())
        out["sparse_layers"][kind] = sum(t == "constexpr_sparse_to_dense"
                                         for t, _, _ in weights.values())
        out["units"][kind] = sum(e for _, _, e in weights.values())
        out["weight_bin_bytes"][kind] = sum(f.stat().st_size
                                            for f in result.path.rglob("weight.bin"))
        out["parity"][kind] = {"passed": bool(result.parity), "emulated": result.parity.emulated,
                               "max_abs_vs_torch": max(o.max_abs for o in result.parity.outputs)}
        out["pruned_check"][kind] = bool(result.pruned)
        feeds = dict(zip(result.artifact.input_names,
                         (ids.numpy().astype(np.int32), mask.numpy().astype(np.float32))))
        outputs[kind] = next(iter(emulate(result.path, feeds).values()))
    dense = out["gated_bytes"]["dense"]
    out["ratio"] = {k: v / dense for k, v in out["gated_bytes"].items()}
    out["weight_bin_ratio"] = {k: v / out["weight_bin_bytes"]["dense"]
                               for k, v in out["weight_bin_bytes"].items()}
    out["max_abs_diff_vs_dense"] = {
        k: float(np.abs(outputs[k].astype(np.float64) - outputs["dense"]).max())
        for k in ("sparse", "compact", "compact+sparse")}
    return out


def main(argv: list[str] | None = None) -> int:
    from gatex.models.gated_bert import SIZES

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", default="tiny", choices=list(SIZES))
    parser.add_argument("--sparsity", type=float, default=0.99)
    parser.add_argument("--precision", default="fp16", choices=["fp16", "fp32"])
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--seq", type=int, default=64)
    parser.add_argument("--vocab", type=int, default=None,
                        help="vocabulary size (default: the size's, 30522)")
    parser.add_argument("--json", help="write the numbers as JSON to this file ('-': stdout)")
    args = parser.parse_args(argv)
    if not 0 <= args.sparsity <= 1 or args.batch < 1 or not 1 <= args.seq <= 128 or \
            (args.vocab is not None and args.vocab < 2):
        print("error: --sparsity must be in [0, 1], --batch >= 1, --seq in 1..128, "
              "--vocab >= 2", file=sys.stderr)
        return 2
    bench = onnx_benchmark()
    overrides = {} if args.vocab is None else {"vocab_size": args.vocab}
    model = bench.build(args.size, args.sparsity, **overrides)
    ids, mask = bench.inputs(model, args.batch, args.seq)
    with tempfile.TemporaryDirectory() as tmp:
        result = measure(model, ids, mask, Path(tmp), args.precision)
    result.update(size=args.size, sparsity=args.sparsity, batch=args.batch, seq=args.seq,
                  layers=len(model.gated_layers()))
    gb, wb = result["gated_bytes"], result["weight_bin_bytes"]
    print(f"Gated BERT {args.size}, {args.sparsity:.0%} of every GatedDense's gates zero, "
          f"{result['layers']} GatedDense layers; CoreML ML Program {args.precision}, iOS17")
    for kind in KINDS:
        print(f"{kind:>15}: gated weights {gb[kind]:>11,} B ({result['ratio'][kind]:7.2%} of "
              f"dense; {result['sparse_layers'][kind]} of {result['layers']} sparse, "
              f"{result['units'][kind]:,} weights); weight.bin {wb[kind]:>11,} B "
              f"({result['weight_bin_ratio'][kind]:.1%})")
    print(f"sparse vs the ONNX target <= {ONNX_TARGET:.0%}: {result['ratio']['sparse']:.2%} "
          f"({'met' if result['ratio']['sparse'] <= ONNX_TARGET else 'missed'})")
    print("emulated outputs vs the dense package: max abs diff "
          + ", ".join(f"{k} {v:.3g}" for k, v in result["max_abs_diff_vs_dense"].items())
          + "; parity vs torch: "
          + ", ".join(f"{k} {'PASS' if v['passed'] else 'FAIL'} "
                      f"(max abs {v['max_abs_vs_torch']:.3g})" for k, v in result["parity"].items())
          + "; pruned weights: "
          + ", ".join(f"{k} {'ok' if v else 'FAILED'}" for k, v in result["pruned_check"].items()))
    if args.json:
        text = json.dumps(result, indent=2)
        print(text) if args.json == "-" else Path(args.json).write_text(text + "\n")
    ok = (result["max_abs_diff_vs_dense"]["sparse"] == 0
          and all(v["passed"] for v in result["parity"].values())
          and all(result["pruned_check"].values()))
    if not ok:
        print("error: a check failed (parity, pruned weights, or sparse outputs differ from "
              "the dense package's)", file=sys.stderr)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
