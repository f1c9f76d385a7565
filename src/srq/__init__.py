"""srq: ultra-low-bit quantization for image super-resolution networks.

The public names below are imported on first use (``srq.load`` imports torch and the model zoo then), so that
``import srq.cli`` — and with it ``srq --help`` or a mistyped option — does not pay for torch.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from ._version import __version__
from .errors import SrqError

if TYPE_CHECKING:
    from . import data, methods, metrics, models, pipeline, quant
    from .api import load, quantize, save
    from .engine.evaluate import evaluate
    from .models import create_model, list_models

_SUBMODULES = ("data", "methods", "metrics", "models", "pipeline", "quant")
_FUNCTIONS = {"load": "api", "quantize": "api", "save": "api", "evaluate": "engine.evaluate",
              "create_model": "models", "list_models": "models"}

__all__ = ["__version__", "SrqError", "create_model", "data", "evaluate", "list_models", "load", "methods",
           "metrics", "models", "pipeline", "quant", "quantize", "save"]


def __getattr__(name: str) -> Any:
    if name in _SUBMODULES:
        value: Any = importlib.import_module(f".{name}", __name__)
    elif name in _FUNCTIONS:
        value = getattr(importlib.import_module(f".{_FUNCTIONS[name]}", __name__), name)
    else:
        raise AttributeError(f"module 'srq' has no attribute {name!r}")
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
