"""Running a MIL program in NumPy, op by op in program order, with Core ML's per-op precision.

Each op reads its inputs widened to fp32 (fp16 -> fp32 is exact), computes in fp32, and its
output is cast to the dtype the program declares for it: an fp16 program is rounded to fp16
after every op (cast ops included), so an intermediate above 65504 becomes inf exactly where
Core ML's fp16 would overflow. Constants (const ops, blob-file weights, compressed ``constexpr_``
weights, and anything coremltools folded at load) are materialised once when the program is
compiled. Every output's shape is checked against the program's type where the program fixes it,
so a kernel that disagrees with MIL's own type inference fails loudly instead of answering wrong.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from gatex.artifacts.mlprogram import constexpr_values
from gatex.errors import BadInputError, CheckFailedError
from gatex.runtimes.coreml_emulator import ops_math, ops_nn, ops_tensor  # noqa: F401 (kernels)
from gatex.runtimes.coreml_emulator.registry import KERNELS, Kernel, OpCall


class UnsupportedOpError(BadInputError):
    """The program holds a MIL op (or an op variant) the emulator does not implement (exit 2)."""


class EmulationError(CheckFailedError):
    """A kernel failed or produced a shape the program contradicts: a gap in the emulator."""


@dataclass(frozen=True)
class Output:
    name: str
    dtype: np.dtype
    shape: tuple[int | None, ...] | None  # None where the program leaves the rank unknown


@dataclass(frozen=True)
class Step:
    """One non-constant op: its kernel, where each input comes from, what it produces."""

    op: Any
    kernel: Kernel
    inputs: tuple[tuple[str, Any], ...]   # (input name, source); see `_source`
    outputs: tuple[Output, ...]

    def describe(self) -> str:
        return f"MIL op {self.op.op_type!r} ({self.op.name})"


_CONST, _VAR, _TUPLE = 0, 1, 2


def compute_value(value: Any) -> Any:
    """How kernels see a value: fp16 widened to fp32 (exact), everything else as is."""
    if isinstance(value, np.ndarray | np.generic) and value.dtype == np.float16:
        return np.asarray(value, dtype=np.float32)
    return value


def _as_declared(value: Any, var: Any) -> Any:
    """A folded constant in the dtype its var declares (strings and lists stay as they are)."""
    if isinstance(value, np.ndarray | np.generic | float | int | bool) and not isinstance(
            value, str):
        try:
            dtype = _nptype(var)
        except Exception:  # noqa: BLE001  (str and list types have no NumPy dtype)
            return value
        array = np.asarray(value)
        return array.astype(dtype) if array.dtype != dtype else value
    return value


def _nptype(var: Any) -> np.dtype:
    from coremltools.converters.mil.mil import types

    return np.dtype(types.nptype_from_builtin(var.dtype))


def _static_shape(var: Any) -> tuple[int | None, ...] | None:
    try:
        shape = var.shape
    except Exception:  # noqa: BLE001  (list vars have no shape)
        return None
    return tuple(d if isinstance(d, (int, np.integer)) else None for d in shape)


class CompiledProgram:
    """A MIL function compiled into steps; `run` executes it on NumPy feeds.

    ``CompiledProgram(program)`` raises `UnsupportedOpError` naming every MIL op type the
    emulator lacks, before anything runs.
    """

    def __init__(self, program: Any, function_name: str = "main", *, where: str = "") -> None:
        self.where = where or "the program"
        if function_name not in program.functions:
            raise BadInputError(f"{self.where} has no function {function_name!r} (it has "
                                f"{', '.join(program.functions)})")
        function = program.functions[function_name]
        self.input_names = tuple(function.inputs)
        self.input_types = {name: (_nptype(var), _static_shape(var))
                            for name, var in function.inputs.items()}
        self.output_vars = tuple(v.name for v in function.outputs)
        self.constants: dict[str, Any] = {}   # by var name, in the program's dtype
        self._widened: dict[str, Any] = {}    # the constants as kernels read them
        self.steps: list[Step] = []
        self.op_types: Counter[str] = Counter()
        missing: Counter[str] = Counter()
        known = set(self.input_names)
        for op in function.operations:
            self.op_types[op.op_type] += 1
            if op.blocks:
                missing[op.op_type] += 1  # control flow (cond, while_loop): not emulated
                known.update(v.name for v in op.outputs)  # so that the rest still compiles
                continue
            folded = self._constant_outputs(op)
            if folded is not None:
                self.constants.update(folded)
                self._widened.update({k: compute_value(v) for k, v in folded.items()})
                continue
            kernel = KERNELS.get(op.op_type)
            if kernel is None:
                missing[op.op_type] += 1
                known.update(v.name for v in op.outputs)
                continue
            inputs = tuple((name, self._source(var, known, op)) for name, var in op.inputs.items())
            outputs = tuple(Output(v.name, _nptype(v), _static_shape(v)) for v in op.outputs)
            known.update(o.name for o in outputs)
            self.steps.append(Step(op, kernel, inputs, outputs))
        if missing:
            ops = ", ".join(f"{t} (x{n})" if n > 1 else t for t, n in sorted(missing.items()))
            raise UnsupportedOpError(
                f"the CoreML emulator cannot run {self.where}: it lacks MIL op"
                f"{'s' if len(missing) > 1 else ''} {ops}; gatex.runtimes.coreml_emulator."
                "SUPPORTED_OPS lists what it runs (on macOS, gatex runs the real model instead)")
        for name in self.output_vars:
            if name not in known and name not in self.constants:
                raise BadInputError(f"{self.where}: output {name!r} is produced by no op")
        self.computes_fp16 = any(o.dtype == np.float16 for s in self.steps for o in s.outputs)

    @staticmethod
    def _constant_outputs(op: Any) -> dict[str, Any] | None:
        """The op's outputs by name when they are known before running, else None."""
        if op.op_type.startswith("constexpr_") and hasattr(op, "materialized_val_inference"):
            return {v.name: _as_declared(x, v)
                    for v, x in zip(op.outputs, constexpr_values(op).values())}
        values = [v.val for v in op.outputs]
        if op.op_type == "const" or all(x is not None for x in values):
            return {v.name: _as_declared(x, v) for v, x in zip(op.outputs, values)}
        return None

    def _source(self, var: Any, known: set[str], op: Any) -> tuple[int, Any]:
        if isinstance(var, (list, tuple)):
            return _TUPLE, tuple(self._source(v, known, op) for v in var)
        if var.name in self._widened:
            return _CONST, self._widened[var.name]
        if var.name in known:
            return _VAR, var.name
        if var.val is not None:
            return _CONST, compute_value(var.val)
        raise EmulationError(f"{self.where}: input {var.name!r} of MIL op {op.op_type!r} "
                             f"({op.name}) is produced by no earlier op")

    def run(self, feeds: Mapping[str, np.ndarray], *, keep_all: bool = False
            ) -> dict[str, np.ndarray]:
        """The function's outputs by var name (every value by var name when ``keep_all``)."""
        env: dict[str, Any] = {}
        for name in self.input_names:
            if name not in feeds:
                raise BadInputError(f"{self.where}: missing input {name!r}")
            dtype, _ = self.input_types[name]
            env[name] = np.asarray(feeds[name], dtype=dtype)
        with np.errstate(all="ignore"):  # overflow to inf, 0/0: Core ML's answers too
            for step in self.steps:
                values = {name: self._resolve(source, env) for name, source in step.inputs}
                result = self._call(step, values)
                for out, value in zip(step.outputs, result):
                    env[out.name] = self._finish(step, out, value)
        if keep_all:
            return {**{k: np.asarray(v) for k, v in self.constants.items()}, **env}
        return {name: np.asarray(env[name] if name in env else self.constants[name])
                for name in self.output_vars}

    def _resolve(self, source: tuple[int, Any], env: dict[str, Any]) -> Any:
        kind, what = source
        if kind == _CONST:
            return what
        if kind == _VAR:
            return compute_value(env[what])
        return [self._resolve(s, env) for s in what]

    def _call(self, step: Step, values: dict[str, Any]) -> tuple[Any, ...]:
        try:
            result = step.kernel.fn(OpCall(step.op, values))
        except NotImplementedError as exc:
            raise UnsupportedOpError(f"the CoreML emulator cannot run {step.describe()} in "
                                     f"{self.where}: {exc or 'this variant is not implemented'}"
                                     ) from None
        except Exception as exc:  # noqa: BLE001  (a kernel bug: name the op, one line)
            raise EmulationError(f"the CoreML emulator failed on {step.describe()} in "
                                 f"{self.where}: {type(exc).__name__}: "
                                 f"{' '.join(str(exc).split())[:300]}") from None
        if isinstance(result, list) and len(step.outputs) > 1:
            result = tuple(result)
        if not isinstance(result, tuple):
            result = (result,)
        if len(result) != len(step.outputs):
            raise EmulationError(f"the CoreML emulator's kernel for {step.describe()} returned "
                                 f"{len(result)} outputs; the op has {len(step.outputs)}")
        return result

    def _finish(self, step: Step, out: Output, value: Any) -> np.ndarray:
        array = np.asarray(value)
        if array.dtype != out.dtype:
            array = array.astype(out.dtype)  # the op's precision: fp16 rounding happens here
        if out.shape is not None and (len(out.shape) != array.ndim or any(
                d is not None and d != s for d, s in zip(out.shape, array.shape))):
            shape = "(" + ", ".join("?" if d is None else str(d) for d in out.shape) + ")"
            raise EmulationError(f"the CoreML emulator computed shape {tuple(array.shape)} for "
                                 f"{step.describe()} output {out.name!r}; the program declares "
                                 f"{shape}")
        return array


def supported_ops() -> dict[str, str]:
    """Every MIL op type the emulator runs, with how (value_inference, numpy or torch)."""
    return {name: k.source for name, k in sorted(KERNELS.items())}
