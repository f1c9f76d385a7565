"""SwinIR-light (SwinIR-S): Image Restoration Using Swin Transformer (Liang et al., ICCVW 2021).

Key-compatible with the official lightweight-SR checkpoints of https://github.com/JingyunLiang/SwinIR
(``models/network_swinir.py``; BasicSR's ``basicsr/archs/swinir_arch.py`` uses the same names):
``SwinIR(upscale=s, img_size=64, window_size=8, img_range=1., depths=[6, 6, 6, 6], embed_dim=60,
num_heads=[6, 6, 6, 6], mlp_ratio=2, upsampler='pixelshuffledirect', resi_connection='1conv')`` — the
configuration ``main_test_swinir.py --task lightweight_sr`` builds. Input/output RGB in [0, 1]; the
DIV2K mean is subtracted inside the network (``img_range`` 1).

Weights are not shipped with srq. Download (each file is ``{'params': state_dict}``)
``002_lightweightSR_DIV2K_s64w8_SwinIR-S_x{2,3,4}.pth`` from
https://github.com/JingyunLiang/SwinIR/releases/download/v0.0/ and pass the path as ``weights``, or put
them in the weights root as ``swinir_light_x{2,3,4}.pth`` for ``weights="official"``.

Size independence: the official checkpoints store each block's ``attn.relative_position_index`` and,
for shifted blocks, an ``attn_mask`` computed for 64×64 training patches. Here both are recomputed at
run time for the actual input size; :func:`adapt_swinir_state_dict` checks the stored ones against
the recomputation and drops them, so loading stays strict about everything else.

Like ``main_test_swinir.py``, the forward mirror-pads the input by ``window - h mod window`` (a whole
window if h is already a multiple) before the network and crops the output back; this reproduces the
published test numbers for any input size.

Quantization points (identities in FP): ``attn_q``, ``attn_k``, ``attn_v``, ``attn_prob`` in every
window attention.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from ..errors import SrqError
from .adapt import check_derived_buffer, linear_weight_shapes, transpose_linear_weights
from .edsr import DIV2K_RGB_MEAN
from ..quant.markers import QuantPoint
from .registry import register_model
from .window_attention import (pad_symmetric, relative_position_index, shifted_window_mask, window_partition,
                               window_reverse, windowed_attention)

__all__ = ["SwinIR", "SwinTransformerBlock", "WindowAttention", "swinir_light", "adapt_swinir_state_dict"]


class Mlp(nn.Module):
    """fc1 → GELU → fc2."""

    def __init__(self, in_features: int, hidden_features: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(in_features, hidden_features)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden_features, in_features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class WindowAttention(nn.Module):
    """Window multi-head self-attention with a relative-position bias table (Swin)."""

    relative_position_index: torch.Tensor  # buffer

    def __init__(self, dim: int, window_size: int, num_heads: int) -> None:
        super().__init__()
        self.dim, self.window_size, self.num_heads = dim, window_size, num_heads
        self.scale = (dim // num_heads) ** -0.5
        self.relative_position_bias_table = nn.Parameter(torch.zeros((2 * window_size - 1) ** 2, num_heads))
        nn.init.trunc_normal_(self.relative_position_bias_table, std=0.02)
        # derived from the window size; official checkpoints carry it (checked, then dropped, on load)
        self.register_buffer("relative_position_index", relative_position_index(window_size), persistent=False)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.attn_q, self.attn_k = QuantPoint("attn_q"), QuantPoint("attn_k")
        self.attn_v, self.attn_prob = QuantPoint("attn_v"), QuantPoint("attn_prob")

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """x (B·nW, ws², C), mask (nW, ws², ws²) or None → (B·nW, ws², C)."""
        n = self.window_size ** 2
        bias = self.relative_position_bias_table[self.relative_position_index.reshape(-1)].view(n, n, -1)
        x = windowed_attention(self.qkv(x), self.num_heads, self.scale, bias.permute(2, 0, 1), mask,
                               self.attn_q, self.attn_k, self.attn_v, self.attn_prob)
        return self.proj(x)


class SwinTransformerBlock(nn.Module):
    """LayerNorm → (shifted-)window attention → residual; LayerNorm → MLP → residual.

    The shifted-window mask is computed for the actual feature size at every call.
    """

    def __init__(self, dim: int, num_heads: int, window_size: int, shift_size: int, mlp_ratio: float) -> None:
        super().__init__()
        self.window_size, self.shift_size = window_size, shift_size
        self.norm1 = nn.LayerNorm(dim)
        self.attn = WindowAttention(dim, window_size, num_heads)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))

    def forward(self, x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        """x (B, H·W, C) → (B, H·W, C); H, W multiples of the window size."""
        (h, w), ws, s = size, self.window_size, self.shift_size
        b, n, c = x.shape
        shortcut = x
        x = self.norm1(x).view(b, h, w, c)
        mask = None
        if s:
            x = torch.roll(x, shifts=(-s, -s), dims=(1, 2))
            mask = shifted_window_mask(h, w, ws, s, x.device, x.dtype)
        attn = self.attn(window_partition(x, ws).view(-1, ws * ws, c), mask).view(-1, ws, ws, c)
        x = window_reverse(attn, ws, h, w)
        if s:
            x = torch.roll(x, shifts=(s, s), dims=(1, 2))
        x = shortcut + x.reshape(b, n, c)
        return x + self.mlp(self.norm2(x))


class BasicLayer(nn.Module):
    """``depth`` Swin blocks, every second one shifted by half a window."""

    def __init__(self, dim: int, depth: int, num_heads: int, window_size: int, mlp_ratio: float) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(
            SwinTransformerBlock(dim, num_heads, window_size, 0 if i % 2 == 0 else window_size // 2, mlp_ratio)
            for i in range(depth))

    def forward(self, x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        for blk in self.blocks:
            x = blk(x, size)
        return x


def init_token_weights(m: nn.Module) -> None:
    """Initialisation of the token models (SwinIR, MambaIR, MambaIRv2): truncated-normal Linear weights
    (std 0.02), zero biases, unit LayerNorms. Only matters for untrained models."""
    if isinstance(m, nn.Linear):
        nn.init.trunc_normal_(m.weight, std=0.02)
        if m.bias is not None:
            nn.init.zeros_(m.bias)
    elif isinstance(m, nn.LayerNorm):
        nn.init.ones_(m.weight)
        nn.init.zeros_(m.bias)


class TokenResidualGroup(nn.Module):
    """A residual group on tokens: ``residual_group`` blocks, a 3x3 conv on the map, plus the input.

    Shared by SwinIR's RSTB and MambaIR's residual group (keys ``residual_group.*``, ``conv.*``).
    Tokens (B, H·W, C) → (B, H·W, C).
    """

    def __init__(self, residual_group: nn.Module, dim: int) -> None:
        super().__init__()
        self.residual_group = residual_group
        self.conv = nn.Conv2d(dim, dim, 3, 1, 1)

    def forward(self, x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        y = self.residual_group(x, size)
        y = self.conv(y.transpose(1, 2).reshape(y.shape[0], y.shape[2], *size))
        return y.flatten(2).transpose(1, 2) + x


class RSTB(TokenResidualGroup):
    """Residual Swin Transformer block: Swin blocks, a 3x3 conv on the map, plus the input."""

    def __init__(self, dim: int, depth: int, num_heads: int, window_size: int, mlp_ratio: float) -> None:
        super().__init__(BasicLayer(dim, depth, num_heads, window_size, mlp_ratio), dim)


class PatchEmbed(nn.Module):
    """(B, C, H, W) → tokens (B, H·W, C), then LayerNorm (key ``patch_embed.norm``)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(x.flatten(2).transpose(1, 2))


class SwinIR(nn.Module):
    """SwinIR with the ``pixelshuffledirect`` tail: (N, 3, H, W) in [0, 1] → (N, 3, s·H, s·W); any H, W."""

    mean: torch.Tensor  # buffer

    def __init__(self, upscale: int = 2, embed_dim: int = 60, depths: tuple[int, ...] = (6, 6, 6, 6),
                 num_heads: tuple[int, ...] = (6, 6, 6, 6), window_size: int = 8, mlp_ratio: float = 2.0,
                 img_range: float = 1.0) -> None:
        super().__init__()
        self.upscale, self.window_size, self.img_range = upscale, window_size, img_range
        self.register_buffer("mean", torch.tensor(DIV2K_RGB_MEAN).view(1, 3, 1, 1), persistent=False)
        self.conv_first = nn.Conv2d(3, embed_dim, 3, 1, 1)
        self.patch_embed = PatchEmbed(embed_dim)
        self.layers = nn.ModuleList(RSTB(embed_dim, depth, heads, window_size, mlp_ratio)
                                    for depth, heads in zip(depths, num_heads))
        self.norm = nn.LayerNorm(embed_dim)
        self.conv_after_body = nn.Conv2d(embed_dim, embed_dim, 3, 1, 1)
        self.upsample = nn.Sequential(nn.Conv2d(embed_dim, 3 * upscale ** 2, 3, 1, 1), nn.PixelShuffle(upscale))
        self.apply(init_token_weights)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """(N, C, H, W) → (N, C, H, W) through the RSTBs."""
        size = (x.shape[2], x.shape[3])
        t = self.patch_embed(x)
        for layer in self.layers:
            t = layer(t, size)
        return self.norm(t).transpose(1, 2).reshape(x.shape)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h0, w0 = x.shape[-2:]
        x = pad_symmetric(x, self.window_size, always=True)
        mean = self.mean.to(x.dtype)
        x = self.conv_first((x - mean) * self.img_range)
        x = self.upsample(self.conv_after_body(self.forward_features(x)) + x)
        return (x / self.img_range + mean)[..., :h0 * self.upscale, :w0 * self.upscale]


def adapt_swinir_state_dict(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Official SwinIR checkpoints → :class:`SwinIR` keys (same names; size-dependent buffers checked, dropped).

    ``*.attn.relative_position_index`` must equal the index for the window size implied by its shape;
    ``*.attn_mask`` (shifted blocks, computed for the training patch) must equal
    :func:`~srq.models.window_attention.shifted_window_mask` for the square size its window count
    implies. Linear weights stored [in, out] (a Paddle export) are transposed.
    """
    state = dict(state)
    for key in [k for k in state if k.endswith("attn.relative_position_index")]:
        n = state[key].shape[0]
        ws = math.isqrt(n)
        check_derived_buffer(state, key, relative_position_index(max(ws, 1)), "relative-position index")
    for key in [k for k in state if k.endswith(".attn_mask")]:
        nw, n = state[key].shape[0], state[key].shape[-1]
        ws, side = math.isqrt(n), math.isqrt(nw)
        if ws * ws != n or side * side != nw:
            raise SrqError(f"checkpoint entry {key} has shape {tuple(state[key].shape)}, not a mask of square "
                           f"windows on a square training patch; the file is not an official SwinIR checkpoint")
        expected = shifted_window_mask(side * ws, side * ws, ws, ws // 2)
        check_derived_buffer(state, key, expected, f"shifted-window mask (window {ws}, {side * ws}x{side * ws} patch)")
    return transpose_linear_weights(state, linear_weight_shapes(SwinIR), source="SwinIR checkpoint")


@register_model("swinir_light", scales=(2, 3, 4),
                weights={2: "swinir_light_x2.pth", 3: "swinir_light_x3.pth", 4: "swinir_light_x4.pth"},
                description="SwinIR-light (Liang et al., ICCVW 2021), embed 60, 4x6 blocks, window 8",
                source="https://github.com/JingyunLiang/SwinIR/releases/tag/v0.0 "
                       "(002_lightweightSR_DIV2K_s64w8_SwinIR-S_x{2,3,4}.pth)",
                adapt_state_dict=adapt_swinir_state_dict)
def swinir_light(scale: int, *, embed_dim: int = 60, depths: tuple[int, ...] = (6, 6, 6, 6),
                 num_heads: tuple[int, ...] = (6, 6, 6, 6), window_size: int = 8, mlp_ratio: float = 2.0) -> nn.Module:
    """SwinIR-light (Liang et al., ICCVW 2021), embed 60, 4x6 blocks, window 8."""
    return SwinIR(upscale=scale, embed_dim=embed_dim, depths=depths, num_heads=num_heads, window_size=window_size,
                  mlp_ratio=mlp_ratio)
