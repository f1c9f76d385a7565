"""SPR²Q Eq. 1: ``2ⁿ`` levels from a learnable ``lower`` to a learnable ``upper``."""

from __future__ import annotations

import torch

from ..functional import RoundFn, fake_quant, fake_quant_fwd
from .base import GRIDS, Grid, Params

__all__ = ["UniformGrid"]

@GRIDS.register("uniform")
class UniformGrid(Grid):
    """``2ⁿ`` levels from ``lower`` to ``upper`` inclusive (Eq. 1; n = 1 gives two learnable levels).

    Autograd through the bounds gives SPR²Q Eq. 8."""

    params = ("lower", "upper")
    variable_bits = True

    def init(self, shape: tuple[int, ...]) -> Params:
        return {"lower": torch.zeros(shape), "upper": torch.ones(shape)}

    def fit(self, lower: torch.Tensor, upper: torch.Tensor, bits: int | None = None) -> Params:
        return {"lower": lower, "upper": torch.maximum(upper, lower + 1e-8)}

    def project_(self, p: Params) -> None:
        p["upper"].copy_(torch.maximum(p["upper"], p["lower"] + 1e-8))

    def bounds(self, p: Params, bits: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        return p["lower"], p["upper"]

    def quantize(self, x: torch.Tensor, p: Params, bits: int | torch.Tensor, rounding: RoundFn) -> torch.Tensor:
        return fake_quant(x, p["lower"], p["upper"], bits, rounding)

    def quantize_fwd(self, x: torch.Tensor, p: Params, bits: int) -> torch.Tensor:
        return fake_quant_fwd(x, p["lower"], p["upper"], bits)
