"""1-bit grid ``{−α, α}``."""

from __future__ import annotations

import torch

from ..functional import RoundFn, binarize, binarize_fwd
from .base import GRIDS, Params
from .symmetric import SymmetricGrid

__all__ = ["BinaryGrid"]


@GRIDS.register("binary")
class BinaryGrid(SymmetricGrid):
    """1 bit, ``sign(x)·α`` with the clipped STE of :func:`~srq.quant.functional.binarize` (no rounding
    estimator: there is nothing to round); α is calibrated as the mean absolute value."""

    observer = "meanabs"

    def quantize(self, x: torch.Tensor, p: Params, bits: int | torch.Tensor, rounding: RoundFn) -> torch.Tensor:
        return binarize(x, p["alpha"])

    def quantize_fwd(self, x: torch.Tensor, p: Params, bits: int) -> torch.Tensor:
        return binarize_fwd(x, p["alpha"])
