"""The example and check inputs of a ``--model``: from ``--input-shape`` (one float input),
``--input`` specs (any dtype, range and number of inputs), an ``--inputs`` .npz, or the
``example_inputs()`` function beside the model's factory."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from gatex.cli.options import INPUT_SYNTAX, parse_input, parse_shape
from gatex.errors import BadInputError

HOOK = "example_inputs"


def model_inputs(model_ref: str, *, input_shape: str | None, inputs: Sequence[str],
                 inputs_npz: Path | None) -> tuple[tuple[Any, ...], tuple[Any, ...],
                                                   tuple[str, ...]]:
    """(example inputs, check inputs, input names) for ``--model model_ref`` (loaded already,
    so its module is imported); random draws use seed 0."""
    import torch

    given = [o for o, v in (("--input-shape", input_shape), ("--input", list(inputs)),
                            ("--inputs", inputs_npz)) if v]
    if len(given) > 1:
        raise BadInputError(f"{' and '.join(given)}: give the model's inputs one way")
    generator = torch.Generator().manual_seed(0)
    if input_shape:
        shape = parse_shape(input_shape)
        examples = (torch.randn(shape, generator=generator),)
        return examples, (torch.randn((max(shape[0], 64), *shape[1:]), generator=generator),), ()
    if inputs:
        specs = [parse_input(t) for t in inputs]
        examples = tuple(s.make(generator) for s in specs)
        return examples, tuple(s.make(generator) for s in specs), _names(specs)
    if inputs_npz is not None:
        from gatex.artifacts.npz import read_npz

        arrays = read_npz(inputs_npz)
        if not arrays:
            raise BadInputError(f"{inputs_npz} holds no arrays")
        tensors = tuple(torch.from_numpy(a.copy()) for a in arrays.values())
        return tensors, tensors, tuple(arrays)
    examples = _hook_inputs(model_ref)
    if examples is None:
        raise BadInputError(f"--model needs its inputs: --input-shape 4,64 (one float input), "
                            f"--input {INPUT_SYNTAX.partition('e.g. ')[2]} (repeat per input), "
                            f"--inputs F.npz, or a function {HOOK}() beside the factory")
    return examples, examples, ()


def given_arrays(inputs: Sequence[str], inputs_npz: Path | None
                 ) -> tuple[list[Any] | None, str]:
    """``gatex bench``'s ``--input`` / ``--inputs``: NumPy arrays in input order and how they
    were made; (None, "") when neither is given."""
    import numpy as np
    import torch

    if inputs and inputs_npz is not None:
        raise BadInputError("--input and --inputs: give the inputs one way")
    if inputs:
        generator = torch.Generator().manual_seed(0)
        specs = [parse_input(t) for t in inputs]
        _names(specs)
        return [s.make(generator).numpy() for s in specs], \
            "--input " + " ".join(inputs) + " (seed 0)"
    if inputs_npz is not None:
        from gatex.artifacts.npz import read_npz

        arrays = read_npz(inputs_npz)
        return [np.ascontiguousarray(a) for a in arrays.values()], f"{inputs_npz}"
    return None, ""


def _names(specs: Sequence[Any]) -> tuple[str, ...]:
    names = [s.name or f"input_{i}" for i, s in enumerate(specs)]
    if len(set(names)) != len(names):
        raise BadInputError(f"--input names must differ; got {', '.join(names)}")
    return tuple(names)


def _hook_inputs(model_ref: str) -> tuple[Any, ...] | None:
    """``example_inputs()`` of the module that holds the factory, as a tuple of tensors."""
    import sys

    import torch

    module_part, _, _ = model_ref.rpartition(":")
    if not module_part or model_ref.endswith(".pt2"):
        return None
    if module_part.endswith(".py"):
        module = sys.modules.get(f"gatex_user_{Path(module_part).stem}")
    else:
        module = sys.modules.get(module_part)
    hook = getattr(module, HOOK, None)
    if hook is None:
        return None
    try:
        got = hook()
    except Exception as exc:  # noqa: BLE001  (the user's code: one line, not a traceback)
        raise BadInputError(f"{module_part}:{HOOK}() failed: {type(exc).__name__}: "
                            f"{' '.join(str(exc).split())[:200]}") from None
    got = (got,) if isinstance(got, torch.Tensor) else got
    if not isinstance(got, (tuple, list)) or not got or \
            not all(isinstance(t, torch.Tensor) for t in got):
        raise BadInputError(f"{module_part}:{HOOK}() must return a tensor or a tuple of "
                            f"tensors; got {type(got).__name__}")
    return tuple(got)
