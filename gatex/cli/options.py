"""Option values shared by several commands, parsed one way everywhere."""

from __future__ import annotations

import math

from gatex import _io
from gatex.errors import BadInputError


def parse_shape(text: str, *, example: str = "4,64") -> tuple[int, ...]:
    """``--input-shape``: positive sizes separated by commas (or ``x``), no empty piece; the
    fp32 tensor it describes must fit gatex's allocation limit (`gatex._io.max_bytes`)."""
    pieces = text.replace("x", ",").split(",")
    try:
        dims = tuple(int(d) for d in pieces)
    except ValueError:  # also an empty piece: "4,", "4,,64"
        dims = ()
    if not dims or any(d <= 0 for d in dims):
        raise BadInputError(f"--input-shape {text!r} is not a list of positive sizes such as "
                            f"{example}")
    _io.check_size(math.prod(dims) * 4, f"--input-shape {text} (a float32 tensor)")
    return dims


__all__ = ["parse_shape"]
