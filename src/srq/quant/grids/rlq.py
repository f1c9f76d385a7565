"""QuantSR's quantizers (Qin et al., NeurIPS 2023) on srq's grids: tanh soft rounding in the backward pass, and RLQ,
the redistribution-driven learnable quantizer (a learnable per-channel shift before a learned-step quantizer).

* ``lsq_tanh``: LSQ's learned step (weights per channel) with :func:`~srq.quant.soft_rounding.tanh_round`.
* ``rlq`` (activations): ``Q(x) = s·round(clip((x − τ_c − β)/s, 0, 2ⁿ − 1)) + τ_c + β`` with the tanh backward: a
  learnable step ``s`` and offset ``β`` per tensor (LSQ+'s, min/max init, with its gradient scale) and a learnable
  shift ``τ_c`` per input channel (0 at init) that redistributes each channel before the shared grid. ``τ`` is
  per tensor (one value) for marked operands, whose channel layout srq does not know.
"""

from __future__ import annotations

import torch

from ..functional import RoundFn
from ..soft_rounding import TANH_TEMPERATURE, tanh_round
from . import base
from .base import GRIDS, Grid, Params
from .lsq import LSQGrid
from .lsqplus import LSQPlusGrid
from .soft_step import soft_step_quant

__all__ = ["LSQTanhGrid", "RLQGrid"]


@GRIDS.register("lsq_tanh")
class LSQTanhGrid(LSQGrid):
    """LSQ with QuantSR's tanh soft rounding in the backward pass (the rounding estimator asked for is ignored)."""

    def quantize(self, x: torch.Tensor, p: Params, bits: int | torch.Tensor, rounding: RoundFn,
                 samples: int = 1) -> torch.Tensor:
        return super().quantize(x, p, bits, tanh_round, samples=samples)


@GRIDS.register("rlq")
class RLQGrid(Grid):
    """LSQ+'s step and offset (its init, projection and range), a per-channel shift ``shift`` (channel axis in the
    ``shift_axis`` buffer), tanh backward. Activations only."""

    params = ("step", "offset", "shift", "shift_axis")
    buffers = ("shift_axis",)
    counts_samples = True
    _lsqplus = LSQPlusGrid()

    def init(self, shape: tuple[int, ...]) -> Params:
        return self.init_sized(shape, 8)

    def init_sized(self, shape: tuple[int, ...], bits: int, channels: int = 0, axis: int = 1) -> Params:
        if shape != ():
            raise ValueError("RLQ is a per-tensor activation grid (with per-channel shifts)")
        return {**self._lsqplus.init(shape), "shift": torch.zeros(max(channels, 1)),
                "shift_axis": torch.tensor(axis if channels else 0)}

    def fit(self, lower: torch.Tensor, upper: torch.Tensor, bits: int | None = None) -> Params:
        return self._lsqplus.fit(lower, upper, bits)  # the shifts start at 0

    def project_(self, p: Params) -> None:
        self._lsqplus.project_(p)

    def bounds(self, p: Params, bits: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        return self._lsqplus.bounds(p, bits)  # before the per-channel shifts

    def _shift(self, x: torch.Tensor, p: Params) -> torch.Tensor:
        shift = p["shift"]
        if shift.numel() == 1:
            return shift.reshape(())
        view = [1] * x.dim()
        view[int(p["shift_axis"]) % x.dim()] = -1
        return shift.reshape(view)

    def quantize(self, x: torch.Tensor, p: Params, bits: int | torch.Tensor, rounding: RoundFn,
                 samples: int = 1) -> torch.Tensor:
        tau = self._shift(x, p).to(x.dtype)
        qp, s, beta = self._lsqplus.scaled(x, p, bits, samples)
        if base.FUSED:
            return soft_step_quant(x, s, beta, tau, qp, TANH_TEMPERATURE)
        return tanh_round(torch.clamp((x - tau - beta) / s, 0, qp)) * s + beta + tau  # the same, composed

    def quantize_fwd(self, x: torch.Tensor, p: Params, bits: int) -> torch.Tensor:
        with torch.no_grad():
            return self.quantize(x, p, bits, torch.round)
