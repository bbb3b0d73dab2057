"""`Mil`: the builder a CoreML lowering writes into (coremltools' MIL builder, with folding).

A lowering is ``lower(m, *inputs, **params)``; ``m`` wraps ``coremltools.converters.mil.Builder``
so that arithmetic takes numbers or MIL variables and folds constants. coremltools is imported
when a builder is made, never when this module is.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np


def is_var(value: Any) -> bool:
    return hasattr(value, "op") and hasattr(value, "dtype") and hasattr(value, "shape")


class Mil:
    """coremltools' MIL builder (``mb``) for lowerings: every ``mb`` op by attribute
    (``m.sigmoid(x=u)``), plus arithmetic that takes numbers or variables and folds constants
    (``m.mul(x, 1.0)`` is ``x``; ``m.sub(1.0, 0.25)`` is ``0.75``). Constants take the dtype of
    the tensor they meet, so a lowering is the same for fp32 and fp16 programs."""

    def __init__(self) -> None:
        from coremltools.converters.mil import Builder
        from coremltools.converters.mil.mil import types

        self.mb = Builder
        self._types = types

    def __getattr__(self, name: str) -> Any:
        return getattr(self.mb, name)

    def np_dtype(self, like: Any) -> Any:
        return self._types.nptype_from_builtin(like.dtype) if is_var(like) else np.float32

    def const(self, value: Any, like: Any = None) -> Any:
        """A MIL constant of ``value`` with ``like``'s float dtype (fp32 without ``like``)."""
        return self.mb.const(val=np.asarray(value, dtype=self.np_dtype(like)))

    @staticmethod
    def value(v: Any) -> Any:
        """The constant value of ``v`` (a number, an array, or a variable MIL knows the value
        of), else None."""
        if v is None:
            return None
        if is_var(v):
            return None if v.val is None else np.asarray(v.val)
        return v

    @staticmethod
    def is_number(v: Any, number: float) -> bool:
        """True when ``v`` is the constant ``number`` (a float, or an array all equal to it)."""
        if v is None or is_var(v):
            return False
        return bool(np.all(np.asarray(v) == number))

    def _operand(self, v: Any, like: Any) -> Any:
        return v if is_var(v) else self.const(v, like)

    def _binary(self, op: str, a: Any, b: Any, fold: Callable[[Any, Any], Any],
                **name: str) -> Any:
        if not is_var(a) and not is_var(b):
            return fold(np.asarray(a, np.float64), np.asarray(b, np.float64)) \
                if np.ndim(a) or np.ndim(b) else float(fold(float(a), float(b)))
        like = a if is_var(a) else b
        return getattr(self.mb, op)(x=self._operand(a, like), y=self._operand(b, like), **name)

    def mul(self, a: Any, b: Any) -> Any:
        """a * b; a factor that is the constant 1 is dropped."""
        if self.is_number(b, 1.0):
            return a
        if self.is_number(a, 1.0):
            return b
        return self._binary("mul", a, b, lambda p, q: p * q)

    def add(self, a: Any, b: Any) -> Any:
        """a + b; a term that is the constant 0 is dropped."""
        if self.is_number(b, 0.0):
            return a
        if self.is_number(a, 0.0):
            return b
        return self._binary("add", a, b, lambda p, q: p + q)

    def sub(self, a: Any, b: Any) -> Any:
        if self.is_number(b, 0.0):
            return a
        return self._binary("sub", a, b, lambda p, q: p - q)

    def div(self, a: Any, b: Any) -> Any:
        if self.is_number(b, 1.0):
            return a
        return self._binary("real_div", a, b, lambda p, q: p / q)

    def minimum(self, a: Any, b: Any) -> Any:
        return self._binary("minimum", a, b, np.minimum)

    def greater(self, a: Any, b: Any, **name: str) -> Any:
        """a > b; ``name=`` names the MIL op (a decision parity reads back)."""
        return self._binary("greater", a, b, lambda p, q: p > q, **name)

    def less(self, a: Any, b: Any) -> Any:
        return self._binary("less", a, b, lambda p, q: p < q)

    def select(self, cond: Any, a: Any, b: Any) -> Any:
        """cond ? a : b, elementwise; a number on either side becomes a constant."""
        like = a if is_var(a) else b
        return self.mb.select(cond=cond, a=self._operand(a, like), b=self._operand(b, like))

    def clip(self, x: Any, lo: float, hi: float) -> Any:
        return self.mb.clip(x=x, alpha=self.const(lo, x), beta=self.const(hi, x))
