"""Run ONNX models with onnxruntime and onnx.reference in a process where gatex cannot load.

Usage: python no_gatex_runner.py JOBS.json, where JOBS.json is a list of
``{"model": path, "inputs": .npz, "outputs": .npz, "backend": "onnxruntime" | "reference"}``.
Outputs are saved in graph output order (``out0``, ``out1``, ...). The last stdout line is a
JSON report. ``import gatex`` raises here (a meta-path blocker), so a model that needed gatex
(its schemas, its ops) to run would fail; the report also lists any gatex module loaded.
"""

from __future__ import annotations

import importlib.abc
import json
import sys
import time


class NoGatex(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):  # noqa: ANN001, ANN201
        if name == "gatex" or name.startswith("gatex."):
            raise ModuleNotFoundError(f"gatex is blocked in this process ({name})")
        return None


sys.meta_path.insert(0, NoGatex())

import numpy as np  # noqa: E402
import onnx  # noqa: E402
import onnxruntime as ort  # noqa: E402
from onnx.reference import ReferenceEvaluator  # noqa: E402


def run(job: dict) -> float:
    start = time.perf_counter()
    with np.load(job["inputs"]) as data:
        feeds = {k: data[k] for k in data.files}
    if job["backend"] == "onnxruntime":
        options = ort.SessionOptions()
        options.log_severity_level = 3
        session = ort.InferenceSession(job["model"], options, providers=["CPUExecutionProvider"])
        outputs = session.run(None, feeds)
    else:
        outputs = ReferenceEvaluator(onnx.load(job["model"])).run(None, feeds)
    np.savez(job["outputs"], **{f"out{i}": np.asarray(o) for i, o in enumerate(outputs)})
    return time.perf_counter() - start


def main() -> None:
    with open(sys.argv[1]) as f:
        jobs = json.load(f)
    seconds = [run(job) for job in jobs]
    loaded = sorted(m for m in sys.modules if m == "gatex" or m.startswith("gatex."))
    print(json.dumps({"gatex_modules": loaded, "seconds": seconds}))


if __name__ == "__main__":
    main()
