"""LSQ+ (Bhalgat et al., 2020): a learnable step ``s`` and offset ``β``, ``round(clip((v − β)/s, 0, 2ᵇ − 1))·s + β``."""

from __future__ import annotations

import torch

from ..functional import RoundFn, fake_quant_step
from .base import GRIDS, Grid, Params, fusable
from .lsq import scale_grad

__all__ = ["LSQPlusGrid", "LSQPlusIntGrid"]


@GRIDS.register("lsqplus")
class LSQPlusGrid(Grid):
    """Integers ``0 … 2ᵇ − 1`` times ``step`` plus ``offset`` (unsigned: the signed grid is the same levels with
    β moved by ``2ᵇ⁻¹·s``). The paper's min-max init ``s = (max − min)/(2ᵇ − 1)``, ``β = min``, from the
    observer asked for (``omse`` gives its MSE init's range). ``s`` and ``β`` get LSQ's gradient scale
    ``1/√(N·(2ᵇ − 1))`` (N as in :class:`~srq.quant.grids.lsq.LSQGrid`)."""

    params = ("step", "offset")

    def init(self, shape: tuple[int, ...]) -> Params:
        return {"step": torch.ones(shape), "offset": torch.zeros(shape)}

    def fit(self, lower: torch.Tensor, upper: torch.Tensor, bits: int | None = None) -> Params:
        assert bits is not None, "the LSQ+ step depends on the bit width"
        return {"step": ((upper - lower) / (2**bits - 1)).clamp_min(1e-8), "offset": lower}

    def project_(self, p: Params) -> None:
        p["step"].clamp_(min=1e-8)

    def bounds(self, p: Params, bits: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        assert bits is not None, "the LSQ+ range depends on the bit width"
        return p["offset"], p["offset"] + (2**bits - 1) * p["step"]

    counts_samples = True

    @staticmethod
    def scaled(x: torch.Tensor, p: Params, bits: int | torch.Tensor,
               samples: int) -> tuple[int, torch.Tensor, torch.Tensor]:
        """``(2ᵇ − 1, s, β)`` with LSQ's gradient scale on ``s`` and ``β``."""
        qp = 2 ** int(bits) - 1
        g = (x.numel() / samples / p["step"].numel() * qp) ** -0.5
        return qp, scale_grad(p["step"], g), scale_grad(p["offset"], g)

    def quantize(self, x: torch.Tensor, p: Params, bits: int | torch.Tensor, rounding: RoundFn,
                 samples: int = 1) -> torch.Tensor:
        qp, s, beta = self.scaled(x, p, bits, samples)
        if fusable(rounding, s, beta):
            return fake_quant_step(x, s, 0, qp, offset=beta)
        return rounding(torch.clamp((x - beta) / s, 0, qp)) * s + beta

    def quantize_fwd(self, x: torch.Tensor, p: Params, bits: int) -> torch.Tensor:
        with torch.no_grad():
            return self.quantize(x, p, bits, torch.round)


@GRIDS.register("lsqplus_int")
class LSQPlusIntGrid(LSQPlusGrid):
    """LSQ+ with its offset snapped to the grid: levels ``(r + k)·s``, ``r = round(β/s)``, k = 0 … 2ᵇ − 1, so the
    zero point ``−r`` is an integer and the quantizer exports to ``QuantizeLinear``/``DequantizeLinear`` exactly.
    ``β`` and ``s`` are learned as in LSQ+ (``r`` passes ``β/s``'s gradient by the STE)."""

    def fit(self, lower: torch.Tensor, upper: torch.Tensor, bits: int | None = None) -> Params:
        p = super().fit(lower, upper, bits)
        p["offset"] = torch.round(p["offset"] / p["step"]) * p["step"]
        return p

    def bounds(self, p: Params, bits: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        return super().bounds({**p, "offset": torch.round(p["offset"] / p["step"]) * p["step"]}, bits)

    def quantize(self, x: torch.Tensor, p: Params, bits: int | torch.Tensor, rounding: RoundFn,
                 samples: int = 1) -> torch.Tensor:
        qp, s, beta = self.scaled(x, p, bits, samples)
        if fusable(rounding, s, beta):
            return fake_quant_step(x, s, 0, qp, offset=beta, integer_offset=True)
        ratio = beta / s
        r = ratio + (torch.round(ratio) - ratio).detach()  # round by the STE
        return rounding(torch.minimum(torch.maximum(x / s, r), r + qp)) * s
