"""CARN and CARN-M: Cascading Residual Network (Ahn et al., ECCV 2018), multi-scale x2/x3/x4.

Key-compatible with the official checkpoints of https://github.com/nmhkahn/CARN-pytorch
(``checkpoint/carn.pth`` and ``checkpoint/carn_m.pth``). The architectures follow ``carn/model/carn.py``
(CARN), ``carn/model/carn_m.py`` (CARN-M, built by ``carn/sample.py`` with ``multi_scale=True`` and
``--group 4``) and ``carn/model/ops.py`` at the release commit (a1d62d0 / 77badff), where the upsampling
branch is ``[Conv2d(C, r*r*C, 3, groups=g), ReLU, PixelShuffle(r)]`` repeated (``up4`` = two x2 stages,
hence keys ``up4.body.0`` and ``up4.body.3``). Both releases hold all three upsampling branches; the
builder takes a scale and ``forward`` uses that scale's branch (``self.scale``, changeable).

State-dict layout (key -> shape), derived from those files (names from the attribute names, shapes from
the constructors; CARN uses ``group=1``, CARN-M ``group=4``):

* ``sub_mean.shifter.{weight (3, 3, 1, 1), bias (3,)}``, ``add_mean.shifter.*`` the same: identity 1x1
  convs whose bias is -/+ the DIV2K mean (0.4488, 0.4371, 0.4040) on [0, 1] input;
* ``entry.{weight (64, 3, 3, 3), bias (64,)}``, ``exit.{weight (3, 64, 3, 3), bias (3,)}``;
* cascading blocks ``b{1,2,3}`` and global fusions ``c{1,2,3}.body.0`` (64, 64*k, 1, 1), k = 2, 3, 4;
  inside each block the same ``c{1,2,3}`` fusions plus
  CARN: three residual blocks ``b{1,2,3}.body.{0,2}.weight`` (64, 64, 3, 3);
  CARN-M: one efficient residual block ``b1`` used three times (recursive), ``body.{0,2}`` grouped
  (64, 16, 3, 3) and ``body.4`` (64, 64, 1, 1);
* ``upsample.up2.body.0`` (256, 64/g, 3, 3), ``upsample.up3.body.0`` (576, 64/g, 3, 3),
  ``upsample.up4.body.{0,3}`` (256, 64/g, 3, 3), each with a bias.

This gives 1,591,963 parameters for CARN (the paper's 1,592K) and 414,811 for CARN-M.
Input/output RGB in [0, 1] (the official data pipeline uses ``ToTensor``); no clamp in forward.
"""

from __future__ import annotations

import torch
from torch import nn

from .registry import register_model

__all__ = ["CARN", "MeanShift", "carn", "carn_m", "DIV2K_MEAN"]

DIV2K_MEAN = (0.4488, 0.4371, 0.4040)


class MeanShift(nn.Module):
    """Identity 1x1 conv adding ``sign * mean`` per channel (key ``shifter``; frozen, but stored)."""

    def __init__(self, mean_rgb: tuple[float, float, float], sub: bool) -> None:
        super().__init__()
        sign = -1.0 if sub else 1.0
        self.shifter = nn.Conv2d(3, 3, 1, 1, 0)
        with torch.no_grad():
            self.shifter.weight.copy_(torch.eye(3).view(3, 3, 1, 1))
            assert self.shifter.bias is not None  # (a Conv2d with bias)
            self.shifter.bias.copy_(torch.tensor([sign * m for m in mean_rgb]))
        self.shifter.requires_grad_(False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.shifter(x)


class _BasicBlock(nn.Module):
    """Conv + ReLU (the cascading 1x1 fusions)."""

    def __init__(self, in_channels: int, out_channels: int, ksize: int = 3, pad: int = 1) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(in_channels, out_channels, ksize, 1, pad), nn.ReLU())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


class _ResidualBlock(nn.Module):
    """CARN residual block: ``relu(conv3(relu(conv3(x))) + x)``."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(channels, channels, 3, 1, 1), nn.ReLU(),
                                  nn.Conv2d(channels, channels, 3, 1, 1))
        self.act = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.body(x) + x)


class _EResidualBlock(nn.Module):
    """CARN-M efficient residual block: grouped 3x3, ReLU, grouped 3x3, ReLU, 1x1, then ``relu(. + x)``."""

    def __init__(self, channels: int, group: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(channels, channels, 3, 1, 1, groups=group), nn.ReLU(),
            nn.Conv2d(channels, channels, 3, 1, 1, groups=group), nn.ReLU(),
            nn.Conv2d(channels, channels, 1, 1, 0),
        )
        self.act = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.body(x) + x)


class _UpsampleBranch(nn.Module):
    """``[Conv(C, r*r*C, 3, groups), ReLU, PixelShuffle(r)]`` once for x3, log2(s) times (r = 2) otherwise."""

    def __init__(self, channels: int, scale: int, group: int) -> None:
        super().__init__()
        if scale == 3:
            factors = [3]
        elif scale in (2, 4, 8):
            factors = [2] * (scale.bit_length() - 1)
        else:
            raise ValueError(f"CARN upsampling supports scales 2, 3, 4 and 8, not {scale}")
        modules: list[nn.Module] = []
        for r in factors:
            modules += [nn.Conv2d(channels, r * r * channels, 3, 1, 1, groups=group), nn.ReLU(), nn.PixelShuffle(r)]
        self.body = nn.Sequential(*modules)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


class _MultiScaleUpsample(nn.Module):
    """The x2, x3 and x4 branches ``up2`` / ``up3`` / ``up4``; ``forward(x, scale)`` picks one."""

    def __init__(self, channels: int, group: int) -> None:
        super().__init__()
        self.up2 = _UpsampleBranch(channels, 2, group)
        self.up3 = _UpsampleBranch(channels, 3, group)
        self.up4 = _UpsampleBranch(channels, 4, group)

    def forward(self, x: torch.Tensor, scale: int) -> torch.Tensor:
        if scale == 2:
            return self.up2(x)
        if scale == 3:
            return self.up3(x)
        if scale == 4:
            return self.up4(x)
        raise ValueError(f"CARN has upsampling branches for scales 2, 3 and 4, not {scale}")


class _CascadingBlock(nn.Module):
    """Local cascading block: three residual units with 1x1 fusions of all previous outputs.

    ``mobile=False`` (CARN): three residual blocks ``b1``, ``b2``, ``b3``.
    ``mobile=True`` (CARN-M): one efficient residual block ``b1`` applied three times (shared weights).
    """

    def __init__(self, channels: int, group: int, mobile: bool) -> None:
        super().__init__()
        self.mobile = mobile
        self.b1: _EResidualBlock | _ResidualBlock
        if mobile:
            self.b1 = _EResidualBlock(channels, group)
        else:
            self.b1 = _ResidualBlock(channels)
            self.b2 = _ResidualBlock(channels)
            self.b3 = _ResidualBlock(channels)
        self.c1 = _BasicBlock(channels * 2, channels, 1, 0)
        self.c2 = _BasicBlock(channels * 3, channels, 1, 0)
        self.c3 = _BasicBlock(channels * 4, channels, 1, 0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        units = (self.b1, self.b1, self.b1) if self.mobile else (self.b1, self.b2, self.b3)
        cat, out = x, x
        for unit, fuse in zip(units, (self.c1, self.c2, self.c3)):
            cat = torch.cat([cat, unit(out)], dim=1)
            out = fuse(cat)
        return out


class CARN(nn.Module):
    """CARN / CARN-M: (N, 3, H, W) in [0, 1] -> (N, 3, s*H, s*W) with the branch for ``self.scale``.

    Args:
        scale: upscaling factor used by ``forward`` (2, 3 or 4); all three branches are always built.
        group: groups of the efficient residual blocks and upsampling convs (1 for CARN, 4 for CARN-M).
        mobile: True for CARN-M (shared efficient residual block per cascading block).
    """

    def __init__(self, scale: int = 4, group: int = 1, mobile: bool = False, channels: int = 64) -> None:
        super().__init__()
        if scale not in (2, 3, 4):
            raise ValueError(f"CARN supports scales 2, 3 and 4, not {scale}")
        self.scale = scale
        self.sub_mean = MeanShift(DIV2K_MEAN, sub=True)
        self.add_mean = MeanShift(DIV2K_MEAN, sub=False)
        self.entry = nn.Conv2d(3, channels, 3, 1, 1)
        self.b1 = _CascadingBlock(channels, group, mobile)
        self.b2 = _CascadingBlock(channels, group, mobile)
        self.b3 = _CascadingBlock(channels, group, mobile)
        self.c1 = _BasicBlock(channels * 2, channels, 1, 0)
        self.c2 = _BasicBlock(channels * 3, channels, 1, 0)
        self.c3 = _BasicBlock(channels * 4, channels, 1, 0)
        self.upsample = _MultiScaleUpsample(channels, group)
        self.exit = nn.Conv2d(channels, 3, 3, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.entry(self.sub_mean(x))
        cat, out = x, x
        for block, fuse in ((self.b1, self.c1), (self.b2, self.c2), (self.b3, self.c3)):
            cat = torch.cat([cat, block(out)], dim=1)
            out = fuse(cat)
        out = self.upsample(out, self.scale)
        return self.add_mean(self.exit(out))


@register_model("carn_m", scales=(2, 3, 4), weights={2: "carn_m.pth", 3: "carn_m.pth", 4: "carn_m.pth"},
                description="CARN-M (Ahn et al., ECCV 2018), multi-scale, group 4",
                source="https://github.com/nmhkahn/CARN-pytorch")
def carn_m(scale: int, *, channels: int = 64) -> nn.Module:
    """CARN-M (Ahn et al., ECCV 2018), multi-scale, group 4."""
    return CARN(scale=scale, group=4, mobile=True, channels=channels)


@register_model("carn", scales=(2, 3, 4), weights={2: "carn.pth", 3: "carn.pth", 4: "carn.pth"},
                description="CARN (Ahn et al., ECCV 2018), multi-scale",
                source="https://github.com/nmhkahn/CARN-pytorch")
def carn(scale: int, *, channels: int = 64) -> nn.Module:
    """CARN (Ahn et al., ECCV 2018), multi-scale."""
    return CARN(scale=scale, group=1, mobile=False, channels=channels)
