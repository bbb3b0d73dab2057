"""gatex: deploy neural networks built with gated units, and prove every export numerically.

Public API: `load_model` (zoo unit, user model or .pt2), the op registry (`gatex.ops`), the
modules (`gatex.models`). Exporters, parity and bench arrive with their issues.
"""

from __future__ import annotations

from gatex import ops
from gatex.errors import GatexError
from gatex.loading import load_model, read_checkpoint

__version__ = "0.1.0"

__all__ = ["GatexError", "ops", "__version__", "load_model", "read_checkpoint"]
