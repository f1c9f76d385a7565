"""A small super-resolution network written the way a user would: it is not in srq's zoo.

It mixes what efficient SR models use: LayerNorm over channels, GELU, a channel attention fed by
adaptive pooling, a small transposed (channel) self-attention with a learned temperature, pixel-shuffle
upsampling and an ``F.interpolate`` skip from the input. It knows nothing about srq.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class ChannelNorm(nn.Module):
    """LayerNorm over the channels of an NCHW tensor."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)


class ChannelAttention(nn.Module):
    """Squeeze-and-excitation: global average pooling, two 1×1 convs, a sigmoid gate."""

    def __init__(self, channels: int, reduction: int = 4) -> None:
        super().__init__()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.down = nn.Conv2d(channels, channels // reduction, 1)
        self.up = nn.Conv2d(channels // reduction, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.sigmoid(self.up(F.gelu(self.down(self.pool(x)))))


class ChannelSelfAttention(nn.Module):
    """Self-attention across channels (a C×C map, cheap at any image size) with a learned temperature."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.qkv = nn.Conv2d(channels, 3 * channels, 1)
        self.proj = nn.Conv2d(channels, channels, 1)
        self.temperature = nn.Parameter(torch.ones(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, c, h, w = x.shape
        q, k, v = self.qkv(x).flatten(2).chunk(3, dim=1)  # (n, c, h·w) each
        attn = (F.normalize(q, dim=-1) @ F.normalize(k, dim=-1).transpose(1, 2)) * self.temperature
        return self.proj((attn.softmax(dim=-1) @ v).view(n, c, h, w))


class Block(nn.Module):
    """Norm → conv → GELU → conv → channel attention, then channel self-attention; both residual."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.norm = ChannelNorm(channels)
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1)
        self.ca = ChannelAttention(channels)
        self.attn = ChannelSelfAttention(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.ca(self.conv2(F.gelu(self.conv1(self.norm(x)))))
        return x + self.attn(x)


class MySRNet(nn.Module):
    """``scale``× SR of [0, 1] RGB images: conv head, ``blocks`` blocks, pixel-shuffle tail, bilinear skip."""

    def __init__(self, scale: int = 4, channels: int = 16, blocks: int = 2) -> None:
        super().__init__()
        self.scale = scale
        self.head = nn.Conv2d(3, channels, 3, padding=1)
        self.blocks = nn.Sequential(*(Block(channels) for _ in range(blocks)))
        self.body = nn.Conv2d(channels, channels, 3, padding=1)
        self.tail = nn.Conv2d(channels, 3 * scale * scale, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f = self.head(x)
        f = f + self.body(self.blocks(f))
        skip = F.interpolate(x, scale_factor=self.scale, mode="bilinear", align_corners=False)
        return F.pixel_shuffle(self.tail(f), self.scale) + skip
