"""LSQ (Esser et al., ICLR 2020): a learnable step ``s``, ``v̂ = round(clip(v/s, −Qn, Qp))·s``."""

from __future__ import annotations

import torch

from ..functional import RoundFn, fake_quant_step
from .base import GRIDS, Grid, Params, fusable

__all__ = ["LSQGrid", "LSQ3SigmaGrid", "LSQRangeGrid", "scale_grad"]


def scale_grad(t: torch.Tensor, g: float | torch.Tensor) -> torch.Tensor:
    """``t`` exactly in the forward pass, its gradient times ``g`` in the backward pass (LSQ's grad scale)."""
    return t.detach() + (t - t.detach()) * g


def _limits(signed: torch.Tensor, bits: int, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(Qn, Qp)``: ``(2ᵇ⁻¹, 2ᵇ⁻¹ − 1)`` where signed, ``(0, 2ᵇ − 1)`` where not."""
    half = 2.0 ** (bits - 1)
    qn = torch.where(signed, half, 0.0).to(like)
    return qn, torch.where(signed, half - 1, 2 * half - 1).to(like)


@GRIDS.register("lsq")
class LSQGrid(Grid):
    """Integers ``−Qn … Qp`` times a learnable ``step``. Calibration (the ``signed_meanabs`` observer) sets the
    paper's ``s = 2·mean|v|/√Qp`` and makes a step signed where the data went below 0, unsigned otherwise (the
    ``signed`` buffer). ``s``'s gradient is scaled by ``g = 1/√(N·Qp)``, N the elements one sample has per step
    (the paper's "number of features" of a layer): for weights per channel a channel's elements, for activations
    per tensor one sample's elements, so g does not depend on the batch size or on how DDP splits a batch."""

    params = ("step", "signed")
    buffers = ("signed",)
    observer: str | None = "signed_meanabs"

    def init(self, shape: tuple[int, ...]) -> Params:
        return {"step": torch.ones(shape), "signed": torch.ones(shape, dtype=torch.bool)}

    def fit(self, lower: torch.Tensor, upper: torch.Tensor, bits: int | None = None) -> Params:
        assert bits is not None, "the LSQ step depends on the bit width"
        signed = lower < 0
        return {"step": (2 * upper / _limits(signed, bits, upper)[1].sqrt()).clamp_min(1e-8), "signed": signed}

    def project_(self, p: Params) -> None:
        p["step"].clamp_(min=1e-8)

    def bounds(self, p: Params, bits: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        assert bits is not None, "the LSQ range depends on the bit width"
        qn, qp = _limits(p["signed"], bits, p["step"])
        return -qn * p["step"], qp * p["step"]

    counts_samples = True

    def quantize(self, x: torch.Tensor, p: Params, bits: int | torch.Tensor, rounding: RoundFn,
                 samples: int = 1) -> torch.Tensor:
        if int(bits) < 2:
            raise ValueError("LSQ needs at least 2 bits (a signed 1-bit grid has Qp = 0); use binarize() for 1 bit")
        qn, qp = _limits(p["signed"], int(bits), p["step"])
        n = x.numel() / samples / p["step"].numel()
        g = (n * qp.float()).rsqrt().to(qp)  # in float32: N·Qp overflows float16
        s = scale_grad(p["step"], g)
        if fusable(rounding, s):
            return fake_quant_step(x, s, -qn.item(), qp.item())
        return rounding(torch.clamp(x / s, -qn, qp)) * s

    def quantize_fwd(self, x: torch.Tensor, p: Params, bits: int) -> torch.Tensor:
        with torch.no_grad():
            return self.quantize(x, p, bits, torch.round)


@GRIDS.register("lsq_3sigma")
class LSQ3SigmaGrid(LSQGrid):
    """LSQ's signed grid and gradient scale with LSQ+'s weight initialisation ``s = max(|μ − 3σ|, |μ + 3σ|)/2ᵇ⁻¹``
    (μ, σ of each channel's weights; Bhalgat et al. 2020, Sec. 3.3). Weights only."""

    observer = "mean_3std"

    def fit(self, lower: torch.Tensor, upper: torch.Tensor, bits: int | None = None) -> Params:
        assert bits is not None, "the LSQ step depends on the bit width"
        return {"step": (upper / 2.0 ** (bits - 1)).clamp_min(1e-8), "signed": torch.ones_like(upper, dtype=torch.bool)}


@GRIDS.register("lsq_range")
class LSQRangeGrid(LSQGrid):
    """LSQ's grid and gradient scale with its step initialised from a calibrated range (the config's observer:
    ``minmax``, ``percentile``, ``omse``): ``s = max(upper/Qp, −lower/Qn)``, signed where ``lower < 0``, so the
    grid starts covering that range (as LSQ+ initialises from one) instead of LSQ's ``2·mean|v|/√Qp``."""

    observer: str | None = None  # the config's observer

    def fit(self, lower: torch.Tensor, upper: torch.Tensor, bits: int | None = None) -> Params:
        assert bits is not None, "the LSQ step depends on the bit width"
        signed = lower < 0
        qn, qp = _limits(signed, bits, upper)
        step = torch.where(signed, torch.maximum(upper / qp, -lower / qn.clamp_min(1)), upper / qp)
        return {"step": step.clamp_min(1e-8), "signed": signed}
