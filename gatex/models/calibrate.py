"""Calibrated activation scales for PGConv2d (``gatex export --pg-scale calibrated``).

Upstream's PGConv2d quantises its input with a dynamic per-tensor scale s = max|x| + 1e-7
taken over the whole batch, so one sample's output depends on the other samples in its batch.
`calibrate_pg_scales` fixes each layer's scale to the same statistic taken over a whole
calibration set instead: s = max|x| + 1e-7, the max over every sample and element that reaches
that layer's input. The calibrated model is a deep copy; the source model is not touched.

Layers are calibrated in the order they run: while layer k is measured, the layers before it
already use their fixed scales, so each scale is the max over the inputs the calibrated model
itself feeds that layer. Where the whole set goes through in one chunk, the calibrated model's
output on the set equals the dynamic model's output on the set as one batch (bit for bit).

The trade-off (`TRADE_OFF`): a sample's output no longer depends on its batch, but an
activation with |x| above its layer's calibrated scale saturates: the quantiser clamps
|x| / s to [0, 1] before rounding, so such a value is quantised to +-s. The dynamic scale
never clamps (s exceeds every |x| of its own batch).
"""

from __future__ import annotations

import copy
from collections.abc import Iterable
from dataclasses import dataclass

import torch
from torch import nn

from gatex.errors import BadInputError
from gatex.models.conv_gating import PGConv2d
from gatex.ops.conv_gating import PG_EPS

PG_SCALES = ("dynamic", "calibrated")
TRADE_OFF = ("calibrated: each sample's output no longer depends on its batch; activations "
             "beyond a layer's calibrated range saturate (|x| is clamped to the scale before "
             "rounding)")
DYNAMIC_NOTE = ("dynamic (upstream): each PGConv2d scales by max|x| over the whole batch, so one "
                "sample's output depends on the rest of its batch; --pg-scale calibrated fixes it")


@dataclass(frozen=True)
class PgCalibration:
    """What calibration fixed: each PGConv2d's qualified name and its scale, and the set size."""
    scales: dict[str, float]
    samples: int

    def summary(self) -> str:
        scales = ", ".join(f"{k} {v:.6g}" for k, v in self.scales.items())
        return (f"PGConv2d act_scale calibrated on {self.samples} samples (max |x| + 1e-7 per "
                f"layer over the set): {scales}")


def pg_layers(model: nn.Module) -> dict[str, nn.Module]:
    """The model's PGConv2d modules by qualified name, in registration order."""
    return {name: m for name, m in model.named_modules() if isinstance(m, PGConv2d)}


def _chunks(inputs: Iterable[torch.Tensor] | torch.Tensor, chunk: int) -> list[torch.Tensor]:
    if isinstance(inputs, torch.Tensor):
        inputs = [inputs]
    out = []
    for t in inputs:
        if not isinstance(t, torch.Tensor) or t.ndim == 0 or t.shape[0] == 0:
            raise BadInputError("calibration data must be non-empty tensors with a batch "
                                "dimension first")
        if not torch.is_floating_point(t) or not bool(torch.isfinite(t).all()):
            raise BadInputError("calibration data must be finite floating-point values")
        out.extend(t.split(chunk))
    return out


def calibrate_pg_scales(model: nn.Module, inputs: Iterable[torch.Tensor] | torch.Tensor, *,
                        chunk: int = 1024) -> tuple[nn.Module, PgCalibration]:
    """A deep copy of ``model`` (eval mode) with every PGConv2d's ``act_scale`` fixed.

    ``inputs``: one tensor (batch first) or several; they run through the model ``chunk``
    samples at a time. Each layer's scale is max|x| + 1e-7 over every input it sees (computed
    in the input's dtype, as the dynamic scale is), measured with the layers before it already
    fixed. A model with no PGConv2d is a `BadInputError`.
    """
    if isinstance(chunk, bool) or not isinstance(chunk, int) or chunk < 1:
        raise BadInputError(f"calibration chunk must be a positive integer; got {chunk!r}")
    calibrated = copy.deepcopy(model).eval()
    layers = pg_layers(calibrated)
    if not layers:
        raise BadInputError("--pg-scale calibrated: the model has no PGConv2d layer to "
                            "calibrate")
    batches = _chunks(inputs, chunk)
    for layer in layers.values():  # a dynamic scale everywhere until calibrated
        layer.act_scale = None
    order: list[str] = []
    names = {id(m): n for n, m in layers.items()}

    def record_order(module: nn.Module, args: tuple) -> None:
        if names[id(module)] not in order:
            order.append(names[id(module)])

    hooks = [m.register_forward_pre_hook(record_order) for m in layers.values()]
    try:
        with torch.no_grad():
            calibrated(batches[0][:1])
    finally:
        for h in hooks:
            h.remove()
    order += [n for n in layers if n not in order]  # layers the forward never reached

    scales: dict[str, float] = {}
    for name in order:
        layer = layers[name]
        peak: list[torch.Tensor] = []

        def record(module: nn.Module, args: tuple) -> None:
            peak.append(torch.amax(torch.abs(args[0].detach())))

        hook = layer.register_forward_pre_hook(record)
        try:
            with torch.no_grad():
                for batch in batches:
                    calibrated(batch)
        finally:
            hook.remove()
        if not peak:
            raise BadInputError(f"--pg-scale calibrated: PGConv2d {name!r} never runs in the "
                                "model's forward, so it cannot be calibrated")
        # as the dynamic scale: max|x| + 1e-7 in the activation's dtype
        scale = float(torch.amax(torch.stack(peak)) + PG_EPS)
        layer.act_scale = scale
        scales[name] = scale
    return calibrated, PgCalibration(scales, sum(b.shape[0] for b in batches))


__all__ = ["DYNAMIC_NOTE", "PG_SCALES", "PgCalibration", "TRADE_OFF", "calibrate_pg_scales",
           "pg_layers"]
