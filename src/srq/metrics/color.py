"""Colour conversions, ITU-R BT.601 as in MATLAB ``rgb2ycbcr`` / ``ycbcr2rgb``.

For R, G, B in [0, 1]: Y = 16 + 65.481 R + 128.553 G + 24.966 B (range [16, 235] on the 8-bit scale),
Cb = 128 − 37.797 R − 74.203 G + 112.0 B, Cr = 128 + 112.0 R − 93.786 G − 18.214 B.
"""

from __future__ import annotations

import numpy as np
import torch

__all__ = ["rgb_to_y", "rgb_to_ycbcr", "ycbcr_to_rgb"]

_RGB_TO_YCBCR = ((65.481, 128.553, 24.966), (-37.797, -74.203, 112.0), (112.0, -93.786, -18.214))
_OFFSET = (16.0, 128.0, 128.0)


def rgb_to_y(img: np.ndarray) -> np.ndarray:
    """Luma of an 8-bit RGB image with MATLAB ``rgb2ycbcr``'s BT.601 coefficients, not rounded.

    Not rounding to integers is what reproduces published SR tables (e.g. IMDN x4 Set5: 32.21 dB
    unrounded vs. 32.19 dB rounded); it is also what BasicSR's ``calculate_psnr`` does.

    Args:
        img: (H, W, 3) uint8 RGB.
    Returns:
        (H, W) float64 Y on the 8-bit scale, in [16, 235].
    """
    if img.ndim != 3 or img.shape[2] != 3:
        raise ValueError(f"expected an (H, W, 3) RGB image, got shape {img.shape}")
    r, g, b = _RGB_TO_YCBCR[0]
    return 16.0 + (img[..., 0] * r + img[..., 1] * g + img[..., 2] * b) / 255.0


def rgb_to_ycbcr(x: torch.Tensor) -> torch.Tensor:
    """(N, 3, H, W) RGB in [0, 1] → (N, 3, H, W) YCbCr in [0, 1] (the 8-bit values / 255), unrounded."""
    m = torch.tensor(_RGB_TO_YCBCR, dtype=x.dtype, device=x.device) / 255.0
    off = torch.tensor(_OFFSET, dtype=x.dtype, device=x.device).view(1, 3, 1, 1) / 255.0
    return torch.einsum("ij,njhw->nihw", m, x) + off


def ycbcr_to_rgb(x: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`rgb_to_ycbcr`: (N, 3, H, W) YCbCr in [0, 1] → RGB (not clamped)."""
    m = torch.linalg.inv(torch.tensor(_RGB_TO_YCBCR, dtype=torch.float64) / 255.0).to(x.dtype).to(x.device)
    off = torch.tensor(_OFFSET, dtype=x.dtype, device=x.device).view(1, 3, 1, 1) / 255.0
    return torch.einsum("ij,njhw->nihw", m, x - off)
