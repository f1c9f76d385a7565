"""srq: ultra-low-bit quantization for image super-resolution networks."""

from . import data, methods, metrics, models, quant
from .api import load, quantize, save
from .errors import SrqError
from .models import create_model, list_models

__all__ = ["SrqError", "create_model", "data", "list_models", "load", "methods", "metrics", "models", "quant",
           "quantize", "save"]
__version__ = "0.1.0"
