"""DLS, Q-MambaIR's dynamic-balancing learnable scalar (Chen et al., Eq. 6): an activation range predicted per sample.

For each sample of ``x`` (axis 0; a window of a windowed attention operand) the statistics
``Φ = (μ, σ, min, max)`` and ``Φ′ = (|μ|, σ, min, max)`` give the half-width ``α̂ = max(|w₁ᵀΦ′|, floor)`` and the
centre ``β̂ = w₂ᵀΦ`` of the range ``[β̂ − α̂, β̂ + α̂]``, which the uniform grid of :func:`fake_quant` (2ⁿ levels
from the lower to the upper end) quantizes. ``w₁``, ``w₂`` (4 values each, per quantizer) are trained with the
network; the statistics are detached (the range follows the input, the input gets the usual STE gradient).
The four initialisations of the paper's Table 6 are four grids:

=================  =============================  ===================  =====================
grid               initial range                  w₁ (on Φ′)           w₂ (on Φ)
=================  =============================  ===================  =====================
``dls``            [μ − 3σ, μ + 3σ] (default)     (0, 3, 0, 0)         (1, 0, 0, 0)
``dls_4sigma``     [μ − 4σ, μ + 4σ]               (0, 4, 0, 0)         (1, 0, 0, 0)
``dls_minmax``     [min, max]                     (0, 0, −½, ½)        (0, 0, ½, ½)
``dls_mean_range`` [μ − ½(max−min), μ + ½(max−min)]  (0, 0, −½, ½)     (1, 0, 0, 0)
=================  =============================  ===================  =====================

``dls_mse`` (srq's, not the paper's) fits ``[μ + l·σ, μ + u·σ]`` to the calibration data: the ``(l, u)`` with the
smallest quantization MSE of the per-sample standardised values.

A constant sample (σ = 0, min = max) gets the floor ``α̂ = DLS_FLOOR`` and stays finite: its values land within
``DLS_FLOOR/(2ⁿ − 1)`` of themselves.
"""

from __future__ import annotations

import math

import torch

from ..functional import RoundFn, fake_quant, fake_quant_range
from .base import GRIDS, Grid, Params, fusable

__all__ = ["DLSGrid", "DLS_FLOOR", "dls_statistics", "dls_range"]

DLS_FLOOR = 1e-5  # smallest half-width α̂, in the activation's units
_CANCELLATION = 1e-3  # σ² below this fraction of E[x²]: recompute σ from centred values (else ~ε·E[x²]/σ² off)


def dls_statistics(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(Φ, Φ′)`` of each sample of ``x`` (axis 0), detached, in float32 at least (bfloat16 inputs are promoted):
    two (N, 4) tensors of ``(μ, σ, min, max)`` and ``(|μ|, σ, min, max)`` (σ without Bessel's correction)."""
    dtype = torch.promote_types(x.dtype, torch.float32)
    flat = x.detach().reshape(x.shape[0], -1)
    count = flat.shape[1]
    lo, hi = flat.amin(dim=1).to(dtype), flat.amax(dim=1).to(dtype)
    mean = flat.sum(dim=1, dtype=dtype) / count  # one pass, no copy: σ² = E[x²] − μ² ...
    square = torch.linalg.vector_norm(flat, dim=1, dtype=dtype).square_() / count
    var = square - mean.square()
    close = var < _CANCELLATION * square  # ... unless |μ| ≫ σ, where that difference cancels: two passes there
    if bool(close.any()):
        rows = flat[close].to(dtype, copy=True)
        centred = rows.sub_(rows.sum(dim=1, keepdim=True) / count)
        var[close] = torch.linalg.vector_norm(centred, dim=1).square_() / count
    std = var.clamp_min_(0).sqrt_()
    return torch.stack([mean, std, lo, hi], dim=1), torch.stack([mean.abs(), std, lo, hi], dim=1)


def dls_range(x: torch.Tensor, w1: torch.Tensor, w2: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-sample ``(lower, upper) = (β̂ − α̂, β̂ + α̂)``, shaped (N, 1, …) to broadcast against ``x``."""
    phi, phi_abs = dls_statistics(x)
    alpha = (phi_abs @ w1.to(phi.dtype)).abs().clamp_min(DLS_FLOOR)
    beta = phi @ w2.to(phi.dtype)
    shape = (-1,) + (1,) * (x.dim() - 1)
    return (beta - alpha).view(shape), (beta + alpha).view(shape)


@GRIDS.register("dls")
class DLSGrid(Grid):
    """DLS with the default initialisation [μ − 3σ, μ + 3σ] (subclasses: the other rows of Table 6).

    Per tensor only (an activation grid). Calibration sets nothing (the initialisation is the table's, data-free);
    ``bounds`` has no fixed range to give (NaN): the range is the input's."""

    params = ("w1", "w2")
    unitless = ("w1", "w2")  # coefficients on the input's statistics
    observer = "minmax"
    init_w1: tuple[float, ...] = (0.0, 3.0, 0.0, 0.0)
    init_w2: tuple[float, ...] = (1.0, 0.0, 0.0, 0.0)

    def init(self, shape: tuple[int, ...]) -> Params:
        if shape != ():
            raise ValueError("DLS is a per-tensor activation grid; use another grid for weights")
        return {"w1": torch.tensor(self.init_w1), "w2": torch.tensor(self.init_w2)}

    def fit(self, lower: torch.Tensor, upper: torch.Tensor, bits: int | None = None) -> Params:
        return {}  # the range comes from each input; w₁, w₂ keep their (initial or trained) values

    def project_(self, p: Params) -> None:
        pass

    def bounds(self, p: Params, bits: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        nan = torch.tensor(math.nan)
        return nan, nan

    def quantize(self, x: torch.Tensor, p: Params, bits: int | torch.Tensor, rounding: RoundFn) -> torch.Tensor:
        lower, upper = dls_range(x, p["w1"], p["w2"])
        if fusable(rounding):
            return fake_quant_range(x, lower.to(x.dtype), upper.to(x.dtype), int(bits))
        return fake_quant(x, lower.to(x.dtype), upper.to(x.dtype), bits, rounding)

    def quantize_fwd(self, x: torch.Tensor, p: Params, bits: int) -> torch.Tensor:
        with torch.no_grad():
            return self.quantize(x, p, bits, torch.round)


@GRIDS.register("dls_4sigma")
class DLS4SigmaGrid(DLSGrid):
    """DLS initialised at [μ − 4σ, μ + 4σ] (Table 6, group 2)."""

    init_w1 = (0.0, 4.0, 0.0, 0.0)


@GRIDS.register("dls_minmax")
class DLSMinMaxGrid(DLSGrid):
    """DLS initialised at [min, max] (Table 6, group 3)."""

    init_w1 = (0.0, 0.0, -0.5, 0.5)
    init_w2 = (0.0, 0.0, 0.5, 0.5)


@GRIDS.register("dls_mean_range")
class DLSMeanRangeGrid(DLSGrid):
    """DLS initialised at [μ − ½(max − min), μ + ½(max − min)] (Table 6, group 4)."""

    init_w1 = (0.0, 0.0, -0.5, 0.5)


@GRIDS.register("dls_mse")
class DLSMSEGrid(DLSGrid):
    """DLS initialised at the MSE-optimal range of the calibration data: ``[μ + l·σ, μ + u·σ]`` with the ``(l, u)``
    that minimise the ``bits``-bit quantization error of the per-sample standardised values seen at calibration
    (:class:`~srq.quant.observers.StandardisedMSEObserver`), i.e. ``w₁ = (0, (u − l)/2, 0, 0)`` and
    ``w₂ = (1, (u + l)/2, 0, 0)``. Not in the paper (srq's choice where it is silent; docs/methods.md). Before
    calibration it is ``dls``'s [μ − 3σ, μ + 3σ]."""

    observer = "dls_mse"

    def fit(self, lower: torch.Tensor, upper: torch.Tensor, bits: int | None = None) -> Params:
        lo, hi = float(lower.reshape(-1)[0]), float(upper.reshape(-1)[0])
        return {"w1": torch.tensor([0.0, (hi - lo) / 2, 0.0, 0.0]), "w2": torch.tensor([1.0, (hi + lo) / 2, 0.0, 0.0])}
