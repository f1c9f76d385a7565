"""Quantized layers: ``QuantConv2d`` / ``QuantLinear`` / ``QuantConvTranspose2d`` carry a weight quantizer and an
input quantizer; ``WeightPointQuantizer`` quantizes a raw weight parameter a model marks with a ``WeightPoint``.

They subclass ``nn.Conv2d`` / ``nn.Linear`` and keep the same parameter names, so a quantized model's
state dict holds the original weights plus the quantizers' bounds. A method can add a
``weight_delta`` module (``fn(weight) -> increment``, e.g. SPR²Q's low-rank rectifiers) that is added to
the weight *before* the weight quantizer, without touching the layer code.

Without autograd (evaluation) the quantized weight is computed once and reused until the weight or the weight
quantizer (bounds, bits, mode, ...) change, as tracked by the tensors' in-place version counters. Layers with
a ``weight_delta`` are not cached: an increment may depend on more than its parameters (SPR²Q's dynamic
routing reads the layer input).
"""

from __future__ import annotations

import math
from typing import TypeVar

import torch
import torch.nn.functional as F
from torch import nn

from .quantizer import Quantizer

__all__ = ["QuantConv2d", "QuantConvTranspose2d", "QuantLinear", "QuantLayerMixin", "QUANT_LAYER_TYPES",
           "WeightPointQuantizer"]

_L = TypeVar("_L", bound="QuantLayerMixin")


def _weight_key(layer: "QuantLayerMixin", q: Quantizer) -> tuple[tuple, tuple] | None:
    """What ``Q_w(W)`` (``q`` the layer's weight quantizer) depends on: objects (compared by identity) and state
    (by value); None when it must not be cached (a ``weight_delta`` is attached, the quantizer observes or has
    per-batch extra bits)."""
    if layer.weight_delta is not None or q.calibrating or q.extra_bits is not None:
        return None
    tensors = [layer.weight, *q.parameters(), *q.buffers()]
    if any(t.is_inference() for t in tensors):  # no version counter
        return None
    state = (q.bits, q.mode, q.enabled, q.dan, q.dan_axis, q.channel_axis, torch.is_inference_mode_enabled(),
             *((t._version, t.data_ptr(), t.dtype, t.device) for t in tensors))
    return (q, *tensors), state


def _same_key(a: tuple[tuple, tuple], b: tuple[tuple, tuple]) -> bool:
    return len(a[0]) == len(b[0]) and all(x is y for x, y in zip(a[0], b[0])) and a[1] == b[1]


class QuantLayerMixin:
    """Shared behaviour: ``effective_weight()`` = Q_w(W + weight_delta(W)); the input goes through Q_a."""

    weight_quantizer: Quantizer | None
    input_quantizer: Quantizer | None
    output_quantizer: Quantizer | None  # requantizes the layer's output (QuantConfig.a_output_bits), else None
    weight_delta: nn.Module | None
    # provided by the nn.Module layer class the mixin is combined with
    weight: torch.Tensor
    _modules: dict[str, nn.Module | None]

    @classmethod
    def from_float(cls: type[_L], layer: nn.Module, weight_quantizer: Quantizer | None,
                   input_quantizer: Quantizer | None) -> _L:
        """The quantized twin of a float layer, sharing its parameters, buffers and settings (no copy)."""
        new = cls.__new__(cls)
        new.__dict__.update(layer.__dict__)
        new._modules = dict(layer._modules)
        new._init_quant(weight_quantizer, input_quantizer)
        return new

    def _init_quant(self, weight_quantizer: Quantizer | None, input_quantizer: Quantizer | None) -> None:
        self.weight_quantizer = weight_quantizer
        self.input_quantizer = input_quantizer
        self.output_quantizer = None
        self.weight_delta = None

    def float_weight(self) -> torch.Tensor:
        """The weight before quantization: W, plus the method's increment if one is attached."""
        w = self.weight
        return w + self.weight_delta(w) if self.weight_delta is not None else w

    def effective_weight(self) -> torch.Tensor:
        """``Q_w(W + weight_delta(W))``, shaped like the weight; cached while autograd is off (see the module
        docstring)."""
        if self.weight_quantizer is None:
            return self.float_weight()
        key = None if torch.is_grad_enabled() else _weight_key(self, self.weight_quantizer)
        cached = self.__dict__.get("_srq_weight_cache")
        if key is not None and cached is not None and _same_key(key, cached[0]):
            return cached[1]
        w = self.weight_quantizer(self.float_weight())
        if key is not None:
            self._srq_weight_cache = (key, w)
        return w

    def quantize_input(self, x: torch.Tensor) -> torch.Tensor:
        return self.input_quantizer(x) if self.input_quantizer is not None else x

    def quantize_output(self, y: torch.Tensor) -> torch.Tensor:
        return self.output_quantizer(y) if self.output_quantizer is not None else y


def in_weight_layout(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """``x`` (N, C, H, W) in ``weight``'s memory format where that is unambiguous (not for 1×1 kernels, whose
    strides fit both): a convolution's summation order follows the layouts, and on some CPUs (AVX2) a
    channels-last input to a contiguous layer sums in another order, which a quantized model's rounding can
    amplify. So the layer's layout, not the input's, decides."""
    last = weight.is_contiguous(memory_format=torch.channels_last)
    if last == weight.is_contiguous() or x.dim() != 4:
        return x
    return x.contiguous(memory_format=torch.channels_last if last else torch.contiguous_format)


class QuantConv2d(QuantLayerMixin, nn.Conv2d):
    """``nn.Conv2d`` computing ``conv(Q_a(x), Q_w(W))`` (then ``Q_out``, if set) in the layer's memory format
    (:func:`in_weight_layout`); build it with :meth:`from_float`."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = in_weight_layout(self.quantize_input(x), self.weight)
        return self.quantize_output(self._conv_forward(x, self.effective_weight(), self.bias))


class QuantLinear(QuantLayerMixin, nn.Linear):
    """``nn.Linear`` computing ``Q_a(x) @ Q_w(W)ᵀ + b`` (then ``Q_out``, if set); build it with :meth:`from_float`."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.quantize_output(F.linear(self.quantize_input(x), self.effective_weight(), self.bias))


class QuantConvTranspose2d(QuantLayerMixin, nn.ConvTranspose2d):
    """``nn.ConvTranspose2d`` with quantized input and weight (weight (in, out/groups, kh, kw): per-output-
    channel bounds are on axis 1); build it with :meth:`from_float`."""

    def forward(self, x: torch.Tensor, output_size: list[int] | None = None) -> torch.Tensor:
        # as nn.ConvTranspose2d.forward: torch's stubs ask lists (for TorchScript), the attributes are tuples, and
        # padding is never a string on a transposed convolution
        output_padding = self._output_padding(x, output_size,
                                              self.stride,  # type: ignore[arg-type]
                                              self.padding,  # type: ignore[arg-type]
                                              self.kernel_size,  # type: ignore[arg-type]
                                              2,
                                              self.dilation)  # type: ignore[arg-type]
        return self.quantize_output(F.conv_transpose2d(
            self.quantize_input(x), self.effective_weight(), self.bias, self.stride,
            self.padding,  # type: ignore[arg-type]  # never a string here (see above)
            output_padding, self.groups, self.dilation))


QUANT_LAYER_TYPES = (QuantConv2d, QuantLinear, QuantConvTranspose2d)


class WeightPointQuantizer(nn.Module):
    """What a :class:`srq.quant.markers.WeightPoint` becomes: ``w → Q_w(w)`` for the parameter ``param`` of the
    module that owns it, with per-channel bounds over the product of its first ``lead`` axes.

    ``quantizer`` sees the weight as a 2-D (channels, rest) matrix (``channel_axis`` 0); the result has the
    parameter's shape.
    """

    def __init__(self, quantizer: Quantizer, kind: str, param: str, lead: int) -> None:
        super().__init__()
        self.quantizer, self.kind, self.param, self.lead = quantizer, kind, param, lead

    def matrix(self, w: torch.Tensor) -> torch.Tensor:
        """``w`` as the (channels, rest) matrix the quantizer works on."""
        return w.reshape(math.prod(w.shape[:self.lead]), -1)

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        return self.quantizer(self.matrix(w)).reshape(w.shape)

    def extra_repr(self) -> str:
        return f"kind={self.kind!r}, param={self.param!r}, lead={self.lead}"
