"""PSNR and SSIM with the benchmark protocol of the SR literature.

Both take 8-bit images (the SR output already clamped and rounded to uint8), crop ``crop_border``
pixels from every side and, by default, compare the luma Y (BT.601, as MATLAB ``rgb2ycbcr``).
SSIM follows Wang et al. (2004) as in MATLAB ``ssim_index.m``: 11×11 Gaussian window, σ = 1.5,
'valid' filtering (done separably), K1 = 0.01, K2 = 0.03, L = 255, all in float64.
"""

from __future__ import annotations

import math

import numpy as np
from scipy.ndimage import correlate1d

from .color import rgb_to_y

__all__ = ["psnr", "ssim", "psnr_ssim", "prepare_for_metric"]


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
    return _psnr_of(prepare_for_metric(sr, crop_border, y_channel), prepare_for_metric(hr, crop_border, y_channel))


def _gaussian_1d(size: int = 11, sigma: float = 1.5) -> np.ndarray:
    ax = np.arange(size, dtype=np.float64) - (size - 1) / 2
    g = np.exp(-(ax**2) / (2 * sigma**2))
    return g / g.sum()


def _filter_valid(x: np.ndarray, g: np.ndarray) -> np.ndarray:
    """Separable 2-D correlation of (..., H, W) with ``g`` ⊗ ``g``, keeping only the 'valid' part."""
    r = len(g) // 2
    y = correlate1d(correlate1d(x, g, axis=-2, mode="constant"), g, axis=-1, mode="constant")
    return y[..., r:-r, r:-r]


def _ssim_plane(a: np.ndarray, b: np.ndarray) -> float:
    """SSIM of two (H, W) float64 planes on the 8-bit scale, 'valid' filtering."""
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    mu_a, mu_b, e_aa, e_bb, e_ab = _filter_valid(np.stack([a, b, a * a, b * b, a * b]), _gaussian_1d())
    var_a, var_b, cov = e_aa - mu_a**2, e_bb - mu_b**2, e_ab - mu_a * mu_b
    num = (2 * mu_a * mu_b + c1) * (2 * cov + c2)
    den = (mu_a**2 + mu_b**2 + c1) * (var_a + var_b + c2)
    return float((num / den).mean())


def _psnr_of(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a - b) ** 2))
    return math.inf if mse == 0 else 10.0 * math.log10(255.0**2 / mse)


def _ssim_of(a: np.ndarray, b: np.ndarray) -> float:
    if a.shape[0] < 11 or a.shape[1] < 11:
        raise ValueError(f"SSIM needs at least 11×11 pixels after cropping, got {tuple(a.shape[:2])}")
    if a.ndim == 2:
        return _ssim_plane(a, b)
    return float(np.mean([_ssim_plane(a[..., c], b[..., c]) for c in range(a.shape[2])]))


def psnr_ssim(sr: np.ndarray, hr: np.ndarray, crop_border: int, y_channel: bool = True) -> tuple[float, float]:
    """``(psnr, ssim)`` of two (H, W, 3) uint8 RGB images, converting and cropping them once."""
    _check_pair(sr, hr)
    a = prepare_for_metric(sr, crop_border, y_channel)
    b = prepare_for_metric(hr, crop_border, y_channel)
    return _psnr_of(a, b), _ssim_of(a, b)


def ssim(sr: np.ndarray, hr: np.ndarray, crop_border: int, y_channel: bool = True) -> float:
    """SSIM between two (H, W, 3) uint8 RGB images (mean over channels when ``y_channel`` is False)."""
    _check_pair(sr, hr)
    return _ssim_of(prepare_for_metric(sr, crop_border, y_channel), prepare_for_metric(hr, crop_border, y_channel))
