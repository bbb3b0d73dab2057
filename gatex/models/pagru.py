"""PaGRUCell (upstream guglxni/paGating ``paGating/paGRU.py``): a GRU cell with scaled gates.

    r = sigmoid(a_r (gi_r + gh_r)); z = sigmoid(a_z (gi_z + gh_z))
    n = tanh(a_h (gi_n + r * gh_n)); h' = (1 - z) * n + z * h

Upstream's signature, attributes and keys: ``weight_ih`` (3H x I), ``weight_hh`` (3H x H),
``bias_ih``, ``bias_hh`` (nn.GRUCell layout, gate order r, z, n); ``alpha_mode="learnable"``
adds 0-d parameters ``alpha_r``, ``alpha_z``, ``alpha_h`` (init 1.0), a number makes all three
static (registered as None parameters, kept in ``_alpha_{r,z,h}_static``). Weights initialise
as nn.GRUCell's do (uniform(-1/sqrt(H), 1/sqrt(H)) in the same order), so with one seed the two
cells start equal, and with every alpha 1 they compute the same function.

Differences from upstream:

- Upstream multiplies by ``alpha.item()``: learnable alphas are detached from autograd (they
  never train) and a trace bakes their current values in as constants. Here the alphas stay
  tensors through the ``gatex::pagru_cell`` op: they get gradients and export as weights.
- One step is one custom op, whose inputs include the hidden state (upstream's export
  wrapper fixes h0 = 0).
- A static alpha is validated as a finite number (upstream prints a warning outside [0, 1] and
  goes on; so does this, silently: the range is not a constraint of the math).
- Unbatched input ``(input_size,)`` works, as for nn.GRUCell.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from gatex.errors import BadInputError, ParameterRangeError
from gatex.models.scripting import NotScriptable
from gatex.ops._torch import call_op
from gatex.ops.pagru import PAGRU_CELL

ALPHA_NAMES = ("alpha_r", "alpha_z", "alpha_h")


class PaGRUCell(NotScriptable, nn.Module):
    """One step of a GRU whose reset, update and candidate pre-activations are scaled by alphas."""

    def __init__(self, input_size: int, hidden_size: int, bias: bool = True,
                 alpha_mode: str | float = "learnable", device: torch.device | str | None = None,
                 dtype: torch.dtype | None = None) -> None:
        super().__init__()
        for name, value in (("input_size", input_size), ("hidden_size", hidden_size)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise BadInputError(f"PaGRUCell {name} must be a positive integer; got {value!r}")
        if isinstance(alpha_mode, str):
            if alpha_mode != "learnable":
                raise ParameterRangeError(f"PaGRUCell alpha_mode must be 'learnable' or a number; "
                                          f"got {alpha_mode!r}")
        else:
            PAGRU_CELL.param("alpha_r").validate(alpha_mode, op="PaGRUCell")
        factory = {"device": device, "dtype": dtype}
        self.input_size = input_size
        self.hidden_size = hidden_size
        self.bias = bias
        self.alpha_mode = alpha_mode
        self.weight_ih = nn.Parameter(torch.empty(3 * hidden_size, input_size, **factory))
        self.weight_hh = nn.Parameter(torch.empty(3 * hidden_size, hidden_size, **factory))
        if bias:
            self.bias_ih = nn.Parameter(torch.empty(3 * hidden_size, **factory))
            self.bias_hh = nn.Parameter(torch.empty(3 * hidden_size, **factory))
        else:
            self.register_parameter("bias_ih", None)
            self.register_parameter("bias_hh", None)
        static = None if alpha_mode == "learnable" else float(alpha_mode)
        for name in ALPHA_NAMES:
            setattr(self, f"_{name}_static", static)
            if static is None:
                setattr(self, name, nn.Parameter(torch.tensor(1.0, **factory)))
            else:
                self.register_parameter(name, None)
        self.reset_parameters()

    @property
    def learnable(self) -> bool:
        return self.alpha_mode == "learnable"

    def reset_parameters(self) -> None:
        """nn.GRUCell's init for weights and biases (same order, same RNG draws); alphas to 1."""
        stdv = 1.0 / math.sqrt(self.hidden_size)
        for name, p in self.named_parameters(recurse=False):
            if name.startswith("alpha"):
                with torch.no_grad():
                    p.fill_(1.0)
            else:
                nn.init.uniform_(p, -stdv, stdv)

    def _alphas(self, like: torch.Tensor) -> list[torch.Tensor]:
        if self.learnable:
            return [getattr(self, name) for name in ALPHA_NAMES]
        dtype = torch.promote_types(like.dtype, torch.float32)  # no fp16 rounding of the alphas
        return [torch.full((), getattr(self, f"_{name}_static"), dtype=dtype, device=like.device)
                for name in ALPHA_NAMES]

    def forward(self, input: torch.Tensor, hx: torch.Tensor | None = None) -> torch.Tensor:
        if input.dim() not in (1, 2) or input.shape[-1] != self.input_size:
            raise BadInputError(f"PaGRUCell expects input of shape (batch, {self.input_size}) or "
                                f"({self.input_size},); got {tuple(input.shape)}")
        if hx is None:
            hx = input.new_zeros((*input.shape[:-1], self.hidden_size))
        elif hx.shape != (*input.shape[:-1], self.hidden_size):
            raise BadInputError(f"PaGRUCell hidden state must have shape "
                                f"{(*input.shape[:-1], self.hidden_size)}; got {tuple(hx.shape)}")
        return call_op("pagru_cell", input, hx, self.weight_ih, self.weight_hh, self.bias_ih,
                       self.bias_hh, *self._alphas(input))

    def extra_repr(self) -> str:
        mode = "learnable" if self.learnable else f"static({float(self.alpha_mode):g})"
        return (f"input_size={self.input_size}, hidden_size={self.hidden_size}, bias={self.bias}, "
                f"alpha_mode={mode}")
