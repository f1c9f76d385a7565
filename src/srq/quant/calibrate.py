"""Calibration: set every quantizer's bounds from its observer.

Weights are calibrated from the weight tensors themselves; then activation quantizers observe the
calibration batches (flowing through the weight-quantized model, activations in float) and take their
bounds from what they saw.
"""

from __future__ import annotations

from typing import Iterable

import torch
from torch import nn

from ..engine.progress import progress_bar
from .layers import QUANT_LAYER_TYPES

__all__ = ["calibrate_weights", "calibrate_activations", "calibrate"]


@torch.no_grad()
def calibrate_weights(model: nn.Module) -> None:
    """Initialise the bounds of every weight quantizer from its layer's (pre-quantization) weight."""
    for m in model.modules():
        if isinstance(m, QUANT_LAYER_TYPES) and m.weight_quantizer is not None:
            m.weight_quantizer.start_calibration()
            m.weight_quantizer(m.float_weight())
            m.weight_quantizer.finish_calibration()


def _activation_quantizers(model: nn.Module) -> list[nn.Module]:
    weight_q = {id(m.weight_quantizer) for m in model.modules() if isinstance(m, QUANT_LAYER_TYPES)}
    from .quantizer import Quantizer

    return [m for m in model.modules() if isinstance(m, Quantizer) and id(m) not in weight_q]


@torch.no_grad()
def calibrate_activations(model: nn.Module, batches: Iterable[torch.Tensor], total: int | None = None,
                          progress: bool = True) -> None:
    """Observe ``batches`` ((N, 3, h, w) LR in [0, 1]) and set every activation quantizer's bounds."""
    act = _activation_quantizers(model)
    was_training = model.training
    model.eval()
    for q in act:
        q.start_calibration()
    try:
        seen = 0
        for x in progress_bar(batches, total=total, description="calibrating", enabled=progress):
            model(x)
            seen += 1
        if seen == 0:
            raise ValueError("no calibration batches")
        for q in act:
            q.finish_calibration()
    finally:
        for q in act:
            q.observer = None
        model.train(was_training)


def calibrate(model: nn.Module, batches: Iterable[torch.Tensor], total: int | None = None,
              progress: bool = True) -> nn.Module:
    """Weights first, then activations. Returns ``model``."""
    calibrate_weights(model)
    calibrate_activations(model, batches, total=total, progress=progress)
    return model
