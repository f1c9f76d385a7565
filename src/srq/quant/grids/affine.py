"""The uniform grid with an integer zero point (Jacob et al., 2018)."""

from __future__ import annotations

import torch

from ..functional import RoundFn, affine_step, fake_quant_affine, fake_quant_affine_fwd
from .base import GRIDS, Params
from .uniform import UniformGrid

__all__ = ["AffineGrid"]


@GRIDS.register("affine")
class AffineGrid(UniformGrid):
    """The range widened to contain 0, with an integer zero point: 0 is exactly on the grid."""

    def project_(self, p: Params) -> None:
        """``lower ≤ 0 ≤ upper`` (a bound on the wrong side of 0 gets no gradient and would never come back),
        then ``upper > lower``."""
        p["lower"].clamp_(max=0.0)
        p["upper"].clamp_(min=0.0)
        super().project_(p)

    def quantize(self, x: torch.Tensor, p: Params, bits: int | torch.Tensor, rounding: RoundFn) -> torch.Tensor:
        return fake_quant_affine(x, p["lower"], p["upper"], bits, rounding)

    def quantize_fwd(self, x: torch.Tensor, p: Params, bits: int) -> torch.Tensor:
        return fake_quant_affine_fwd(x, p["lower"], p["upper"], bits)

    def snap(self, offset: torch.Tensor, scale: torch.Tensor, p: Params, bits: int | torch.Tensor) -> torch.Tensor:
        """The offset rounded to a multiple of the grid step in input units, so that an input 0 stays exactly
        0. Without it a sparse channel's zeros shift by up to half a step, the same way at every pixel, and
        convolutions add those shifts up. The rounding passes no gradient (the offset's gradient is kept)."""
        step = affine_step(p["lower"], p["upper"], bits, scale).detach()
        return offset + (torch.round(offset.detach() / step) * step - offset.detach())
