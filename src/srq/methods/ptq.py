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
import dataclasses
from dataclasses import dataclass, field
from typing import ClassVar

import torch
from torch import nn

from ..engine.batches import calibration_batches
from ..engine.blocks import check_blocks_pattern
from ..engine.distill import FinetuneConfig, finetune
from ..quant import QuantConfig, calibrate, quantizers
from ..typed_config import check_choice
from .base import Recipe
from .registry import register_method

__all__ = ["MinMax", "Percentile", "OMSE"]


_FT = "+FT: bounds fine-tuned against the FP model (L1 + feature MSE)"
_FT_PAPER = "+FT baseline of Gradient Knows Best (supplementary)"


W_GRIDS = ("affine", "symmetric")


@dataclass(frozen=True)
class _CalibrateThenTune(Recipe):
    fine_tune: bool = False
    finetune_config: FinetuneConfig = field(default_factory=FinetuneConfig)
    blocks: str | None = None  # the feature loss's blocks: a regex over module names (None: automatic)
    # weight grid: "affine" (a zero point per output channel) or "symmetric" (zero point 0, levels −(2ᵇ⁻¹−1) … 2ᵇ⁻¹−1:
    # an exported 8-bit model then convolves in int8 without a zero-point correction, see docs/deploy.md)
    w_grid: str = "affine"
    # requantize integer layers' outputs at this many bits, as integer runtimes do (QuantConfig.a_output_bits;
    # docs/deploy.md); None: float outputs, as in the papers
    a_output_bits: int | None = None

    def validate(self) -> None:
        check_blocks_pattern(self, self.blocks)
        check_choice(self, "w_grid", W_GRIDS)

    def config(self) -> QuantConfig:
        return dataclasses.replace(super().config(), w_mode=self.w_grid, a_output_bits=self.a_output_bits)

    def to_dict(self) -> dict:
        d = super().to_dict()
        if self.w_grid == "affine":  # recipes on the default grid read (and hash) as before the field
            del d["w_grid"]
        if self.a_output_bits is None:  # likewise for float layer outputs
            del d["a_output_bits"]
        return d

    def run(self, model: nn.Module, calib: torch.Tensor, progress: bool = True) -> nn.Module:
        example = calib[:1] if isinstance(calib, torch.Tensor) else calib[0]
        qmodel = self.prepare(model, example)
        batches = calibration_batches(calib)
        calibrate(qmodel, batches, total=len(batches), progress=progress)
        if self.fine_tune:
            self.require_patches(calib, "fine-tuning")
            params = [p for _, q in quantizers(qmodel) for p in q.parameters()]
            finetune(qmodel, copy.deepcopy(model).eval(), calib, params, self.finetune_config, progress=progress,
                     blocks=self.blocks)
        return qmodel.eval()

    @property
    def method(self) -> str:
        return self.name + ("_ft" if self.fine_tune else "")


@register_method("minmax_ft", preset={"fine_tune": True}, description=f"MinMax, then {_FT}", paper=_FT_PAPER)
@register_method("minmax", description="calibration only: weights per channel, activations per tensor from min/max",
                 paper="classic PTQ baseline")
@dataclass(frozen=True)
class MinMax(_CalibrateThenTune):
    name: ClassVar[str] = "minmax"


@register_method("percentile_ft", preset={"fine_tune": True}, description=f"Percentile, then {_FT}",
                 paper=_FT_PAPER)
@register_method("percentile", description="calibration only: activations from the 0.01 / 99.99 percentiles, "
                 "weights per-channel min/max", paper="classic PTQ baseline")
@dataclass(frozen=True)
class Percentile(_CalibrateThenTune):
    name: ClassVar[str] = "percentile"
    a_observer: ClassVar[str] = "percentile"


@register_method("omse_ft", preset={"fine_tune": True}, description=f"OMSE, then {_FT}",
                 paper=f"{_FT_PAPER}, on OMSE bounds (srq's)")
@register_method("omse", description="calibration only: clipping ratios minimising the quantization MSE",
                 paper="OMSE (Choukroun et al., ICCVW 2019)")
@dataclass(frozen=True)
class OMSE(_CalibrateThenTune):
    name: ClassVar[str] = "omse"
    w_observer: ClassVar[str] = "omse"
    a_observer: ClassVar[str] = "omse"
