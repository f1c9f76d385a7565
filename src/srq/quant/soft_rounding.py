"""Tanh soft rounding (QuantSR's backward, DSQ-style): ``round(z)`` forward, the slope of a tanh staircase backward.

``φ(z) = ⌊z⌋ + ½ + tanh(k·(r − ½)) / (2·tanh(k/2))``, ``r = z − ⌊z⌋``, is a smooth staircase through the
half-integers with the integers' steps; its slope ``k·(1 − tanh²(k(r − ½))) / (2·tanh(k/2))`` (1.0 on average over
a step, ``k/(2·tanh(k/2))`` at a rounding boundary, small at the integers) is the gradient passed back.
"""

from __future__ import annotations

import math

import torch

from .rounding import ROUNDINGS, Rounding

__all__ = ["TanhRounding", "tanh_round", "TANH_TEMPERATURE"]

TANH_TEMPERATURE = 4.0  # k: larger is closer to the true staircase (sharper gradients near the boundaries)


def tanh_round(z: torch.Tensor, k: float = TANH_TEMPERATURE) -> torch.Tensor:
    """``round(z)`` whose gradient is ``φ′(z)`` (see the module docstring)."""
    floor = torch.floor(z).detach()
    soft = floor + 0.5 + torch.tanh(k * (z - floor - 0.5)) / (2 * math.tanh(k / 2))
    return torch.round(z).detach() + (soft - soft.detach())


@ROUNDINGS.register("tanh")
class TanhRounding(Rounding):
    """Forward ``round``, backward the slope of the tanh staircase (temperature :data:`TANH_TEMPERATURE`)."""

    def __call__(self, z: torch.Tensor) -> torch.Tensor:
        return tanh_round(z)
