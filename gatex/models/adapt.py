"""`adapt`: swap upstream-style gated submodules of any model for gatex modules, same weights.

An upstream module is recognised by its class name AND its attributes (an upstream
``paGLU`` has ``value_proj`` / ``gate_proj`` Linears and ``alpha_fixed`` or ``alpha_param``;
a ``CGConv2d`` is an ``nn.Conv2d`` with ``mask``, ``threshold`` and ``bn``; ...). Its
replacement is built from the same constructor arguments (read off the module: GoLU's
alpha / beta / gamma, ZiLU's fixed sigma, PGConv2d's bit widths, ...) and then receives the
module's state_dict through a strict load, so a layout that differs from upstream's is caught
and reported instead of half-copied. The replacement takes the module's device, dtype,
training flag and ``requires_grad`` flags.

Known: paGLU, paGTU, paSwishU, paReGLU, paGELU, paMishU, paSiLU, paUnit, PrePostNormWrapper,
paGating2D, PaGRUCell, GoLU, GoLUCUDA, GELU_s, SiLU_s, ArcTan, ArcTan_Approx, ZiLU,
ZiLU_Approx, CGConv2d, PGConv2d, PactReLU, and torch ports of GatedDense (``kernel``, ``gates``,
optional ``bias``, an ``activation`` name). Modules already from gatex are left alone (their
children are still visited). A module that looks gated (its class name says Gate / Gated /
GLU / GoLU / ZiLU / paUnit ..., or it has ``gate_proj``, ``alpha_param``, ``gates`` ...) but is
not known, or does not have the known layout, is listed in the report's ``unknown``: never
skipped silently. One module object registered under several names is replaced once and
every name then points to the replacement.

The model is changed in place; the returned root is the model itself unless the root was
replaced.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from gatex.errors import GatexError, ParameterRangeError
from gatex.models.conv_gating import CGConv2d, PactReLU, PGConv2d
from gatex.models.gated_dense import GatedDense
from gatex.models.golu import GoLU
from gatex.models.pagating import UNITS, PrePostNormWrapper, paGating2D, paGatingBase
from gatex.models.pagru import PaGRUCell
from gatex.models.state import load_state_dict
from gatex.models.zilu import ArcTan, ArcTan_Approx, GELU_s, SiLU_s, ZiLU, ZiLU_Approx
from gatex.ops.gated_dense import ACTIVATIONS

GATED_TOKENS = {"gate", "gated", "gates", "gating", "glu", "gtu"}
GATED_FRAGMENTS = ("golu", "zilu", "pagating", "paunit", "pagru", "cgconv", "pgconv", "swishu",
                   "mishu", "arctan", "pact")
GATED_ATTRIBUTES = ("gate_proj", "value_proj", "alpha_param", "alpha_fixed", "alpha_fn", "gates",
                    "gate_norm", "gate_weight")


@dataclass(frozen=True)
class AdaptReport:
    """What `adapt` replaced, what looked gated but was not known, and shared registrations."""

    replaced: tuple[tuple[str, str, str], ...] = ()   # (path, upstream class, gatex class)
    unknown: tuple[tuple[str, str, str], ...] = ()    # (path, class, why)
    aliases: tuple[tuple[str, str], ...] = ()         # (another name, path it was replaced at)
    # upstream modules whose parameters are outside the op's range: (path, class, why)
    invalid: tuple[tuple[str, str, str], ...] = ()

    def __str__(self) -> str:
        also: dict[str, list[str]] = {}
        for other, first in self.aliases:
            also.setdefault(first, []).append(_shown(other))
        lines = [(f"adapt: replaced {len(self.replaced)} module(s), "
                  f"{len(self.unknown)} unknown gated module(s)")]
        if self.invalid:
            lines[0] += f", {len(self.invalid)} with parameters out of range"
        for path, old, new in self.replaced:
            extra = f" (also at {', '.join(also[path])})" if path in also else ""
            lines.append(f"  replaced {_shown(path)}: {old} -> gatex {new}{extra}")
        for path, cls, why in self.unknown:
            lines.append(f"  unknown  {_shown(path)}: {cls}: {why}")
        for path, cls, why in self.invalid:
            lines.append(f"  invalid  {_shown(path)}: {cls}: {why}")
        return "\n".join(lines)


class _NotUpstream(Exception):
    """The module has a known class name but not the upstream layout."""


def _shown(path: str) -> str:
    return path or "<root>"


def _qualname(mod: nn.Module) -> str:
    cls = type(mod)
    return f"{cls.__module__}.{cls.__qualname__}"


def _is_gatex(mod: nn.Module) -> bool:
    return type(mod).__module__.startswith("gatex.")


def _own(mod: nn.Module, name: str) -> Any:
    """An attribute from the module's own tables, without its __getattr__ side effects."""
    for table in ("_parameters", "_buffers", "_modules"):
        entries = mod.__dict__.get(table, {})
        if name in entries:
            return entries[name]
    return mod.__dict__.get(name, getattr(type(mod), name, None))


def _require(mod: nn.Module, *names: str, kind: type | tuple[type, ...] | None = None) -> list[Any]:
    values = []
    for name in names:
        value = _own(mod, name)
        if value is None or (kind is not None and not isinstance(value, kind)):
            want = f" ({kind.__name__})" if isinstance(kind, type) else ""
            raise _NotUpstream(f"no {name!r}{want}: not upstream's layout")
        values.append(value)
    return values


def _number(mod: nn.Module, name: str) -> float:
    value = _own(mod, name)
    if isinstance(value, torch.Tensor) and value.numel() == 1:
        return float(value.detach())
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise _NotUpstream(f"attribute {name!r} is not a number: not upstream's layout")
    return float(value)


def _finish(new: nn.Module, old: nn.Module) -> nn.Module:
    """Place ``new`` like ``old`` and give it ``old``'s state through a strict load."""
    tensors = [*old.parameters(), *old.buffers()]
    floating = next((t for t in tensors if t.is_floating_point()), None)
    if floating is not None:
        new.to(device=floating.device, dtype=floating.dtype)
    elif tensors:
        new.to(device=tensors[0].device)
    try:
        load_state_dict(new, old.state_dict())
    except GatexError as exc:
        raise _NotUpstream(f"its state_dict does not have upstream's layout ({exc})") from None
    flags = {name: p.requires_grad for name, p in old.named_parameters()}
    for name, p in new.named_parameters():
        if name in flags:
            p.requires_grad_(flags[name])
    new.train(old.training)
    return new


Walk = Callable[[nn.Module, str], nn.Module]


def _join(path: str, name: str) -> str:
    return f"{path}.{name}" if path else name


# -- converters: (upstream module, walk, path) -> gatex module ---------------------------------

def _pa_unit(mod: nn.Module, walk: Walk, path: str) -> nn.Module:
    value_proj, _gate_proj = _require(mod, "value_proj", "gate_proj", kind=nn.Linear)
    alpha: Any
    if _own(mod, "alpha_fn") is not None:
        alpha = _own(mod, "alpha_fn")
    elif isinstance(_own(mod, "alpha_param"), torch.Tensor):
        alpha = "learnable"
    else:
        alpha = _number(mod, "alpha_fixed")
    gate_norm = _own(mod, "gate_norm")
    use_gate_norm = gate_norm is not None and bool(_own(mod, "use_gate_norm"))
    eps = float(getattr(gate_norm, "eps", 1e-5))
    kwargs: dict[str, Any] = {}
    name = type(mod).__name__
    if name == "paSwishU":
        kwargs["beta"] = _number(mod, "beta") if _own(mod, "beta") is not None else 1.0
    unit = UNITS.get(name, paGatingBase)  # an upstream base or base-forward subclass: generic
    if unit.generic:
        (fn,) = _require(mod, "activation_fn")
        kwargs["activation_fn"] = walk(fn, _join(path, "activation_fn")) \
            if isinstance(fn, nn.Module) else fn
    new = unit(value_proj.in_features, value_proj.out_features, alpha=alpha,
               use_gate_norm=use_gate_norm, norm_eps=eps, **kwargs)
    if use_gate_norm and not getattr(gate_norm, "elementwise_affine", True):
        new.gate_norm = nn.LayerNorm(value_proj.out_features, eps=eps, elementwise_affine=False)
    return _finish(new, mod)


def _pre_post_norm(mod: nn.Module, walk: Walk, path: str) -> nn.Module:
    (inner,) = _require(mod, "module", kind=nn.Module)
    new = PrePostNormWrapper(walk(inner, _join(path, "module")), 1, 1)
    for side in ("pre", "post"):
        layer = _own(mod, f"{side}_norm_layer")
        on = bool(_own(mod, f"{side}_norm")) and layer is not None
        setattr(new, f"{side}_norm", on)
        setattr(new, f"{side}_norm_layer", layer if on else None)
    new.train(mod.training)
    return new


def _pa_2d(mod: nn.Module, walk: Walk, path: str) -> nn.Module:
    (inner,) = _require(mod, "pa_unit", kind=nn.Module)
    new = paGating2D.from_unit(walk(inner, _join(path, "pa_unit")),
                               int(_number(mod, "in_channels")), int(_number(mod, "out_channels")))
    new.train(mod.training)
    return new


def _pagru(mod: nn.Module, walk: Walk, path: str) -> nn.Module:
    weight_ih, weight_hh = _require(mod, "weight_ih", "weight_hh", kind=torch.Tensor)
    alpha_mode = _own(mod, "alpha_mode")
    if alpha_mode != "learnable" and (isinstance(alpha_mode, bool)
                                      or not isinstance(alpha_mode, (int, float))):
        raise _NotUpstream(f"alpha_mode {alpha_mode!r} is neither 'learnable' nor a number")
    new = PaGRUCell(weight_ih.shape[1], weight_hh.shape[1],
                    bias=isinstance(_own(mod, "bias_ih"), torch.Tensor), alpha_mode=alpha_mode)
    return _finish(new, mod)


def _golu(mod: nn.Module, walk: Walk, path: str) -> nn.Module:
    return _finish(GoLU(*(_number(mod, n) for n in ("alpha", "beta", "gamma"))), mod)


def _sigma_of(mod: nn.Module) -> float | None:
    sigma = _own(mod, "sigma")
    if isinstance(sigma, nn.Parameter):
        return None
    if sigma is None:
        raise _NotUpstream("no 'sigma': not upstream's layout")
    return _number(mod, "sigma")


def _sigma_unit(cls: type[nn.Module]) -> Callable[[nn.Module, Walk, str], nn.Module]:
    def convert(mod: nn.Module, walk: Walk, path: str) -> nn.Module:
        return _finish(cls(sigma=_sigma_of(mod)), mod)

    return convert


def _zilu(cls: type[nn.Module], inner_name: str, inner_class: str
          ) -> Callable[[nn.Module, Walk, str], nn.Module]:
    def convert(mod: nn.Module, walk: Walk, path: str) -> nn.Module:
        (inner,) = _require(mod, inner_name, kind=nn.Module)
        if type(inner).__name__ != inner_class:
            raise _NotUpstream(f"{inner_name!r} is a {type(inner).__name__}, not {inner_class}")
        return _finish(cls(sigma=_sigma_of(inner)), mod)

    return convert


def _sparse_bp(mod: nn.Module) -> bool:
    owner = getattr(_own(mod, "gt"), "__self__", None)
    return getattr(owner, "__name__", "") == "SparseGreaterThan"


def _conv_args(mod: nn.Module) -> dict[str, Any]:
    if not isinstance(mod, nn.Conv2d):
        raise _NotUpstream("not an nn.Conv2d: not upstream's layout")
    return {"kernel_size": mod.kernel_size, "stride": mod.stride, "padding": mod.padding,
            "dilation": mod.dilation, "groups": mod.groups, "bias": mod.bias is not None,
            "padding_mode": mod.padding_mode, "sparse_bp": _sparse_bp(mod)}


def _cg_conv(mod: nn.Module, walk: Walk, path: str) -> nn.Module:
    args = _conv_args(mod)
    _require(mod, "mask", "threshold", kind=torch.Tensor)
    _require(mod, "bn", kind=nn.BatchNorm2d)
    new = CGConv2d(mod.in_channels, mod.out_channels, **args, shuffle=bool(_own(mod, "shuffle")),
                   p=int(_number(mod, "p")), th=_number(mod, "th"), alpha=_number(mod, "alpha"))
    _finish(new, mod)
    new.use_group = not torch.equal(new.mask, new._initial_mask())  # read off the loaded mask
    return new


def _bits(quantizer: Any) -> int:
    inner = _own(quantizer, "quantize") if isinstance(quantizer, nn.Module) else None
    inner = quantizer if inner is None else inner
    if isinstance(inner, nn.Identity):
        return 0
    if type(inner).__name__ == "TorchBinarize":
        return 1
    bits = _own(inner, "bits") if isinstance(inner, nn.Module) else None
    if isinstance(bits, int) and not isinstance(bits, bool):
        return bits
    raise _NotUpstream("cannot read the bit width of its quantizer: not upstream's layout")


def _pg_conv(mod: nn.Module, walk: Walk, path: str) -> nn.Module:
    args = _conv_args(mod)
    _require(mod, "threshold", kind=torch.Tensor)
    quantize_w, quantize_a, trunc_a = _require(mod, "quantize_w", "quantize_a", "trunc_a",
                                               kind=nn.Module)
    abits, pred_bits = int(_number(trunc_a, "b")), int(_number(trunc_a, "bh"))
    if _bits(quantize_a) != abits:
        raise _NotUpstream(f"quantize_a has {_bits(quantize_a)} bits but trunc_a {abits}: "
                           "gatex's op uses one activation width")
    new = PGConv2d(mod.in_channels, mod.out_channels, **args, wbits=_bits(quantize_w),
                   abits=abits, pred_bits=pred_bits, alpha=_number(mod, "alpha"))
    return _finish(new, mod)


def _pact(mod: nn.Module, walk: Walk, path: str) -> nn.Module:
    _require(mod, "upper_bound", kind=torch.Tensor)
    return _finish(PactReLU(_number(mod, "upper_bound")), mod)


def _gated_dense(mod: nn.Module, walk: Walk, path: str) -> nn.Module:
    kernel, _gates = _require(mod, "kernel", "gates", kind=torch.Tensor)
    activation = _own(mod, "activation")
    activation = "linear" if activation is None else activation
    if not (isinstance(activation, str) and activation in ACTIVATIONS):
        raise _NotUpstream(f"activation {activation!r} is not one of {', '.join(ACTIVATIONS)}")
    if kernel.dim() != 2:
        raise _NotUpstream(f"kernel has shape {tuple(kernel.shape)}, not (in, out)")
    new = GatedDense(kernel.shape[0], kernel.shape[1], activation=activation,
                     bias=isinstance(_own(mod, "bias"), torch.Tensor))
    return _finish(new, mod)


CONVERTERS: dict[str, Callable[[nn.Module, Walk, str], nn.Module]] = {
    **{name: _pa_unit for name in UNITS},
    "paGatingBase": _pa_unit,
    "PrePostNormWrapper": _pre_post_norm,
    "paGating2D": _pa_2d,
    "PaGRUCell": _pagru,
    "GoLU": _golu,
    "GoLUCUDA": _golu,
    "GELU_s": _sigma_unit(GELU_s),
    "SiLU_s": _sigma_unit(SiLU_s),
    "ArcTan": _sigma_unit(ArcTan),
    "ArcTan_Approx": _sigma_unit(ArcTan_Approx),
    "ZiLU": _zilu(ZiLU, "arctan", "ArcTan"),
    "ZiLU_Approx": _zilu(ZiLU_Approx, "arctan_approx", "ArcTan_Approx"),
    "CGConv2d": _cg_conv,
    "PGConv2d": _pg_conv,
    "PactReLU": _pact,
    "GatedDense": _gated_dense,
}


def _converter(mod: nn.Module) -> Callable[[nn.Module, Walk, str], nn.Module] | None:
    """The converter of ``mod``'s class by name; failing that, a subclass of upstream's
    paGatingBase that keeps the base's forward (a user's own unit, upstream-style) is generic."""
    convert = CONVERTERS.get(type(mod).__name__)
    if convert is not None:
        return convert
    for cls in type(mod).__mro__[1:]:
        if cls.__name__ == "paGatingBase" and type(mod).forward is cls.forward:
            return _pa_unit
    return None
"""Upstream class name -> converter; class names are matched exactly."""


def _looks_gated(mod: nn.Module) -> str | None:
    """Why ``mod`` looks like a gated unit (None if it does not); torch's own classes never do."""
    if type(mod).__module__.split(".")[0] == "torch":
        return None
    name = type(mod).__name__
    tokens = {t.lower() for t in re.findall(r"[A-Z]+(?![a-z])|[A-Z]?[a-z]+|\d+", name)}
    hit = sorted(tokens & GATED_TOKENS)
    if hit:
        return f"class name contains {hit[0]!r}"
    fragment = next((f for f in GATED_FRAGMENTS if f in name.lower()), None)
    if fragment:
        return f"class name contains {fragment!r}"
    attribute = next((a for a in GATED_ATTRIBUTES if _own(mod, a) is not None
                      and not isinstance(getattr(type(mod), a, None), property)), None)
    if attribute:
        return f"has attribute {attribute!r}"
    return None


class _Walker:
    def __init__(self) -> None:
        self.done: dict[int, nn.Module] = {}
        self.first_path: dict[int, str] = {}
        self.replaced: list[tuple[str, str, str]] = []
        self.unknown: list[tuple[str, str, str]] = []
        self.invalid: list[tuple[str, str, str]] = []
        self.aliases: list[tuple[str, str]] = []

    def visit(self, mod: nn.Module, path: str) -> nn.Module:
        key = id(mod)
        if key in self.done:
            if self.done[key] is not mod:
                self.aliases.append((path, self.first_path[key]))
            return self.done[key]
        new = mod
        if not _is_gatex(mod):
            convert = _converter(mod)
            try:
                if convert is None:
                    raise _NotUpstream(_looks_gated(mod) or "")
                new = convert(mod, self.visit, path)
                self.replaced.append((path, _qualname(mod), type(new).__name__))
            except ParameterRangeError as exc:  # upstream's layout, a value no op allows
                self.invalid.append((path, _qualname(mod), str(exc)))
            except (_NotUpstream, GatexError) as exc:
                if str(exc):
                    self.unknown.append((path, _qualname(mod), str(exc)))
            except Exception as exc:  # noqa: BLE001  (a layout no converter foresaw: report it)
                why = f"could not be adapted: {type(exc).__name__}: {exc}"
                self.unknown.append((path, _qualname(mod), why))
        if new is mod:
            for name, child in list(mod._modules.items()):
                if child is not None:
                    replacement = self.visit(child, _join(path, name))
                    if replacement is not child:
                        mod._modules[name] = replacement
        self.done[key] = new
        self.first_path[key] = path
        return new


def adapt(module: nn.Module) -> tuple[nn.Module, AdaptReport]:
    """Replace upstream gated submodules of ``module`` (in place) by gatex modules.

    Returns the model (the replacement, if the root itself was upstream) and an `AdaptReport`.

    >>> model, report = adapt(model)
    >>> print(report)
    """
    walker = _Walker()
    root = walker.visit(module, "")
    return root, AdaptReport(replaced=tuple(walker.replaced), unknown=tuple(walker.unknown),
                             invalid=tuple(walker.invalid),
                             aliases=tuple(walker.aliases))
