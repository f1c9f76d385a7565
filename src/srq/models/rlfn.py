"""RLFN: Residual Local Feature Network (Kong et al., CVPR-W / NTIRE 2022 efficient SR).

Key-compatible with the paper models of https://github.com/bytedance/RLFN
(``model/rlfn.py`` class ``RLFN``, ``model/block.py`` ``RLFB`` / ``ESA``; weights ``model_zoo/rlfn_x{2,4}.pth``):
52 feature channels, 6 RLFB, 16 ESA channels.
Pixel range: trained on **[0, 255]** RGB (``test_demo.py`` / ``val_demo.py`` multiply the input by 255 and
divide the output by 255; confirmed on Set5 for both paper checkpoints), so they are registered with
``pixel_range=255.0`` and the registry wraps them to [0, 1]. No clamp in forward.
"""

from __future__ import annotations

import torch
import torch.fx
import torch.nn.functional as F
from torch import nn

from .imdn import LRELU_SLOPE, conv_layer, pixelshuffle_block
from .registry import register_model
from .rfdn import esa_max_pool, esa_min_pad

__all__ = ["RLFN", "RLFB", "ESA", "rlfn"]

torch.fx.wrap("esa_min_pad")
torch.fx.wrap("esa_max_pool")


class ESA(nn.Module):
    """RLFN's lighter ESA (no ``conv_max`` / ``conv3_``): (N, C, H, W) -> same shape.

    1x1 reduce to ``esa_channels``, stride-2 3x3 conv, max pool 7/3, one 3x3 conv (no ReLU),
    bilinear upsampling (align_corners=False), add the 1x1 ``conv_f`` branch, 1x1 expand, sigmoid mask.
    """

    def __init__(self, esa_channels: int, n_feats: int) -> None:
        super().__init__()
        f = esa_channels
        self.conv1 = nn.Conv2d(n_feats, f, kernel_size=1)
        self.conv_f = nn.Conv2d(f, f, kernel_size=1)
        self.conv2 = nn.Conv2d(f, f, kernel_size=3, stride=2, padding=0)
        self.conv3 = nn.Conv2d(f, f, kernel_size=3, padding=1)
        self.conv4 = nn.Conv2d(f, n_feats, kernel_size=1)
        self.sigmoid = nn.Sigmoid()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        c1_ = self.conv1(x)
        c1 = self.conv2(esa_min_pad(c1_))
        c3 = self.conv3(esa_max_pool(c1))
        c3 = F.interpolate(c3, (x.size(2), x.size(3)), mode="bilinear", align_corners=False)
        cf = self.conv_f(c1_)
        m = self.sigmoid(self.conv4(c3 + cf))
        return x * m


class RLFB(nn.Module):
    """Residual local feature block: three 3x3 conv + LeakyReLU(0.05), identity skip, 1x1 conv, ESA."""

    def __init__(self, in_channels: int, mid_channels: int | None = None, out_channels: int | None = None,
                 esa_channels: int = 16) -> None:
        super().__init__()
        mid_channels = mid_channels or in_channels
        out_channels = out_channels or in_channels
        self.c1_r = conv_layer(in_channels, mid_channels, 3)
        self.c2_r = conv_layer(mid_channels, mid_channels, 3)
        self.c3_r = conv_layer(mid_channels, in_channels, 3)
        self.c5 = conv_layer(in_channels, out_channels, 1)
        self.esa = ESA(esa_channels, out_channels)
        self.act = nn.LeakyReLU(LRELU_SLOPE)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.act(self.c1_r(x))
        out = self.act(self.c2_r(out))
        out = self.act(self.c3_r(out))
        return self.esa(self.c5(out + x))


class RLFN(nn.Module):
    """RLFN: (N, 3, H, W) -> (N, 3, s*H, s*W) on the training range ([0, 255] for the official weights).

    Blocks are attributes ``block_1`` ... ``block_{num_blocks}``; any H, W.
    """

    def __init__(self, upscale: int = 4, in_channels: int = 3, out_channels: int = 3, feature_channels: int = 52,
                 num_blocks: int = 6, esa_channels: int = 16) -> None:
        super().__init__()
        self.upscale = upscale
        self.num_blocks = num_blocks
        self.conv_1 = conv_layer(in_channels, feature_channels, 3)
        for i in range(1, num_blocks + 1):
            self.add_module(f"block_{i}", RLFB(feature_channels, esa_channels=esa_channels))
        self.conv_2 = conv_layer(feature_channels, feature_channels, 3)
        self.upsampler = pixelshuffle_block(feature_channels, out_channels, upscale)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        fea = self.conv_1(x)
        out = fea
        for i in range(1, self.num_blocks + 1):
            out = getattr(self, f"block_{i}")(out)
        return self.upsampler(self.conv_2(out) + fea)


@register_model("rlfn", scales=(2, 4), weights={2: "rlfn_x2.pth", 4: "rlfn_x4.pth"}, pixel_range=255.0,
                description="RLFN (Kong et al., NTIRE 2022), 6 RLFB, nf 52", source="https://github.com/bytedance/RLFN")
def rlfn(scale: int, *, feature_channels: int = 52, num_blocks: int = 6, esa_channels: int = 16) -> nn.Module:
    """RLFN (Kong et al., NTIRE 2022), 6 RLFB, nf 52 (RLFN-S: ``feature_channels=48``)."""
    return RLFN(upscale=scale, feature_channels=feature_channels, num_blocks=num_blocks, esa_channels=esa_channels)
