"""SwinIR-M for colour denoising and grey JPEG artifact removal (Liang et al., ICCVW 2021), scale 1.

Key-compatible with the official checkpoints of https://github.com/JingyunLiang/SwinIR (releases v0.0), as
``main_test_swinir.py`` builds them: ``SwinIR(upscale=1, in_chans=3, img_size=128, window_size=8, img_range=1.,
depths=[6]*6, embed_dim=180, num_heads=[6]*6, mlp_ratio=2, upsampler='', resi_connection='1conv')`` for
``--task color_dn`` (``005_colorDN_DFWB_s128w8_SwinIR-M_noise{15,25,50}.pth``) and ``in_chans=1, img_size=126,
window_size=7, img_range=255.`` for ``--task jpeg_car`` (``006_CAR_DFWB_s126w7_SwinIR-M_jpeg{10,20,30,40}.pth``).
The ``upsampler=''`` tail is one 3×3 ``conv_last`` whose output is added to the (mean-subtracted) input. The
weights are not obtainable here: the keys are tested against lists written from the official definition.
"""

from __future__ import annotations

import torch
from torch import nn

from .registry import register_model
from .swinir import SwinIR, adapt_swinir_state_dict
from .window_attention import pad_symmetric

__all__ = ["SwinIRRestore", "swinir_color_dn", "swinir_jpeg_car", "restoration_head"]


def restoration_head(net: nn.Module, in_channels: int, embed_dim: int) -> None:
    """Turn an SR network of the SwinIR family into its scale-1 restoration form, in place: ``conv_first`` takes
    ``in_channels`` (grey: 1, with mean 0), the upsampler is dropped and ``conv_last`` maps back to ``in_channels``
    (the official restoration models' keys)."""
    if in_channels != 3:
        net.conv_first = nn.Conv2d(in_channels, embed_dim, 3, 1, 1)
        net.register_buffer("mean", torch.zeros(1, in_channels, 1, 1), persistent=False)
    del net.upsample
    net.conv_last = nn.Conv2d(embed_dim, in_channels, 3, 1, 1)

_SOURCE = "https://github.com/JingyunLiang/SwinIR/releases/tag/v0.0 "


class SwinIRRestore(SwinIR):
    """SwinIR with ``upsampler=''``: (N, C, H, W) → (N, C, H, W), C = ``in_channels`` (3: RGB, 1: grey), any H, W.

    Output = input + conv_last(features), on the ``img_range`` scale around the mean (DIV2K's for RGB, 0 for grey).
    """

    conv_last: nn.Conv2d  # set by restoration_head

    def __init__(self, in_channels: int = 3, embed_dim: int = 180, depths: tuple[int, ...] = (6,) * 6,
                 num_heads: tuple[int, ...] = (6,) * 6, window_size: int = 8, mlp_ratio: float = 2.0,
                 img_range: float = 1.0) -> None:
        super().__init__(upscale=1, embed_dim=embed_dim, depths=depths, num_heads=num_heads, window_size=window_size,
                         mlp_ratio=mlp_ratio, img_range=img_range)
        restoration_head(self, in_channels, embed_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h0, w0 = x.shape[-2:]
        x = pad_symmetric(x, self.window_size, always=True)
        mean = self.mean.to(x.dtype)
        x = (x - mean) * self.img_range
        first = self.conv_first(x)
        x = x + self.conv_last(self.conv_after_body(self.forward_features(first)) + first)
        return (x / self.img_range + mean)[..., :h0, :w0]


@register_model("swinir_color_dn", scales=(1,), tasks=("denoise",), adapt_state_dict=adapt_swinir_state_dict,
                description="SwinIR-M colour denoising (one checkpoint per σ 15/25/50), embed 180, 6x6 blocks",
                source=_SOURCE + "(005_colorDN_DFWB_s128w8_SwinIR-M_noise{15,25,50}.pth)")
def swinir_color_dn(scale: int, *, embed_dim: int = 180, depths: tuple[int, ...] = (6,) * 6,
                    num_heads: tuple[int, ...] = (6,) * 6, window_size: int = 8, mlp_ratio: float = 2.0) -> nn.Module:
    """SwinIR-M colour denoising (Liang et al., ICCVW 2021)."""
    return SwinIRRestore(3, embed_dim, depths, num_heads, window_size, mlp_ratio, img_range=1.0)


@register_model("swinir_jpeg_car", scales=(1,), color="grey", tasks=("jpeg",), adapt_state_dict=adapt_swinir_state_dict,
                description="SwinIR-M grey JPEG artifact removal (one checkpoint per q 10/20/30/40), window 7",
                source=_SOURCE + "(006_CAR_DFWB_s126w7_SwinIR-M_jpeg{10,20,30,40}.pth)")
def swinir_jpeg_car(scale: int, *, embed_dim: int = 180, depths: tuple[int, ...] = (6,) * 6,
                    num_heads: tuple[int, ...] = (6,) * 6, window_size: int = 7, mlp_ratio: float = 2.0) -> nn.Module:
    """SwinIR-M grey JPEG compression artifact reduction (Liang et al., ICCVW 2021)."""
    return SwinIRRestore(1, embed_dim, depths, num_heads, window_size, mlp_ratio, img_range=255.0)
