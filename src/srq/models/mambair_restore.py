"""MambaIR / MambaIRv2 colour denoising and grey JPEG artifact removal (Guo et al., ECCV 2024 / CVPR 2025), scale 1.

Key-compatible with the official checkpoints of https://github.com/csguoh/MambaIR. Sources read (that
repository): ``basicsr/archs/mambair_arch.py`` (class ``MambaIR``; versions 06dc6cd and c308c30),
``basicsr/archs/mambairv2_arch.py`` (class ``MambaIRv2``, as of af4a48c), ``basicsr/models/mambair_model.py`` and
``mambairv2_model.py`` (test-time tiling), ``README.md`` (model summary) and the option files
``options/test/test_MambaIR_ColorDN_level{15,50}.yml``, ``options/test/test_MambaIR_CAR_q10.yml``,
``options/test/mambair/test_MambaIR_ColorDN_level25.yml``, ``options/test/mambair/test_MambaIR_CAR_q{10,40}.yml``,
``options/train/mambair/train_MambaIR_{ColorDN_level15,CAR_q30}.yml``,
``options/test/mambairv2/test_MambaIRv2_ColorDN_level15.yml`` and
``options/test/mambairv2/test_MambaIRv2_CAR_q{10,30,40}.yml``.

Configurations (``upscale: 1``; ``upsampler`` and ``resi_connection`` are not set in the option files, so the class
defaults ``''`` and ``'1conv'`` apply; the CAR files do not set ``img_range`` either: class default 1):

* MambaIR, colour denoising σ 15/25/50: ``in_chans 3, img_size 128, img_range 1, d_state 16, depths [6]*6,
  embed_dim 180, mlp_ratio 1.2`` (SS2D inner width 216, Δ rank 12). Blocks with ``upsampler != 'pixelshuffledirect'``
  use the plain channel-attention block: 3×3 conv (C → C/3) → GELU → 3×3 conv (C/3 → C) → channel attention
  (squeeze 30), keys ``conv_blk.cab.{0,2,3}``.
* MambaIR, grey JPEG q 10/30/40: the same with ``in_chans 1, img_size 126`` (mean 0 instead of DIV2K's).
* MambaIRv2, colour denoising σ 15: ``in_chans 3, img_size 128, img_range 1, embed_dim 174, d_state 16,
  depths [6]*6, num_heads [6]*6, window_size 16, inner_rank 64, num_tokens 128, convffn_kernel_size 5,
  mlp_ratio 2`` (ASSM width 348, Δ rank 22). Unlike MambaIRv2-light, the feed-forward layers are the ``ConvFFN``:
  fc1 → GELU → (+ depthwise k×k conv → GELU, residual) → fc2 (keys ``convffn{1,2}.{fc1,dwconv.depthwise_conv.0,fc2}``).
* MambaIRv2, grey JPEG q 10/30/40: the same with ``in_chans 1, img_size 126``.

The ``upsampler=''`` tail of both (MambaIRv2's comment: "for image denoising and JPEG compression artifact
reduction"): ``x + conv_last(conv_after_body(features(conv_first(x))) + conv_first(x))`` on ``(input - mean) ·
img_range``; MambaIRv2 mirror-pads to a multiple of the window and crops back. ``mean`` is a plain attribute in
the official code (not saved); MambaIRv2 saves ``relative_position_index_SA``, which is checked and dropped on load.
Routing and token sorting are those of :mod:`srq.models.mambairv2` (official: ``torch.sort(stable=False)``; here a
stable sort, so pixels with the same token may be scanned in another order than on the official GPU run).
The official test scripts cut inputs with a side ≥ 200 px into overlapping tiles of about 200 px
(``evaluate(..., split=200)`` does the same). The weights are not obtainable here: keys and shapes are tested
against lists written from the official definitions; outputs have not been compared with the official code.
"""

from __future__ import annotations

import torch
from torch import nn

from .adapt import linear_weight_shapes, transpose_linear_weights
from .mambair import ChannelAttention, MambaIR, VSSBlock
from .mambairv2 import (AttentiveLayer, MambaIRv2Light, _map_to_tokens, _tokens_to_map,
                        adapt_mambairv2_state_dict)
from .registry import register_model
from .swinir import init_token_weights
from .swinir_restore import restoration_head

__all__ = ["MambaIRRestore", "MambaIRv2Restore", "PlainCAB", "ConvFFN", "mambair_color_dn", "mambair_jpeg_car",
           "mambairv2_color_dn", "mambairv2_jpeg_car", "adapt_mambair_restore_state_dict",
           "adapt_mambairv2_restore_state_dict"]

_V1_SOURCE = "https://github.com/csguoh/MambaIR (README model summary, Google Drive: "
_V2_SOURCE = "https://github.com/csguoh/MambaIR/releases/tag/v1.0 "


class PlainCAB(nn.Module):
    """MambaIR's channel-attention block outside light SR: 3x3 (C → C/3) → GELU → 3x3 (→ C) → channel attention."""

    def __init__(self, num_feat: int, compress_ratio: int = 3, squeeze_factor: int = 30) -> None:
        super().__init__()
        mid = num_feat // compress_ratio
        self.cab = nn.Sequential(nn.Conv2d(num_feat, mid, 3, 1, 1), nn.GELU(), nn.Conv2d(mid, num_feat, 3, 1, 1),
                                 ChannelAttention(num_feat, squeeze_factor))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.cab(x)


class MambaIRRestore(MambaIR):
    """MambaIR with ``upsampler=''``: (N, C, H, W) → (N, C, H, W), C = ``in_channels`` (3: RGB, 1: grey), any H, W.

    Output = input + conv_last(features), on the ``img_range`` scale around the mean (DIV2K's for RGB, 0 for grey).
    """

    conv_last: nn.Conv2d  # set by restoration_head

    def __init__(self, in_channels: int = 3, embed_dim: int = 180, depths: tuple[int, ...] = (6,) * 6,
                 d_state: int = 16, mlp_ratio: float = 1.2, img_range: float = 1.0) -> None:
        super().__init__(upscale=1, embed_dim=embed_dim, depths=depths, d_state=d_state, mlp_ratio=mlp_ratio,
                         img_range=img_range)
        for block in [m for m in self.modules() if isinstance(m, VSSBlock)]:
            block.add_module("conv_blk", PlainCAB(embed_dim))  # replaces the light CAB in place (same key position)
        restoration_head(self, in_channels, embed_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mean = self.mean.to(x.dtype)
        x = (x - mean) * self.img_range
        first = self.conv_first(x)
        x = x + self.conv_last(self.conv_after_body(self.forward_features(first)) + first)
        return x / self.img_range + mean


class _DWConv(nn.Module):
    """Depthwise k×k conv + GELU on tokens (key ``depthwise_conv.0``)."""

    def __init__(self, dim: int, kernel_size: int) -> None:
        super().__init__()
        self.depthwise_conv = nn.Sequential(
            nn.Conv2d(dim, dim, kernel_size, 1, (kernel_size - 1) // 2, groups=dim), nn.GELU())

    def forward(self, x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        return _map_to_tokens(self.depthwise_conv(_tokens_to_map(x, size)))


class ConvFFN(nn.Module):
    """MambaIRv2's feed-forward layer on tokens (B, N, C): h = GELU(fc1(x)); fc2(h + dwconv(h))."""

    def __init__(self, in_features: int, hidden_features: int, kernel_size: int = 5) -> None:
        super().__init__()
        self.fc1 = nn.Linear(in_features, hidden_features)
        self.act = nn.GELU()
        self.dwconv = _DWConv(hidden_features, kernel_size)
        self.fc2 = nn.Linear(hidden_features, in_features)

    def forward(self, x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        x = self.act(self.fc1(x))
        return self.fc2(x + self.dwconv(x, size))


class MambaIRv2Restore(MambaIRv2Light):
    """MambaIRv2 with ``upsampler=''``: (N, C, H, W) → (N, C, H, W), C = ``in_channels``; any H, W.

    Mirror-padded to a multiple of ``window_size`` and cropped back. Routing as in :class:`MambaIRv2Light`
    (``"gumbel"``, seeded per forward, or ``"argmax"``).
    """

    conv_last: nn.Conv2d  # set by restoration_head

    def __init__(self, in_channels: int = 3, embed_dim: int = 174, d_state: int = 16,
                 depths: tuple[int, ...] = (6,) * 6, num_heads: tuple[int, ...] = (6,) * 6, window_size: int = 16,
                 inner_rank: int = 64, num_tokens: int = 128, mlp_ratio: float = 2.0, convffn_kernel_size: int = 5,
                 img_range: float = 1.0, routing: str = "gumbel", routing_seed: int = 0) -> None:
        super().__init__(upscale=1, embed_dim=embed_dim, d_state=d_state, depths=depths, num_heads=num_heads,
                         window_size=window_size, inner_rank=inner_rank, num_tokens=num_tokens, mlp_ratio=mlp_ratio,
                         img_range=img_range, routing=routing, routing_seed=routing_seed)
        hidden = int(embed_dim * mlp_ratio)
        for layer in [m for m in self.modules() if isinstance(m, AttentiveLayer)]:
            for key in ("convffn1", "convffn2"):  # replaces the gated MLP in place (same key position)
                layer.add_module(key, ConvFFN(embed_dim, hidden, convffn_kernel_size).apply(init_token_weights))
        restoration_head(self, in_channels, embed_dim)

    def reconstruct(self, x: torch.Tensor, first: torch.Tensor, feat: torch.Tensor) -> torch.Tensor:
        """Restoration tail: the input plus ``conv_last`` of the deep and shallow features."""
        return x + self.conv_last(self.conv_after_body(feat) + first)


def adapt_mambair_restore_state_dict(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Official MambaIR denoising / JPEG files → :class:`MambaIRRestore` (same names; Paddle Linear transposed)."""
    return transpose_linear_weights(state, linear_weight_shapes(MambaIRRestore), source="MambaIR checkpoint")


def adapt_mambairv2_restore_state_dict(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Official MambaIRv2 denoising / JPEG checkpoints → :class:`MambaIRv2Restore`.

    ``relative_position_index_SA`` is checked against the recomputed index and dropped (as for MambaIRv2-light);
    Paddle ``Linear`` weights ([in, out]) are transposed, PyTorch files pass unchanged.
    """
    state = adapt_mambairv2_state_dict(state)
    return transpose_linear_weights(state, linear_weight_shapes(MambaIRv2Restore), source="MambaIRv2 checkpoint")


@register_model("mambair_color_dn", scales=(1,), tasks=("denoise",), adapt_state_dict=adapt_mambair_restore_state_dict,
                description="MambaIR colour denoising (one checkpoint per σ 15/25/50), embed 180, 6x6 blocks",
                source=_V1_SOURCE + "MambaIR_guassian{15,25,50})")
def mambair_color_dn(scale: int, *, embed_dim: int = 180, depths: tuple[int, ...] = (6,) * 6, d_state: int = 16,
                     mlp_ratio: float = 1.2) -> nn.Module:
    """MambaIR colour denoising (Guo et al., ECCV 2024)."""
    return MambaIRRestore(3, embed_dim, depths, d_state, mlp_ratio, img_range=1.0)


@register_model("mambair_jpeg_car", scales=(1,), color="grey", tasks=("jpeg",),
                adapt_state_dict=adapt_mambair_restore_state_dict,
                description="MambaIR grey JPEG artifact removal (one checkpoint per q 10/30/40), embed 180, 6x6 blocks",
                source=_V1_SOURCE + "MambaIR_JEPG10, MambaIR_JPEG{30,40})")
def mambair_jpeg_car(scale: int, *, embed_dim: int = 180, depths: tuple[int, ...] = (6,) * 6, d_state: int = 16,
                     mlp_ratio: float = 1.2) -> nn.Module:
    """MambaIR grey JPEG compression artifact reduction (Guo et al., ECCV 2024)."""
    return MambaIRRestore(1, embed_dim, depths, d_state, mlp_ratio, img_range=1.0)


@register_model("mambairv2_color_dn", scales=(1,), tasks=("denoise",),
                adapt_state_dict=adapt_mambairv2_restore_state_dict,
                description="MambaIRv2 colour denoising (σ 15 released), embed 174, 6x6 layers, window 16",
                source=_V2_SOURCE + "(MambaIRv2_guassian15; the option file loads mambairv2_ColorDN_15.pth)")
def mambairv2_color_dn(scale: int, *, embed_dim: int = 174, d_state: int = 16, depths: tuple[int, ...] = (6,) * 6,
                       num_heads: tuple[int, ...] = (6,) * 6, window_size: int = 16, inner_rank: int = 64,
                       num_tokens: int = 128, mlp_ratio: float = 2.0, convffn_kernel_size: int = 5) -> nn.Module:
    """MambaIRv2 colour denoising (Guo et al., CVPR 2025)."""
    return MambaIRv2Restore(3, embed_dim, d_state, depths, num_heads, window_size, inner_rank, num_tokens, mlp_ratio,
                            convffn_kernel_size, img_range=1.0)


@register_model("mambairv2_jpeg_car", scales=(1,), color="grey", tasks=("jpeg",),
                adapt_state_dict=adapt_mambairv2_restore_state_dict,
                description="MambaIRv2 grey JPEG artifact removal (one checkpoint per q 10/30/40), embed 174, 6x6",
                source=_V2_SOURCE + "(MambaIRv2_JPEG{10,30,40}; the option files load mambairv2_jpeg_q{10,30,40}.pth)")
def mambairv2_jpeg_car(scale: int, *, embed_dim: int = 174, d_state: int = 16, depths: tuple[int, ...] = (6,) * 6,
                       num_heads: tuple[int, ...] = (6,) * 6, window_size: int = 16, inner_rank: int = 64,
                       num_tokens: int = 128, mlp_ratio: float = 2.0, convffn_kernel_size: int = 5) -> nn.Module:
    """MambaIRv2 grey JPEG compression artifact reduction (Guo et al., CVPR 2025)."""
    return MambaIRv2Restore(1, embed_dim, d_state, depths, num_heads, window_size, inner_rank, num_tokens, mlp_ratio,
                            convffn_kernel_size, img_range=1.0)
