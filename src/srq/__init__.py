"""srq: ultra-low-bit quantization for image super-resolution networks."""

from . import data, metrics, models
from .errors import SrqError
from .models import create_model, list_models

__all__ = ["SrqError", "create_model", "data", "list_models", "metrics", "models"]
__version__ = "0.1.0"
