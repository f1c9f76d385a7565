"""Rounding estimators: ``round(z)`` forward, a chosen surrogate gradient backward."""

from __future__ import annotations

import torch

from .functional import round_ste
from .registry import Registry

__all__ = ["ROUNDINGS", "Rounding", "STE"]

ROUNDINGS = Registry("rounding")


class Rounding:
    """Maps real grid coordinates ``z`` (units of one step) to integers in the forward pass."""

    name: str

    def __call__(self, z: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError


@ROUNDINGS.register("ste")
class STE(Rounding):
    """Straight-through estimator: ``round(z)`` forward, identity gradient backward."""

    def __call__(self, z: torch.Tensor) -> torch.Tensor:
        return round_ste(z)
