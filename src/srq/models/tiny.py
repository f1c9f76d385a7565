"""The embedded default models: srq's own tiny SR network and a bicubic baseline.

``srq_tiny`` is a small residual CNN (≈ 90 K parameters) that srq trains itself on photographs shipped
inside scikit-image's wheel (see ``srq train`` and ``docs/embedded_model.md``); its weights ship in the
package, so the quickstart runs with no download. ``bicubic`` is the MATLAB-exact bicubic upscaler as a
parameter-free model, the baseline every SR table starts from.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from ..data.bicubic import imresize
from .registry import register_model

__all__ = ["TinySR", "Bicubic", "EMBEDDED_WEIGHTS"]

ASSETS = Path(__file__).resolve().parents[1] / "assets"
EMBEDDED_WEIGHTS = {4: ASSETS / "srq_tiny_x4.safetensors"}


class ResBlock(nn.Module):
    """conv3×3 → LeakyReLU(0.1) → conv3×3, plus the input. (N, C, H, W) → same."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1)
        self.act = nn.LeakyReLU(0.1)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv2(self.act(self.conv1(x)))


class TinySR(nn.Module):
    """Head conv, ``blocks`` residual blocks, a body conv with a long skip, pixel-shuffle tail,
    plus a bilinear upsampling of the input. RGB [0, 1] (N, 3, H, W) → (N, 3, sH, sW)."""

    def __init__(self, scale: int = 4, channels: int = 32, blocks: int = 4) -> None:
        super().__init__()
        self.scale = scale
        self.head = nn.Conv2d(3, channels, 3, padding=1)
        self.body = nn.Sequential(*[ResBlock(channels) for _ in range(blocks)])
        self.body_conv = nn.Conv2d(channels, channels, 3, padding=1)
        self.tail = nn.Conv2d(channels, 3 * scale * scale, 3, padding=1)
        self.shuffle = nn.PixelShuffle(scale)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feat = self.head(x)
        feat = feat + self.body_conv(self.body(feat))
        base = F.interpolate(x, scale_factor=self.scale, mode="bilinear", align_corners=False)
        return self.shuffle(self.tail(feat)) + base


class Bicubic(nn.Module):
    """MATLAB-exact bicubic upscaling (no parameters). (N, C, H, W) → (N, C, sH, sW)."""

    def __init__(self, scale: int) -> None:
        super().__init__()
        self.scale = scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return imresize(x, scale=self.scale)


@register_model("srq_tiny", scales=(4,), weights=EMBEDDED_WEIGHTS,
                description="srq's embedded demo model: 4 residual blocks, 32 channels (trained by srq)",
                source="shipped with srq (docs/embedded_model.md)")
def srq_tiny(scale: int, *, channels: int = 32, blocks: int = 4) -> nn.Module:
    return TinySR(scale=scale, channels=channels, blocks=blocks)


@register_model("bicubic", scales=(2, 3, 4, 8), description="MATLAB-exact bicubic upscaling (baseline, no weights)",
                source="no weights needed")
def bicubic(scale: int) -> nn.Module:
    return Bicubic(scale)
