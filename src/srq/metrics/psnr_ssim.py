"""PSNR and SSIM with the benchmark protocol of the SR literature.

Both take 8-bit images (the SR output already clamped and rounded to uint8), crop ``crop_border``
pixels from every side and, by default, compare the luma Y (BT.601, as MATLAB ``rgb2ycbcr``).
SSIM follows Wang et al. (2004) as in MATLAB ``ssim_index.m``: 11×11 Gaussian window, σ = 1.5,
'valid' filtering, K1 = 0.01, K2 = 0.03, L = 255, all in float64.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from .color import rgb_to_y

__all__ = ["psnr", "ssim", "prepare_for_metric"]


def prepare_for_metric(img: np.ndarray, crop_border: int, y_channel: bool) -> np.ndarray:
    """(H, W, 3) uint8 RGB → float64 (H', W') Y or (H', W', 3) RGB on the 8-bit scale, border-cropped."""
    if img.dtype != np.uint8:
        raise TypeError(f"metrics take uint8 images (clamp and round the SR output first), got {img.dtype}")
    out = rgb_to_y(img) if y_channel else img.astype(np.float64)
    if crop_border > 0:
        out = out[crop_border:-crop_border, crop_border:-crop_border, ...]
    return out


def _check_pair(a: np.ndarray, b: np.ndarray) -> None:
    if a.shape != b.shape:
        raise ValueError(f"images differ in shape: {a.shape} vs {b.shape}")


def psnr(sr: np.ndarray, hr: np.ndarray, crop_border: int, y_channel: bool = True) -> float:
    """PSNR in dB between two (H, W, 3) uint8 RGB images; ``inf`` when they are identical."""
    _check_pair(sr, hr)
    a = prepare_for_metric(sr, crop_border, y_channel)
    b = prepare_for_metric(hr, crop_border, y_channel)
    mse = float(np.mean((a - b) ** 2))
    return math.inf if mse == 0 else 10.0 * math.log10(255.0**2 / mse)


def _gaussian_window(size: int = 11, sigma: float = 1.5) -> torch.Tensor:
    ax = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    g = torch.exp(-(ax**2) / (2 * sigma**2))
    w = torch.outer(g, g)
    return (w / w.sum()).view(1, 1, size, size)


def _ssim_plane(a: torch.Tensor, b: torch.Tensor) -> float:
    """SSIM of two (H, W) float64 planes on the 8-bit scale, 'valid' filtering."""
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    win = _gaussian_window()
    x = torch.stack([a, b, a * a, b * b, a * b]).unsqueeze(1)  # (5, 1, H, W)
    mu_a, mu_b, e_aa, e_bb, e_ab = F.conv2d(x, win).squeeze(1)
    var_a, var_b, cov = e_aa - mu_a**2, e_bb - mu_b**2, e_ab - mu_a * mu_b
    num = (2 * mu_a * mu_b + c1) * (2 * cov + c2)
    den = (mu_a**2 + mu_b**2 + c1) * (var_a + var_b + c2)
    return float((num / den).mean())


def ssim(sr: np.ndarray, hr: np.ndarray, crop_border: int, y_channel: bool = True) -> float:
    """SSIM between two (H, W, 3) uint8 RGB images (mean over channels when ``y_channel`` is False)."""
    _check_pair(sr, hr)
    a = torch.from_numpy(prepare_for_metric(sr, crop_border, y_channel))
    b = torch.from_numpy(prepare_for_metric(hr, crop_border, y_channel))
    if a.shape[0] < 11 or a.shape[1] < 11:
        raise ValueError(f"SSIM needs at least 11×11 pixels after cropping, got {tuple(a.shape[:2])}")
    if y_channel:
        return _ssim_plane(a, b)
    return float(np.mean([_ssim_plane(a[..., c], b[..., c]) for c in range(3)]))
