"""Classic PTQ baselines: MinMax, Percentile, OMSE (calibration only) and MinMax+FT, Percentile+FT.

* MinMax: weights per output channel and activations per tensor from their min / max.
* Percentile: activations from the 0.01 / 99.99 percentiles of a histogram; weights per-channel min/max.
* OMSE: weights per channel and activations per tensor at the clipping ratio minimising the
  quantization MSE (Choukroun et al., 2019).
* ``fine_tune=True`` (+FT): the bounds (and only the bounds) are then trained against the FP model with
  pixel L1 + λ·per-block feature MSE (Adam, lr 0.01, 2 epochs, batch 2, λ 10: GBA supplementary).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import ClassVar

import torch
from torch import nn

from ..engine.distill import FinetuneConfig, finetune
from ..quant import calibrate, quantizers
from .base import Recipe

__all__ = ["MinMax", "Percentile", "OMSE", "calibration_batches", "shuffled_batches"]


def calibration_batches(calib: torch.Tensor | list[torch.Tensor], batch: int = 16) -> list[torch.Tensor]:
    """Split calibration inputs into batches ((N, 3, h, w) tensor) or pass a list of tensors through."""
    if isinstance(calib, list):
        return calib
    return [calib[i:i + batch] for i in range(0, len(calib), batch)]


def shuffled_batches(inputs: torch.Tensor, batch: int, epochs: int, seed: int) -> list[torch.Tensor]:
    """``epochs`` passes over ``inputs`` ((N, 3, h, w)) in batches of ``batch``, reshuffled each pass."""
    gen = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(epochs):
        order = torch.randperm(len(inputs), generator=gen)
        out += [inputs[order[i:i + batch]] for i in range(0, len(inputs), batch)]
    return out


@dataclass
class _CalibrateThenTune(Recipe):
    fine_tune: bool = False
    finetune_config: FinetuneConfig = field(default_factory=FinetuneConfig)

    def run(self, model: nn.Module, calib: torch.Tensor, progress: bool = True) -> nn.Module:
        example = calib[:1] if isinstance(calib, torch.Tensor) else calib[0]
        qmodel = self.prepare(model, example)
        batches = calibration_batches(calib)
        calibrate(qmodel, batches, total=len(batches), progress=progress)
        if self.fine_tune:
            self.require_patches(calib, "fine-tuning")
            params = [p for _, q in quantizers(qmodel) for p in q.parameters()]
            finetune(qmodel, copy.deepcopy(model).eval(), calib, params, self.finetune_config, progress=progress)
        return qmodel.eval()

    def to_dict(self) -> dict:
        d = super().to_dict()
        d["method"] = self.name + ("_ft" if self.fine_tune else "")
        return d


@dataclass
class MinMax(_CalibrateThenTune):
    name: ClassVar[str] = "minmax"


@dataclass
class Percentile(_CalibrateThenTune):
    name: ClassVar[str] = "percentile"
    a_observer: ClassVar[str] = "percentile"


@dataclass
class OMSE(_CalibrateThenTune):
    name: ClassVar[str] = "omse"
    w_observer: ClassVar[str] = "omse"
    a_observer: ClassVar[str] = "omse"
