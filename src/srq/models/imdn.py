"""IMDN: Information Multi-Distillation Network (Hui et al., ACM Multimedia 2019).

Key-compatible with the official checkpoints of https://github.com/Zheng222/IMDN
(``model/architecture.py`` class ``IMDN``, ``model/block.py`` ``IMDModule`` / ``CCALayer``;
weights ``checkpoints/IMDN_x{2,3,4}.pth``, saved from DataParallel with a ``module.`` prefix).
Input and output are RGB in [0, 1] (the official test script divides by 255); no clamp in forward.
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import nn

from .registry import register_model

__all__ = ["IMDN", "IMDModule", "CCALayer", "conv_layer", "pixelshuffle_block", "imdn"]

LRELU_SLOPE = 0.05  # every LeakyReLU in IMDN (and RFDN / RLFN) uses slope 0.05


def conv_layer(in_channels: int, out_channels: int, kernel_size: int, stride: int = 1) -> nn.Conv2d:
    """Conv2d with bias and 'same' zero padding ``(k - 1) // 2``."""
    return nn.Conv2d(in_channels, out_channels, kernel_size, stride, padding=(kernel_size - 1) // 2, bias=True)


def pixelshuffle_block(in_channels: int, out_channels: int, upscale: int, kernel_size: int = 3) -> nn.Sequential:
    """3x3 conv to ``out_channels * upscale**2`` channels followed by PixelShuffle (keys ``0.weight``/``0.bias``)."""
    return nn.Sequential(conv_layer(in_channels, out_channels * upscale ** 2, kernel_size), nn.PixelShuffle(upscale))


def _spatial_mean(x: torch.Tensor) -> torch.Tensor:
    """Mean over H, W as the official ``mean_channels`` (sum over W, then H, divided by H*W): (N, C, 1, 1)."""
    return x.sum(3, keepdim=True).sum(2, keepdim=True) / (x.size(2) * x.size(3))


def _contrast(x: torch.Tensor) -> torch.Tensor:
    """Per-channel standard deviation over H, W (population variance, as ``stdv_channels``): (N, C, 1, 1).

    Same reduction order as the official code, so results match it bit for bit. The variance is floored at
    1e-12 before the square root: a constant channel (common after 2-bit quantization) would otherwise give
    an infinite gradient and NaN everywhere upstream; real FP features never come near the floor.
    """
    return _spatial_mean((x - _spatial_mean(x)).pow(2)).clamp_min(1e-12).pow(0.5)


class CCALayer(nn.Module):
    """Contrast-aware channel attention: ``x * sigmoid(W2 relu(W1 (std(x) + mean(x))))``."""

    def __init__(self, channels: int, reduction: int = 16) -> None:
        super().__init__()
        self.avg_pool = nn.AdaptiveAvgPool2d(1)
        self.conv_du = nn.Sequential(
            nn.Conv2d(channels, channels // reduction, 1, padding=0, bias=True),
            nn.ReLU(),
            nn.Conv2d(channels // reduction, channels, 1, padding=0, bias=True),
            nn.Sigmoid(),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = _contrast(x) + self.avg_pool(x)
        return x * self.conv_du(y)


class IMDModule(nn.Module):
    """Information multi-distillation block (IMDB): (N, C, H, W) -> (N, C, H, W), residual."""

    def __init__(self, channels: int, distillation_rate: float = 0.25) -> None:
        super().__init__()
        self.distilled = int(channels * distillation_rate)
        self.remaining = channels - self.distilled
        self.c1 = conv_layer(channels, channels, 3)
        self.c2 = conv_layer(self.remaining, channels, 3)
        self.c3 = conv_layer(self.remaining, channels, 3)
        self.c4 = conv_layer(self.remaining, self.distilled, 3)
        self.act = nn.LeakyReLU(LRELU_SLOPE)
        self.c5 = conv_layer(self.distilled * 4, channels, 1)
        self.cca = CCALayer(self.distilled * 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        split = [self.distilled, self.remaining]
        d1, r1 = torch.split(self.act(self.c1(x)), split, dim=1)
        d2, r2 = torch.split(self.act(self.c2(r1)), split, dim=1)
        d3, r3 = torch.split(self.act(self.c3(r2)), split, dim=1)
        d4 = self.c4(r3)  # no activation on the last distillation step
        out = torch.cat([d1, d2, d3, d4], dim=1)
        return self.c5(self.cca(out)) + x


class DistillationTrunk(nn.Module):
    """The trunk IMDN and RFDN share: head conv, ``num_modules`` blocks whose outputs are concatenated,
    a 1×1 fusion + LeakyReLU, a 3×3 conv with a long skip, pixel-shuffle tail.

    Blocks are attributes ``{prefix}1`` ... ``{prefix}{num_modules}`` as in the official code.
    (N, in_nc, H, W) -> (N, out_nc, s*H, s*W); any H, W.
    """

    def __init__(self, block: Callable[[int], nn.Module], prefix: str, upscale: int, in_nc: int, nf: int,
                 num_modules: int, out_nc: int) -> None:
        super().__init__()
        self.upscale = upscale
        self.blocks = [f"{prefix}{i}" for i in range(1, num_modules + 1)]
        self.fea_conv = conv_layer(in_nc, nf, 3)
        for name in self.blocks:
            self.add_module(name, block(nf))
        self.c = nn.Sequential(nn.Conv2d(nf * num_modules, nf, 1, bias=True), nn.LeakyReLU(LRELU_SLOPE))
        self.LR_conv = conv_layer(nf, nf, 3)
        self.upsampler = pixelshuffle_block(nf, out_nc, upscale)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        fea = self.fea_conv(x)
        outs = []
        out = fea
        for name in self.blocks:
            out = getattr(self, name)(out)
            outs.append(out)
        out = self.LR_conv(self.c(torch.cat(outs, dim=1))) + fea
        return self.upsampler(out)


class IMDN(DistillationTrunk):
    """IMDN: (N, 3, H, W) in [0, 1] -> (N, 3, s*H, s*W); blocks ``IMDB1`` ... ``IMDB6``."""

    def __init__(self, upscale: int = 4, in_nc: int = 3, nf: int = 64, num_modules: int = 6, out_nc: int = 3) -> None:
        super().__init__(IMDModule, "IMDB", upscale, in_nc, nf, num_modules, out_nc)


@register_model("imdn", scales=(2, 3, 4), weights={2: "imdn_x2.pth", 3: "imdn_x3.pth", 4: "imdn_x4.pth"},
                description="IMDN (Hui et al., ACM MM 2019), 6 IMDB, nf 64", source="https://github.com/Zheng222/IMDN")
def imdn(scale: int, *, nf: int = 64, num_modules: int = 6) -> nn.Module:
    """IMDN (Hui et al., ACM MM 2019), 6 IMDB, nf 64."""
    return IMDN(upscale=scale, nf=nf, num_modules=num_modules)
