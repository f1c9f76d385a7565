"""Bit-width parts: the integer width ``n`` and the learnable continuous offset ``s`` some methods add to it."""

from __future__ import annotations

import torch

from .registry import Registry

__all__ = ["BITWIDTHS", "FixedBits", "OffsetBits"]

BITWIDTHS = Registry("bit width")


@BITWIDTHS.register("fixed")
class FixedBits:
    """An integer width ``bits`` (1 … 8)."""

    name: str
    params: tuple[str, ...] = ()  # the quantizer's nn.Parameters this part reads

    def __init__(self, bits: int) -> None:
        self.bits = bits

    def init(self) -> dict[str, torch.Tensor]:
        """Initial values of :attr:`params`."""
        return {}

    def value(self, p: dict[str, torch.Tensor]) -> int | torch.Tensor:
        """The width: an int, or a tensor () while it is learnable."""
        return self.bits

    def project_(self, p: dict[str, torch.Tensor]) -> None:
        """Keep learnable parameters in their range after an optimiser step, in place."""


@BITWIDTHS.register("offset")
class OffsetBits(FixedBits):
    """``bits + s`` with a learnable continuous offset ``s`` (parameter ``bit_offset``, initially 0) kept in
    ``low … high`` (clipped so that the width stays in 1 … 8; must contain 0). A grid of ``2^(bits + s) − 1``
    steps makes ``∂L/∂s`` the loss change per extra bit (GBA)."""

    params = ("bit_offset",)

    def __init__(self, bits: int, low: float | None = None, high: float | None = None) -> None:
        super().__init__(bits)
        lo, hi = 1 - bits, 8 - bits
        self.range = (lo if low is None else max(lo, low), hi if high is None else min(hi, high))
        if self.range[0] > 0 or self.range[1] < 0:
            raise ValueError(f"the bit offset range {low} … {high} must contain 0")

    def init(self) -> dict[str, torch.Tensor]:
        return {"bit_offset": torch.zeros(())}

    def value(self, p: dict[str, torch.Tensor]) -> int | torch.Tensor:
        return self.bits + p["bit_offset"]

    def project_(self, p: dict[str, torch.Tensor]) -> None:
        """Clamp ``s`` into its range (one SGD step at lr 0.1 could otherwise send it past 100 bits, where
        ``2^bits`` overflows and every later gradient is non-finite)."""
        p["bit_offset"].clamp_(*self.range)
