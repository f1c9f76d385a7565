"""Gaussian denoising: noisy = clean + σ/255 · N(0, 1) in float32, not clipped; scored on RGB, no border crop.

Noise of a test image comes from :func:`~srq.tasks.base.image_rng` (``seed``, the image's file stem): the same
noise for every method and run. N(0, 1) is drawn in float64 (``Generator.standard_normal``), scaled by σ/255 and
added to the clean image / 255 in float32. Published tables (DnCNN, FFDNet, SwinIR) used MATLAB ``randn`` or
``numpy.random`` with their own seeds; the noise differs, so single images differ by a few hundredths of a dB
while set means agree to about ±0.01–0.02 dB.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..errors import ConfigError
from ..metrics import psnr_ssim
from .base import Task

__all__ = ["Denoise"]


class Denoise(Task):
    """Additive white Gaussian noise of level ``sigma`` (on the 8-bit scale).

    Args:
        sigma: noise standard deviation on the 8-bit scale, in [0, 255].
        calib_sigma: ``(low, high)``: calibration and training patches draw σ uniformly from this range (a blind
            denoiser's, e.g. (0, 55) for CDnCNN-B); None: they use ``sigma``.
        seed: seed of the test images' noise (see the module docstring).
    """

    name = "denoise"

    def __init__(self, sigma: float = 25.0, calib_sigma: tuple[float, float] | None = None, seed: int = 0) -> None:
        if isinstance(sigma, bool) or not isinstance(sigma, (int, float)) or not 0 <= sigma <= 255:
            raise ConfigError(f"sigma must be a noise level in [0, 255] (8-bit scale), not {sigma!r}")
        if calib_sigma is not None:
            lo, hi = (float(v) for v in calib_sigma)
            if not 0 <= lo <= hi <= 255:
                raise ConfigError(f"calib_sigma must be a range low,high within [0, 255], not {calib_sigma!r}")
            calib_sigma = (lo, hi)
        self.sigma, self.calib_sigma, self.seed = float(sigma), calib_sigma, int(seed)

    def noisy(self, clean: np.ndarray, sigma: float, rng: np.random.Generator) -> np.ndarray:
        """(H, W, C) uint8 → float32 clean/255 + σ/255·N(0, 1), unclipped."""
        noise = (rng.standard_normal(clean.shape) * (sigma / 255.0)).astype(np.float32)
        return clean.astype(np.float32) / np.float32(255.0) + noise

    def degrade(self, clean: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        return self.noisy(clean, self.sigma, rng)

    def degrade_patch(self, clean: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """A calibration / training input: σ drawn from ``calib_sigma`` when set."""
        sigma = self.sigma if self.calib_sigma is None else float(rng.uniform(*self.calib_sigma))
        return self.noisy(clean, sigma, rng)

    def score(self, output: np.ndarray, target: np.ndarray) -> tuple[float, float]:
        return psnr_ssim(output, target, 0, y_channel=False)

    def to_dict(self) -> dict[str, Any]:
        return {"task": self.name, "sigma": self.sigma, "seed": self.seed,
                **({"calib_sigma": list(self.calib_sigma)} if self.calib_sigma else {})}

    def protocol(self) -> dict[str, Any]:
        return {"input": f"clean/255 + {self.sigma:g}/255 * N(0,1), float32, not clipped; N(0,1) from numpy "
                         f"Generator(PCG64(SeedSequence([{self.seed}, crc32(image stem)]))).standard_normal, float64",
                "output": "clamped to [0, 1], x255, rounded to uint8", "metric_channel": "RGB", "crop_border": 0,
                "ssim": "11x11 Gaussian, sigma 1.5, float64, mean over R, G, B"}

    def label(self) -> str:
        return f"denoise_s{self.sigma:g}"

    def model_keywords(self, keywords: dict[str, Any]) -> dict[str, Any]:
        return {"sigma": self.sigma} if "sigma" in keywords else {}

    def __repr__(self) -> str:
        return f"Denoise(sigma={self.sigma:g}" + (f", calib_sigma={self.calib_sigma}" if self.calib_sigma else "") + ")"
