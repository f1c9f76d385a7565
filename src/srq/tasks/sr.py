"""Super-resolution: LR by MATLAB-exact bicubic of the mod-cropped HR; PSNR/SSIM on Y with ``crop_border = scale``."""

from __future__ import annotations

from typing import Any

import numpy as np

from ..data.bicubic import imresize_uint8
from ..data.io import mod_crop
from ..metrics import psnr_ssim
from .base import Task

__all__ = ["SR"]


class SR(Task):
    """×``scale`` super-resolution, the benchmark protocol of the SR literature (``y_channel=False``: RGB)."""

    name = "sr"

    def __init__(self, scale: int = 4, y_channel: bool = True) -> None:
        self.scale, self.y_channel = int(scale), bool(y_channel)

    def degrade(self, clean: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        return imresize_uint8(mod_crop(clean, self.scale), 1 / self.scale)

    def degrade_patch(self, clean: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        return self.degrade(clean, rng)

    def target(self, clean: np.ndarray) -> np.ndarray:
        return mod_crop(clean, self.scale)

    def score(self, output: np.ndarray, target: np.ndarray) -> tuple[float, float]:
        return psnr_ssim(output, target, self.scale, self.y_channel)

    def to_dict(self) -> dict[str, Any]:
        return {"task": self.name, "scale": self.scale}

    def protocol(self) -> dict[str, Any]:
        return {"lr": "MATLAB bicubic (antialiased) of the mod-cropped HR",
                "metric_channel": "Y (BT.601 coefficients of MATLAB rgb2ycbcr, unrounded)" if self.y_channel else "RGB",
                "crop_border": self.scale, "ssim": "11x11 Gaussian, sigma 1.5, float64"}

    def label(self) -> str:
        return f"sr_x{self.scale}"

    def __repr__(self) -> str:
        return f"SR(scale={self.scale})"
