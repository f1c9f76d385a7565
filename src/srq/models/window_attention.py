"""Shared pieces of (shifted-)window self-attention as in Swin / SwinIR / MambaIRv2.

Everything that depends on the input size (padding, the shifted-window mask) is computed per call,
and everything that depends only on the window size (the relative-position index) is derived from
it, so no buffer ties a model to its training resolution.
"""

from __future__ import annotations

import weakref

import torch
from torch import nn
from torch.nn import functional as F

from ..quant.markers import QuantPoint

__all__ = ["window_partition", "window_reverse", "relative_position_index", "shifted_window_mask",
           "pad_symmetric", "windowed_attention", "is_plain_marker", "MASK_VALUE"]

MASK_VALUE = -100.0  # added to attention logits between tokens of different shifted sub-windows


def window_partition(x: torch.Tensor, ws: int) -> torch.Tensor:
    """(b, h, w, c) → (b·(h/ws)·(w/ws), ws, ws, c), windows in raster order; h, w multiples of ws."""
    b, h, w, c = x.shape
    x = x.view(b, h // ws, ws, w // ws, ws, c)
    return x.permute(0, 1, 3, 2, 4, 5).contiguous().view(-1, ws, ws, c)


def window_reverse(windows: torch.Tensor, ws: int, h: int, w: int) -> torch.Tensor:
    """Inverse of :func:`window_partition`: (b·nW, ws, ws, c) → (b, h, w, c)."""
    b = windows.shape[0] // ((h // ws) * (w // ws))
    x = windows.view(b, h // ws, w // ws, ws, ws, -1)
    return x.permute(0, 1, 3, 2, 4, 5).contiguous().view(b, h, w, -1)


def relative_position_index(ws: int, device: torch.device | None = None) -> torch.Tensor:
    """(ws², ws²) int64 index into a ((2ws-1)², heads) bias table: ``(dy + ws-1)·(2ws-1) + dx + ws-1``."""
    coords = torch.stack(torch.meshgrid(torch.arange(ws, device=device), torch.arange(ws, device=device),
                                        indexing="ij")).flatten(1)  # (2, ws²)
    rel = (coords[:, :, None] - coords[:, None, :]).permute(1, 2, 0) + (ws - 1)  # (ws², ws², 2)
    return rel[..., 0] * (2 * ws - 1) + rel[..., 1]


def shifted_window_mask(h: int, w: int, ws: int, shift: int, device: torch.device | None = None,
                        dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """(nW, ws², ws²) additive mask for shifted windows of an h×w map: 0 within a sub-window, -100 across.

    After a cyclic shift by ``shift``, windows on the bottom/right border mix pixels from opposite
    image borders; the nine regions ``[0, h-ws) / [h-ws, h-shift) / [h-shift, h)`` (same in w) are
    labelled and tokens with different labels are masked, as in Swin's ``calculate_mask``.
    """
    img = torch.zeros(1, h, w, 1, device=device, dtype=dtype)
    bounds = (slice(0, -ws), slice(-ws, -shift), slice(-shift, None))
    label = 0
    for hs in bounds:
        for wsl in bounds:
            img[:, hs, wsl, :] = label
            label += 1
    win = window_partition(img, ws).view(-1, ws * ws)
    diff = win.unsqueeze(1) - win.unsqueeze(2)
    return torch.where(diff != 0, torch.full_like(diff, MASK_VALUE), torch.zeros_like(diff))


def pad_symmetric(x: torch.Tensor, multiple: int, always: bool = False) -> torch.Tensor:
    """Pad (n, c, h, w) at the bottom/right to a multiple of ``multiple`` by mirroring (edge repeated).

    This is the ``cat([x, flip(x)])[:h + pad]`` padding of the official MambaIRv2 forward
    (``always=False``: pad ``-h mod multiple``) and of SwinIR's ``main_test_swinir.py``
    (``always=True``: pad ``multiple - h mod multiple``, a whole window when h is already a multiple).
    """
    h, w = x.shape[-2:]
    th = h + (multiple - h % multiple if always else -h % multiple)
    tw = w + (multiple - w % multiple if always else -w % multiple)
    while x.shape[2] < th:
        x = torch.cat([x, torch.flip(x, [2])], 2)
    while x.shape[3] < tw:
        x = torch.cat([x, torch.flip(x, [3])], 3)
    return x[:, :, :th, :tw]


def windowed_attention(qkv: torch.Tensor, num_heads: int, scale: float, bias: torch.Tensor,
                       mask: torch.Tensor | None, q_point: nn.Module, k_point: nn.Module, v_point: nn.Module,
                       prob_point: nn.Module) -> torch.Tensor:
    """Multi-head attention inside windows, before the output projection.

    Args:
        qkv: (B_, n, 3c) packed projections, B_ = batch·windows, n = ws².
        bias: (heads, n, n) relative-position bias.
        mask: (nW, n, n) additive shifted-window mask, or None.
        q_point, k_point, v_point, prob_point: QuantPoint markers for the scaled query, key, value
            (B_, heads, n, c/heads) and the attention probabilities (B_, heads, n, n). While
            ``prob_point`` is a plain marker the probabilities are not materialised (fused attention).
    Returns:
        (B_, n, c).
    """
    b_, n, c3 = qkv.shape
    c = c3 // 3
    qkv = qkv.reshape(b_, n, 3, num_heads, c // num_heads).permute(2, 0, 3, 1, 4)
    q, k, v = q_point(qkv[0] * scale), k_point(qkv[1]), v_point(qkv[2])
    if is_plain_marker(prob_point):
        return _fused_attention(q, k, v, bias, mask).transpose(1, 2).reshape(b_, n, c)
    # in place: (B_, heads, n, n) is the largest tensor; bias and mask contiguous and in its dtype (under autocast,
    # bfloat16): a strided or other-dtype operand takes a slow path (~10–20× on a CPU)
    attn = q @ k.transpose(-2, -1)
    attn.add_(bias.to(attn.dtype, memory_format=torch.contiguous_format).unsqueeze(0))
    if mask is not None:
        nw = mask.shape[0]
        attn.view(b_ // nw, nw, num_heads, n, n).add_(mask.to(attn.dtype).unsqueeze(1).unsqueeze(0))
    attn = prob_point(F.softmax(attn, dim=-1))
    return (attn @ v).transpose(1, 2).reshape(b_, n, c)


def _fused_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, bias: torch.Tensor,
                     mask: torch.Tensor | None) -> torch.Tensor:
    """softmax(q kᵀ + bias + mask) v with the fused kernel; q, k, v: (B_, heads, n, d), q already scaled.

    bias (heads, n, n); mask (nW, n, n) or None. A shifted-window mask has only a few distinct windows
    (zero inside the map, three patterns on the bottom/right border), so the windows are grouped by mask
    and each group runs with one broadcast (1, heads, n, n) bias: materialising bias + mask for every
    window, (B_, heads, n, n), took ~40 % of MambaIRv2-light's CPU time.
    """
    b_, heads, n, _ = q.shape
    if mask is None:
        return F.scaled_dot_product_attention(q, k, v, attn_mask=bias.unsqueeze(0).to(q.dtype), scale=1.0)
    nw = mask.shape[0]
    out = q.new_empty(q.shape[:-1] + v.shape[-1:])
    for windows, pattern in mask_patterns(mask):
        rows = (torch.arange(0, b_, nw, device=q.device)[:, None] + windows.to(q.device)).reshape(-1)
        m = (bias + pattern).unsqueeze(0).to(q.dtype)
        out[rows] = F.scaled_dot_product_attention(q[rows], k[rows], v[rows], attn_mask=m, scale=1.0)
    return out


_last_patterns: tuple[weakref.ref, int, list] | None = None  # (mask, its version, its patterns)


def mask_patterns(mask: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Group the windows of a (nW, n, n) mask by identical mask: ``[(window indices, (n, n) mask), ...]``.

    A model passes one mask to all its shifted blocks, so the grouping of the last mask seen is kept and
    reused while that tensor is alive and unmodified (29 ms per call for a 256 × 256 input with 16 × 16
    windows, ~4 % of a MambaIRv2-light forward without the cache).
    """
    global _last_patterns
    if _last_patterns is not None and _last_patterns[0]() is mask and _last_patterns[1] == mask._version:
        return _last_patterns[2]
    flat = mask.reshape(mask.shape[0], -1)
    groups: list[tuple[list[int], torch.Tensor]] = []
    for w in range(flat.shape[0]):
        for members, pattern in groups:
            if torch.equal(flat[w], pattern):
                members.append(w)
                break
        else:
            groups.append(([w], flat[w]))
    patterns = [(torch.tensor(members), pattern.view(mask.shape[1:])) for members, pattern in groups]
    _last_patterns = (weakref.ref(mask), mask._version, patterns)
    return patterns


def is_plain_marker(m: nn.Module) -> bool:
    """True if ``m`` is an unmodified :class:`QuantPoint` (an identity nobody hooks into).

    Models may then skip materialising the marked tensor (e.g. use fused attention); once the point
    is replaced by a quantizer or observed through hooks, the explicit computation is used.
    """
    from torch.nn.modules import module as _module

    return (type(m) is QuantPoint and not m._forward_hooks and not m._forward_pre_hooks
            and not getattr(_module, "_global_forward_hooks", None)
            and not getattr(_module, "_global_forward_pre_hooks", None))
