"""PAN: Pixel Attention Network (Zhao et al., ECCV-W / AIM 2020).

Key-compatible with the official checkpoints of https://github.com/zhaohengyuan1/PAN
(``codes/models/archs/PAN_arch.py`` classes ``PA`` / ``PAConv`` / ``SCPA`` / ``PAN``;
weights ``experiments/pretrained_models/PANx{2,3,4}_DF2K.pth``): nf 40, unf 24, 16 SCPA blocks.
Reconstruction: nearest upsampling -> conv -> pixel attention -> conv (twice x2 for scale 4), then a
3x3 conv to RGB plus the bilinearly (align_corners=False) upsampled input. Input/output RGB in [0, 1]
(BasicSR/mmsr pipeline); no clamp in forward.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .registry import register_model

__all__ = ["PAN", "SCPA", "PAConv", "PA", "pan"]

LRELU_SLOPE = 0.2  # every LeakyReLU in PAN


class PA(nn.Module):
    """Pixel attention: ``x * sigmoid(conv1x1(x))``."""

    def __init__(self, nf: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(nf, nf, 1)
        self.sigmoid = nn.Sigmoid()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.sigmoid(self.conv(x))


class PAConv(nn.Module):
    """Pixel-attention convolution: ``k4(k3(x) * sigmoid(k2(x)))`` (k3, k4 3x3 without bias)."""

    def __init__(self, nf: int, k_size: int = 3) -> None:
        super().__init__()
        self.k2 = nn.Conv2d(nf, nf, 1)
        self.sigmoid = nn.Sigmoid()
        self.k3 = nn.Conv2d(nf, nf, kernel_size=k_size, padding=(k_size - 1) // 2, bias=False)
        self.k4 = nn.Conv2d(nf, nf, kernel_size=k_size, padding=(k_size - 1) // 2, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.k4(self.k3(x) * self.sigmoid(self.k2(x)))


class SCPA(nn.Module):
    """Self-calibrated block with pixel attention: (N, nf, H, W) -> same, residual.

    Two 1x1 bias-free branches of ``nf // reduction`` channels: a plain 3x3 conv and a PAConv,
    LeakyReLU(0.2) before and after each, concatenated and fused by a bias-free 1x1 conv.
    """

    def __init__(self, nf: int, reduction: int = 2) -> None:
        super().__init__()
        width = nf // reduction
        self.conv1_a = nn.Conv2d(nf, width, kernel_size=1, bias=False)
        self.conv1_b = nn.Conv2d(nf, width, kernel_size=1, bias=False)
        self.k1 = nn.Sequential(nn.Conv2d(width, width, kernel_size=3, padding=1, bias=False))
        self.PAConv = PAConv(width)
        self.conv3 = nn.Conv2d(width * reduction, nf, kernel_size=1, bias=False)
        self.lrelu = nn.LeakyReLU(LRELU_SLOPE)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = self.lrelu(self.k1(self.lrelu(self.conv1_a(x))))
        b = self.lrelu(self.PAConv(self.lrelu(self.conv1_b(x))))
        return self.conv3(torch.cat([a, b], dim=1)) + x


class PAN(nn.Module):
    """PAN: (N, 3, H, W) in [0, 1] -> (N, 3, s*H, s*W), s in {2, 3, 4}; any H, W."""

    def __init__(self, scale: int = 4, in_nc: int = 3, out_nc: int = 3, nf: int = 40, unf: int = 24,
                 nb: int = 16) -> None:
        super().__init__()
        if scale not in (2, 3, 4):
            raise ValueError(f"PAN supports scales 2, 3 and 4, not {scale}")
        self.scale = scale
        self.conv_first = nn.Conv2d(in_nc, nf, 3, 1, 1, bias=True)
        self.SCPA_trunk = nn.Sequential(*[SCPA(nf, reduction=2) for _ in range(nb)])
        self.trunk_conv = nn.Conv2d(nf, nf, 3, 1, 1, bias=True)
        self.upconv1 = nn.Conv2d(nf, unf, 3, 1, 1, bias=True)
        self.att1 = PA(unf)
        self.HRconv1 = nn.Conv2d(unf, unf, 3, 1, 1, bias=True)
        if scale == 4:
            self.upconv2 = nn.Conv2d(unf, unf, 3, 1, 1, bias=True)
            self.att2 = PA(unf)
            self.HRconv2 = nn.Conv2d(unf, unf, 3, 1, 1, bias=True)
        self.conv_last = nn.Conv2d(unf, out_nc, 3, 1, 1, bias=True)
        self.lrelu = nn.LeakyReLU(LRELU_SLOPE)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        fea = self.conv_first(x)
        fea = fea + self.trunk_conv(self.SCPA_trunk(fea))
        first = 2 if self.scale == 4 else self.scale
        fea = self.upconv1(F.interpolate(fea, scale_factor=first, mode="nearest"))
        fea = self.lrelu(self.att1(fea))
        fea = self.lrelu(self.HRconv1(fea))
        if self.scale == 4:
            fea = self.upconv2(F.interpolate(fea, scale_factor=2, mode="nearest"))
            fea = self.lrelu(self.att2(fea))
            fea = self.lrelu(self.HRconv2(fea))
        out = self.conv_last(fea)
        ilr = F.interpolate(x, scale_factor=self.scale, mode="bilinear", align_corners=False)
        return out + ilr


@register_model("pan", scales=(2, 3, 4), weights={2: "pan_x2.pth", 3: "pan_x3.pth", 4: "pan_x4.pth"},
                description="PAN (Zhao et al., AIM 2020), 16 SCPA, nf 40, unf 24",
                source="https://github.com/zhaohengyuan1/PAN")
def pan(scale: int, *, nf: int = 40, unf: int = 24, nb: int = 16) -> nn.Module:
    """PAN (Zhao et al., AIM 2020), 16 SCPA, nf 40, unf 24."""
    return PAN(scale=scale, nf=nf, unf=unf, nb=nb)
