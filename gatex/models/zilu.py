"""The ZiLU family (upstream mingikang31/ZiLU-Activation ``Models/activation.py``).

| class         | forward                                          | state_dict key        |
|---------------|--------------------------------------------------|-----------------------|
| GELU_s        | x * 0.5 * (1 + erf(sigma x / sqrt(2)))           | ``sigma``             |
| SiLU_s        | x * sigmoid(sigma x)                             | ``sigma``             |
| ArcTan        | 0.5 + atan(sigma x) / pi                         | ``sigma``             |
| ArcTan_Approx | (0.5 + max(sigma x, 0)) / (1 + abs(sigma x))     | ``sigma``             |
| ZiLU          | x * ArcTan(x)           (submodule ``arctan``)   | ``arctan.sigma``      |
| ZiLU_Approx   | x * ArcTan_Approx(x)    (submodule ``arctan_approx``) | ``arctan_approx.sigma`` |

``sigma``, as upstream (``sigma if sigma else nn.Parameter(torch.tensor(5.0))``): a non-zero
number is fixed, kept as a float attribute and NOT saved; ``None`` or ``0`` gives a learnable
scalar initialised to 5.0 and saved under the key above.

Differences from upstream:

- Forward is one ``gatex::`` op per module (ZiLU and ZiLU_Approx are one op each, not a gate
  op times x), computed in fp32 for fp16/bf16 with sigma x clamped, so ZiLU_Approx cannot
  produce upstream's inf / inf = NaN.
- ``inplace`` is accepted and ignored by every class (upstream: GELU_s and SiLU_s only), so
  timm's and torchvision's builders, which call ``act_layer(inplace=True)``, take them.
- A fixed sigma must be a finite number (upstream accepts anything truthy).
"""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import nn

from gatex.errors import ParameterRangeError
from gatex.models.scripting import NotScriptable
from gatex.ops._torch import call_op
from gatex.ops.zilu import SIGMA

LEARNABLE_SIGMA_INIT = 5.0


def _sigma(sigma: float | None, unit: str) -> float | nn.Parameter:
    if isinstance(sigma, torch.Tensor):
        raise ParameterRangeError(f"{unit} sigma must be a number or None (learnable); got a "
                                  "tensor (pass float(t), or None and load it as a weight)")
    if sigma is None or (not isinstance(sigma, bool) and sigma == 0):
        return nn.Parameter(torch.tensor(LEARNABLE_SIGMA_INIT))
    return float(SIGMA.validate(sigma, op=unit))


class _SigmaUnit(NotScriptable, nn.Module):
    """A module of one input with a sigma that is either a fixed float or a learnable scalar."""

    op_name: ClassVar[str] = ""

    def __init__(self, sigma: float | None = None, inplace: bool = False) -> None:
        super().__init__()
        self.sigma = _sigma(sigma, type(self).__name__)
        self.inplace = inplace  # accepted as model libraries pass it; the op never writes x

    @property
    def sigma_learnable(self) -> bool:
        return isinstance(self.sigma, nn.Parameter)

    def sigma_tensor(self, like: torch.Tensor) -> torch.Tensor:
        """sigma as the op takes it: the parameter itself, or the fixed float as a 0-d tensor
        (in x's dtype, at least fp32, so a fixed sigma is not rounded to fp16 first)."""
        if isinstance(self.sigma, torch.Tensor):
            return self.sigma
        dtype = torch.promote_types(like.dtype, torch.float32)
        return torch.full((), self.sigma, dtype=dtype, device=like.device)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return call_op(self.op_name, x, self.sigma_tensor(x))

    def extra_repr(self) -> str:
        return "sigma=learnable" if self.sigma_learnable else f"sigma={self.sigma:g}"


class GELU_s(_SigmaUnit):
    """x * 0.5 * (1 + erf(sigma x / sqrt(2)))."""

    op_name = "gelu_s"


class SiLU_s(_SigmaUnit):
    """x * sigmoid(sigma x)."""

    op_name = "silu_s"


class ArcTan(_SigmaUnit):
    """The gate alone: 0.5 + atan(sigma x) / pi."""

    op_name = "arctan"


class ArcTan_Approx(_SigmaUnit):
    """The rational gate: (0.5 + max(sigma x, 0)) / (1 + |sigma x|)."""

    op_name = "arctan_approx"


class ZiLU(NotScriptable, nn.Module):
    """x * ArcTan(x); sigma lives in submodule ``arctan`` (key ``arctan.sigma``)."""

    def __init__(self, sigma: float | None = None, inplace: bool = False) -> None:
        super().__init__()
        _sigma(sigma, "ZiLU")  # name this class in a range error, not the inner gate
        self.arctan = ArcTan(sigma)
        self.inplace = inplace

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return call_op("zilu", x, self.arctan.sigma_tensor(x))


class ZiLU_Approx(NotScriptable, nn.Module):
    """x * ArcTan_Approx(x); sigma lives in ``arctan_approx`` (key ``arctan_approx.sigma``)."""

    def __init__(self, sigma: float | None = None, inplace: bool = False) -> None:
        super().__init__()
        _sigma(sigma, "ZiLU_Approx")
        self.arctan_approx = ArcTan_Approx(sigma)
        self.inplace = inplace

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return call_op("zilu_approx", x, self.arctan_approx.sigma_tensor(x))
