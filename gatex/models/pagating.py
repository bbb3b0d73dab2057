"""The paGating units (upstream guglxni/paGating) as gatex modules, plus its two wrappers.

    v = value_proj(x), u = gate_proj(x), y = V(v) * (alpha * g(u) + (1 - alpha))

Class names, constructor signatures, attribute names and state_dict keys are upstream's
(``value_proj.{weight,bias}``, ``gate_proj.{weight,bias}``, ``alpha_fixed`` or ``alpha_param``,
``gate_norm.{weight,bias}``), so an upstream checkpoint loads unchanged. The mix runs as one
``gatex::`` custom op, so ``torch.export`` keeps one node per unit.

Differences from upstream:

- The elementwise mix is the gatex op (fp16/bf16 computed in fp32 and rounded once).
- GateNorm is ``nn.LayerNorm(output_dim, eps=norm_eps)``: the same math (biased variance,
  affine) and the same keys as upstream's own ``GateNorm`` class.
- With ``use_gate_norm=True`` the norm sits between the gate and the mix, so no fused op can
  carry it: the gate (from ``gatex.ops.pagating.GATES``) and the LayerNorm run as standard
  ops, and the mix is the ``gatex::paUnit`` op with the ``identity`` gate, so the unit still
  exports with a gatex op (and its tolerance).
- paGTU builds ``gate_norm`` when asked but never applies it, exactly as upstream does; the
  keys are kept so checkpoints load, and its forward still uses the fused op.
- ``alpha`` given as a callable is evaluated on the input at every call: it is not a constant,
  so an exporter must check `paGatingBase.alpha_kind` (``"callable"``) before folding it.
- paGELU accepts upstream's ``approximate`` flag and ignores it: upstream computes the exact
  erf GELU either way.
- paUnit also takes the gate by name (``gate="golu"``, any key of ``GATES``); a callable that
  is one of torch's own functions or modules for a named gate (``torch.sigmoid``,
  ``nn.GELU()``, ...) is mapped to that name and runs as the op. Any other callable runs as
  whatever it traces to, and the mix after it is the ``gatex::paUnit`` op with the
  ``identity`` gate.
- Bad arguments raise `ParameterRangeError` / `BadInputError` (upstream: ``ValueError``).
- paGating2D takes a unit class or a unit name; PrePostNormWrapper keeps upstream's signature
  ``(module, input_dim, output_dim, pre_norm=False, post_norm=False, norm_eps=1e-5)`` and its
  forwarding of unknown attributes to the wrapped unit.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from gatex.errors import BadInputError, ParameterRangeError
from gatex.models.scripting import NotScriptable
from gatex.ops import pagating as pa_ops
from gatex.ops._torch import call_op, compute_in_fp32
from gatex.ops.registry import REGISTRY

Gate = Callable[[torch.Tensor], torch.Tensor]
AlphaSpec = float | str | Callable[[torch.Tensor], Any]


def _check_dims(unit: str, **dims: Any) -> None:
    for name, value in dims.items():
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise BadInputError(f"{unit} {name} must be a positive integer; got {value!r}")


def _check_alpha(alpha: Any, unit: str) -> None:
    """Upstream's rule: a float in [0, 1], the string "learnable", or a callable; ints rejected."""
    if isinstance(alpha, str):
        if alpha != "learnable":
            raise ParameterRangeError(f"{unit} alpha must be a float in [0, 1], 'learnable' or a "
                                      f"callable; got the string {alpha!r}")
    elif isinstance(alpha, (bool, int)):
        raise ParameterRangeError(f"{unit} alpha must be a float, as upstream requires; got the "
                                  f"integer {alpha!r} (write {float(alpha)!r})")
    elif isinstance(alpha, float):
        pa_ops.ALPHA.validate(alpha, op=unit)
    elif not callable(alpha):
        raise ParameterRangeError(f"{unit} alpha must be a float in [0, 1], 'learnable' or a "
                                  f"callable; got {type(alpha).__name__}")


class NamedGate:
    """A gate from ``gatex.ops.pagating.GATES`` by name (picklable, unlike the lambdas there)."""

    def __init__(self, name: str) -> None:
        self.name = name

    def __call__(self, u: torch.Tensor) -> torch.Tensor:
        return pa_ops.GATES[self.name](u)

    def __repr__(self) -> str:
        return f"NamedGate({self.name!r})"


class paGatingBase(NotScriptable, nn.Module):
    """Shared body of every paGating unit: two projections, an alpha, an optional GateNorm.

    Upstream's signature: ``paGatingBase(input_dim, output_dim, activation_fn, alpha=0.5,
    use_gate_norm=False, norm_eps=1e-5)``; built directly (or by an upstream-style subclass
    that passes its gate), it is the generic unit: a named gate (or torch's own function for
    one) runs as the ``gatex::paUnit`` op, any other callable as plain torch ops. The named
    units (paGLU, ...) take ``(input_dim, output_dim, alpha, use_gate_norm, norm_eps)``.

    ``alpha``: a float in [0, 1] (buffer ``alpha_fixed``), ``"learnable"`` (parameter
    ``alpha_param`` holding the pre-sigmoid value, init 0.5, used as sigmoid(alpha_param)) or a
    callable of the input.
    """

    op_name: ClassVar[str] = ""
    gate_name: ClassVar[str] = ""              # key of gatex.ops.pagating.GATES
    applies_gate_norm: ClassVar[bool] = True   # False for paGTU, as upstream
    generic: ClassVar[bool] = True             # the gate comes from activation_fn

    def __init__(self, input_dim: int, output_dim: int, activation_fn: str | Gate | None = None,
                 alpha: AlphaSpec = 0.5, use_gate_norm: bool = False,
                 norm_eps: float = 1e-5) -> None:
        super().__init__()
        unit = type(self).__name__
        _check_dims(unit, input_dim=input_dim, output_dim=output_dim)
        _check_alpha(alpha, unit)
        self.gate: str | None = self.gate_name or None
        if self.generic:
            self.gate = _gate_of(activation_fn, unit)
            activation_fn = NamedGate(self.gate) if self.gate is not None else activation_fn
        self.value_proj = nn.Linear(input_dim, output_dim)
        self.gate_proj = nn.Linear(input_dim, output_dim)
        self.use_gate_norm = bool(use_gate_norm)
        self.norm_eps = float(norm_eps)
        self.gate_norm = nn.LayerNorm(output_dim, eps=norm_eps) if use_gate_norm else None
        self.alpha_fn: Callable[[torch.Tensor], Any] | None = None
        self.alpha_param: nn.Parameter | None = None
        if alpha == "learnable":
            self.alpha_param = nn.Parameter(torch.tensor(0.5))
        elif isinstance(alpha, float):
            self.register_buffer("alpha_fixed", torch.tensor(alpha, dtype=torch.float32))
        else:
            self.alpha_fn = alpha
        # a callable that is a module registers as submodule ``activation_fn``, as upstream's
        self.activation_fn: Gate | None = activation_fn

    # -- alpha -----------------------------------------------------------------------------
    @property
    def alpha_kind(self) -> str:
        """``"fixed"`` (a constant buffer), ``"learnable"`` or ``"callable"`` (depends on x)."""
        if self.alpha_fn is not None:
            return "callable"
        return "learnable" if self.alpha_param is not None else "fixed"

    def get_alpha(self, x: torch.Tensor | None = None) -> torch.Tensor:
        """The alpha used in the mix: alpha_fixed, sigmoid(alpha_param), or alpha_fn(x)."""
        if self.alpha_fn is not None:
            if x is None:
                raise BadInputError(f"{type(self).__name__} has a callable alpha: pass the input")
            return torch.as_tensor(self.alpha_fn(x))
        if self.alpha_param is not None:
            return torch.sigmoid(self.alpha_param)
        return self.alpha_fixed

    # -- value and gate --------------------------------------------------------------------
    def value_fn(self, v: torch.Tensor) -> torch.Tensor:
        return v

    @property
    def gate_fn(self) -> Gate:
        """The gate g(u) as plain torch (``activation_fn`` holds it too, as upstream)."""
        return self.activation_fn

    @property
    def uses_named_gate(self) -> bool:
        """Whether the gate is one the ops know (False: a user callable, plain torch)."""
        return not self.generic or self.gate is not None

    @property
    def uses_op(self) -> bool:
        """Whether forward is the single ``gatex::`` op (False with an applied GateNorm or a
        user callable gate)."""
        return self.uses_named_gate and (self.gate_norm is None or not self.applies_gate_norm)

    def _op(self, v: torch.Tensor, u: torch.Tensor, alpha: torch.Tensor) -> torch.Tensor:
        if self.generic:
            return call_op("paunit", v, u, alpha, self.gate)
        return call_op(self.op_name.lower(), v, u, alpha)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        v = self.value_proj(x)
        u = self.gate_proj(x)
        alpha = self.get_alpha(x).to(device=v.device)
        if self.uses_op:
            return self._op(v, u, alpha)
        # GateNorm sits between gate and mix, or the gate is a user callable: the gate runs as
        # torch ops (a named gate as the op computes it, low precision in fp32), then the mix is
        # the gatex::paUnit op with the identity gate, so the unit still exports as a gatex op
        g = compute_in_fp32(self.gate_fn)(u) if self.uses_named_gate else self.gate_fn(u)
        if self.gate_norm is not None and self.applies_gate_norm:
            g = self.gate_norm(g)
        return call_op("paunit", self.value_fn(v), g.to(v.dtype), alpha, "identity")

    # -- conveniences ----------------------------------------------------------------------
    def fused_linear(self) -> nn.Linear:
        """One Linear(input_dim, 2 * output_dim) equal to both projections, value first.

        ``v, u = fused(x).chunk(2, dim=-1)`` gives ``value_proj(x), gate_proj(x)``.
        """
        vp, gp = self.value_proj, self.gate_proj
        fused = nn.Linear(vp.in_features, 2 * vp.out_features, device=vp.weight.device,
                          dtype=vp.weight.dtype)
        with torch.no_grad():
            fused.weight.copy_(torch.cat([vp.weight, gp.weight], dim=0))
            fused.bias.copy_(torch.cat([vp.bias, gp.bias], dim=0))
        return fused

    def _alpha_setting(self) -> AlphaSpec:
        if self.alpha_kind == "fixed":
            return float(self.alpha_fixed)
        return "learnable" if self.alpha_kind == "learnable" else self.alpha_fn

    def get_config(self) -> dict[str, Any]:
        """Constructor arguments that rebuild this unit (upstream's ``get_config``)."""
        config = {"input_dim": self.value_proj.in_features,
                  "output_dim": self.value_proj.out_features, "alpha": self._alpha_setting(),
                  "use_gate_norm": self.use_gate_norm, "norm_eps": self.norm_eps}
        if self.generic:
            config["activation_fn"] = self.gate if self.gate is not None else self.activation_fn
        return config

    def extra_repr(self) -> str:
        alpha = self._alpha_setting()
        shown = f"{alpha:g}" if isinstance(alpha, float) else "callable" if callable(alpha) \
            else alpha
        text = f"alpha={shown}" + (", gate_norm" if self.use_gate_norm else "")
        if not self.generic:
            return text
        fn = self.activation_fn
        gate = self.gate if self.gate is not None else getattr(fn, "__name__", type(fn).__name__)
        return f"gate={gate}, {text}"


class _NamedUnit(paGatingBase):
    """A unit with its own gate: ``(input_dim, output_dim, alpha, use_gate_norm, norm_eps)``."""

    generic = False

    def __init__(self, input_dim: int, output_dim: int, alpha: AlphaSpec = 0.5,
                 use_gate_norm: bool = False, norm_eps: float = 1e-5) -> None:
        super().__init__(input_dim, output_dim, NamedGate(self.gate_name) if self.gate_name
                         else None, alpha, use_gate_norm, norm_eps)


class paGLU(_NamedUnit):
    """y = v * (alpha * sigmoid(u) + (1 - alpha))."""

    op_name = "paGLU"
    gate_name = "sigmoid"


class paGTU(_NamedUnit):
    """y = tanh(v) * (alpha * tanh(u) + (1 - alpha)); GateNorm is built but never applied."""

    op_name = "paGTU"
    gate_name = "tanh"
    applies_gate_norm = False

    def value_fn(self, v: torch.Tensor) -> torch.Tensor:
        return torch.tanh(v)


class paReGLU(_NamedUnit):
    """y = v * (alpha * relu(u) + (1 - alpha))."""

    op_name = "paReGLU"
    gate_name = "relu"


class paGELU(_NamedUnit):
    """y = v * (alpha * gelu_erf(u) + (1 - alpha)); ``approximate`` is ignored, as upstream."""

    op_name = "paGELU"
    gate_name = "gelu"

    def __init__(self, input_dim: int, output_dim: int, alpha: AlphaSpec = 0.5,
                 use_gate_norm: bool = False, norm_eps: float = 1e-5,
                 approximate: bool = False) -> None:
        super().__init__(input_dim, output_dim, alpha, use_gate_norm, norm_eps)
        self.approximate = approximate


class paMishU(_NamedUnit):
    """y = v * (alpha * u tanh(softplus(u)) + (1 - alpha))."""

    op_name = "paMishU"
    gate_name = "mish"


class paSiLU(_NamedUnit):
    """y = v * (alpha * u sigmoid(u) + (1 - alpha))."""

    op_name = "paSiLU"
    gate_name = "silu"


class _Swish:
    """u * sigmoid(beta u), as a picklable callable."""

    def __init__(self, beta: float) -> None:
        self.beta = beta

    def __call__(self, u: torch.Tensor) -> torch.Tensor:
        return u * torch.sigmoid(self.beta * u)

    def __repr__(self) -> str:
        return f"Swish(beta={self.beta:g})"


class paSwishU(_NamedUnit):
    """y = v * (alpha * u sigmoid(beta u) + (1 - alpha)); beta is a float, not in the state_dict."""

    op_name = "paSwishU"

    def __init__(self, input_dim: int, output_dim: int, alpha: AlphaSpec = 0.5,
                 beta: float = 1.0, use_gate_norm: bool = False, norm_eps: float = 1e-5) -> None:
        super().__init__(input_dim, output_dim, alpha, use_gate_norm, norm_eps)
        self.beta = float(pa_ops.PASWISHU.param("beta").validate(beta, op="paSwishU"))
        self.activation_fn = _Swish(self.beta)

    @property
    def gate_fn(self) -> Gate:
        return _Swish(self.beta)

    def _op(self, v: torch.Tensor, u: torch.Tensor, alpha: torch.Tensor) -> torch.Tensor:
        return call_op("paswishu", v, u, alpha, self.beta)

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "beta": self.beta}

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, beta={self.beta:g}"


def _torch_gate_names() -> dict[Any, str]:
    # torch's own callables for the named gates: these run as the op instead of plain torch
    return {torch.sigmoid: "sigmoid", F.sigmoid: "sigmoid", torch.tanh: "tanh", F.tanh: "tanh",
            torch.relu: "relu", F.relu: "relu", F.gelu: "gelu", F.silu: "silu",
            F.mish: "mish", F.softsign: "softsign"}


def gate_name_of(fn: Any) -> str | None:
    """The `GATES` name of a torch gate function or module (``nn.GELU()`` -> "gelu"), else None."""
    if isinstance(fn, str):
        return fn if fn in pa_ops.GATES else None
    if isinstance(fn, NamedGate):
        return fn.name
    modules: dict[type, str] = {nn.Sigmoid: "sigmoid", nn.Tanh: "tanh", nn.ReLU: "relu",
                                nn.SiLU: "silu", nn.Mish: "mish", nn.Softsign: "softsign"}
    if type(fn) in modules:
        return modules[type(fn)]
    if type(fn) is nn.GELU:
        return "gelu" if fn.approximate == "none" else "gelu_tanh"
    try:
        return _torch_gate_names().get(fn)
    except TypeError:  # unhashable callable
        return None


def _gate_of(fn: Any, unit: str) -> str | None:
    """The catalogue name of gate ``fn`` (None: a user callable); anything else is an error."""
    if fn is None:
        raise BadInputError(f"{unit} needs activation_fn: a gate callable or one of "
                            f"{', '.join(pa_ops.GATES)} (upstream's third argument)")
    name = gate_name_of(fn)
    if name is None and (isinstance(fn, str) or not callable(fn)):
        raise ParameterRangeError(f"{unit} gate must be a callable or one of "
                                  f"{', '.join(pa_ops.GATES)}; got {fn!r}")
    return name


class paUnit(paGatingBase):
    """Generic unit: y = v * (alpha * gate(u) + (1 - alpha)).

    ``activation_fn`` (upstream's third argument) or ``gate``: a name from
    ``gatex.ops.pagating.GATES`` or a callable, sigmoid if neither. Named gates (and torch's own
    functions for them) run as the ``gatex::paUnit`` op; any other callable runs as plain torch.
    """

    op_name = "paUnit"

    def __init__(self, input_dim: int, output_dim: int, activation_fn: str | Gate | None = None,
                 alpha: AlphaSpec = 0.5, use_gate_norm: bool = False, norm_eps: float = 1e-5,
                 *, gate: str | Gate | None = None) -> None:
        if activation_fn is not None and gate is not None:
            raise BadInputError("paUnit takes the gate once: pass activation_fn or gate, not both")
        chosen = gate if gate is not None else activation_fn
        super().__init__(input_dim, output_dim, "sigmoid" if chosen is None else chosen, alpha,
                         use_gate_norm, norm_eps)


def _units() -> dict[str, type[paGatingBase]]:
    """Every paGating unit class of this module (a subclass naming its op), in registry order:
    derived, so a unit added here is known without a list to edit."""
    def below(cls: type) -> list[type]:
        return [d for c in cls.__subclasses__() for d in (c, *below(c))]

    classes = {c.op_name: c for c in below(paGatingBase) if c.op_name}
    return {spec.name: classes[spec.name] for spec in REGISTRY if spec.name in classes}


UNITS: dict[str, type[paGatingBase]] = _units()


def _unit_class(unit_class: type[paGatingBase] | str) -> type[nn.Module]:
    if isinstance(unit_class, str):
        if unit_class not in UNITS:
            raise BadInputError(f"unknown paGating unit {unit_class!r}; one of {', '.join(UNITS)}")
        return UNITS[unit_class]
    if not (isinstance(unit_class, type) and issubclass(unit_class, nn.Module)):
        raise BadInputError(f"unit_class must be a paGating unit class or name; got {unit_class!r}")
    return unit_class


class PrePostNormWrapper(nn.Module):
    """Optional LayerNorm before and/or after a unit (keys ``module.*``, ``pre_norm_layer.*``,
    ``post_norm_layer.*``). Unknown attributes are looked up on the wrapped unit, as upstream."""

    def __init__(self, module: nn.Module, input_dim: int, output_dim: int, pre_norm: bool = False,
                 post_norm: bool = False, norm_eps: float = 1e-5) -> None:
        super().__init__()
        _check_dims("PrePostNormWrapper", input_dim=input_dim, output_dim=output_dim)
        self.module = module
        self.pre_norm = bool(pre_norm)
        self.post_norm = bool(post_norm)
        self.pre_norm_layer = nn.LayerNorm(input_dim, eps=norm_eps) if pre_norm else None
        self.post_norm_layer = nn.LayerNorm(output_dim, eps=norm_eps) if post_norm else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.pre_norm_layer is not None:
            x = self.pre_norm_layer(x)
        out = self.module(x)
        if self.post_norm_layer is not None:
            out = self.post_norm_layer(out)
        return out

    def __getattr__(self, name: str) -> Any:
        try:
            return super().__getattr__(name)
        except AttributeError:
            inner = self.__dict__.get("_modules", {}).get("module")
            if name == "module" or inner is None:
                raise
            return getattr(inner, name)


class paGating2D(nn.Module):
    """Applies a unit at every pixel of an NCHW map (key ``pa_unit.*``)."""

    def __init__(self, unit_class: type[paGatingBase] | str, in_channels: int, out_channels: int,
                 alpha: AlphaSpec | torch.Tensor = 0.5, use_gate_norm: bool = False,
                 norm_eps: float = 1e-5, **kwargs: Any) -> None:
        super().__init__()
        if isinstance(alpha, torch.Tensor):  # upstream accepts a 0-d tensor and takes its value
            alpha = float(alpha.item())
        self.pa_unit = _unit_class(unit_class)(input_dim=in_channels, output_dim=out_channels,
                                               alpha=alpha, use_gate_norm=use_gate_norm,
                                               norm_eps=norm_eps, **kwargs)
        self.in_channels = in_channels
        self.out_channels = out_channels

    @classmethod
    def from_unit(cls, unit: nn.Module, in_channels: int | None = None,
                  out_channels: int | None = None) -> paGating2D:
        """Wrap an existing unit (shared, not copied); channels default to its projections'."""
        wrapper = cls.__new__(cls)
        nn.Module.__init__(wrapper)
        wrapper.pa_unit = unit
        wrapper.in_channels = in_channels if in_channels is not None \
            else unit.value_proj.in_features
        wrapper.out_channels = out_channels if out_channels is not None \
            else unit.value_proj.out_features
        return wrapper

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4:
            raise BadInputError(f"paGating2D expects an NCHW tensor; got shape {tuple(x.shape)}")
        n, c, h, w = x.shape
        flat = x.permute(0, 2, 3, 1).reshape(-1, c)
        out = self.pa_unit(flat)
        return out.reshape(n, h, w, self.out_channels).permute(0, 3, 1, 2)
