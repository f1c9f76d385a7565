"""Quantization core: fake-quant functions, observers, quantizers (composed of registered parts: ``GRIDS``,
``ROUNDINGS``, ``BITWIDTHS``, ``NORMALISERS``), quantized layers, model surgery, calibration and cost accounting.
Works on any ``nn.Module``; models know nothing about it."""

from .bitwidth import BITWIDTHS
from .calibrate import calibrate, calibrate_activations, calibrate_weights
from .config import LayerRule, QuantConfig, parse_bits
from .cost import LayerCost, ModelCost, layer_costs, model_cost
from .functional import binarize, fake_quant, fake_quant_affine, fake_quant_symmetric, round_ste
from .grids import GRIDS
from .layers import QuantConv2d, QuantConvTranspose2d, QuantLinear
from .normalisers import NORMALISERS
from .observers import EMAMinMaxObserver, MinMaxObserver, OMSEObserver, PercentileObserver, make_observer
from .prepare import FloatLayer, PlacementEntry, float_layers, format_placement, placement, prepare, quantizers
from .quantizer import Quantizer
from .rounding import ROUNDINGS

__all__ = [
    "BITWIDTHS", "GRIDS", "NORMALISERS", "ROUNDINGS",
    "EMAMinMaxObserver", "FloatLayer", "float_layers", "LayerCost", "LayerRule", "ModelCost", "layer_costs",
    "model_cost", "MinMaxObserver", "OMSEObserver", "PercentileObserver", "PlacementEntry",
    "QuantConfig", "QuantConv2d", "QuantConvTranspose2d", "QuantLinear", "Quantizer", "binarize", "calibrate",
    "calibrate_activations", "calibrate_weights", "fake_quant", "fake_quant_affine", "fake_quant_symmetric",
    "format_placement", "make_observer", "parse_bits", "placement", "prepare", "quantizers", "round_ste",
]
