"""nn.Modules for every gated unit, with upstream's class names, signatures and state_dict keys.

An upstream checkpoint loads unchanged (`load_state_dict` also accepts the duplicate keys of
upstream ResNets); `adapt` swaps the upstream modules inside any model for these. Each
module's forward is one ``gatex::`` torch custom op, so ``torch.export`` keeps one node per
unit. Each module file's docstring lists where it differs from upstream.
"""

from __future__ import annotations

import gatex.ops  # noqa: F401  (registers the gatex:: custom ops the modules call)
from gatex.errors import BadInputError
from gatex.models import conv_gating, gated_dense, golu, pagating, pagru, zilu
from gatex.models.adapt import AdaptReport, adapt
from gatex.models.conv_gating import CGConv2d, PactReLU, PGConv2d
from gatex.models.gated_bert import GatedBert, GatedBertConfig
from gatex.models.gated_dense import GatedDense
from gatex.models.golu import GoLU, GoLUCUDA
from gatex.models.keras_weights import KerasLoadReport, load_gated_bert
from gatex.models.pagating import (
    PrePostNormWrapper,
    paGating2D,
    paGatingBase,
    paGELU,
    paGLU,
    paGTU,
    paMishU,
    paReGLU,
    paSiLU,
    paSwishU,
    paUnit,
)
from gatex.models.pagru import PaGRUCell
from gatex.models.state import LoadedState, load_state_dict
from gatex.models.zilu import ArcTan, ArcTan_Approx, GELU_s, SiLU_s, ZiLU, ZiLU_Approx
from gatex.ops.registry import REGISTRY


def _unit_modules() -> dict[str, type]:
    """The module class of every op, named after it, from the model files (derived: a unit class
    added to a model file is exported here, and `module_for` finds it, without a list to edit)."""
    found = {}
    for spec in REGISTRY:
        for module in (conv_gating, gated_dense, golu, pagating, pagru, zilu):
            if isinstance(getattr(module, spec.name, None), type):
                found[spec.name] = getattr(module, spec.name)
    return found


UNIT_MODULES: dict[str, type] = _unit_modules()
globals().update(UNIT_MODULES)


def module_for(op: str) -> type:
    """The nn.Module class of gatex op ``op`` (its spec name), e.g. ``module_for("GoLU")``."""
    try:
        return UNIT_MODULES[REGISTRY.get(op).name]
    except KeyError:
        raise BadInputError(f"op {op!r} has no module class in gatex.models") from None

__all__ = [
    *UNIT_MODULES, "UNIT_MODULES", "module_for",
    "AdaptReport", "ArcTan", "ArcTan_Approx", "CGConv2d", "GELU_s", "GatedBert", "GatedBertConfig",
    "GatedDense", "GoLU", "GoLUCUDA", "KerasLoadReport", "LoadedState", "PGConv2d", "PaGRUCell",
    "PactReLU", "PrePostNormWrapper", "SiLU_s", "ZiLU", "ZiLU_Approx", "adapt", "load_gated_bert",
    "load_state_dict", "paGELU", "paGLU", "paGTU", "paGating2D", "paGatingBase", "paMishU",
    "paReGLU", "paSiLU", "paSwishU", "paUnit",
]
