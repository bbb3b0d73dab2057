"""Dynamic dimensions: which axis of which input may change size, by the user's names.

One `DynamicAxes` goes to every exporter. It comes from ``dynamic_batch`` (axis 0 of every
input, named ``batch``), from torch's own ``dynamic_shapes`` form (one entry per input: None or
``{axis: torch.export.Dim | name}``; or a mapping from forward parameter names to that), or
from the CLI's ``--dynamic`` text (`parse_cli`). An axis named twice by one name is one
dimension (``input_ids`` and ``attention_mask`` share ``seq``).

torch.export specialises a dimension whose example size is 1 (0/1 specialisation) and one the
model's code pins (a view to a fixed size, a table of fixed length): `trace_sizes` grows size-1
dynamic axes to 2 for tracing, and `without` drops the names torch.export reports as
violated, so an exporter can fall back to static for exactly those and say so in one line.
"""

from __future__ import annotations

import inspect
import re
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any, TypeVar

import torch

from gatex.errors import BadInputError, GatexWarning

T = TypeVar("T")

_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


@dataclass(frozen=True)
class DynamicAxes:
    """``axes[i]`` = ((axis, name), ...) for input i; ``bounds[name]`` = (min, max or None)."""

    axes: tuple[tuple[tuple[int, str], ...], ...]
    bounds: tuple[tuple[str, int, int | None], ...] = ()

    @property
    def names(self) -> tuple[str, ...]:
        seen: dict[str, None] = {}
        for per_input in self.axes:
            for _, name in per_input:
                seen.setdefault(name)
        return tuple(seen)

    def __bool__(self) -> bool:
        return any(self.axes)

    def bound(self, name: str) -> tuple[int, int | None]:
        for n, lo, hi in self.bounds:
            if n == name:
                return lo, hi
        return 1, None

    def describe(self) -> str:
        """``input 0: 0=batch, 1=seq``; ``static`` when nothing is dynamic."""
        parts = [f"input {i}: " + ", ".join(f"{a}={n}" for a, n in per)
                 for i, per in enumerate(self.axes) if per]
        return "; ".join(parts) or "static"

    def without(self, names: Sequence[str]) -> DynamicAxes:
        """These axes less the dimensions named ``names`` (made static)."""
        drop = set(names)
        return DynamicAxes(tuple(tuple((a, n) for a, n in per if n not in drop)
                                 for per in self.axes),
                           tuple(b for b in self.bounds if b[0] not in drop))

    def torch_dynamic_shapes(self) -> tuple[dict[int, Any] | None, ...] | None:
        """torch.export's ``dynamic_shapes``: one Dim per name, shared across inputs."""
        if not self:
            return None
        dims = {}
        for name in self.names:
            lo, hi = self.bound(name)
            # min 2 is what torch.export can keep dynamic (size 1 is specialised); the trace
            # inputs are grown to 2 where they hold 1 (`trace_sizes`), and the artifact still
            # takes size 1 (ONNX, CoreML and TensorRT do not carry torch's lower bound)
            dims[name] = torch.export.Dim(name, min=max(lo, 2),
                                          **({"max": hi} if hi is not None else {}))
        return tuple({a: dims[n] for a, n in per} or None for per in self.axes)

    def trace_sizes(self, inputs: Sequence[torch.Tensor]) -> tuple[torch.Tensor, ...]:
        """``inputs`` with every dynamic axis of size 1 repeated to size 2 (see the module
        docstring); other inputs unchanged."""
        grown = []
        for t, per in zip(inputs, self.axes):
            for axis, _ in per:
                if t.dim() > axis and t.shape[axis] == 1:
                    t = torch.cat([t, t], dim=axis)
            grown.append(t)
        return (*grown, *inputs[len(grown):])

    def resized(self, inputs: Sequence[torch.Tensor], name: str) -> tuple[torch.Tensor, ...]:
        """``inputs`` with dimension ``name`` at a second size: one less (the leading part),
        or 2 (repeated) where it is 1. The values stay the model's own inputs (token ids stay
        ids, a mask stays a mask)."""
        out = []
        for t, per in zip(inputs, self.axes):
            for axis, n in per:
                if n != name or t.dim() <= axis:
                    continue
                size = t.shape[axis]
                t = torch.cat([t, t], dim=axis) if size == 1 else t.narrow(axis, 0, size - 1)
            out.append(t)
        return (*out, *inputs[len(out):])

    def size_of(self, inputs: Sequence[torch.Tensor], name: str) -> int:
        for t, per in zip(inputs, self.axes):
            for axis, n in per:
                if n == name and t.dim() > axis:
                    return int(t.shape[axis])
        raise KeyError(name)


STATIC = DynamicAxes(())


def batch_axes(inputs: Sequence[torch.Tensor]) -> DynamicAxes:
    """Axis 0 of every input that has one, named ``batch``."""
    return DynamicAxes(tuple(((0, "batch"),) if t.dim() >= 1 else () for t in inputs))


def resolve(inputs: Sequence[torch.Tensor], *, dynamic_batch: bool = True,
            dynamic_shapes: Any = None, forward: Any = None) -> DynamicAxes:
    """The `DynamicAxes` of an export: ``dynamic_shapes`` (torch's form, a `DynamicAxes`, or
    None) wins over ``dynamic_batch``. ``forward`` (the model's forward) names the inputs when
    ``dynamic_shapes`` is keyed by parameter name."""
    if isinstance(dynamic_shapes, DynamicAxes):
        return _checked(dynamic_shapes, inputs)
    if dynamic_shapes is None:
        return batch_axes(inputs) if dynamic_batch else STATIC
    if isinstance(dynamic_shapes, Mapping):
        names = _parameter_names(forward, len(inputs))
        unknown = [k for k in dynamic_shapes if k not in names]
        if unknown:
            raise BadInputError(f"dynamic_shapes names {', '.join(map(repr, unknown))}, which "
                                f"the model's forward does not take; its inputs: "
                                f"{', '.join(names)}")
        dynamic_shapes = [dynamic_shapes.get(n) for n in names]
    if not isinstance(dynamic_shapes, (list, tuple)) or len(dynamic_shapes) != len(inputs):
        raise BadInputError(f"dynamic_shapes must give one entry per input ({len(inputs)}), "
                            f"each None or {{axis: Dim or name}}; got {dynamic_shapes!r}")
    axes, bounds = [], {}
    for i, entry in enumerate(dynamic_shapes):
        if entry is None:
            axes.append(())
            continue
        if not isinstance(entry, Mapping):
            raise BadInputError(f"dynamic_shapes entry {i} must be None or {{axis: Dim or "
                                f"name}}; got {entry!r}")
        per = []
        for axis, dim in entry.items():
            name, lo, hi = _dim(dim, i, axis)
            per.append((int(axis), name))
            if not isinstance(dim, str) or name not in bounds:  # a Dim's bounds win
                bounds[name] = (lo, hi)
        axes.append(tuple(sorted(per)))
    return _checked(DynamicAxes(tuple(axes), tuple((n, *b) for n, b in bounds.items())), inputs)


def parse_cli(texts: Sequence[str], n_inputs: int, input_names: Sequence[str] = ()
              ) -> DynamicAxes:
    """``--dynamic`` values: ``[INPUT:]AXIS=NAME[,AXIS=NAME...]``; INPUT is an input's index or
    name (default: every input); ``--dynamic none`` makes every axis static."""
    if [t.strip().lower() for t in texts] == ["none"]:
        return STATIC
    axes: list[dict[int, str]] = [{} for _ in range(n_inputs)]
    for text in texts:
        target, _, rest = text.rpartition(":")
        indices = range(n_inputs) if not target else [_input_index(target, n_inputs,
                                                                   input_names, text)]
        for item in rest.split(","):
            axis_text, eq, name = item.strip().partition("=")
            if not eq or not axis_text.strip().isdigit() or not _NAME.match(name.strip()):
                raise BadInputError(f"--dynamic {text!r}: each axis is AXIS=NAME (for example "
                                    f"0=batch,1=seq), NAME a plain identifier")
            for i in indices:
                axes[i][int(axis_text)] = name.strip()
    return DynamicAxes(tuple(tuple(sorted(a.items())) for a in axes))


def _input_index(target: str, n_inputs: int, input_names: Sequence[str], text: str) -> int:
    if target.isdigit() and int(target) < n_inputs:
        return int(target)
    if target in input_names:
        return list(input_names).index(target)
    known = ", ".join([*map(str, range(n_inputs)), *input_names])
    raise BadInputError(f"--dynamic {text!r}: no input {target!r}; the inputs: {known}")


def _dim(dim: Any, i: int, axis: Any) -> tuple[str, int, int | None]:
    if isinstance(axis, bool) or not isinstance(axis, int) or axis < 0:
        raise BadInputError(f"dynamic_shapes entry {i}: axis {axis!r} must be an int >= 0")
    if isinstance(dim, str):
        if not _NAME.match(dim):
            raise BadInputError(f"dynamic_shapes entry {i}: dimension name {dim!r} must be a "
                                "plain identifier")
        return dim, 1, None
    name = getattr(dim, "__name__", None)
    if name is None or not hasattr(dim, "min"):
        raise BadInputError(f"dynamic_shapes entry {i}, axis {axis}: give a torch.export.Dim "
                            f"or a name; got {dim!r}")
    hi = getattr(dim, "max", None)
    hi = None if hi is None or hi >= 2 ** 62 else int(hi)
    return name, max(int(getattr(dim, "min", 1) or 1), 1), hi


def _checked(axes: DynamicAxes, inputs: Sequence[torch.Tensor]) -> DynamicAxes:
    if len(axes.axes) > len(inputs):
        raise BadInputError(f"dynamic axes are given for {len(axes.axes)} inputs; the model "
                            f"takes {len(inputs)}")
    for i, (t, per) in enumerate(zip(inputs, axes.axes)):
        for axis, name in per:
            if axis >= t.dim():
                raise BadInputError(f"dynamic axis {axis} ({name}) of input {i}: the input "
                                    f"has {t.dim()} dimensions (shape {tuple(t.shape)})")
    sizes: dict[str, int] = {}
    for i, (t, per) in enumerate(zip(inputs, axes.axes)):
        for axis, name in per:
            if sizes.setdefault(name, int(t.shape[axis])) != int(t.shape[axis]):
                raise BadInputError(f"dimension {name} is {sizes[name]} in one input and "
                                    f"{int(t.shape[axis])} in input {i}: the example inputs "
                                    "must agree on a dimension they share")
    return axes


def _parameter_names(forward: Any, n: int) -> list[str]:
    try:
        params = list(inspect.signature(forward).parameters.values())
    except (TypeError, ValueError):
        return [f"input_{i}" for i in range(n)]
    names = [p.name for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    return (names + [f"input_{i}" for i in range(len(names), n)])[:n]


def export_adapting(run: Callable[[DynamicAxes], T], axes: DynamicAxes,
                    inputs: Sequence[torch.Tensor]) -> tuple[T, DynamicAxes]:
    """``run(axes)`` (a torch.export-based trace); where torch.export reports a dimension it
    cannot keep dynamic, retry with its suggested bounds, or with that dimension static and one
    `GatexWarning` line naming it, its size and why. Returns the result and the axes used."""
    current = axes
    for _ in range(2 * len(axes.names) + 1):
        try:
            return run(current), current
        except Exception as exc:  # gatex's own errors too: they keep torch's as __context__
            names = [n for n in violated(exc) if n in current.names]
            if not names:
                raise
            fixes = suggested_fixes(exc)
            refined, static = current, []
            for name in names:
                fix = fixes.get(name)
                if isinstance(fix, tuple) and fix != current.bound(name):
                    others = tuple(b for b in refined.bounds if b[0] != name)
                    refined = replace(refined, bounds=(*others, (name, *fix)))
                else:
                    static.append(name)
            for name in static:
                size = current.size_of(inputs, name)
                fix = fixes.get(name)
                why = (f"the model's code fixes it to {fix}" if isinstance(fix, int) and fix > 1
                       else "torch.export specialised it to its example size")
                warnings.warn(GatexWarning(
                    f"dimension {name} cannot stay dynamic ({why}); exported static at {size} "
                    f"(name other axes with --dynamic, or pass --static)"), stacklevel=2)
            refined = refined.without(static)
            if refined == current:
                raise
            current = refined
    return run(current), current


def suggested_fixes(exc: BaseException) -> dict[str, int | tuple[int, int | None]]:
    """torch.export's "Suggested fixes": ``name = 32`` (a constant) or ``name = Dim('name',
    min=.., max=..)`` (bounds)."""
    text = "\n".join(str(e) for e in _chain(exc))
    fixes: dict[str, int | tuple[int, int | None]] = {}
    for name, value in re.findall(r"^\s*(\w+) = (\d+)\s*$", text, flags=re.M):
        fixes[name] = int(value)
    for name, args in re.findall(r"^\s*(\w+) = Dim\('\w+'(.*?)\)\s*$", text, flags=re.M):
        lo = re.search(r"min=(\d+)", args)
        hi = re.search(r"max=(\d+)", args)
        fixes[name] = (int(lo.group(1)) if lo else 1, int(hi.group(1)) if hi else None)
    return fixes


def violated(exc: BaseException) -> tuple[str, ...]:
    """The dimension names torch.export reports in "Constraints violated (a, b)!"."""
    text = "\n".join(str(e) for e in _chain(exc))
    found = re.findall(r"Constraints violated \(([^)]*)\)", text)
    return tuple(dict.fromkeys(n.strip() for group in found for n in group.split(",")
                               if n.strip()))


def _chain(exc: BaseException) -> list[BaseException]:
    seen: list[BaseException] = []
    while exc is not None and exc not in seen:
        seen.append(exc)
        exc = exc.__cause__ or exc.__context__
    return seen


def rename_onnx_dims(model: Any, axes: DynamicAxes) -> None:
    """Give the ONNX model's dynamic dimensions the user's names: each graph input's
    ``dim_param`` at a dynamic axis (torch's symbol, ``s72``) becomes that axis' name, and the
    symbol is renamed wherever it appears (outputs, value_info, expressions such as
    ``2*s72``)."""
    graph = model.graph
    inputs = [i for i in graph.input if i.name not in {t.name for t in graph.initializer}]
    mapping: dict[str, str] = {}
    for value, per in zip(inputs, axes.axes):
        dims = value.type.tensor_type.shape.dim
        for axis, name in per:
            if axis < len(dims) and dims[axis].dim_param:
                mapping.setdefault(dims[axis].dim_param, name)
    if not mapping:
        return
    pattern = re.compile(r"\b(" + "|".join(map(re.escape, mapping)) + r")\b")
    for value in (*graph.input, *graph.output, *graph.value_info):
        for d in value.type.tensor_type.shape.dim:
            if d.dim_param:
                d.dim_param = pattern.sub(lambda m: mapping[m.group(1)], d.dim_param)
