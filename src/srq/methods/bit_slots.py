"""Bit slots: the body quantizers that take part in a bit allocation, and their weights in the bit budget.

Shared by the mixed-precision methods (GBA's allocation, AdaBM's bit mapping).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import cast

import torch
from torch import nn

from ..quant import Quantizer, layer_costs, quantizers
from ..quant.layers import QUANT_LAYER_TYPES, QuantLayerMixin

__all__ = ["BitSlot", "bit_slots", "activation_elements", "budget_sizes"]


@dataclass
class BitSlot:
    """One quantizer that takes part in the allocation: ``owner`` is the layer (or QuantPoint) name."""

    owner: str
    kind: str  # "w" or "a"
    quantizer: Quantizer


def bit_slots(qmodel: nn.Module, kind: str) -> list[BitSlot]:
    """The body quantizers of ``kind`` ("w" or "a") on a uniform/affine grid, in module order.

    First/last layers (``srq_role``) are left out; activation slots include QuantPoint operands.
    """
    slots = []
    for name, m in qmodel.named_modules():
        if isinstance(m, QUANT_LAYER_TYPES) and getattr(m, "srq_role", "body") == "body":
            q = m.weight_quantizer if kind == "w" else m.input_quantizer
            if q is not None and q.mode in ("uniform", "affine"):
                slots.append(BitSlot(name, kind, q))
        elif kind == "a" and isinstance(m, Quantizer) and hasattr(m, "srq_point_kind") \
                and m.mode in ("uniform", "affine"):
            slots.append(BitSlot(name, kind, m))
    return slots


@torch.no_grad()
def activation_elements(qmodel: nn.Module, slots: list[BitSlot], example: torch.Tensor) -> list[float]:
    """Elements each activation quantizer sees per LR pixel of ``example`` ((1, 3, h, w)), summed over calls."""
    counts = {id(s.quantizer): 0 for s in slots}
    handles = [s.quantizer.register_forward_hook(
        lambda m, i, o: counts.__setitem__(id(m), counts[id(m)] + i[0].numel())) for s in slots]
    everything = [q for _, q in quantizers(qmodel)]
    enabled = [q.enabled for q in everything]
    try:
        for q in everything:
            q.enabled = False  # counting needs no quantization (and works before calibration)
        qmodel(example.to(next(qmodel.parameters()).device))
    finally:
        for h in handles:
            h.remove()
        for q, on in zip(everything, enabled):
            q.enabled = on
    pixels = example.shape[0] * example.shape[-2] * example.shape[-1]
    return [counts[id(s.quantizer)] / pixels for s in slots]


def budget_sizes(qmodel: nn.Module, slots: list[BitSlot], example: torch.Tensor, by: str = "size") -> list[float]:
    """Each slot's weight in the bit budget (all slots of one kind); ``example``: (1, 3, h, w).

    ``by="size"``: parameters for weight slots, activation elements per LR pixel of ``example`` for activation
    slots. ``by="bitops"``: MACs per LR pixel of the layer the slot belongs to × the bits of that layer's other
    side as they are now (a weight slot × its input's bits, an activation slot × its weight's bits), so that
    the weighted average at the base keeps BitOPs (:mod:`srq.quant.cost`) at those of uniform bits; 0 for a slot
    BitOPs do not see (a ``QuantPoint`` operand, which feeds no Conv/Linear).
    """
    if by == "bitops":
        pixels = example.shape[-2] * example.shape[-1]
        costs = {c.name: c for c in layer_costs(qmodel, input_size=(example.shape[-2], example.shape[-1]))}
        other = {"w": "a_bits", "a": "w_bits"}
        return [costs[s.owner].macs * getattr(costs[s.owner], other[s.kind]) / pixels if s.owner in costs else 0.0
                for s in slots]
    if by != "size":
        raise ValueError(f"by must be 'size' or 'bitops', got {by!r}")
    if slots and slots[0].kind == "a":
        return activation_elements(qmodel, slots, example)
    # weight slots belong to quantized layers (bit_slots)
    return [float(cast(QuantLayerMixin, qmodel.get_submodule(s.owner)).weight.numel()) for s in slots]
