"""RFDN: Residual Feature Distillation Network (Liu et al., ECCV-W / AIM 2020 efficient SR winner).

Key-compatible with the official checkpoint of https://github.com/njulj/RFDN
(``RFDN.py`` class ``RFDN``, ``block.py`` ``RFDB`` / ``ESA``; weights ``trained_model/RFDN_AIM.pth``, x4 only).
Pixel range: the checkpoint was trained on **[0, 255]** RGB (the repository's ``utils/utils_image.py``
``uint2tensor4`` divides by 1.0 and ``tensor2uint`` clamps to [0, 255]; confirmed on Set5), so it is
registered with ``pixel_range=255.0`` and the registry wraps it to [0, 1]. No clamp in forward.
"""

from __future__ import annotations

import torch
import torch.fx
import torch.nn.functional as F
from torch import nn

from .imdn import LRELU_SLOPE, DistillationTrunk, conv_layer
from .registry import register_model

__all__ = ["RFDN", "RFDB", "ESA", "esa_max_pool", "esa_min_pad", "rfdn"]


def esa_min_pad(x: torch.Tensor, size: int = 3) -> torch.Tensor:
    """Replicate-pad H and W up to ``size`` so the stride-2 3x3 ESA conv accepts tiny maps.

    A no-op for maps of at least ``size`` pixels, i.e. for every input the official code accepts.
    """
    ph, pw = max(0, size - x.shape[-2]), max(0, size - x.shape[-1])
    if ph == 0 and pw == 0:
        return x
    return F.pad(x, (0, pw, 0, ph), mode="replicate")


def esa_max_pool(x: torch.Tensor) -> torch.Tensor:
    """``max_pool2d(kernel_size=7, stride=3)`` of the official ESA.

    The official code raises on maps smaller than 7 pixels (inputs under 15 pixels); there the kernel
    shrinks to the map size instead. Identical to the official op wherever that one runs.
    """
    kernel = (min(7, x.shape[-2]), min(7, x.shape[-1]))
    return F.max_pool2d(x, kernel_size=kernel, stride=3)


# Leaves for torch.fx tracing (the size logic needs concrete shapes).
torch.fx.wrap("esa_min_pad")
torch.fx.wrap("esa_max_pool")


class ESA(nn.Module):
    """Enhanced spatial attention of RFDN (with ``conv_max`` and ``conv3_``): (N, C, H, W) -> same shape.

    ``f = C // 4`` channels; stride-2 3x3 conv, max pool 7/3, three 3x3 convs (ReLU after the first
    two), bilinear upsampling (align_corners=False) back to H x W, sigmoid mask.
    """

    def __init__(self, n_feats: int) -> None:
        super().__init__()
        f = n_feats // 4
        self.conv1 = nn.Conv2d(n_feats, f, kernel_size=1)
        self.conv_f = nn.Conv2d(f, f, kernel_size=1)
        self.conv_max = nn.Conv2d(f, f, kernel_size=3, padding=1)
        self.conv2 = nn.Conv2d(f, f, kernel_size=3, stride=2, padding=0)
        self.conv3 = nn.Conv2d(f, f, kernel_size=3, padding=1)
        self.conv3_ = nn.Conv2d(f, f, kernel_size=3, padding=1)
        self.conv4 = nn.Conv2d(f, n_feats, kernel_size=1)
        self.sigmoid = nn.Sigmoid()
        self.relu = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        c1_ = self.conv1(x)
        c1 = self.conv2(esa_min_pad(c1_))
        v_max = esa_max_pool(c1)
        v_range = self.relu(self.conv_max(v_max))
        c3 = self.relu(self.conv3(v_range))
        c3 = self.conv3_(c3)
        c3 = F.interpolate(c3, (x.size(2), x.size(3)), mode="bilinear", align_corners=False)
        cf = self.conv_f(c1_)
        m = self.sigmoid(self.conv4(c3 + cf))
        return x * m


class RFDB(nn.Module):
    """Residual feature distillation block: (N, C, H, W) -> (N, C, H, W).

    Three shallow-residual stages (3x3 conv + identity, then LeakyReLU 0.05) with 1x1 distillation
    branches, a final 3x3 conv, 1x1 fusion and ESA. No outer residual (as in the official code).
    """

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.dc = channels // 2
        self.rc = channels
        self.c1_d = conv_layer(channels, self.dc, 1)
        self.c1_r = conv_layer(channels, self.rc, 3)
        self.c2_d = conv_layer(self.rc, self.dc, 1)
        self.c2_r = conv_layer(self.rc, self.rc, 3)
        self.c3_d = conv_layer(self.rc, self.dc, 1)
        self.c3_r = conv_layer(self.rc, self.rc, 3)
        self.c4 = conv_layer(self.rc, self.dc, 3)
        self.act = nn.LeakyReLU(LRELU_SLOPE)
        self.c5 = conv_layer(self.dc * 4, channels, 1)
        self.esa = ESA(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        d1 = self.act(self.c1_d(x))
        r1 = self.act(self.c1_r(x) + x)
        d2 = self.act(self.c2_d(r1))
        r2 = self.act(self.c2_r(r1) + r1)
        d3 = self.act(self.c3_d(r2))
        r3 = self.act(self.c3_r(r2) + r2)
        r4 = self.act(self.c4(r3))
        return self.esa(self.c5(torch.cat([d1, d2, d3, r4], dim=1)))


class RFDN(DistillationTrunk):
    """RFDN: (N, 3, H, W) -> (N, 3, s*H, s*W) on the training range ([0, 255] for the official weights).

    Blocks are attributes ``B1`` ... ``B{num_modules}``; any H, W.
    """

    def __init__(self, upscale: int = 4, in_nc: int = 3, nf: int = 50, num_modules: int = 4, out_nc: int = 3) -> None:
        super().__init__(RFDB, "B", upscale, in_nc, nf, num_modules, out_nc)


@register_model("rfdn", scales=(4,), weights={4: "rfdn_x4.pth"}, pixel_range=255.0,
                description="RFDN (Liu et al., AIM 2020 winner), 4 RFDB, nf 50", source="https://github.com/njulj/RFDN")
def rfdn(scale: int, *, nf: int = 50, num_modules: int = 4) -> nn.Module:
    """RFDN (Liu et al., AIM 2020 winner), 4 RFDB, nf 50."""
    return RFDN(upscale=scale, nf=nf, num_modules=num_modules)
