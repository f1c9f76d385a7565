"""Denoising / JPEG-deblocking CNNs of Zhang et al.: DnCNN (TIP 2017) and FFDNet (TIP 2018).

Key-compatible with the KAIR releases (github.com/cszn/KAIR, ``models/network_dncnn.py`` and
``network_ffdnet.py``): a flat ``model`` Sequential whose convolutions are ``model.{2i}`` (ReLU between, BatchNorm
already folded). DnCNN-3's MatConvNet file (cszn/DnCNN ``model/DnCNN3.mat``) reads into the same keys
(:mod:`srq.models.matconvnet`). All are registered at scale 1; inputs and outputs are RGB in [0, 1], NCHW.

* DnCNN is **residual**: clean = x − net(x).
* FFDNet is **non-blind**: ``sigma`` (8-bit scale) is an architecture keyword, fed as a constant σ/255 map beside
  the 2×2 pixel-unshuffled image; odd sizes are replicate-padded to even and the output cropped back.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .registry import register_model

__all__ = ["DnCNN", "FFDNet", "cdncnn_b", "ffdnet_color", "dncnn3"]


def _conv_relu_chain(in_ch: int, out_ch: int, channels: int, convs: int) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i in range(convs):
        layers.append(nn.Conv2d(in_ch if i == 0 else channels, out_ch if i == convs - 1 else channels, 3, padding=1))
        if i < convs - 1:
            layers.append(nn.ReLU(inplace=True))
    return nn.Sequential(*layers)


class DnCNN(nn.Module):
    """DnCNN with BN folded: ``convs`` 3×3 convolutions of ``channels``, ReLU between; (N, C, H, W) → same shape,
    clean = x − residual."""

    def __init__(self, in_channels: int = 3, channels: int = 64, convs: int = 20) -> None:
        super().__init__()
        self.model = _conv_relu_chain(in_channels, in_channels, channels, convs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x - self.model(x)


class FFDNet(nn.Module):
    """FFDNet: (N, C, H, W) and a noise level σ (8-bit scale) → (N, C, H, W), any H, W.

    ``PixelUnshuffle(2)`` (channel ``c·4 + i·2 + j``), concatenated with a σ/255 map, ``convs`` 3×3 convolutions of
    ``channels`` (ReLU between), ``PixelShuffle(2)``; odd sides are replicate-padded by one and cropped back.
    """

    def __init__(self, in_channels: int = 3, channels: int = 96, convs: int = 12, sigma: float = 25.0) -> None:
        super().__init__()
        self.sigma = float(sigma)  # a setting, not a parameter: the official state dict has no entry for it
        self.down, self.up = nn.PixelUnshuffle(2), nn.PixelShuffle(2)
        self.model = _conv_relu_chain(in_channels * 4 + 1, in_channels * 4, channels, convs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        x = F.pad(x, (0, w % 2, 0, h % 2), mode="replicate") if h % 2 or w % 2 else x
        y = self.down(x)
        noise_map = torch.full_like(y[:, :1], self.sigma / 255.0)
        return self.up(self.model(torch.cat([y, noise_map], dim=1)))[..., :h, :w]

    def extra_repr(self) -> str:
        return f"sigma={self.sigma:g}"


_KAIR = "https://github.com/cszn/KAIR (model_zoo)"


@register_model("cdncnn_b", scales=(1,), weights={1: "dncnn_color_blind.pth"}, tasks=("denoise",),
                description="CDnCNN-B: blind colour Gaussian denoising (σ 0–55), 20 convs × 64, residual",
                source=_KAIR + ": dncnn_color_blind.pth")
def cdncnn_b(scale: int, *, channels: int = 64, convs: int = 20) -> nn.Module:
    """CDnCNN-B (Zhang et al., TIP 2017): blind colour Gaussian denoiser."""
    return DnCNN(3, channels, convs)


@register_model("ffdnet_color", scales=(1,), weights={1: "ffdnet_color.pth"}, tasks=("denoise",),
                description="FFDNet colour: non-blind denoising with a σ map (-a sigma=…, set by --sigma)",
                source=_KAIR + ": ffdnet_color.pth")
def ffdnet_color(scale: int, *, sigma: float = 25.0, channels: int = 96, convs: int = 12) -> nn.Module:
    """FFDNet (Zhang et al., TIP 2018), colour, non-blind."""
    return FFDNet(3, channels, convs, sigma)


@register_model("dncnn3", scales=(1,), weights={1: "dncnn3.mat"}, color="grey", tasks=("jpeg", "denoise"),
                description="DnCNN-3: one grey model for JPEG deblocking, denoising and SR (MatConvNet .mat)",
                source="https://github.com/cszn/DnCNN: model/DnCNN3.mat")
def dncnn3(scale: int, *, channels: int = 64, convs: int = 20) -> nn.Module:
    """DnCNN-3 (Zhang et al., TIP 2017): grey JPEG deblocking / denoising / SR, residual."""
    return DnCNN(1, channels, convs)
