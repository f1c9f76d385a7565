"""JPEG artifact removal on grey images: encode at quality q with libjpeg's standard tables, decode, restore.

A grey image (R = G = B, e.g. Classic5) is used as it is; a colour image becomes MATLAB's ``rgb2ycbcr`` Y rounded to
uint8 (what ``imwrite`` of that Y stores), as in the DnCNN / SwinIR / FBCNN grey JPEG protocols. The grey image is
encoded by Pillow (libjpeg, baseline, standard quantisation tables scaled to ``quality``, as MATLAB ``imwrite``)
and decoded. Model inputs and targets carry the grey image in all three channels; PSNR/SSIM are on the grey image
(the output's channel mean, exactly its grey for a grey model), no border crop.
"""

from __future__ import annotations

import io
from typing import Any

import numpy as np
from PIL import Image

from ..errors import ConfigError
from ..metrics import psnr_ssim
from ..metrics.color import rgb_to_y
from .base import Task

__all__ = ["JPEG", "grey_uint8", "jpeg_roundtrip"]


def grey_uint8(img: np.ndarray) -> np.ndarray:
    """(H, W, 3) uint8 → (H, W) uint8: the image itself if grey (all channels equal), else MATLAB Y rounded."""
    if (img[..., 0] == img[..., 1]).all() and (img[..., 0] == img[..., 2]).all():
        return np.ascontiguousarray(img[..., 0])
    return np.floor(rgb_to_y(img) + 0.5).astype(np.uint8)  # MATLAB rounds half away from zero (Y > 0)


def jpeg_roundtrip(grey: np.ndarray, quality: int) -> np.ndarray:
    """(H, W) uint8 → encoded as a baseline JPEG at ``quality`` by Pillow (libjpeg) and decoded, (H, W) uint8."""
    buf = io.BytesIO()
    Image.fromarray(grey, mode="L").save(buf, format="JPEG", quality=int(quality))
    buf.seek(0)
    with Image.open(buf) as im:
        return np.asarray(im.convert("L"), dtype=np.uint8).copy()


def _three(grey: np.ndarray) -> np.ndarray:
    return np.repeat(grey[..., None], 3, axis=2)


class JPEG(Task):
    """Grey JPEG compression at ``quality`` (1–100, libjpeg's scale)."""

    name = "jpeg"

    def __init__(self, quality: int = 10, seed: int = 0) -> None:
        if isinstance(quality, bool) or not isinstance(quality, (int, np.integer)) or not 1 <= quality <= 100:
            raise ConfigError(f"quality must be a JPEG quality from 1 to 100, not {quality!r}")
        self.quality, self.seed = int(quality), int(seed)

    def degrade(self, clean: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        return _three(jpeg_roundtrip(grey_uint8(clean), self.quality))

    def degrade_patch(self, clean: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """A calibration / training input: the patch encoded on its own (its own 8×8 grid)."""
        return self.degrade(clean, rng)

    def target(self, clean: np.ndarray) -> np.ndarray:
        return _three(grey_uint8(clean))

    def score(self, output: np.ndarray, target: np.ndarray) -> tuple[float, float]:
        out = output[..., :1] if (output[..., 0] == output[..., 1]).all() and (output[..., 0] == output[..., 2]).all() \
            else np.floor(output.astype(np.float64).mean(axis=2, keepdims=True) + 0.5).astype(np.uint8)
        return psnr_ssim(out, target[..., :1], 0, y_channel=False)

    def to_dict(self) -> dict[str, Any]:
        return {"task": self.name, "quality": self.quality}

    def protocol(self) -> dict[str, Any]:
        return {"input": f"grey image (colour: MATLAB rgb2ycbcr Y rounded to uint8) encoded by Pillow/libjpeg at "
                         f"quality {self.quality} (standard tables, baseline) and decoded",
                "output": "clamped, x255, rounded to uint8; grey = channel mean", "metric_channel": "grey / Y",
                "crop_border": 0, "ssim": "11x11 Gaussian, sigma 1.5, float64"}

    def label(self) -> str:
        return f"jpeg_q{self.quality}"

    def __repr__(self) -> str:
        return f"JPEG(quality={self.quality})"
