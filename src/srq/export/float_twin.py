"""The float model inside a quantized one: the same weights with every quantizer taken out."""

from __future__ import annotations

import copy

from torch import nn

from ..quant.layers import QUANT_LAYER_TYPES, QuantConv2d, QuantConvTranspose2d, QuantLinear, WeightPointQuantizer
from ..quant.quantizer import Quantizer

__all__ = ["float_twin"]

_FLOAT_OF = {QuantConv2d: nn.Conv2d, QuantLinear: nn.Linear, QuantConvTranspose2d: nn.ConvTranspose2d}
_QUANT_ATTRS = ("weight_quantizer", "input_quantizer", "output_quantizer", "weight_delta", "srq_role",
                "srq_float_reason", "_srq_weight_cache")


def float_twin(model: nn.Module) -> nn.Module:
    """A copy of quantized ``model`` computing in float with its stored (unquantized) weights: quantized layers
    become plain ``nn.Conv2d`` / ``nn.Linear`` / ``nn.ConvTranspose2d``, activation quantizers and quantizers of
    marked raw weights ``nn.Identity``.
    A ``weight_delta`` (SPR²Q's increments) is folded into the weight. The input model is not modified."""
    twin = copy.deepcopy(model)
    swaps: list[tuple[str, nn.Module]] = []
    inside: tuple[str, ...] = ()
    for name, m in twin.named_modules():
        if inside and name.startswith(inside):
            continue
        if isinstance(m, QUANT_LAYER_TYPES):
            cls = next(f for q, f in _FLOAT_OF.items() if isinstance(m, q))
            new: nn.Module = nn.Module.__new__(cls)
            state = {k: v for k, v in m.__dict__.items() if k not in _QUANT_ATTRS}
            state["_modules"] = {k: v for k, v in m._modules.items() if k not in _QUANT_ATTRS}
            new.__dict__.update(state)
            if m.weight_delta is not None:
                new.weight = nn.Parameter(m.float_weight().detach().clone())
            swaps.append((name, new))
            inside += (name + ".",)
        elif isinstance(m, (Quantizer, WeightPointQuantizer)):
            swaps.append((name, nn.Identity()))
            inside += (name + ".",)
    for name, new in swaps:
        parent_name, _, child = name.rpartition(".")
        setattr(twin.get_submodule(parent_name) if parent_name else twin, child, new)
    for attr in ("srq_quant_config", "srq_example_shape"):
        twin.__dict__.pop(attr, None)
    return twin.eval()
