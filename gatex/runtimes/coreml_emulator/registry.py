"""The emulator's kernels: one per MIL op type, registered by decorator; duplicates are errors.

A kernel takes an `OpCall` (the MIL op and its input values, floats widened to fp32) and returns
the op's output, or a tuple of outputs for a multi-output op. The executor then casts each output
to the dtype the program declares (that is where fp16 rounding happens) and checks its shape.

Two kinds of kernel:

- ``value_inference``: the MIL op's own NumPy reference, coremltools' ``Operation.value_inference``,
  run on a shallow copy of the op whose inputs are the runtime values (`reuse_value_inference`).
  Used only where that reference is complete, vectorised and numerically sound; every one is
  checked against an independent torch/NumPy reference in tests/runtimes/test_coreml_emulator.py.
- ``numpy`` / ``torch``: gatex's own, for ops without a usable ``value_inference`` (conv, pooling,
  batch_norm, silu, ...) or where it is unsound (erf and exact gelu go element by element through
  ``math.erf``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from gatex.errors import DuplicateRegistrationError

SOURCES = ("value_inference", "numpy", "torch")


class OpCall:
    """One op's inputs at run time: ``call.x``, ``call["weight"]``, ``call.get("bias")``.

    Absent optional inputs are None. ``call.op`` is the MIL operation (its name, output types).
    """

    __slots__ = ("op", "values")

    def __init__(self, op: Any, values: Mapping[str, Any]) -> None:
        self.op = op
        self.values = values

    def __getitem__(self, name: str) -> Any:
        return self.values[name]

    def __getattr__(self, name: str) -> Any:
        try:
            return self.values[name]
        except KeyError:
            raise AttributeError(name) from None

    def get(self, name: str, default: Any = None) -> Any:
        value = self.values.get(name)
        return default if value is None else value

    def scalar(self, name: str, default: Any = None) -> Any:
        """A const input as a Python scalar (``axis``, ``epsilon``, ``mode``)."""
        value = self.get(name, default)
        return value.item() if isinstance(value, np.ndarray | np.generic) else value

    def ints(self, name: str, default: Any = None) -> list[int] | None:
        """A const int vector (``axes``, ``strides``) as a list."""
        value = self.get(name, default)
        return None if value is None else [int(v) for v in np.atleast_1d(value)]


KernelFn = Callable[[OpCall], Any]


@dataclass(frozen=True)
class Kernel:
    """How the emulator computes one MIL op type."""

    op_type: str
    fn: KernelFn
    source: str  # one of SOURCES


KERNELS: dict[str, Kernel] = {}


def register(op_type: str, fn: KernelFn, source: str) -> None:
    if source not in SOURCES:
        raise ValueError(f"unknown kernel source {source!r}")
    if op_type in KERNELS:
        raise DuplicateRegistrationError(f"the emulator already has a kernel for MIL op "
                                         f"{op_type!r} ({KERNELS[op_type].source})")
    KERNELS[op_type] = Kernel(op_type, fn, source)


def kernel(*op_types: str, source: str = "numpy") -> Callable[[KernelFn], KernelFn]:
    """Register the decorated function as the kernel of each of ``op_types``."""

    def decorate(fn: KernelFn) -> KernelFn:
        for op_type in op_types:
            register(op_type, fn, source)
        return fn

    return decorate


# -- reusing coremltools' value_inference ---------------------------------------------------------

class _Value:
    """What ``value_inference`` reads from an input Var (``.val``, ``.sym_val``, ``.shape``,
    ``.rank``, ``.dtype``), holding a runtime value instead of a compile-time one."""

    __slots__ = ("dtype", "val")

    def __init__(self, val: Any, dtype: Any) -> None:
        self.val = val
        self.dtype = dtype

    @property
    def sym_val(self) -> Any:
        return self.val

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(np.shape(self.val))

    @property
    def rank(self) -> int:
        return int(np.ndim(self.val))

    @property
    def sym_type(self) -> Any:
        from coremltools.converters.mil.mil import types

        return types.tensor(self.dtype, self.shape) if self.rank else self.dtype


def _as_value(value: Any, var: Any) -> Any:
    if value is None:
        return None
    if isinstance(value, np.bool_):  # NumPy 2 refuses np.bool_ where an int is expected
        value = bool(value)
    if isinstance(var, (list, tuple)):
        return tuple(_Value(v, getattr(w, "dtype", None)) for v, w in zip(value, var))
    return _Value(value, getattr(var, "dtype", None))


def value_inference(call: OpCall) -> Any:
    """Run the op's own ``value_inference`` on the runtime values (a shallow copy of the op whose
    input attributes hold them; the program's op is left untouched)."""
    op = call.op
    shim = object.__new__(type(op))
    shim.__dict__.update(op.__dict__)
    inputs = {name: _as_value(call.values.get(name), var)
              for name, var in op._input_vars.items()}
    shim.__dict__.update(inputs)
    shim._input_vars = inputs
    result = shim.value_inference()
    if result is None:
        raise NotImplementedError(f"value_inference of MIL op {op.op_type!r} returned nothing "
                                  "for these inputs")
    return result


def reuse_value_inference(*op_types: str) -> None:
    """Use each op's own ``value_inference`` as its kernel (see the module docstring)."""
    for op_type in op_types:
        register(op_type, value_inference, "value_inference")
