"""RDN (Zhang et al., "Residual Dense Network for Image Super-Resolution", CVPR 2018).

Key names follow the PyTorch implementation in EDSR-PyTorch
(https://github.com/sanghyun-son/EDSR-PyTorch, ``src/model/rdn.py``), configuration B of the paper
(``--model RDN --RDNconfig B``: G0 64, D 16 blocks, C 8 convs, G 64): ``SFENet1``, ``SFENet2``,
``RDBs.N.convs.M.conv.0``, ``RDBs.N.LFF``, ``GFF.{0,1}``, ``UPNet.{0,2,4}``.

Weights. The authors' own release (https://github.com/yulunzhang/RDN, ``RDN_BIX2.t7`` ...) is
Torch7 and cannot be read here; checkpoints trained with EDSR-PyTorch's ``rdn.py`` (its
``model_best.pt`` / ``model_latest.pt``) load as they are. That code trains on [0, 255] pixels without
mean shift, so the model is registered with ``pixel_range=255``: the bare network maps
(N, 3, H, W) in [0, 255] to (N, 3, s*H, s*W) in [0, 255]; :func:`srq.create_model` wraps it to [0, 1].
"""

from __future__ import annotations

import torch
from torch import nn

from .registry import register_model

__all__ = ["RDN", "RDB", "RDBConv", "rdn"]


def _conv(cin: int, cout: int, k: int = 3) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, k, padding=k // 2)


class RDBConv(nn.Module):
    """Dense layer: ``cat(x, relu(conv(x)))``, (N, Cin, H, W) -> (N, Cin + G, H, W); key ``conv.0``."""

    def __init__(self, in_channels: int, growth: int) -> None:
        super().__init__()
        self.conv = nn.Sequential(_conv(in_channels, growth), nn.ReLU())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat((x, self.conv(x)), 1)


class RDB(nn.Module):
    """Residual dense block: C dense layers, 1x1 local feature fusion ``LFF``, identity skip (G0 -> G0)."""

    def __init__(self, g0: int, growth: int, n_convs: int) -> None:
        super().__init__()
        self.convs = nn.Sequential(*[RDBConv(g0 + c * growth, growth) for c in range(n_convs)])
        self.LFF = nn.Conv2d(g0 + n_convs * growth, g0, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.LFF(self.convs(x)) + x


class RDN(nn.Module):
    """Residual Dense Network.

    Args:
        scale: 2, 3 or 4.
        g0: shallow feature channels (64).
        n_blocks: number of RDBs, D (16 in config B, 20 in A).
        n_convs: dense layers per RDB, C (8 in B, 6 in A).
        growth: growth rate, G (64 in B, 32 in A).

    Input (N, 3, H, W) in [0, 255]; output (N, 3, scale*H, scale*W) in [0, 255].
    """

    def __init__(self, scale: int, g0: int = 64, n_blocks: int = 16, n_convs: int = 8, growth: int = 64) -> None:
        super().__init__()
        self.scale = int(scale)
        self.SFENet1 = _conv(3, g0)
        self.SFENet2 = _conv(g0, g0)
        self.RDBs = nn.ModuleList([RDB(g0, growth, n_convs) for _ in range(n_blocks)])
        self.GFF = nn.Sequential(nn.Conv2d(n_blocks * g0, g0, 1), _conv(g0, g0))
        if scale in (2, 3):
            up: list[nn.Module] = [_conv(g0, growth * scale * scale), nn.PixelShuffle(scale)]
        elif scale == 4:
            up = [_conv(g0, growth * 4), nn.PixelShuffle(2), _conv(growth, growth * 4), nn.PixelShuffle(2)]
        else:
            raise ValueError(f"RDN supports scales 2, 3 and 4, not {scale}")
        self.UPNet = nn.Sequential(*up, _conv(growth, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f_1 = self.SFENet1(x)
        x = self.SFENet2(f_1)
        outs = []
        for block in self.RDBs:
            x = block(x)
            outs.append(x)
        x = self.GFF(torch.cat(outs, 1)) + f_1
        return self.UPNet(x)


@register_model("rdn", scales=(2, 3, 4), weights={}, pixel_range=255.0,
                description="RDN (Zhang et al., CVPR 2018), config B: 16 RDBs x 8 convs, 64 feats",
                source="https://github.com/sanghyun-son/EDSR-PyTorch (src/model/rdn.py, --RDNconfig B)")
def rdn(scale: int, *, g0: int = 64, n_blocks: int = 16, n_convs: int = 8, growth: int = 64) -> RDN:
    """RDN, configuration B (G0 64, D 16, C 8, G 64), on [0, 255] pixels."""
    return RDN(scale, g0=g0, n_blocks=n_blocks, n_convs=n_convs, growth=growth)
