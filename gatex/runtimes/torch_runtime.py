"""`TorchRuntime`: an ``nn.Module`` run eagerly, NumPy in and out, recording the gatex ops it calls.

Every gated module's forward is one ``gatex::`` torch custom op, so a dispatch mode sees each
gated op exactly once per call, in execution order, with the module that was running: the parity
engine uses the op names to pick spec tolerances and ``--locate`` uses the values.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode

from gatex.errors import BackendUnavailableError, BadInputError, GatexError
from gatex.ops import REGISTRY
from gatex.runtimes.arrays import from_numpy, to_numpy
from gatex.runtimes.base import Runtime, TensorSpec


@dataclass(frozen=True)
class GatexOpCall:
    """One call of a ``gatex::`` op during a run."""

    index: int                        # position among the run's gatex op calls, from 0
    op: str                           # spec name, e.g. "GoLU"
    module: str                       # qualified name of the innermost running module ("" = root)
    outputs: tuple[np.ndarray, ...]   # empty unless the runtime records values


# aten ops with a reduction inside: their accumulation order differs between backends, which
# the parity tolerance accounts for (parity.tolerance_for)
ATEN_REDUCTIONS = frozenset({"mm", "addmm", "bmm", "baddbmm", "matmul", "linear", "convolution",
                             "_convolution", "conv1d", "conv2d", "conv3d", "einsum"})


class GatexOpRecorder(TorchDispatchMode):
    """Records each ``gatex::`` op call (name, running module, optionally its outputs), and the
    names of the standard reduction ops (matmul, convolution) the run used."""

    def __init__(self, module_stack: list[str], *, record_values: bool) -> None:
        super().__init__()
        self.calls: list[GatexOpCall] = []
        self.reductions: set[str] = set()
        self._stack = module_stack
        self._record_values = record_values

    def __torch_dispatch__(self, func: Any, types: Any, args: tuple = (),
                           kwargs: dict | None = None) -> Any:
        out = func(*args, **(kwargs or {}))
        namespace = getattr(func, "namespace", None)
        if namespace == "aten" and func._schema.name.removeprefix("aten::") in ATEN_REDUCTIONS:
            self.reductions.add(func._schema.name.removeprefix("aten::"))
        if namespace == "gatex":
            op = REGISTRY.get(func._schema.name).name
            values: tuple[np.ndarray, ...] = ()
            if self._record_values:
                tensors = out if isinstance(out, (tuple, list)) else (out,)
                values = tuple(to_numpy(t) for t in tensors if isinstance(t, torch.Tensor))
            module = self._stack[-1] if self._stack else ""
            self.calls.append(GatexOpCall(len(self.calls), op, module, values))
        return out


def flatten_outputs(out: Any) -> list[tuple[str | None, torch.Tensor]]:
    """A forward's result as (key, tensor) pairs: a tensor, nested tuples/lists, or a dict."""
    if isinstance(out, torch.Tensor):
        return [(None, out)]
    if isinstance(out, dict):
        return [(str(k), t) for k, v in out.items() for _, t in flatten_outputs(v)]
    if isinstance(out, (tuple, list)):
        return [pair for item in out for pair in flatten_outputs(item)]
    raise BadInputError(f"the torch model returned {type(out).__name__}; gatex compares tensors "
                        "(a tensor, a tuple/list of tensors, or a dict of them)")


class TorchRuntime(Runtime):
    """Eager PyTorch. Feeds go to ``forward`` positionally, in the order of ``input_specs``
    (or of the feeds mapping when the model declares none). The model is put in eval mode.

    ``output_names`` names the flattened outputs; without it a dict's keys are used, else
    ``output`` (one output) or ``output_0``, ``output_1``, ...
    ``last_op_calls`` holds the gatex ops of the latest run (with values if ``record_values``),
    ``last_reductions`` the standard reduction ops it ran (addmm, convolution, ...).
    """

    name = "torch"

    def __init__(self, model: nn.Module, *, input_specs: Sequence[TensorSpec] | None = None,
                 output_names: Sequence[str] | None = None, device: str = "cpu",
                 record_values: bool = False) -> None:
        super().__init__()
        if not isinstance(model, nn.Module):
            raise BadInputError(f"TorchRuntime needs an nn.Module; got {type(model).__name__}")
        self.model = model
        self._specs = tuple(input_specs) if input_specs is not None else None
        self._names = tuple(output_names) if output_names is not None else None
        self.device = device
        self.record_values = record_values
        self.last_op_calls: tuple[GatexOpCall, ...] = ()
        self.last_reductions: tuple[str, ...] = ()
        self._stack: list[str] = []
        self._hooks: list[Any] = []
        self._seen_names: tuple[str, ...] | None = None

    @property
    def label(self) -> str:
        return f"torch (eager, {self.device.upper()})"

    def _load(self) -> None:
        if self.device.startswith("cuda") and not torch.cuda.is_available():
            raise BackendUnavailableError("torch has no CUDA device here; use --device cpu")
        self.model.to(self.device).eval()
        # Hooks return None: a hook that returns a value replaces the module's input or output.
        def enter(qualname: str) -> Any:
            return lambda _module, _args: self._stack.append(qualname)

        def leave(_module: nn.Module, _args: Any, _out: Any) -> None:
            if self._stack:
                self._stack.pop()

        for qualname, module in self.model.named_modules():
            self._hooks.append(module.register_forward_pre_hook(enter(qualname)))
            self._hooks.append(module.register_forward_hook(leave, always_call=True))

    def current_module(self) -> str:
        """The qualified name of the innermost module running now ("" outside a run or at the
        root): what a gatex op call inside ``forward`` is attributed to."""
        return self._stack[-1] if self._stack else ""

    def _close(self) -> None:
        for hook in self._hooks:
            hook.remove()
        self._hooks.clear()

    def _input_specs(self) -> tuple[TensorSpec, ...] | None:
        return self._specs

    def _output_names(self) -> tuple[str, ...]:
        if self._names is not None:
            return self._names
        if self._seen_names is not None:
            return self._seen_names
        raise BadInputError("TorchRuntime: output names are known after the first run, or pass "
                            "output_names=")

    def _run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        args = [from_numpy(a).to(self.device) for a in feeds.values()]
        self._stack.clear()
        with torch.no_grad(), GatexOpRecorder(self._stack, record_values=self.record_values) as rec:
            try:
                out = self.model(*args)
            except GatexError:
                raise
            except (RuntimeError, ValueError, TypeError, IndexError) as exc:
                raise BadInputError(describe_model_failure(feeds, exc)) from exc
        self.last_op_calls = tuple(rec.calls)
        self.last_reductions = tuple(sorted(rec.reductions))
        pairs = flatten_outputs(out)
        names = self._names or self._default_names(pairs)
        if len(names) != len(pairs):
            raise BadInputError(f"the torch model returned {len(pairs)} outputs but "
                                f"{len(names)} output names were given ({', '.join(names)})")
        self._seen_names = tuple(names)
        return {name: to_numpy(t) for name, (_, t) in zip(names, pairs)}

    @staticmethod
    def _default_names(pairs: list[tuple[str | None, torch.Tensor]]) -> tuple[str, ...]:
        keys = [k for k, _ in pairs]
        if all(k is not None for k in keys) and len(set(keys)) == len(keys):
            return tuple(k for k in keys if k is not None)
        if len(pairs) == 1:
            return ("output",)
        return tuple(f"output_{i}" for i in range(len(pairs)))


def describe_model_failure(feeds: dict[str, np.ndarray], exc: BaseException) -> str:
    """One line: the torch model cannot take these inputs (each named with dtype and shape)."""
    shown = ", ".join(f"{name} {a.dtype}[{','.join(map(str, a.shape))}]"
                      for name, a in feeds.items())
    text = " ".join(str(exc).split()) or type(exc).__name__
    return (f"the torch model cannot run on the inputs ({shown}): {type(exc).__name__}: "
            f"{text[:300]}; the model and the artifact (or the --inputs file) disagree")
