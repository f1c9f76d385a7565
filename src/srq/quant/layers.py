"""Quantized layers: ``QuantConv2d`` / ``QuantLinear`` / ``QuantConvTranspose2d`` carry a weight quantizer and an input quantizer.

They subclass ``nn.Conv2d`` / ``nn.Linear`` and keep the same parameter names, so a quantized model's
state dict holds the original weights plus the quantizers' bounds. A method can add a
``weight_delta`` module (``fn(weight) -> increment``, e.g. SPR²Q's low-rank rectifiers) that is added to
the weight *before* the weight quantizer, without touching the layer code.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .quantizer import Quantizer

__all__ = ["QuantConv2d", "QuantConvTranspose2d", "QuantLinear", "QuantLayerMixin", "QUANT_LAYER_TYPES"]


class QuantLayerMixin:
    """Shared behaviour: ``effective_weight()`` = Q_w(W + weight_delta(W)); the input goes through Q_a."""

    weight_quantizer: Quantizer | None
    input_quantizer: Quantizer | None
    weight_delta: nn.Module | None

    @classmethod
    def from_float(cls, layer: nn.Module, weight_quantizer: Quantizer | None,
                   input_quantizer: Quantizer | None) -> "QuantLayerMixin":
        """The quantized twin of a float layer, sharing its parameters, buffers and settings (no copy)."""
        new = cls.__new__(cls)
        new.__dict__.update(layer.__dict__)
        new._modules = dict(layer._modules)
        new._init_quant(weight_quantizer, input_quantizer)
        return new

    def _init_quant(self, weight_quantizer: Quantizer | None, input_quantizer: Quantizer | None) -> None:
        self.weight_quantizer = weight_quantizer
        self.input_quantizer = input_quantizer
        self.weight_delta = None

    def float_weight(self) -> torch.Tensor:
        """The weight before quantization: W, plus the method's increment if one is attached."""
        w = self.weight
        return w + self.weight_delta(w) if self.weight_delta is not None else w

    def effective_weight(self) -> torch.Tensor:
        w = self.float_weight()
        return self.weight_quantizer(w) if self.weight_quantizer is not None else w

    def quantize_input(self, x: torch.Tensor) -> torch.Tensor:
        return self.input_quantizer(x) if self.input_quantizer is not None else x


class QuantConv2d(QuantLayerMixin, nn.Conv2d):
    """``nn.Conv2d`` computing ``conv(Q_a(x), Q_w(W))``; build it with :meth:`from_float`."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._conv_forward(self.quantize_input(x), self.effective_weight(), self.bias)


class QuantLinear(QuantLayerMixin, nn.Linear):
    """``nn.Linear`` computing ``Q_a(x) @ Q_w(W)ᵀ + b``; build it with :meth:`from_float`."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(self.quantize_input(x), self.effective_weight(), self.bias)


class QuantConvTranspose2d(QuantLayerMixin, nn.ConvTranspose2d):
    """``nn.ConvTranspose2d`` with quantized input and weight (weight (in, out/groups, kh, kw): per-output-
    channel bounds are on axis 1); build it with :meth:`from_float`."""

    def forward(self, x: torch.Tensor, output_size: list[int] | None = None) -> torch.Tensor:
        output_padding = self._output_padding(x, output_size, self.stride, self.padding, self.kernel_size,
                                              2, self.dilation)
        return F.conv_transpose2d(self.quantize_input(x), self.effective_weight(), self.bias, self.stride,
                                  self.padding, output_padding, self.groups, self.dilation)


QUANT_LAYER_TYPES = (QuantConv2d, QuantLinear, QuantConvTranspose2d)
