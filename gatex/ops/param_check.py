"""`check_op_params`: every gatex op a model calls gets parameters inside its spec's ranges.

Modules validate their parameters when they are built, but a value can change afterwards: a
factory that sets ``GoLU.beta = -1``, a checkpoint that loads ``alpha_fixed = 1.5`` into a
buffer, a learned alpha trained out of range. So before export the model runs once on its
example inputs with a dispatch mode that sees each ``gatex::`` op call and validates the values
the op actually receives (scalars and tensors alike) against its `OpSpec`; the first one out of
range is a `ParameterRangeError` naming the module and the parameter (exit 2).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode

from gatex.errors import ParameterRangeError
from gatex.ops.registry import REGISTRY


class _Checker(TorchDispatchMode):
    def __init__(self, where: list[str]) -> None:
        super().__init__()
        self.where = where
        self.by_qualname = {spec.torch_qualname: spec for spec in REGISTRY}

    def __torch_dispatch__(self, func: Any, types: Any, args: Sequence[Any] = (),
                           kwargs: dict[str, Any] | None = None) -> Any:
        kwargs = kwargs or {}
        if getattr(func, "namespace", None) == "gatex":
            spec = self.by_qualname.get(f"gatex::{func._schema.name.split('::')[-1]}")
            if spec is not None:
                self._check(spec, func, args, kwargs)
        return func(*args, **kwargs)

    def _check(self, spec: Any, func: Any, args: Sequence[Any], kwargs: dict[str, Any]) -> None:
        names = {p.name for p in spec.params}
        for i, arg in enumerate(func._schema.arguments):
            if arg.name not in names:
                continue
            if i < len(args):
                value = args[i]
            elif arg.name in kwargs:
                value = kwargs[arg.name]
            else:
                continue  # the schema's default: the spec's own
            if isinstance(value, torch.Tensor):
                value = value.detach().float()
            try:
                spec.param(arg.name).validate(value, op=spec.name)
            except ParameterRangeError as exc:
                module = self.where[-1] if self.where else "<root>"
                raise ParameterRangeError(f"module {module}: {exc} (checked at export time, on "
                                          "the value the op receives)") from None


def check_op_params(model: nn.Module, example_inputs: Sequence[Any]) -> None:
    """Run ``model`` once on ``example_inputs``; raise on the first out-of-range op parameter.

    Any other failure of that run is left to the export that follows, which reports it in
    context (a shape the model cannot take, an op it cannot lower).
    """
    where: list[str] = []
    names = {id(m): name or type(m).__name__ for name, m in model.named_modules()}
    labels = {id(m): f"{names[id(m)]!r} ({type(m).__name__})" for m in model.modules()}

    def pre(module: nn.Module, _args: Any) -> None:
        where.append(labels.get(id(module), type(module).__name__))

    def post(module: nn.Module, _args: Any, _out: Any) -> None:
        if where:
            where.pop()

    handles = [m.register_forward_pre_hook(pre) for m in model.modules()]
    handles += [m.register_forward_hook(post) for m in model.modules()]
    try:
        with torch.no_grad(), _Checker(where):
            model(*example_inputs)
    except ParameterRangeError:
        raise
    except Exception:  # noqa: BLE001,S110  (the export reports this failure in context)
        pass
    finally:
        for h in handles:
            h.remove()


__all__ = ["check_op_params"]
