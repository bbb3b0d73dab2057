"""torch.export keeps each gated op as one ``gatex::`` node, and the fake (meta) kernels give the
shapes and dtypes eager execution gives."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import torch
from torch._subclasses.fake_tensor import FakeTensorMode

from gatex.ops import REGISTRY

ALL_OPS = sorted(s.name for s in REGISTRY)


def _r(*shape: int, seed: int = 0, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64
                       ).to(dtype)


def sample(name: str, batch: int = 2, dtype: torch.dtype = torch.float32) -> tuple[list[Any], int]:
    """Positional args for op ``name`` (inputs, then params), and how many lead args are the
    graph's inputs (the rest are module state: tensors become buffers, others constants)."""
    spec = REGISTRY.get(name)
    if spec.family == "golu":
        return [_r(batch, 3, 4, dtype=dtype), 0.9, 1.2, 0.8], 1
    if spec.family == "zilu":
        return [_r(batch, 3, 4, dtype=dtype), torch.tensor(2.5, dtype=dtype)], 1
    if spec.family == "pagating":
        alpha = torch.linspace(0.1, 0.9, 4, dtype=dtype)             # one alpha per channel
        extra = {"paSwishU": [1.5], "paUnit": ["golu"]}.get(name, [])
        return [_r(batch, 3, 4, dtype=dtype), _r(batch, 3, 4, seed=1, dtype=dtype), alpha,
                *extra], 2
    if name == "PaGRUCell":
        alphas = [torch.tensor(a, dtype=dtype) for a in (0.8, 1.1, 1.3)]
        return [_r(batch, 3, dtype=dtype), _r(batch, 4, seed=1, dtype=dtype),
                _r(12, 3, seed=2, dtype=dtype), _r(12, 4, seed=3, dtype=dtype),
                _r(12, seed=4, dtype=dtype), _r(12, seed=5, dtype=dtype), *alphas], 2
    if name == "GatedDense":
        kernel = _r(6, 4, seed=1, dtype=dtype)
        gates = (_r(6, 4, seed=2) > 0).to(dtype)
        return [_r(batch, 5, 6, dtype=dtype), kernel, gates, _r(4, seed=3, dtype=dtype), "gelu"], 1
    geometry = [[2, 1], [1, 0], [1, 2], 2]                  # stride, padding, dilation, groups
    if name == "CGConv2d":
        mask = torch.zeros(6, 2, 3, 3, dtype=dtype)
        mask[:, :1] = 1.0
        return [_r(batch, 4, 9, 8, dtype=dtype), _r(6, 2, 3, 3, seed=1, dtype=dtype), mask,
                _r(6, seed=2, dtype=dtype), *geometry], 1
    if name == "PGConv2d":
        return [_r(batch, 4, 9, 8, dtype=dtype), _r(6, 2, 3, 3, seed=1, dtype=dtype),
                torch.zeros(6, dtype=dtype), 8, 8, 4, 2.0, *geometry], 1
    raise AssertionError(f"no sample for {name}")


class OneOp(torch.nn.Module):
    """Calls one op: the first ``n_inputs`` args come in, tensors after them are buffers."""

    def __init__(self, op: Callable[..., torch.Tensor], args: list[Any], n_inputs: int) -> None:
        super().__init__()
        self.op = op
        self.slots: list[tuple[bool, Any]] = []
        for i, a in enumerate(args[n_inputs:]):
            if isinstance(a, torch.Tensor):
                self.register_buffer(f"state{i}", a)
                self.slots.append((True, f"state{i}"))
            else:
                self.slots.append((False, a))

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        rest = [getattr(self, v) if is_buffer else v for is_buffer, v in self.slots]
        return self.op(*inputs, *rest)


@pytest.mark.parametrize("name", ALL_OPS)
def test_export_is_one_gatex_node(name: str) -> None:
    spec = REGISTRY.get(name)
    args, n = sample(name)
    module = OneOp(spec.torch_op, args, n)
    eager = module(*args[:n])
    program = torch.export.export(module, tuple(args[:n]))
    calls = [node for node in program.graph.nodes if node.op == "call_function"]
    assert len(calls) == 1, [str(c.target) for c in calls]
    assert calls[0].target is spec.torch_op.default
    assert calls[0].target.name() == f"{spec.torch_qualname}"
    val = calls[0].meta["val"]
    assert tuple(val.shape) == tuple(eager.shape) and val.dtype == eager.dtype
    assert torch.equal(program.module()(*args[:n]), eager)


@pytest.mark.parametrize("name", ALL_OPS)
def test_export_with_dynamic_batch(name: str) -> None:
    spec = REGISTRY.get(name)
    args, n = sample(name, batch=2)
    batch = torch.export.Dim("batch", min=1, max=64)
    module = OneOp(spec.torch_op, args, n)
    program = torch.export.export(module, tuple(args[:n]),
                                  dynamic_shapes=(tuple({0: batch} for _ in range(n)),))
    other, _ = sample(name, batch=5)
    out = program.module()(*other[:n])
    assert out.shape[0] == 5
    assert torch.equal(out, module(*other[:n]))


def fake_vs_eager(op: Callable[..., torch.Tensor], args: list[Any]) -> None:
    eager = op(*args)
    with FakeTensorMode() as mode:
        fake_args = [mode.from_tensor(a) if isinstance(a, torch.Tensor) else a for a in args]
        fake = op(*fake_args)
    assert tuple(fake.shape) == tuple(eager.shape), (tuple(fake.shape), tuple(eager.shape))
    assert fake.dtype == eager.dtype, (fake.dtype, eager.dtype)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.float64], ids=str)
@pytest.mark.parametrize("name", ALL_OPS)
def test_fake_matches_eager(name: str, dtype: torch.dtype) -> None:
    args, _ = sample(name, dtype=dtype)
    fake_vs_eager(REGISTRY.get(name).torch_op, args)


def _pa(alpha: torch.Tensor, v_shape: tuple[int, ...] = (3,)) -> list[Any]:
    return [_r(*v_shape), _r(*v_shape, seed=1), alpha]


BROADCAST_CASES = {
    # a parameter with dims the inputs lack: the output takes the broadcast shape
    "paGLU alpha (2,1) over v (3,)": (torch.ops.gatex.paglu, _pa(torch.rand(2, 1))),
    "paGLU alpha (1,C,1,1) over NCHW": (torch.ops.gatex.paglu,
                                        _pa(torch.rand(1, 3, 1, 1), (2, 3, 4, 5))),
    "paSwishU alpha (4,1)": (torch.ops.gatex.paswishu, [*_pa(torch.rand(4, 1)), 2.0]),
    "ZiLU sigma (2,1,1)": (torch.ops.gatex.zilu, [_r(3, 4), torch.rand(2, 1, 1)]),
    # a float64 per-channel alpha does not promote a float32 op (output dtype = first input's)
    "paGLU float64 alpha, float32 v": (torch.ops.gatex.paglu,
                                       _pa(torch.rand(3, dtype=torch.float64))),
    "ZiLU float64 sigma (3,)": (torch.ops.gatex.zilu,
                                [_r(2, 3), torch.rand(3, dtype=torch.float64)]),
    "PaGRUCell unbatched": (torch.ops.gatex.pagru_cell,
                            [_r(3), _r(4), _r(12, 3), _r(12, 4), None, None,
                             *(torch.tensor(1.0),) * 3]),
    "PaGRUCell per-feature alpha": (torch.ops.gatex.pagru_cell,
                                    [_r(2, 3), _r(2, 4), _r(12, 3), _r(12, 4), _r(12), _r(12),
                                     torch.rand(4), torch.tensor(1.0), torch.tensor(1.0)]),
    "GatedDense 1-D x, no bias": (torch.ops.gatex.gated_dense,
                                  [_r(6), _r(6, 4), torch.ones(6, 4), None, "relu"]),
    "CGConv2d 1x1 kernel": (torch.ops.gatex.cg_conv2d,
                            [_r(1, 2, 5, 5), _r(3, 2, 1, 1), torch.ones(3, 2, 1, 1), _r(3),
                             [1, 1], [0, 0], [1, 1], 1]),
    "PGConv2d dynamic scale": (torch.ops.gatex.pg_conv2d,
                               [_r(1, 2, 7, 6), _r(3, 2, 3, 2), torch.zeros(3), 4, 4, 2, None,
                                [3, 2], [2, 0], [2, 1], 1]),
}


@pytest.mark.parametrize("case", sorted(BROADCAST_CASES))
def test_fake_matches_eager_on_broadcasts_and_odd_shapes(case: str) -> None:
    op, args = BROADCAST_CASES[case]
    fake_vs_eager(op, args)


@pytest.mark.parametrize("name", ALL_OPS)
def test_opcheck(name: str) -> None:
    # torch's own consistency checks of schema, fake kernel and autograd registration
    args, _ = sample(name, dtype=torch.float64)
    args = [a.requires_grad_() if isinstance(a, torch.Tensor) and a.is_floating_point()
            and name not in ("CGConv2d", "PGConv2d") else a for a in args]
    torch.library.opcheck(REGISTRY.get(name).torch_op, tuple(args),
                          test_utils=("test_schema", "test_faketensor",
                                      "test_autograd_registration"))
