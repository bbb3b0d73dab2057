"""Hard decisions inside gatex ops, recorded and forced (decision-forced parity).

CGConv2d's gate, PGConv2d's gate and its activation levels are discontinuous: a last-bit
difference before the decision (a convolution summed in another order) flips it, and the flip
moves the output by a whole gated term or a whole level. Parity therefore compares decisions
themselves, then judges outputs against torch run with the artifact's decisions forced.

The torch side is a tape (`recording`) that the ops' reference code consults. Parity runs torch
once with the artifact's decisions forced; each op call first makes and records its own decision
on inputs that already carry the forced decisions of the calls before it, so a flip upstream
never shows as a flip downstream. Margins and bounds:

- ``threshold`` decisions, ``d = pre > T`` per output element: the margin is ``|pre - T|`` in
  torch, the bound ``(gamma_k(u) + rtol) * S + atol`` where ``S = conv(|x|, |W|)`` is the sum of
  the magnitudes the length-``k`` dot product adds, ``gamma_k(u) = k u / (1 - k u)`` the classic
  forward-error bound of such a sum in a dtype of unit roundoff ``u`` (Higham, Accuracy and
  Stability, 3.1), and ``rtol``/``atol`` the op's reduction tolerance in that dtype, for the
  error the layer's inputs already carry from the layers before it.
- ``round`` decisions, ``levels = round(q)`` with ``q = clamp(|x| / s, 0, 1) (2^b - 1)``: the
  margin is the distance of ``q`` from the nearest rounding boundary (a half-integer), the bound
  ``2 rtol q + (2^b - 1) atol / s`` (``x`` and ``s`` each within the tolerance).

A flip whose margin is within its bound is a boundary flip: the artifact's rounding alone can
explain it. A flip beyond the bound is a wrong decision (a moved threshold, an inverted gate).

The tape is a module global, not a ContextVar, for the reason `gatex.ops._torch` gives; it is
only set while parity runs a model eagerly.
"""

from __future__ import annotations

import contextlib
import itertools
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from gatex.errors import BadInputError
from gatex.ops.spec import REDUCTION_TOLERANCES

UNIT_ROUNDOFF = {"float64": 2.0 ** -53, "float32": 2.0 ** -24, "float16": 2.0 ** -11,
                 "bfloat16": 2.0 ** -8}
MIL_PREFIX = "gatex_decision_"
# decisions an artifact may make at export time with torch's own code (CoreML folds PGConv2d's
# constant weight levels so): when it exposes none, torch's own stand
FOLDED = frozenset({"wlevels"})


def gamma(k: int, dtype: str) -> float:
    """gamma_k = k u / (1 - k u): the relative error bound of a length-k sum in ``dtype``."""
    ku = k * UNIT_ROUNDOFF[dtype]
    return ku / (1.0 - ku) if ku < 1.0 else 1.0


@dataclass
class Decision:
    """One decision tensor of one op call, as torch made it (all float64 numpy but ``value``)."""

    name: str                  # "gate", "levels"
    kind: str                  # "threshold" or "round"
    value: np.ndarray          # the decision: bool gate, or integer-valued levels
    margin: np.ndarray         # distance of the pre-decision value from its boundary, >= 0
    bound: np.ndarray          # how far the artifact's rounding may move it
    threshold: np.ndarray | None = None   # threshold decisions: T, broadcastable to value


@dataclass
class OpDecisions:
    """The decisions of one op call, in the order the op made them; ``module`` is the torch
    module running it (where the tape knows), ``occurrence`` how many calls that module made
    before this one."""

    op: str
    decisions: dict[str, Decision] = field(default_factory=dict)
    module: str = ""
    occurrence: int = 0


# the artifact's decisions: one mapping per call, by call index or by (module, occurrence)
Forced = Sequence[Mapping[str, np.ndarray]] | Mapping[tuple[str, int], Mapping[str, np.ndarray]]


# judge(call index, the call's entry, torch's decision, the artifact's values for the call)
Judge = Callable[[int, "OpDecisions", "Decision", "Mapping[str, np.ndarray] | None"], Any]


class Tape:
    """Every decision op call appends an `OpDecisions`: torch's own decision with its margin and
    bound. With ``forced`` (one mapping per call, in call order), the op then goes on with the
    forced decision instead of its own, so each call's own decision is made on inputs that
    carry the forced decisions of every call before it: layer by layer, the decisions compared
    are the ones torch would make in the artifact's place."""

    def __init__(self, dtype: str = "float32", forced: Forced | None = None,
                 where: Callable[[], str] | None = None, judge: Judge | None = None) -> None:
        self.dtype = dtype
        self.calls: list[OpDecisions] = []
        self.forced = forced
        self.where = where
        self.judge = judge
        self._seen: dict[str, int] = {}

    def begin(self, op: str) -> OpDecisions:
        module = self.where() if self.where is not None else ""
        entry = OpDecisions(op, module=module, occurrence=self._seen.get(module, 0))
        self._seen[module] = entry.occurrence + 1
        self.calls.append(entry)
        return entry

    def given(self) -> Mapping[str, np.ndarray] | None:
        """The forced values of the current call (None when nothing is forced for it)."""
        entry, index = self.calls[-1], len(self.calls) - 1
        if isinstance(self.forced, Mapping):
            return self.forced.get((entry.module, entry.occurrence))
        return self.forced[index] if index < len(self.forced or ()) else None

    def keep(self, entry: OpDecisions, decision: Decision) -> None:
        """Keep ``decision`` on ``entry``: as it is, or what ``judge`` makes of it (parity
        compares it with the artifact's at once, so no call's arrays outlive the call)."""
        entry.decisions[decision.name] = decision if self.judge is None else \
            self.judge(len(self.calls) - 1, entry, decision, self.given())

    def take(self, name: str, like: torch.Tensor) -> torch.Tensor | None:
        """The forced decision ``name`` of the current call, shaped like ``like``; None when
        nothing is forced, or for a `FOLDED` decision the artifact did not expose."""
        if self.forced is None:
            return None
        index = len(self.calls) - 1
        given = self.given()
        if given is None or name not in given:
            if given is not None and name in FOLDED:
                return None
            raise ForcingError(f"no forced {name!r} for decision op call #{index + 1}")
        value = np.asarray(given[name])
        if tuple(value.shape) != tuple(like.shape):
            raise ForcingError(f"forced {name!r} of call #{index + 1} has shape {value.shape}; "
                               f"torch's is {tuple(like.shape)}")
        return torch.from_numpy(value.astype(np.float32)).to(like.device, like.dtype)


class ForcingError(BadInputError):
    """The artifact's decisions do not fit the calls torch makes."""


_TAPE: Tape | None = None


@contextlib.contextmanager
def _active(tape: Tape) -> Iterator[Tape]:
    global _TAPE
    saved, _TAPE = _TAPE, tape
    try:
        yield tape
    finally:
        _TAPE = saved


def recording(dtype: str = "float32", forced: Forced | None = None,
              where: Callable[[], str] | None = None, judge: Judge | None = None
              ) -> contextlib.AbstractContextManager[Tape]:
    """Record every decision, with bounds for an artifact computing in ``dtype``; with
    ``forced``, go on with the artifact's decisions instead (`Tape`): ``forced[call][name]``
    by call index, or ``forced[(module, occurrence)][name]`` keyed by the torch module
    ``where()`` names as each call begins. ``judge(call index, entry, decision, forced
    values)``, where given, replaces each recorded decision by what it returns (`Tape.keep`)."""
    return _active(Tape(dtype, forced, where, judge))


def _np(t: torch.Tensor) -> np.ndarray:
    return t.detach().to("cpu", torch.float64).numpy()


def threshold_decision(entry: OpDecisions | None, name: str, pre: torch.Tensor,
                       threshold: torch.Tensor, magnitude: Any, k: int) -> torch.Tensor:
    """``pre > threshold`` as 0/1 in ``pre``'s dtype, recorded or forced per the tape;
    ``magnitude()`` gives S = conv(|x|, |W|) (computed only when recording), ``k`` the length
    of the dot product behind ``pre``."""
    tape = _TAPE
    if tape is None or entry is None:
        return (pre > threshold).to(pre.dtype)
    gate = pre > threshold
    tol = REDUCTION_TOLERANCES[tape.dtype]
    bound = (gamma(k, tape.dtype) + tol.rtol) * _np(magnitude()) + tol.atol
    tape.keep(entry, Decision(name, "threshold", gate.cpu().numpy(),
                              np.abs(_np(pre) - _np(threshold)), bound,
                              threshold=_np(threshold)))
    forced = tape.take(name, pre)
    return gate.to(pre.dtype) if forced is None else forced


def round_decision(entry: OpDecisions | None, name: str, q: torch.Tensor, levels: float,
                   scale: torch.Tensor) -> torch.Tensor:
    """``round(q)`` (the levels), recorded or forced per the tape; ``levels`` is 2^b - 1 and
    ``scale`` the quantiser's scale s."""
    tape = _TAPE
    if tape is None or entry is None:
        return torch.round(q)
    out = torch.round(q)
    tol = REDUCTION_TOLERANCES[tape.dtype]
    qn = _np(q)
    margin = np.abs(np.abs(qn - np.floor(qn)) - 0.5)
    bound = 2.0 * tol.rtol * qn + levels * tol.atol / float(scale)
    tape.keep(entry, Decision(name, "round", _np(out), margin, bound))
    forced = tape.take(name, q)
    return out if forced is None else forced


def begin(op: str) -> OpDecisions | None:
    """Open the current op call's entry on the tape (None when no tape is active)."""
    return None if _TAPE is None else _TAPE.begin(op)


_SEQUENCE = itertools.count()


def mil_prefix(op: str) -> str:
    """A prefix for one CoreML op call's decision names, unique in the process and increasing
    in conversion order, so the emulator's values pair with torch's calls: CGConv2d's decision
    ``gate`` is ``gatex_decision_00003_CGConv2d_gate``, its pre-decision value ``..._gate__pre``."""
    return f"{MIL_PREFIX}{next(_SEQUENCE):05d}_{op}_"
