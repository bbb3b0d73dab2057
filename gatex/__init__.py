"""gatex: deploy neural networks built with gated units, and prove every export numerically.

Public API: `load_model` (zoo unit, user model or .pt2), `export` (ONNX, checked against torch),
`parity` (an artifact against its reference), the op registry (`gatex.ops`), the modules
(`gatex.models`). CoreML, TensorRT and bench arrive with their issues.
"""

from __future__ import annotations

from gatex import ops
from gatex.errors import GatexError
from gatex.exporters import export
from gatex.loading import load_model, read_checkpoint


def parity(artifact: str, **options: object) -> object:
    """Parity of an exported artifact against its torch reference (`gatex parity` in Python).

    Options as `gatex.runtimes.check_artifact`: unit=, model=, weights=, inputs=, dtype=, rtol=,
    atol=, locate=. Returns a `ParityResult`, truthy when every output passes.
    """
    from pathlib import Path

    from gatex.runtimes import check_artifact

    return check_artifact(Path(artifact), **options)


__version__ = "0.1.0"

__all__ = ["GatexError", "export", "ops", "parity", "__version__", "load_model", "read_checkpoint"]
