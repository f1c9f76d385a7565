"""Quantization methods as recipes: ``srq.quantize(model, srq.methods.MinMax(w_bits=4, a_bits=4), calib)``."""

from .base import Recipe
from .ptq import OMSE, MinMax, Percentile

METHODS = {
    "minmax": lambda **kw: MinMax(**kw),
    "percentile": lambda **kw: Percentile(**kw),
    "omse": lambda **kw: OMSE(**kw),
    "minmax_ft": lambda **kw: MinMax(fine_tune=True, **kw),
    "percentile_ft": lambda **kw: Percentile(fine_tune=True, **kw),
}

__all__ = ["METHODS", "OMSE", "MinMax", "Percentile", "Recipe"]
