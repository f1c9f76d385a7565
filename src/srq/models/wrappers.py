"""Adapters that give every zoo model the same contract: RGB float NCHW in [0, 1] -> RGB [0, 1].

* :class:`PixelRangeWrapper` for checkpoints trained on [0, 255] pixels; :func:`wrap` is the way to declare the
  pixel range of a model of your own (``srq.models.wrap(net, pixel_range=255)``).
* :class:`YChannelWrapper` for luma-only models (FSRCNN): the network upsamples Y (BT.601, as MATLAB
  ``rgb2ycbcr``), Cb and Cr are upsampled with MATLAB-exact bicubic, and the result goes back to RGB.
* :class:`GreyWrapper` for 1-channel restoration models (DnCNN-3): the network runs on the channel mean (the
  grey image itself when R = G = B, as the JPEG task's inputs are) and its output is copied to R, G and B.
The wrapped network stays reachable as ``.net`` so its state dict keeps the official key names.
"""

from __future__ import annotations

import torch
from torch import nn

from ..data.bicubic import imresize
from ..errors import SrqError
from ..metrics.color import rgb_to_ycbcr, ycbcr_to_rgb

__all__ = ["PixelRangeWrapper", "YChannelWrapper", "GreyWrapper", "wrap", "wrap_model", "pixel_range"]


class PixelRangeWrapper(nn.Module):
    """Scale [0, 1] input to ``[0, pixel_range]`` for ``net`` and its output back to [0, 1]."""

    def __init__(self, net: nn.Module, pixel_range: float) -> None:
        super().__init__()
        self.net = net
        self.pixel_range = float(pixel_range)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x * self.pixel_range) / self.pixel_range


def pixel_range(model: nn.Module) -> float:
    """The pixel range ``model``'s layers compute in: its :class:`PixelRangeWrapper`'s (255 for a [0, 255]
    checkpoint), else 1."""
    return next((m.pixel_range for m in model.modules() if isinstance(m, PixelRangeWrapper)), 1.0)


def wrap(net: nn.Module, pixel_range: float = 1.0) -> nn.Module:
    """Declare the pixel range ``net`` was trained on; returns a model that takes and returns [0, 1] pixels.

    ``pixel_range`` 1.0 returns ``net`` itself; 255.0 (or any other positive value) wraps it in a
    :class:`PixelRangeWrapper` (input × 255, output ÷ 255), whose ``.net`` is ``net``: load a [0, 255]
    checkpoint into ``net`` (its own key names), then quantize, save and load the wrapped model.
    """
    if isinstance(pixel_range, bool) or not isinstance(pixel_range, (int, float)) or not pixel_range > 0:
        raise SrqError(f"pixel_range must be a positive number (1 for [0, 1] pixels, 255 for [0, 255]), "
                       f"not {pixel_range!r}")
    if not isinstance(net, nn.Module):
        raise SrqError(f"srq.models.wrap takes an nn.Module, not a {type(net).__name__}")
    return net if float(pixel_range) == 1.0 else PixelRangeWrapper(net, float(pixel_range))


class YChannelWrapper(nn.Module):
    """Run a 1-channel (Y) SR network on RGB input; chroma comes from bicubic upsampling.

    Input/output: (N, 3, H, W) / (N, 3, sH, sW), RGB in [0, 1].
    """

    def __init__(self, net: nn.Module, scale: int) -> None:
        super().__init__()
        self.net = net
        self.scale = int(scale)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        ycc = rgb_to_ycbcr(x)
        y_sr = self.net(ycc[:, :1])
        cbcr = imresize(ycc[:, 1:], scale=self.scale)
        return ycbcr_to_rgb(torch.cat([y_sr, cbcr], dim=1))


class GreyWrapper(nn.Module):
    """Run a 1-channel (grey) restoration network on RGB input: (N, 3, H, W) → (N, 3, H, W), [0, 1].

    The network sees the mean of R, G and B (the grey image for grey input) and its output fills all three channels.
    """

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x.mean(dim=1, keepdim=True)).repeat(1, 3, 1, 1)


def wrap_model(net: nn.Module, info, scale: int) -> nn.Module:
    """Apply the wrappers ``info`` (a :class:`~srq.models.registry.ModelInfo`) calls for."""
    if info.pixel_range != 1.0:
        net = PixelRangeWrapper(net, info.pixel_range)
    if info.color == "y":
        net = YChannelWrapper(net, scale)
    if info.color == "grey":
        net = GreyWrapper(net)
    return net
