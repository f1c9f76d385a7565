"""PAMS (Li et al., ECCV 2020) activations: a learnable max scale α, ``round(clip(x, −α, α)·k/α)·α/k``, k = 2ᵇ⁻¹ − 1."""

from __future__ import annotations

import torch

from ..functional import RoundFn, fake_quant_step
from .base import GRIDS, Params, fusable
from .symmetric import SymmetricGrid

__all__ = ["PAMSGrid"]


@GRIDS.register("pams")
class PAMSGrid(SymmetricGrid):
    """The symmetric grid (the same formula; autograd with the STE gives α the paper's gradient: ``sign(x)`` where
    ``|x| > α``, ``(q − x)/α`` inside), with PAMS's init: α is the mean over the calibration samples of each
    sample's max |x| (the official code sets α to an EMA of the batch mean of that during the first epoch),
    per channel the channel's max |w|. PAMS's weights are the ``symmetric`` grid with max |w| (``minmax``)."""

    observer = "sample_maxabs"

    def quantize(self, x: torch.Tensor, p: Params, bits: int | torch.Tensor, rounding: RoundFn) -> torch.Tensor:
        if not (isinstance(bits, int) and bits >= 2 and fusable(rounding, p["alpha"])):
            return super().quantize(x, p, bits, rounding)
        qmax = 2 ** (bits - 1) - 1  # the same grid as the symmetric one, with step α/k
        return fake_quant_step(x, p["alpha"].clamp_min(1e-8) / qmax, -qmax, qmax)
