"""RFA, Q-MambaIR's range-floating flexible allocator (Chen et al., Eq. 7–8): learnable rounding thresholds.

Weights are ``ŵ = s·q`` with a learnable step ``s`` per output channel (LSQ's, with its gradient scale) and
integer levels ``q ∈ {−2ⁿ⁻¹ … 2ⁿ⁻¹ − 1}`` (the paper's symmetric integer range). Which level a weight takes is
decided by ``K = 2ⁿ − 1`` learnable thresholds ``T₁ < … < T_K`` in units of the step (one set per layer, shared
by its channels): ``q = −2ⁿ⁻¹ + #{i : w/s > Tᵢ}`` (Eq. 7). The levels stay uniform integers, so the deployed
weights are plain n-bit integers times ``s``.

Backward (Eq. 8) is the gradient of a piecewise-linear surrogate ``y(z)`` of the staircase, ``z = w/s``: through
the knots ``(Tᵢ, cᵢ)``, ``cᵢ = −2ⁿ⁻¹ + i − ½`` (the value halfway up step i), so between two thresholds the slope
is ``Δq/(Tᵢ₊₁ − Tᵢ)`` (Δq = 1, the transition region), and below ``T₁`` or above ``T_K`` (the flat regions,
where the staircase is flat for good) it is ``flat_slope`` = 0.1. The thresholds get their gradient through
the knots (as the paper's Algorithm 1). Thresholds start at the rounding midpoints ``Tᵢ = cᵢ``, where ``y(z) = z``
between ``T₁`` and ``T_K`` and RFA is round-to-nearest (ties round down) with the STE. After each optimiser step
each threshold is kept between its two levels (``Tᵢ ∈ [cᵢ − ½ + ε, cᵢ + ½ − ε]``, ε = 0.05), which keeps them
ordered and every transition slope at most 1/(2ε) = 10.

``nu2u`` is the same threshold grid with a flat slope of 0: N2UQ's generalized STE (Liu et al., CVPR 2022) in
srq's form (learnable thresholds, backward 1/(interval width) between them, nothing outside).
"""

from __future__ import annotations

import torch

from ..functional import RoundFn
from .base import GRIDS, Grid, Params
from .lsq import scale_grad

__all__ = ["RFAGrid", "NU2UGrid", "rfa_levels", "rfa_surrogate", "THRESHOLD_MARGIN"]

THRESHOLD_MARGIN = 0.05  # ε: how close a threshold may come to one of its two levels, in steps


def _half(bits: int) -> int:
    if bits < 2:
        raise ValueError("RFA needs at least 2 bits (the signed 1-bit range {-1, 0} has one threshold)")
    return 2 ** (bits - 1)


def midpoints(bits: int) -> torch.Tensor:
    """The K = 2ⁿ − 1 rounding midpoints ``cᵢ = −2ⁿ⁻¹ + i − ½`` (i = 1 … K): the initial thresholds."""
    return torch.arange(1, 2**bits, dtype=torch.float32) - _half(bits) - 0.5


def rfa_levels(z: torch.Tensor, thresholds: torch.Tensor, bits: int) -> torch.Tensor:
    """Eq. 7: the integer level ``−2ⁿ⁻¹ + #{i : z > Tᵢ}`` of each ``z`` (thresholds sorted, shape (K,))."""
    return torch.bucketize(z.detach().contiguous(), thresholds.detach().contiguous()).to(z.dtype) - _half(bits)


def rfa_surrogate(z: torch.Tensor, thresholds: torch.Tensor, bits: int, flat_slope: float = 0.1) -> torch.Tensor:
    """The piecewise-linear ``y(z)`` whose gradient is RFA's backward (Eq. 8), differentiable in ``z`` and the
    thresholds: through ``(Tᵢ, cᵢ)``, slope ``flat_slope`` below ``T₁`` and above ``T_K``."""
    t = thresholds.to(z.dtype)
    k = t.numel()
    count = torch.bucketize(z.detach().contiguous(), t.detach().contiguous())  # #{i : z > Tᵢ}, 0 … K
    seg = count.clamp(1, k - 1) - 1  # 0-based index of the segment's lower knot
    lo, hi = t[seg], t[seg + 1]
    c_lo = seg.to(z.dtype) + 0.5 - _half(bits)  # c at the lower knot (0-based i: −2ⁿ⁻¹ + i + ½)
    inside = c_lo + (z - lo) / (hi - lo)
    below = (0.5 - _half(bits)) + flat_slope * (z - t[0])
    above = (k - 0.5 - _half(bits)) + flat_slope * (z - t[-1])
    return torch.where(count == 0, below, torch.where(count == k, above, inside))


@GRIDS.register("rfa")
class RFAGrid(Grid):
    """Learnable step per channel (LSQ's init ``2·mean|w|/√Qp`` and gradient scale ``1/√(N·Qp)``, Qp = 2ⁿ⁻¹ − 1)
    and K = 2ⁿ − 1 learnable thresholds per layer (``thresholds``, in steps). Weights only; 2 … 8 bits."""

    params = ("step", "thresholds")
    unitless = ("thresholds",)
    observer = "signed_meanabs"
    flat_slope = 0.1

    def init(self, shape: tuple[int, ...]) -> Params:
        raise ValueError("the RFA grid is sized by the bit width (Quantizer calls init_sized)")

    def init_sized(self, shape: tuple[int, ...], bits: int, channels: int = 0, axis: int = 1) -> Params:
        return {"step": torch.ones(shape), "thresholds": midpoints(bits)}

    def fit(self, lower: torch.Tensor, upper: torch.Tensor, bits: int | None = None) -> Params:
        assert bits is not None, "the RFA step depends on the bit width"
        qp = max(_half(bits) - 1, 1)
        return {"step": (2 * upper / qp**0.5).clamp_min(1e-8), "thresholds": midpoints(bits)}

    def project_(self, p: Params) -> None:
        p["step"].clamp_(min=1e-8)
        c = midpoints(p["thresholds"].numel().bit_length()).to(p["thresholds"])
        p["thresholds"].copy_(torch.minimum(torch.maximum(p["thresholds"], c - 0.5 + THRESHOLD_MARGIN),
                                            c + 0.5 - THRESHOLD_MARGIN))

    def bounds(self, p: Params, bits: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        assert bits is not None, "the RFA range depends on the bit width"
        return -_half(bits) * p["step"], (_half(bits) - 1) * p["step"]

    def quantize(self, x: torch.Tensor, p: Params, bits: int | torch.Tensor, rounding: RoundFn) -> torch.Tensor:
        bits = int(bits)
        qp = max(_half(bits) - 1, 1)
        g = (x.numel() / p["step"].numel() * qp) ** -0.5  # weights: N = one channel's elements
        s = scale_grad(p["step"], g)
        t = p["thresholds"].reshape(-1)  # broadcast per channel by the quantizer: one set per layer
        if t.numel() != 2**bits - 1:
            raise ValueError(f"RFA holds {t.numel()} thresholds, {bits} bits need {2**bits - 1}: its bit width cannot "
                             f"change after it is made")
        z = x / s
        y = rfa_surrogate(z, t, bits, self.flat_slope)
        return (rfa_levels(z, t, bits) + (y - y.detach())) * s

    def quantize_fwd(self, x: torch.Tensor, p: Params, bits: int) -> torch.Tensor:
        with torch.no_grad():
            return rfa_levels(x / p["step"], p["thresholds"].reshape(-1), bits) * p["step"]


@GRIDS.register("nu2u")
class NU2UGrid(RFAGrid):
    """RFA's thresholds with N2UQ's generalized STE: no gradient outside ``[T₁, T_K]`` (flat slope 0)."""

    flat_slope = 0.0
