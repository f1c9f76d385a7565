"""Learning rates in the units of what a parameter measures.

Adam moves a parameter by about its learning rate per step, in the parameter's own units. The steps, offsets,
clipping values and shifts of activation quantizers are in the units of the activations, and a model trained
on [0, 255] pixels (RLFN, RFDN, RDN, ``--pixel-range 255``) has activations 255× those of a [0, 1] model: at the
same rate its quantizers move 1/255 of the fraction of their ranges per step, which is to say not at all
(RLFN x4 LSQ W2A2, 300 steps: Set5 28.49 dB as it was, 28.92 with the rate scaled; docs/methods.md). So their
rate is scaled by the model's pixel range. Weights, their quantizers and unitless parameters (thresholds in
steps, DLS's coefficients, bit widths) keep theirs.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from ..models.wrappers import pixel_range
from ..quant.quantizer import Quantizer

__all__ = ["ACT_LR_SCALES", "pixel_unit_parameters", "pixel_scaled_groups"]

ACT_LR_SCALES = ("pixel_range", "none")  # the choices of a config's ``act_lr_scale``


def pixel_unit_parameters(model: nn.Module) -> set[int]:
    """``id`` of every activation quantizer parameter of ``model`` in the activations' units."""
    return {id(p) for m in model.modules() if isinstance(m, Quantizer) and m.batch_axis is not None
            for p in m.input_unit_parameters()}


def pixel_scaled_groups(model: nn.Module, groups: list[dict[str, Any]], lr: float,
                        act_lr_scale: str = "pixel_range") -> list[dict[str, Any]]:
    """``groups`` (optimiser groups: ``params`` and optionally ``lr``, else ``lr``) with, when ``act_lr_scale`` is
    ``"pixel_range"`` and ``model``'s pixel range R is not 1, the parameters of :func:`pixel_unit_parameters` moved
    out of each group into a copy of it at R × its rate. Groups left empty are dropped."""
    unit = pixel_range(model) if act_lr_scale == "pixel_range" else 1.0
    if unit == 1.0:
        return groups
    in_units = pixel_unit_parameters(model)
    out = []
    for g in groups:
        plain = [p for p in g["params"] if id(p) not in in_units]
        scaled = [p for p in g["params"] if id(p) in in_units]
        if plain:
            out.append({**g, "params": plain})
        if scaled:
            out.append({**g, "params": scaled, "lr": g.get("lr", lr) * unit})
    return out
