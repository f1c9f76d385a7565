"""Quantization methods as recipes: ``srq.quantize(model, srq.methods.MinMax(w_bits=4, a_bits=4), calib)``."""

from .adabm import AdaBM
from .base import Recipe
from .gba import GBA
from .ptq import OMSE, MinMax, Percentile
from .ptq4sr import PTQ4SR
from .spr2q import SPR2Q

METHODS = {
    "minmax": lambda **kw: MinMax(**kw),
    "percentile": lambda **kw: Percentile(**kw),
    "omse": lambda **kw: OMSE(**kw),
    "minmax_ft": lambda **kw: MinMax(fine_tune=True, **kw),
    "percentile_ft": lambda **kw: Percentile(fine_tune=True, **kw),
    "ptq4sr": lambda **kw: PTQ4SR(**kw),
    "adabm": lambda **kw: AdaBM(**kw),  # image- and layer-adaptive activation bits
    "adabm_star": lambda **kw: AdaBM(mp_weights=True, **kw),  # layer-adaptive weight bits too
    "gba": lambda **kw: GBA(**kw),  # mixed precision on activations ("4/4MP")
    "gba_star": lambda **kw: GBA(mp_weights=True, **kw),  # on weights and activations ("4MP/4MP")
    "spr2q": lambda **kw: SPR2Q(**kw),  # low-rank rectifier groups fused before quantization
}

__all__ = ["AdaBM", "GBA", "METHODS", "OMSE", "PTQ4SR", "MinMax", "Percentile", "Recipe", "SPR2Q"]
