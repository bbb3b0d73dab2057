"""The op catalogue as data: every op's spec as a JSON record (``gatex units --json``), and the
records of gatex's own ops written to ``catalogue.json`` beside this file, so that the command
line can list and describe ops without importing torch (`gatex units` reads the file; it
imports the registry only when an installed package adds ops through the ``gatex.ops`` entry
points). A test keeps the file equal to the registry; regenerate it with

    python -m gatex.ops.catalogue
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from gatex.ops import BUILTIN_OPS, REGISTRY
from gatex.ops.spec import OpSpec, Param

CATALOGUE_FILE = Path(__file__).with_name("catalogue.json")

# The keys of one op in ``gatex units --json``, in output order (README, "gatex units --json").
OP_KEYS = ("name", "id", "torch_op", "family", "summary", "formula", "source", "inputs",
           "optional_inputs", "params", "elementwise", "dtypes", "tolerances", "backends",
           "tensorrt", "unsupported", "hazards")
PARAM_KEYS = ("name", "default", "range", "lo", "hi", "choices", "kind", "learnable", "nonzero",
              "doc")


def param_record(p: Param) -> dict[str, Any]:
    """One parameter as JSON data; ``lo``/``hi`` are null where unbounded (JSON has no inf)."""
    default = list(p.default) if isinstance(p.default, tuple) else p.default
    return {"name": p.name, "default": default, "range": p.range_text(), "lo": p.lo, "hi": p.hi,
            "choices": list(p.choices), "kind": p.kind.__name__, "learnable": p.learnable,
            "nonzero": p.nonzero, "doc": p.doc}


def op_record(spec: OpSpec) -> dict[str, Any]:
    """One op as JSON data, keys in `OP_KEYS` order."""
    return {
        "name": spec.name,
        "id": spec.id,
        "torch_op": spec.torch_qualname,
        "family": spec.family,
        "summary": spec.summary,
        "formula": spec.formula,
        "source": spec.source,
        "inputs": list(spec.inputs),
        "optional_inputs": list(spec.optional_inputs),
        "params": [param_record(p) for p in spec.params],
        "elementwise": spec.elementwise,
        "dtypes": list(spec.dtypes),
        "tolerances": {dtype: {"rtol": tol.rtol, "atol": tol.atol}
                       for dtype, tol in spec.tolerances.items()},
        "backends": list(spec.backends()),
        "tensorrt": _tensorrt_text(spec),
        "unsupported": dict(spec.unsupported_reasons),
        "hazards": spec.hazards,
    }


def _tensorrt_text(spec: OpSpec) -> str:
    """How TensorRT carries the op, from its ``tensorrt`` lowering; "" where it has none."""
    lowering = spec.lowerings.get("tensorrt")
    return lowering.describe() if hasattr(lowering, "describe") else ""




def builtin_records() -> list[dict[str, Any]]:
    """The records of gatex's own ops, in registry order: what ``catalogue.json`` holds."""
    return [op_record(REGISTRY.get(name)) for name in BUILTIN_OPS]


def all_records() -> list[dict[str, Any]]:
    """Every registered op's record, entry-point ops included."""
    return [op_record(spec) for spec in REGISTRY]


def write_catalogue(path: Path = CATALOGUE_FILE) -> Path:
    path.write_text(json.dumps(builtin_records(), indent=1) + "\n")
    return path


if __name__ == "__main__":
    print(f"wrote {write_catalogue()} ({len(BUILTIN_OPS)} ops)")
    sys.exit(0)
