"""Running an SR model on one image, whole or in overlapping tiles.

Tiled inference splits the LR image into ``tile``×``tile`` cores; each core is run with ``overlap``
extra LR pixels of context on every side (clipped at the image border) and only the core's output is
kept, so the seams see the same neighbourhood as an untiled run up to ``overlap`` pixels. The output is
assembled directly as uint8, so peak memory is bounded by one tile's activations plus the output image.

Split inference (``split``) reproduces the "test by partitioning" of the official MambaIR/MambaIRv2 test
scripts, whose published numbers were measured that way: each axis of ``side`` LR pixels is cut into
``side // split + 1`` equal parts (the image first reflect-padded to a multiple of that count), every part
is run with a tenth of its size of extra context on each inner edge, and the cores are stitched.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

import numpy as np
import torch
from torch import nn

from ..utils.progress import progress_bar

__all__ = ["model_device", "super_resolve", "to_uint8_image", "memory_format"]


def model_device(model: nn.Module) -> torch.device:
    """The device of the model's first parameter or buffer (CPU for a parameterless model)."""
    for t in list(model.parameters()) + list(model.buffers()):
        return t.device
    return torch.device("cpu")


@contextmanager
def memory_format(model: nn.Module, fmt: torch.memory_format | None) -> Iterator[nn.Module]:
    """Run ``model`` with its 4-D parameters and buffers in ``fmt`` (e.g. ``torch.channels_last``; None: as they
    are), then put every one back: the same tensor, its layout and its values as they are at the end.

    Outputs depend on the layout (convolutions sum in another order, so quantized outputs can round the other
    way); this lets a caller run in a defined layout without changing the model.
    """
    if fmt is None:
        yield model
        return
    params: list[tuple[nn.Parameter, torch.Tensor]] = []  # (parameter, its original data)
    buffers: list[tuple[dict[str, torch.Tensor | None], str, torch.Tensor]] = []  # (table, key, original)
    try:
        with torch.no_grad():
            for module in model.modules():
                for p in module.parameters(recurse=False):
                    if p.dim() == 4 and not p.is_contiguous(memory_format=fmt):
                        params.append((p, p.data))
                        p.data = p.data.contiguous(memory_format=fmt)
                for key, b in module._buffers.items():
                    if b is not None and b.dim() == 4 and not b.is_contiguous(memory_format=fmt):
                        buffers.append((module._buffers, key, b))
                        module._buffers[key] = b.contiguous(memory_format=fmt)
        yield model
    finally:
        with torch.no_grad():
            for p, original in params:
                original.copy_(p.data)  # keep any change made meanwhile
                p.data = original
            for table, key, original in buffers:
                now = table[key]
                if now is not None:
                    original.copy_(now)
                    table[key] = original


def to_uint8_image(x: torch.Tensor) -> np.ndarray:
    """(1, 3, H, W) or (3, H, W) float in [0, 1] → (H, W, 3) uint8: clamp, ×255, round half to even."""
    x = x.detach()
    if x.dim() == 4:
        x = x[0]
    return (x.clamp(0, 1) * 255.0).round().to(torch.uint8).permute(1, 2, 0).cpu().numpy()


def _run(model: nn.Module, lr: np.ndarray, device: torch.device) -> torch.Tensor:
    # HWC uint8 (or float32 on the [0, 1] scale: a noisy input) → NCHW float in the channels-last layout
    x = torch.from_numpy(np.ascontiguousarray(lr)).permute(2, 0, 1).unsqueeze(0).to(device)
    return model(x.float().div_(255.0) if lr.dtype == np.uint8 else x.float())


def _split_inference(model: nn.Module, lr: np.ndarray, scale: int, split: int, device: torch.device) -> np.ndarray:
    """The official MambaIR-style partitioned test (see the module docstring); (h, w, 3) uint8 → uint8."""
    h, w = lr.shape[:2]
    nh, nw = h // split + 1, w // split + 1
    padded = np.pad(lr, ((0, -h % nh), (0, -w % nw), (0, 0)), mode="reflect")
    ph, pw = padded.shape[0] // nh, padded.shape[1] // nw  # core size of every part
    eh, ew = ph // 10, pw // 10  # context on inner edges
    out = np.empty((nh * ph * scale, nw * pw * scale, 3), np.uint8)
    for i in range(nh):
        t0, t1 = i * ph - (eh if i else 0), (i + 1) * ph + (eh if i < nh - 1 else 0)
        for j in range(nw):
            l0, l1 = j * pw - (ew if j else 0), (j + 1) * pw + (ew if j < nw - 1 else 0)
            sr = _run(model, padded[t0:t1, l0:l1], device)
            top, left = (i * ph - t0) * scale, (j * pw - l0) * scale
            core = sr[..., top:top + ph * scale, left:left + pw * scale]
            out[i * ph * scale:(i + 1) * ph * scale, j * pw * scale:(j + 1) * pw * scale] = to_uint8_image(core)
    return out[:h * scale, :w * scale]


@torch.no_grad()
def super_resolve(model: nn.Module, lr: np.ndarray, scale: int, tile: int | None = None,
                  overlap: int = 32, split: int | None = None, progress: bool = False) -> np.ndarray:
    """Upscale one image.

    Args:
        model: maps (1, 3, h, w) RGB [0, 1] to (1, 3, scale·h, scale·w).
        lr: (h, w, 3) uint8 RGB, or float32 RGB on the [0, 1] scale (a restoration task's input, e.g. an
            unclipped noisy image).
        scale: the model's upscaling factor.
        tile: LR core size in pixels; ``None`` or 0 runs the whole image at once.
        overlap: LR context pixels added around each tile (ignored untiled).
        split: if set (e.g. 200, MambaIRv2's official test), partitioned inference instead of tiles: each
            side of ``n`` LR pixels is cut into ``n // split + 1`` parts (module docstring).
        progress: show progress over the tiles (tiled runs only).
    Returns:
        (scale·h, scale·w, 3) uint8 RGB (clamped and rounded).
    """
    device = model_device(model)
    h, w = lr.shape[:2]
    if split:
        if tile:
            raise ValueError("use either tile or split, not both")
        if split < 8:
            raise ValueError(f"split must be ≥ 8 LR pixels (got {split})")
        return _split_inference(model, lr, scale, split, device)
    if not tile or (tile >= h and tile >= w):
        out = to_uint8_image(_run(model, lr, device))
        if out.shape[:2] != (h * scale, w * scale):
            raise ValueError(f"model returned {out.shape[:2]} for a {h}×{w} input at x{scale}; wrong --scale?")
        return out
    if tile < 8 or overlap < 0:
        raise ValueError(f"tile must be ≥ 8 and overlap ≥ 0 (got tile={tile}, overlap={overlap})")
    out = np.empty((h * scale, w * scale, 3), np.uint8)
    corners = [(top, left) for top in range(0, h, tile) for left in range(0, w, tile)]
    for top, left in progress_bar(corners, total=len(corners), description="tiles", enabled=progress):
        bottom, right = min(top + tile, h), min(left + tile, w)
        t0, l0 = max(top - overlap, 0), max(left - overlap, 0)
        b0, r0 = min(bottom + overlap, h), min(right + overlap, w)
        sr = _run(model, lr[t0:b0, l0:r0], device)
        core = sr[..., (top - t0) * scale:(bottom - t0) * scale, (left - l0) * scale:(right - l0) * scale]
        out[top * scale:bottom * scale, left * scale:right * scale] = to_uint8_image(core)
    return out
