"""Markers for tensor points inside a model where quantization may later act.

Layer inputs and weights are found by the quantization core on its own (every ``nn.Conv2d``/``nn.Linear``).
Other operands — attention queries/keys/values and probabilities, selective-scan inputs — are marked by the
architecture with a named :class:`QuantPoint`, an identity in full precision; weights a model keeps as raw
parameters and applies itself (Mamba's ``x_proj_weight`` in an ``einsum``) are marked with a
:class:`WeightPoint`. The quantization core replaces these modules by quantizers, so models carry no
quantization code.
"""

from __future__ import annotations

from torch import nn

__all__ = ["QuantPoint", "WeightPoint"]


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


class WeightPoint(nn.Identity):
    """Identity that marks a raw weight parameter as a weight-quantization point.

    The model applies it to the whole parameter where it uses it, e.g.
    ``w = self.x_proj_point(self.x_proj_weight)``. ``param`` is that parameter's attribute name on the module
    that owns this marker (cost accounting and the packed format find it there; state-dict keys stay the
    model's own). The first ``lead`` axes of the parameter index its output channels (per-channel bounds are
    over their product): ``x_proj_weight`` (K, C_out, C_in) has ``lead=2``. ``kind`` names the weight
    (e.g. ``"scan_x_proj"``).
    """

    def __init__(self, kind: str, param: str, lead: int = 1) -> None:
        super().__init__()
        if lead < 1:
            raise ValueError(f"lead must be at least 1, got {lead}")
        self.kind, self.param, self.lead = kind, param, lead

    def extra_repr(self) -> str:
        return f"kind={self.kind!r}, param={self.param!r}, lead={self.lead}"
