"""`Sym`: a float parameter of an ONNX lowering known only at run time (a node attribute).

Kept apart from `gatex.ops.lowering.onnx` so that op files can test for it without importing
onnx (``import gatex.ops`` stays free of onnx, onnxscript and the backends).
"""

from __future__ import annotations

from typing import Any

FLOAT = 1  # onnx.TensorProto.FLOAT

Body = Any  # gatex.ops.lowering.onnx.Body


class Sym:
    """A float parameter known only at run time: a node attribute read inside a function.

    Arithmetic with Python floats emits scalar nodes (float32), so lowerings written for folded
    constants (``-gamma``, ``1.0 - alpha``, ``1.0 / sigma``) work unchanged; comparisons with
    numbers are False, so constant-specific shortcuts (alpha == 1) are not taken.
    """

    def __init__(self, body: Body, name: str) -> None:
        self.body, self.name = body, name

    def _scalar(self, other: float | Sym) -> str:
        if isinstance(other, Sym):
            return other.name
        return self.body.const(float(other), FLOAT)

    def _emit(self, op_type: str, a: str, b: str | None = None) -> Sym:
        inputs = (a,) if b is None else (a, b)
        return Sym(self.body, self.body.op(op_type, *inputs))

    def __neg__(self) -> Sym:
        return self._emit("Neg", self.name)

    def __add__(self, other: float | Sym) -> Sym:
        return self._emit("Add", self.name, self._scalar(other))

    __radd__ = __add__

    def __sub__(self, other: float | Sym) -> Sym:
        return self._emit("Sub", self.name, self._scalar(other))

    def __rsub__(self, other: float | Sym) -> Sym:
        return self._emit("Sub", self._scalar(other), self.name)

    def __mul__(self, other: float | Sym) -> Sym:
        return self._emit("Mul", self.name, self._scalar(other))

    __rmul__ = __mul__

    def __truediv__(self, other: float | Sym) -> Sym:
        return self._emit("Div", self.name, self._scalar(other))

    def __rtruediv__(self, other: float | Sym) -> Sym:
        return self._emit("Div", self._scalar(other), self.name)

    def __eq__(self, other: object) -> bool:
        return other is self

    __hash__ = object.__hash__

    def __bool__(self) -> bool:
        return True

    def log(self) -> Sym:
        return self._emit("Log", self.name)
