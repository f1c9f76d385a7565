"""Quantization methods as recipes: ``srq.quantize(model, srq.methods.MinMax(w_bits=4, a_bits=4), calib)``.

Every method registers itself (:func:`~srq.methods.registry.register_method`); ``METHODS`` maps each
registered name to a factory of its recipe (``METHODS["gba_star"](w_bits=4)`` is ``GBA(mp_weights=True, w_bits=4)``).
"""

from .adabm import AdaBM
from .base import Recipe
from .gba import GBA
from .ptq import OMSE, MinMax, Percentile
from .ptq4sr import PTQ4SR
from .qmambair import QMambaIR
from .qat import LSQ, PAMS, DoReFa, LSQPlus
from .quantsr import QuantSR
from .quantsr_plus import QuantSRPlus
from .registry import get_method, list_methods, register_method
from .spr2q import SPR2Q

METHODS = {info.name: info.create for info in list_methods()}

__all__ = ["AdaBM", "DoReFa", "GBA", "LSQ", "LSQPlus", "METHODS", "OMSE", "PAMS", "PTQ4SR", "MinMax", "Percentile",
           "QMambaIR", "QuantSR", "QuantSRPlus", "Recipe", "SPR2Q", "get_method", "list_methods", "register_method"]
