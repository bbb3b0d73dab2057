"""Option values shared by several commands, parsed one way everywhere."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any

from gatex import _io
from gatex.errors import BadInputError


def parse_shape(text: str, *, example: str = "4,64", option: str = "--input-shape"
                ) -> tuple[int, ...]:
    """``--input-shape``: positive sizes separated by commas (or ``x``), no empty piece; the
    fp32 tensor it describes must fit gatex's allocation limit (`gatex._io.max_bytes`)."""
    pieces = text.replace("x", ",").split(",")
    try:
        dims = tuple(int(d) for d in pieces)
    except ValueError:  # also an empty piece: "4,", "4,,64"
        dims = ()
    if not dims or any(d <= 0 for d in dims):
        raise BadInputError(f"{option} {text!r} is not a list of positive sizes such as "
                            f"{example}")
    _io.check_size(math.prod(dims) * 4, f"--input-shape {text} (a float32 tensor)")
    return dims


# --input: [NAME:]DTYPE[SHAPE][:LO..HI]
_INPUT = re.compile(r"^(?:(?P<name>[A-Za-z_]\w*):)?(?P<dtype>[a-z]+\d*)\[(?P<shape>[^\]]*)\]"
                    r"(?::(?P<lo>-?[\d.eE+-]+)\.\.(?P<hi>-?[\d.eE+-]+))?$")
INPUT_DTYPES = {"float32": 4, "float16": 2, "bfloat16": 2, "float64": 8, "int64": 8,
                "int32": 4, "int16": 2, "int8": 1, "uint8": 1, "bool": 1}
INPUT_SYNTAX = "[NAME:]DTYPE[SHAPE][:LO..HI], e.g. input_ids:int64[2,32]:0..1000"


@dataclass(frozen=True)
class InputSpec:
    """One ``--input``: ints uniform in [lo, hi), floats uniform in [lo, hi) or standard normal
    without a range, bool 0/1."""

    name: str | None
    dtype: str
    shape: tuple[int, ...]
    lo: float | None = None
    hi: float | None = None

    def make(self, generator: Any, batch: int | None = None) -> Any:
        """A tensor of this spec (``batch`` replaces the first size), drawn from ``generator``."""
        import torch

        shape = self.shape if batch is None else (batch, *self.shape[1:])
        dtype = getattr(torch, self.dtype)
        if self.dtype == "bool":
            return torch.randint(0, 2, shape, generator=generator).bool()
        if not dtype.is_floating_point:
            return torch.randint(int(self.lo), int(self.hi), shape, generator=generator,
                                 dtype=dtype)
        if self.lo is None:
            return torch.randn(shape, generator=generator).to(dtype)
        return (torch.rand(shape, generator=generator) * (self.hi - self.lo) + self.lo).to(dtype)


def parse_input(text: str) -> InputSpec:
    """``--input``: see `INPUT_SYNTAX`; the tensor must fit gatex's allocation limit."""
    m = _INPUT.match(text.strip())
    if m is None:
        raise BadInputError(f"--input {text!r} is not {INPUT_SYNTAX}")
    dtype = m["dtype"]
    if dtype not in INPUT_DTYPES:
        raise BadInputError(f"--input {text!r}: unknown dtype {dtype!r}; one of "
                            f"{', '.join(INPUT_DTYPES)}")
    shape = parse_shape(m["shape"], example="2,32", option=f"--input {text!r}: shape") \
        if m["shape"] else ()
    lo = hi = None
    if m["lo"] is not None:
        try:
            lo, hi = float(m["lo"]), float(m["hi"])
        except ValueError:
            raise BadInputError(f"--input {text!r}: the range LO..HI must be two numbers") \
                from None
        if not lo < hi:
            raise BadInputError(f"--input {text!r}: the range {m['lo']}..{m['hi']} is empty "
                                "(LO must be below HI; HI is excluded)")
    integer = dtype.startswith(("int", "uint"))
    if integer and lo is None:
        raise BadInputError(f"--input {text!r}: an integer input needs its range, e.g. "
                            f"{m['name'] + ':' if m['name'] else ''}{dtype}[{m['shape']}]:0..1000 "
                            "(token ids below the vocabulary size)")
    if integer and (lo != int(lo) or hi != int(hi)):
        raise BadInputError(f"--input {text!r}: an integer input's range must be integers")
    _io.check_size(math.prod(shape) * INPUT_DTYPES[dtype], f"--input {text}")
    return InputSpec(m["name"], dtype, shape, lo, hi)


__all__ = ["INPUT_SYNTAX", "InputSpec", "parse_input", "parse_shape"]
