"""PTQ4SR (Tu et al., CVPR 2023): density-based dual clipping (DBDC) + pixel-aware calibration (PaC).

Read from the paper's description and its public code; the details we settled:

* weights: per output channel min/max (no clipping); activations: per tensor, bounds from
  :class:`srq.quant.observers.DBDCObserver` (clip fraction 1e-4 below 8 bit, 1e-5 at 8 bit, 2048 bins,
  mean over calibration batches of 16), observed on the float network;
* PaC: the activation bounds, then the weight bounds, are trained against the FP model with
  L1(output) + 5 · mean over blocks of the MSE between per-pixel feature-energy maps
  (:func:`srq.engine.distill.energy_map`); Adam, 250 steps each, batch 2, cosine learning rate
  5e-3 → 2e-3 (activations) and 5e-6 → 2e-6 (weights), as in the released configs. The released code
  detaches the features, which silently drops the feature term; we keep its gradient (the paper's intent).
  Its LSQ-style gradient scaling of the bounds is left out: Adam is invariant to it (up to ε).
* the lower DBDC bound is the inner edge of the last trimmed bin (the code takes one bin further in).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import ClassVar

import torch
from torch import nn

from ..engine.batches import calibration_batches
from ..engine.blocks import check_blocks_pattern
from ..engine.distill import FinetuneConfig, finetune
from ..quant import calibrate
from ..quant.calibrate import split_quantizers
from ..typed_config import check_at_least
from .base import Recipe
from .registry import register_method

__all__ = ["PTQ4SR"]


def _pac(lr: float, lr_min: float) -> FinetuneConfig:
    return FinetuneConfig(lr=lr, lr_min=lr_min, steps=250, batch=2, lambda_feat=5.0, feature_loss="energy")


@register_method("ptq4sr", description="density-based dual clipping, then pixel-aware calibration of the bounds",
                 paper="PTQ4SR (Tu et al., CVPR 2023)")
@dataclass(frozen=True)
class PTQ4SR(Recipe):
    """DBDC activation bounds, then pixel-aware calibration of activation and weight bounds."""

    calib_batch: int = 16
    act_phase: FinetuneConfig = field(default_factory=lambda: _pac(5e-3, 2e-3))
    weight_phase: FinetuneConfig = field(default_factory=lambda: _pac(5e-6, 2e-6))
    blocks: str | None = None  # the feature loss's blocks: a regex over module names (None: automatic)

    name: ClassVar[str] = "ptq4sr"
    w_observer: ClassVar[str] = "minmax"
    a_observer: ClassVar[str] = "dbdc"

    def validate(self) -> None:
        check_at_least(self, 1, "calib_batch")
        check_blocks_pattern(self, self.blocks)

    def run(self, model: nn.Module, calib: torch.Tensor, progress: bool = True) -> nn.Module:
        self.require_patches(calib, "PTQ4SR")
        qmodel = self.prepare(model, calib[:1])
        batches = calibration_batches(calib, self.calib_batch)
        calibrate(qmodel, batches, total=len(batches), progress=progress)
        fp_model = copy.deepcopy(model).eval()
        weight_q, act_q = split_quantizers(qmodel)
        act = [p for q in act_q for p in q.parameters()]
        wgt = [p for q in weight_q for p in q.parameters()]
        finetune(qmodel, fp_model, calib, act, self.act_phase, progress=progress, description="PaC (activations)",
                 blocks=self.blocks)
        finetune(qmodel, fp_model, calib, wgt, self.weight_phase, progress=progress, description="PaC (weights)",
                 blocks=self.blocks)
        return qmodel.eval()
