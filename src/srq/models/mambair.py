"""MambaIR-light: A Simple Baseline for Image Restoration with State-Space Model (Guo et al., ECCV 2024).

Key-compatible with the official lightweight-SR checkpoints of https://github.com/csguoh/MambaIR
(``basicsr/archs/mambair_arch.py``, class ``MambaIR``, as on the ``mambair`` branch after the
2024-08 update that introduced the current light model; BasicSR names, ``params`` wrapper). This is
the full-precision backbone quantized by Q-MambaIR (https://github.com/Areache/Q-MambaIR). The
configuration is that of ``options/test/mambair/test_MambaIR_lightSR_x{2,3,4}.yml``: embed 60,
4 residual state-space groups × 6 blocks, d_state 10, mlp (expand) ratio 1.2 (inner width 72),
``pixelshuffledirect`` tail, ``img_range`` 1 with the DIV2K mean subtracted inside the network, and
the light channel-attention block (1x1 → depthwise 3x3 → GELU → 1x1 → dilated depthwise 3x3 → CA).
(The first release, ``options/test/test_MambaIR_lightSR_x2.yml`` of March 2024, used d_state 16,
mlp ratio 1.5 and the plain CAB; its checkpoints do not fit this architecture.)

Weights are not shipped with srq. Download ``MambaIR_light{2,3,4}`` from the links in the MambaIR
README ("Model Summary", Google Drive; files of the form ``{'params': state_dict}``) and pass the path
as ``weights``, or put them in the weights root as ``mambair_light_x{2,3,4}.pth``.

Input and output are RGB in [0, 1]; any size works (no windows, no padding).

Quantization points (identities in FP): the scan operands ``scan_x`` (u), ``scan_dt`` (low-rank Δ),
``scan_delta`` (Δ before bias/softplus), ``scan_B``, ``scan_C`` and the gate input ``scan_z``.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

from .adapt import linear_weight_shapes, transpose_linear_weights
from .edsr import DIV2K_RGB_MEAN
from ..quant.markers import QuantPoint, WeightPoint
from .registry import register_model
from .selective_scan import selective_scan
from .swinir import PatchEmbed, TokenResidualGroup, init_token_weights

__all__ = ["MambaIR", "VSSBlock", "SS2D", "CAB", "mambair_light", "adapt_mambair_state_dict"]


class ChannelAttention(nn.Module):
    """RCAN channel attention: x · sigmoid(W2 relu(W1 avgpool(x)))."""

    def __init__(self, num_feat: int, squeeze_factor: int) -> None:
        super().__init__()
        self.attention = nn.Sequential(
            nn.AdaptiveAvgPool2d(1), nn.Conv2d(num_feat, num_feat // squeeze_factor, 1), nn.ReLU(),
            nn.Conv2d(num_feat // squeeze_factor, num_feat, 1), nn.Sigmoid())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.attention(x)


class CAB(nn.Module):
    """Light channel-attention block: 1x1 (÷2) → dw3x3 → GELU → 1x1 → dilated dw3x3 → channel attention."""

    def __init__(self, num_feat: int, compress_ratio: int = 2, squeeze_factor: int = 30) -> None:
        super().__init__()
        mid = num_feat // compress_ratio
        self.cab = nn.Sequential(
            nn.Conv2d(num_feat, mid, 1), nn.Conv2d(mid, mid, 3, 1, 1, groups=mid), nn.GELU(),
            nn.Conv2d(mid, num_feat, 1), nn.Conv2d(num_feat, num_feat, 3, 1, padding=2, groups=num_feat, dilation=2),
            ChannelAttention(num_feat, squeeze_factor))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.cab(x)


class SS2D(nn.Module):
    """2-D selective scan over four directions (rows, columns, and both reversed), summed.

    Parameter names and layouts are the official ones: ``in_proj`` (2·D_in, C) without bias,
    depthwise ``conv2d``, ``x_proj_weight`` (4, R+2N, D_in), ``dt_projs_weight`` (4, D_in, R),
    ``dt_projs_bias`` (4, D_in), ``A_logs`` (4·D_in, N), ``Ds`` (4·D_in,), ``out_norm``, ``out_proj``.
    """

    def __init__(self, d_model: int, d_state: int = 16, d_conv: int = 3, expand: float = 2.0) -> None:
        super().__init__()
        self.d_state, self.d_inner = d_state, int(expand * d_model)
        self.dt_rank = math.ceil(d_model / 16)
        d_inner, k = self.d_inner, 4
        self.in_proj = nn.Linear(d_model, 2 * d_inner, bias=False)
        self.conv2d = nn.Conv2d(d_inner, d_inner, d_conv, padding=(d_conv - 1) // 2, groups=d_inner)
        self.act = nn.SiLU()
        self.x_proj_weight = nn.Parameter(torch.empty(k, self.dt_rank + 2 * d_state, d_inner))
        self.dt_projs_weight = nn.Parameter(torch.empty(k, d_inner, self.dt_rank))
        self.dt_projs_bias = nn.Parameter(torch.empty(k, d_inner))
        a_log = torch.log(torch.arange(1, d_state + 1, dtype=torch.float32))  # S4D-real init
        self.A_logs = nn.Parameter(a_log.repeat(k * d_inner, 1))
        self.Ds = nn.Parameter(torch.ones(k * d_inner))
        self.out_norm = nn.LayerNorm(d_inner)
        self.out_proj = nn.Linear(d_inner, d_model, bias=False)
        nn.init.uniform_(self.x_proj_weight, -d_inner ** -0.5, d_inner ** -0.5)
        nn.init.uniform_(self.dt_projs_weight, -self.dt_rank ** -0.5, self.dt_rank ** -0.5)
        dt = torch.exp(torch.rand(k, d_inner) * (math.log(0.1) - math.log(1e-3)) + math.log(1e-3)).clamp(min=1e-4)
        with torch.no_grad():
            self.dt_projs_bias.copy_(dt + torch.log(-torch.expm1(-dt)))  # softplus⁻¹
        self.scan_x, self.scan_dt = QuantPoint("scan_x"), QuantPoint("scan_dt")
        self.scan_delta, self.scan_B = QuantPoint("scan_delta"), QuantPoint("scan_B")
        self.scan_C, self.scan_z = QuantPoint("scan_C"), QuantPoint("scan_z")
        self.x_proj = WeightPoint("scan_x_proj", "x_proj_weight", lead=2)
        self.dt_projs = WeightPoint("scan_dt_proj", "dt_projs_weight", lead=2)

    def forward_core(self, x: torch.Tensor) -> torch.Tensor:
        """(B, D, H, W) → (B, D, H·W): the four scans mapped back to raster order and summed."""
        b, d, h, w = x.shape
        length, k = h * w, 4
        x_hwwh = torch.stack([x.reshape(b, d, length), x.transpose(2, 3).reshape(b, d, length)], dim=1)
        xs = self.scan_x(torch.cat([x_hwwh, torch.flip(x_hwwh, dims=[-1])], dim=1))  # (B, 4, D, L)
        x_dbl = torch.einsum("bkdl,kcd->bkcl", xs, self.x_proj(self.x_proj_weight))
        dts, Bs, Cs = torch.split(x_dbl, [self.dt_rank, self.d_state, self.d_state], dim=2)
        dts = self.scan_delta(torch.einsum("bkrl,kdr->bkdl", self.scan_dt(dts), self.dt_projs(self.dt_projs_weight)))
        y = selective_scan(xs.reshape(b, k * d, length).float(), dts.reshape(b, k * d, length).float(),
                           -torch.exp(self.A_logs.float()), self.scan_B(Bs).float(), self.scan_C(Cs).float(),
                           self.Ds.float(), delta_bias=self.dt_projs_bias.reshape(-1).float(),
                           delta_softplus=True).view(b, k, d, length)
        inv = torch.flip(y[:, 2:4], dims=[-1])
        wh = y[:, 1].view(b, d, w, h).transpose(2, 3).reshape(b, d, length)
        invwh = inv[:, 1].view(b, d, w, h).transpose(2, 3).reshape(b, d, length)
        return y[:, 0] + inv[:, 0] + wh + invwh

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x (B, H, W, C) → (B, H, W, C)."""
        b, h, w, _ = x.shape
        x, z = self.in_proj(x).chunk(2, dim=-1)
        x = self.act(self.conv2d(x.permute(0, 3, 1, 2)))
        y = self.forward_core(x).transpose(1, 2).reshape(b, h, w, -1)
        return self.out_proj(self.out_norm(y) * F.silu(self.scan_z(z)))


class VSSBlock(nn.Module):
    """Residual state-space block: x·s1 + SS2D(LN(x)), then ·s2 + CAB(LN(·))."""

    def __init__(self, hidden_dim: int, d_state: int, expand: float) -> None:
        super().__init__()
        self.ln_1 = nn.LayerNorm(hidden_dim)
        self.self_attention = SS2D(hidden_dim, d_state=d_state, expand=expand)
        self.skip_scale = nn.Parameter(torch.ones(hidden_dim))
        self.conv_blk = CAB(hidden_dim)
        self.ln_2 = nn.LayerNorm(hidden_dim)
        self.skip_scale2 = nn.Parameter(torch.ones(hidden_dim))

    def forward(self, x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        """x (B, H·W, C) → (B, H·W, C)."""
        b, n, c = x.shape
        x = x.view(b, *size, c)
        x = x * self.skip_scale + self.self_attention(self.ln_1(x))
        x = x * self.skip_scale2 + self.conv_blk(self.ln_2(x).permute(0, 3, 1, 2)).permute(0, 2, 3, 1)
        return x.reshape(b, n, c)


class BasicLayer(nn.Module):
    """``depth`` VSS blocks (key ``blocks``)."""

    def __init__(self, dim: int, depth: int, d_state: int, mlp_ratio: float) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(VSSBlock(dim, d_state, mlp_ratio) for _ in range(depth))

    def forward(self, x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        for blk in self.blocks:
            x = blk(x, size)
        return x


class ResidualGroup(TokenResidualGroup):
    """Residual state-space group: VSS blocks, a 3x3 conv on the map, plus the input."""

    def __init__(self, dim: int, depth: int, d_state: int, mlp_ratio: float) -> None:
        super().__init__(BasicLayer(dim, depth, d_state, mlp_ratio), dim)


class MambaIR(nn.Module):
    """MambaIR with the ``pixelshuffledirect`` tail: (N, 3, H, W) in [0, 1] → (N, 3, s·H, s·W); any H, W."""

    mean: torch.Tensor  # buffer

    def __init__(self, upscale: int = 2, embed_dim: int = 60, depths: tuple[int, ...] = (6, 6, 6, 6),
                 d_state: int = 10, mlp_ratio: float = 1.2, img_range: float = 1.0) -> None:
        super().__init__()
        self.upscale, self.img_range = upscale, img_range
        self.register_buffer("mean", torch.tensor(DIV2K_RGB_MEAN).view(1, 3, 1, 1), persistent=False)
        self.conv_first = nn.Conv2d(3, embed_dim, 3, 1, 1)
        self.patch_embed = PatchEmbed(embed_dim)
        self.layers = nn.ModuleList(ResidualGroup(embed_dim, depth, d_state, mlp_ratio) for depth in depths)
        self.norm = nn.LayerNorm(embed_dim)
        self.conv_after_body = nn.Conv2d(embed_dim, embed_dim, 3, 1, 1)
        self.upsample = nn.Sequential(nn.Conv2d(embed_dim, 3 * upscale ** 2, 3, 1, 1), nn.PixelShuffle(upscale))
        self.apply(init_token_weights)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """(N, C, H, W) → (N, C, H, W) through the residual groups."""
        size = (x.shape[2], x.shape[3])
        t = self.patch_embed(x)
        for layer in self.layers:
            t = layer(t, size)
        return self.norm(t).transpose(1, 2).reshape(x.shape)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mean = self.mean.to(x.dtype)
        x = self.conv_first((x - mean) * self.img_range)
        x = self.upsample(self.conv_after_body(self.forward_features(x)) + x)
        return x / self.img_range + mean


def adapt_mambair_state_dict(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Official MambaIR-light checkpoints → :class:`MambaIR` (same names; Paddle ``Linear`` layouts transposed)."""
    return transpose_linear_weights(state, linear_weight_shapes(MambaIR), source="MambaIR checkpoint")


@register_model("mambair_light", scales=(2, 3, 4),
                weights={2: "mambair_light_x2.pth", 3: "mambair_light_x3.pth", 4: "mambair_light_x4.pth"},
                description="MambaIR-light (Guo et al., ECCV 2024), embed 60, 4x6 blocks, d_state 10",
                source="https://github.com/csguoh/MambaIR (README model summary, MambaIR_light{2,3,4})",
                adapt_state_dict=adapt_mambair_state_dict)
def mambair_light(scale: int, *, embed_dim: int = 60, depths: tuple[int, ...] = (6, 6, 6, 6), d_state: int = 10,
                  mlp_ratio: float = 1.2) -> nn.Module:
    """MambaIR-light (Guo et al., ECCV 2024), embed 60, 4x6 blocks, d_state 10."""
    return MambaIR(upscale=scale, embed_dim=embed_dim, depths=depths, d_state=d_state, mlp_ratio=mlp_ratio)
