"""MambaIRv2-light: Attentive State Space Restoration (Guo et al., CVPR 2025), lightweight SR variant.

Numerically follows the official ``MambaIRv2Light`` of https://github.com/csguoh/MambaIR
(``basicsr/archs/mambairv2light_arch.py``) and its PaddlePaddle port in the SPR²Q release
(https://github.com/momo5-a11/SPR2Q, same file name), with the configuration of
``options/test/mambairv2/test_MambaIRv2_lightSR_x{2,3,4}.yml``: embed 48, 4 groups × 5 attentive
layers, d_state 8, window 16, 4 heads, inner rank 32, 64 routing tokens, mlp ratio 1 (gated MLP),
``pixelshuffledirect`` tail, ``img_range`` 1 with the DIV2K RGB mean subtracted inside the network.

Input and output are RGB in [0, 1]; any size works (mirror-padded to a multiple of 16, cropped back).

Weights: ``mambairv2_light_x{2,4}.pdparams`` are the SPR²Q release
(``experiments/pretrained_models/mambairv2_lightSR_x{2,4}.pdparams``, PaddlePaddle pickles converted
from the official PyTorch weights, ``Linear`` weights stored [in, out]). The official PyTorch files
``mambairv2_lightSR_x{2,4}.pth`` (https://github.com/csguoh/MambaIR/releases/tag/v1.0) load too:
:func:`adapt_mambairv2_state_dict` detects the layout from the architecture's ``Linear`` weights.

Two details of the official forward that matter numerically:

* routing uses ``gumbel_softmax(hard=True)`` also at test time, i.e. every pixel's token is *sampled*
  from the route distribution. ``routing="gumbel"`` (default) does the same with a generator seeded
  per forward (``routing_seed``), so outputs are reproducible; ``routing="argmax"`` takes the most
  likely token (no noise). When gradients are needed, the route MLP gets the straight-through
  gradient of the hard one-hot, as in the official training.
* the semantic prompt is added to the scan's ``C`` in raster order while the scan runs on the
  token-sorted sequence (the official code does not sort the prompt); this is kept as is.

Pixels with the same token keep their raster order in the sorted sequence (stable sort). The official
test script (``MambaIRv2LightModel.test``) cuts LR images with a side ≥ 200 px into overlapping parts of
about 200 px; ``evaluate(..., split=200)`` does the same. With the SPR²Q weights and that protocol every set
at x2 and x4 is within 0.011 dB and 0.0003 SSIM of the published row (benchmarks/results/fp/summary.md),
e.g. Urban100 x2 33.267 / 0.9379 vs 33.26 / 0.9378 and x4 26.820 / 0.8079, the published row exactly.
On whole images Urban100 is lower (x2 33.198, x4 26.802); the other sets move by at most 0.01 dB (at x4 only
Urban100 has LR sides ≥ 200 px, so the other x4 rows are the same either way).
Other routing seeds move x4 Set5 by about ±0.008 dB.

Quantization points (identities in FP, see :class:`~srq.quant.markers.QuantPoint`): window attention
``attn_q``/``attn_k``/``attn_v``/``attn_prob`` and the scan operands ``scan_x`` (u), ``scan_dt``
(low-rank Δ before ``dt_proj``), ``scan_delta`` (Δ before bias/softplus), ``scan_B``, ``scan_C``
(after the prompt is added). MambaIRv2's scan has no ``z`` gate (``z=None`` in the official call).
While ``attn_prob`` is an untouched marker, attention runs as one fused kernel; replacing the marker
or hooking into it switches to the explicit softmax (same values up to float rounding).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F

from .adapt import check_derived_buffer, linear_weight_shapes, transpose_linear_weights
from .edsr import DIV2K_RGB_MEAN
from ..quant.markers import QuantPoint, WeightPoint
from .registry import register_model
from .selective_scan import selective_scan
from .swinir import PatchEmbed, init_token_weights
from .window_attention import (pad_symmetric, relative_position_index, shifted_window_mask, window_partition,
                               window_reverse, windowed_attention)

__all__ = ["MambaIRv2Light", "AttentiveLayer", "ASSM", "SelectiveScan", "WindowAttention", "GatedMLP",
           "mambairv2_light", "adapt_mambairv2_state_dict"]


@dataclass
class _Context:
    """Per-forward data shared by all layers: the (H, W) of the token map, shifted-window mask,
    relative-position index and the routing noise generator (None: argmax routing)."""

    size: tuple[int, int]
    attn_mask: torch.Tensor
    rpi: torch.Tensor
    generator: torch.Generator | None


def _tokens_to_map(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """(B, H·W, C) → (B, C, H, W)."""
    return x.transpose(1, 2).reshape(x.shape[0], x.shape[2], *size)


def _map_to_tokens(x: torch.Tensor) -> torch.Tensor:
    """(B, C, H, W) → (B, H·W, C)."""
    return x.flatten(2).transpose(1, 2)


class Gate(nn.Module):
    """Spatial gate: split channels in halves (x1, x2); return x1 · dwconv5x5(LayerNorm(x2))."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.conv = nn.Conv2d(dim, dim, kernel_size=5, stride=1, padding=2, groups=dim)

    def forward(self, x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        x1, x2 = x.chunk(2, dim=-1)
        return x1 * _map_to_tokens(self.conv(_tokens_to_map(self.norm(x2), size)))


class GatedMLP(nn.Module):
    """fc1 → GELU → :class:`Gate` → fc2 on tokens (B, N, C) (the light model's "ConvFFN")."""

    def __init__(self, in_features: int, hidden_features: int, out_features: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(in_features, hidden_features)
        self.act = nn.GELU()
        self.sg = Gate(hidden_features // 2)
        self.fc2 = nn.Linear(hidden_features // 2, out_features)

    def forward(self, x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        return self.fc2(self.sg(self.act(self.fc1(x)), size))


class WindowAttention(nn.Module):
    """Window multi-head attention on packed qkv with a learned relative-position bias table."""

    def __init__(self, dim: int, window_size: int, num_heads: int) -> None:
        super().__init__()
        self.dim, self.window_size, self.num_heads = dim, window_size, num_heads
        self.scale = (dim // num_heads) ** -0.5
        self.relative_position_bias_table = nn.Parameter(torch.zeros((2 * window_size - 1) ** 2, num_heads))
        self.proj = nn.Linear(dim, dim)
        self.attn_q, self.attn_k = QuantPoint("attn_q"), QuantPoint("attn_k")
        self.attn_v, self.attn_prob = QuantPoint("attn_v"), QuantPoint("attn_prob")

    def forward(self, qkv: torch.Tensor, rpi: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        """qkv (B_, ws², 3C), rpi (ws², ws²), mask (nW, ws², ws²) or None → (B_, ws², C)."""
        n = self.window_size ** 2
        bias = self.relative_position_bias_table[rpi.reshape(-1)].view(n, n, -1).permute(2, 0, 1)
        x = windowed_attention(qkv, self.num_heads, self.scale, bias, mask,
                               self.attn_q, self.attn_k, self.attn_v, self.attn_prob)
        return self.proj(x)


class SelectiveScan(nn.Module):
    """One-direction selective scan with the prompt added to C (MambaIRv2's attentive state space).

    Parameter names and layouts are the official ones: ``x_proj_weight`` (1, R+2N, D),
    ``dt_projs_weight`` (1, D, R), ``dt_projs_bias`` (1, D), ``A_logs`` (D, N), ``Ds`` (D,).
    """

    def __init__(self, d_model: int, d_state: int) -> None:
        super().__init__()
        self.d_inner, self.d_state = d_model, d_state
        self.dt_rank = math.ceil(d_model / 16)
        self.x_proj_weight = nn.Parameter(torch.empty(1, self.dt_rank + 2 * d_state, d_model))
        self.dt_projs_weight = nn.Parameter(torch.empty(1, d_model, self.dt_rank))
        self.dt_projs_bias = nn.Parameter(torch.empty(1, d_model))
        self.A_logs = nn.Parameter(torch.log(torch.arange(1, d_state + 1, dtype=torch.float32)).repeat(d_model, 1))
        self.Ds = nn.Parameter(torch.ones(d_model))
        nn.init.uniform_(self.x_proj_weight, -d_model ** -0.5, d_model ** -0.5)
        nn.init.uniform_(self.dt_projs_weight, -self.dt_rank ** -0.5, self.dt_rank ** -0.5)
        dt = torch.exp(torch.rand(d_model) * (math.log(0.1) - math.log(1e-3)) + math.log(1e-3)).clamp(min=1e-4)
        with torch.no_grad():
            self.dt_projs_bias.copy_((dt + torch.log(-torch.expm1(-dt))).unsqueeze(0))  # softplus⁻¹
        self.scan_x, self.scan_dt = QuantPoint("scan_x"), QuantPoint("scan_dt")
        self.scan_delta, self.scan_B, self.scan_C = QuantPoint("scan_delta"), QuantPoint("scan_B"), QuantPoint("scan_C")
        self.x_proj = WeightPoint("scan_x_proj", "x_proj_weight", lead=2)
        self.dt_projs = WeightPoint("scan_dt_proj", "dt_projs_weight", lead=2)

    def forward(self, x: torch.Tensor, prompt: torch.Tensor) -> torch.Tensor:
        """x (B, L, D) sequence, prompt (B, L, N) added to C → (B, L, D)."""
        xs = self.scan_x(x.transpose(1, 2))  # (B, D, L)
        x_dbl = torch.einsum("bdl,cd->bcl", xs, self.x_proj(self.x_proj_weight)[0])
        dts, Bs, Cs = torch.split(x_dbl, [self.dt_rank, self.d_state, self.d_state], dim=1)
        dts = self.scan_delta(torch.einsum("brl,dr->bdl", self.scan_dt(dts), self.dt_projs(self.dt_projs_weight)[0]))
        Cs = self.scan_C(Cs + prompt.transpose(1, 2))
        A = -torch.exp(self.A_logs.float())
        y = selective_scan(xs.float(), dts.float(), A, self.scan_B(Bs).float(), Cs.float(), self.Ds.float(),
                           delta_bias=self.dt_projs_bias[0].float(), delta_softplus=True)
        return y.transpose(1, 2)


class ASSM(nn.Module):
    """Attentive state-space module: route pixels to tokens, sort by token, scan with token prompts."""

    def __init__(self, dim: int, d_state: int, num_tokens: int = 64, inner_rank: int = 32,
                 mlp_ratio: float = 1.0) -> None:
        super().__init__()
        hidden = int(dim * mlp_ratio)
        self.dim, self.d_state, self.num_tokens = dim, d_state, num_tokens
        self.selectiveScan = SelectiveScan(hidden, d_state)
        self.out_norm = nn.LayerNorm(hidden)
        self.out_proj = nn.Linear(hidden, dim)
        self.in_proj = nn.Sequential(nn.Conv2d(dim, hidden, 1))
        self.CPE = nn.Sequential(nn.Conv2d(hidden, hidden, 3, 1, 1, groups=hidden))
        self.embeddingB = nn.Embedding(num_tokens, inner_rank)
        nn.init.uniform_(self.embeddingB.weight, -1 / num_tokens, 1 / num_tokens)
        self.route = nn.Sequential(nn.Linear(dim, dim // 3), nn.GELU(), nn.Linear(dim // 3, num_tokens),
                                   nn.LogSoftmax(dim=-1))

    def forward(self, x: torch.Tensor, size: tuple[int, int], token: nn.Embedding,
                generator: torch.Generator | None) -> torch.Tensor:
        """x (B, H·W, C) → (B, H·W, C)."""
        b, n, _ = x.shape
        full_embedding = self.embeddingB.weight @ token.weight  # (num_tokens, d_state)
        logits = self.route(x)  # (B, n, num_tokens) log-probabilities
        if generator is not None:  # forward value of gumbel_softmax(hard=True): argmax(logits + Gumbel noise)
            uniform = torch.rand(logits.shape, generator=generator, device=logits.device, dtype=logits.dtype)
            logits = logits - torch.log(-torch.log(uniform))  # + Gumbel(0, 1) noise
        cls = logits.argmax(dim=-1)  # (B, n)
        if torch.is_grad_enabled() and logits.requires_grad:
            # straight-through one-hot as gumbel_softmax(hard=True): the route MLP gets gradients
            soft = torch.softmax(logits, dim=-1)
            policy = F.one_hot(cls, self.num_tokens).to(soft.dtype) - soft.detach() + soft
            prompt = policy @ full_embedding
        else:
            prompt = full_embedding[cls]  # = one_hot(cls) @ full_embedding: (B, n, d_state), raster order
        order = torch.argsort(cls, dim=-1, stable=True)
        inverse = torch.empty_like(order).scatter_(1, order, torch.arange(n, device=x.device).expand(b, n))

        x = self.in_proj(_tokens_to_map(x, size))
        x = _map_to_tokens(x * torch.sigmoid(self.CPE(x)))  # (B, n, hidden)
        x = torch.gather(x, 1, order.unsqueeze(-1).expand_as(x))
        y = self.out_proj(self.out_norm(self.selectiveScan(x, prompt)))
        return torch.gather(y, 1, inverse.unsqueeze(-1).expand_as(y))


class AttentiveLayer(nn.Module):
    """(Shifted-)window attention + gated MLP, then ASSM + gated MLP, with learned skip scales."""

    def __init__(self, dim: int, d_state: int, num_heads: int, window_size: int, shift_size: int,
                 inner_rank: int, num_tokens: int, mlp_ratio: float) -> None:
        super().__init__()
        self.window_size, self.shift_size = window_size, shift_size
        self.norm1, self.norm2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.norm3, self.norm4 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.scale1 = nn.Parameter(torch.full((dim,), 1e-4))
        self.scale2 = nn.Parameter(torch.full((dim,), 1e-4))
        self.wqkv = nn.Linear(dim, 3 * dim)
        self.win_mhsa = WindowAttention(dim, window_size, num_heads)
        self.assm = ASSM(dim, d_state, num_tokens=num_tokens, inner_rank=inner_rank, mlp_ratio=mlp_ratio)
        hidden = int(dim * mlp_ratio)
        self.convffn1 = GatedMLP(dim, hidden, dim)
        self.convffn2 = GatedMLP(dim, hidden, dim)
        self.embeddingA = nn.Embedding(inner_rank, d_state)
        nn.init.uniform_(self.embeddingA.weight, -1 / inner_rank, 1 / inner_rank)

    def forward(self, x: torch.Tensor, ctx: _Context) -> torch.Tensor:
        """x (B, H·W, C) → (B, H·W, C)."""
        (h, w), ws, s = ctx.size, self.window_size, self.shift_size
        b, n, c = x.shape
        shortcut = x
        qkv = self.wqkv(self.norm1(x)).view(b, h, w, 3 * c)
        if s:
            qkv = torch.roll(qkv, shifts=(-s, -s), dims=(1, 2))
        windows = window_partition(qkv, ws).view(-1, ws * ws, 3 * c)
        attn = self.win_mhsa(windows, ctx.rpi, ctx.attn_mask if s else None).view(-1, ws, ws, c)
        attn = window_reverse(attn, ws, h, w)
        if s:
            attn = torch.roll(attn, shifts=(s, s), dims=(1, 2))
        x_win = attn.reshape(b, n, c) + shortcut
        x_win = self.convffn1(self.norm2(x_win), ctx.size) + x_win
        x = shortcut * self.scale1 + x_win

        shortcut = x
        x_aca = self.assm(self.norm3(x), ctx.size, self.embeddingA, ctx.generator) + x
        x = x_aca + self.convffn2(self.norm4(x_aca), ctx.size)
        return shortcut * self.scale2 + x


class BasicBlock(nn.Module):
    """``depth`` attentive layers, every second one with shifted windows."""

    def __init__(self, dim: int, d_state: int, depth: int, num_heads: int, window_size: int, inner_rank: int,
                 num_tokens: int, mlp_ratio: float) -> None:
        super().__init__()
        self.layers = nn.ModuleList(
            AttentiveLayer(dim, d_state, num_heads, window_size, 0 if i % 2 == 0 else window_size // 2,
                           inner_rank, num_tokens, mlp_ratio) for i in range(depth))

    def forward(self, x: torch.Tensor, ctx: _Context) -> torch.Tensor:
        for layer in self.layers:
            x = layer(x, ctx)
        return x


class ASSB(nn.Module):
    """Attentive state-space group: layers, then a 3x3 conv on the map, plus the group's input."""

    def __init__(self, dim: int, **kwargs) -> None:
        super().__init__()
        self.residual_group = BasicBlock(dim, **kwargs)
        self.conv = nn.Conv2d(dim, dim, 3, 1, 1)

    def forward(self, x: torch.Tensor, ctx: _Context) -> torch.Tensor:
        return _map_to_tokens(self.conv(_tokens_to_map(self.residual_group(x, ctx), ctx.size))) + x


class MambaIRv2Light(nn.Module):
    """MambaIRv2-light SR network: (N, 3, H, W) RGB in [0, 1] → (N, 3, s·H, s·W); any H, W.

    Args:
        upscale: 2, 3 or 4.
        routing: ``"gumbel"`` (as the official forward: tokens sampled with Gumbel noise, seeded with
            ``routing_seed`` at every forward, so a given input always gives the same output; the noise
            depends on the input's shape and batch) or ``"argmax"`` (most likely token; about 0.04 dB
            lower on Set5 x4 than sampling, which the published numbers use).
    """

    mean: torch.Tensor  # buffers
    relative_position_index_SA: torch.Tensor

    def __init__(self, upscale: int = 2, embed_dim: int = 48, d_state: int = 8, depths: tuple[int, ...] = (5, 5, 5, 5),
                 num_heads: tuple[int, ...] = (4, 4, 4, 4), window_size: int = 16, inner_rank: int = 32,
                 num_tokens: int = 64, mlp_ratio: float = 1.0, img_range: float = 1.0,
                 routing: str = "gumbel", routing_seed: int = 0) -> None:
        super().__init__()
        if routing not in ("gumbel", "argmax"):
            raise ValueError(f"routing must be 'gumbel' or 'argmax', not {routing!r}")
        self.upscale, self.window_size, self.img_range = upscale, window_size, img_range
        self.routing, self.routing_seed = routing, routing_seed
        self.register_buffer("mean", torch.tensor(DIV2K_RGB_MEAN).view(1, 3, 1, 1), persistent=False)
        # derived from the window size; official checkpoints carry it (checked, then dropped, on load)
        self.register_buffer("relative_position_index_SA", relative_position_index(window_size), persistent=False)
        self.conv_first = nn.Conv2d(3, embed_dim, 3, 1, 1)
        self.patch_embed = PatchEmbed(embed_dim)
        self.layers = nn.ModuleList(
            ASSB(embed_dim, d_state=d_state, depth=depth, num_heads=heads, window_size=window_size,
                 inner_rank=inner_rank, num_tokens=num_tokens, mlp_ratio=mlp_ratio)
            for depth, heads in zip(depths, num_heads))
        self.norm = nn.LayerNorm(embed_dim)
        self.conv_after_body = nn.Conv2d(embed_dim, embed_dim, 3, 1, 1)
        self.upsample = nn.Sequential(nn.Conv2d(embed_dim, 3 * upscale ** 2, 3, 1, 1), nn.PixelShuffle(upscale))
        self.apply(init_token_weights)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h0, w0 = x.shape[-2:]
        x = pad_symmetric(x, self.window_size)
        h, w = x.shape[-2:]
        mean = self.mean.to(x.dtype)
        x = (x - mean) * self.img_range
        generator = None
        if self.routing == "gumbel" and x.device.type != "meta":  # shape-only passes (cost) need no noise
            generator = torch.Generator(device=x.device)
            generator.manual_seed(self.routing_seed)
        ctx = _Context((h, w), shifted_window_mask(h, w, self.window_size, self.window_size // 2, x.device, x.dtype),
                       self.relative_position_index_SA, generator)

        first = self.conv_first(x)
        feat = self.patch_embed(first)
        for layer in self.layers:
            feat = layer(feat, ctx)
        x = self.reconstruct(x, first, _tokens_to_map(self.norm(feat), (h, w)))
        x = x / self.img_range + mean
        return x[..., :h0 * self.upscale, :w0 * self.upscale]

    def reconstruct(self, x: torch.Tensor, first: torch.Tensor, feat: torch.Tensor) -> torch.Tensor:
        """The tail: (normalised input, shallow features, deep features) (B, ·, H, W) → output before the mean is
        added back; SR: upsample the deep features plus the shallow ones."""
        return self.upsample(self.conv_after_body(feat) + first)


def adapt_mambairv2_state_dict(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Official MambaIRv2-light checkpoints (PyTorch or SPR²Q Paddle) → :class:`MambaIRv2Light` keys.

    * ``relative_position_index_SA`` is recomputed from the window size; the stored one is checked
      against it (window size read from its shape) and dropped;
    * Paddle ``Linear`` weights ([in, out]) are transposed; PyTorch / srq files pass unchanged.
    """
    state = dict(state)
    rpi = state.get("relative_position_index_SA")
    if rpi is not None:
        ws = math.isqrt(rpi.shape[0]) if rpi.dim() == 2 else 0
        check_derived_buffer(state, "relative_position_index_SA", relative_position_index(max(ws, 1)),
                             "relative-position index")
    return transpose_linear_weights(state, linear_weight_shapes(MambaIRv2Light), source="MambaIRv2 checkpoint")


@register_model("mambairv2_light", scales=(2, 4),
                weights={2: "mambairv2_light_x2.pdparams", 4: "mambairv2_light_x4.pdparams"},
                description="MambaIRv2-light (Guo et al., CVPR 2025), embed 48, 4x5 layers, window 16",
                source="https://github.com/momo5-a11/SPR2Q (experiments/pretrained_models) or "
                       "https://github.com/csguoh/MambaIR/releases/tag/v1.0",
                adapt_state_dict=adapt_mambairv2_state_dict)
def mambairv2_light(scale: int, *, embed_dim: int = 48, d_state: int = 8, depths: tuple[int, ...] = (5, 5, 5, 5),
                    num_heads: tuple[int, ...] = (4, 4, 4, 4), window_size: int = 16, inner_rank: int = 32,
                    num_tokens: int = 64, mlp_ratio: float = 1.0) -> nn.Module:
    """MambaIRv2-light (Guo et al., CVPR 2025), embed 48, 4x5 layers, window 16."""
    return MambaIRv2Light(upscale=scale, embed_dim=embed_dim, d_state=d_state, depths=depths, num_heads=num_heads,
                          window_size=window_size, inner_rank=inner_rank, num_tokens=num_tokens, mlp_ratio=mlp_ratio)
