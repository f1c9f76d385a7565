"""srq: ultra-low-bit quantization for image super-resolution networks."""

from . import data, methods, metrics, models, pipeline, quant
from ._version import __version__
from .api import load, quantize, save
from .engine.evaluate import evaluate
from .errors import SrqError
from .models import create_model, list_models

__all__ = ["__version__", "SrqError", "create_model", "data", "evaluate", "list_models", "load", "methods",
           "metrics", "models", "pipeline", "quant", "quantize", "save"]
