"""Markers for tensor points inside a model where quantization may later act.

Layer inputs are found by the quantization core on its own (every ``nn.Conv2d``/``nn.Linear``). Other
operands — attention queries/keys/values and probabilities, selective-scan inputs — are marked by the
architecture with a named :class:`QuantPoint`, an identity in full precision. The quantization core
replaces these modules by activation quantizers, so models carry no quantization code.
"""

from __future__ import annotations

from torch import nn

__all__ = ["QuantPoint"]


class QuantPoint(nn.Identity):
    """Identity that marks a tensor as a possible activation-quantization point.

    ``kind`` says what the tensor is (e.g. ``"attn_q"``, ``"attn_prob"``, ``"scan_x"``, ``"scan_dt"``),
    so placements can select points by kind; it does not change the forward pass.
    """

    def __init__(self, kind: str) -> None:
        super().__init__()
        self.kind = kind

    def extra_repr(self) -> str:
        return f"kind={self.kind!r}"
