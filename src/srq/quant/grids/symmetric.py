"""Signed grid symmetric about 0 with one learnable half-width ``alpha``."""

from __future__ import annotations

import torch

from ..functional import RoundFn, fake_quant_symmetric, fake_quant_symmetric_fwd
from .base import GRIDS, Grid, Params

__all__ = ["SymmetricGrid"]

@GRIDS.register("symmetric")
class SymmetricGrid(Grid):
    """Signed grid ``{−(2ⁿ⁻¹−1) … 2ⁿ⁻¹−1}·α/(2ⁿ⁻¹−1)``, n ≥ 2 (zero on the grid)."""

    params = ("alpha",)

    def init(self, shape: tuple[int, ...]) -> Params:
        return {"alpha": torch.ones(shape)}

    def fit(self, lower: torch.Tensor, upper: torch.Tensor, bits: int | None = None) -> Params:
        return {"alpha": torch.maximum(lower.abs(), upper.abs()).clamp_min(1e-8)}

    def project_(self, p: Params) -> None:
        p["alpha"].clamp_(min=1e-8)

    def bounds(self, p: Params, bits: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        return -p["alpha"], p["alpha"]

    def quantize(self, x: torch.Tensor, p: Params, bits: int | torch.Tensor, rounding: RoundFn) -> torch.Tensor:
        assert isinstance(bits, int), "the symmetric grid has a fixed bit width (variable_bits is False)"
        return fake_quant_symmetric(x, p["alpha"], bits, rounding)

    def quantize_fwd(self, x: torch.Tensor, p: Params, bits: int) -> torch.Tensor:
        return fake_quant_symmetric_fwd(x, p["alpha"], bits)
