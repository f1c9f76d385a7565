"""Calibration inputs: LR patches cut from a folder of LR images (targets are the FP model's outputs)."""

from __future__ import annotations

import os

import numpy as np
import torch

from ..errors import SrqError
from .datasets import calibration_images
from .io import read_image

__all__ = ["calibration_set"]


def calibration_set(name_or_path: str | os.PathLike, patch: int | None = 96, n: int | None = 100,
                    seed: int = 0, data_root: str | os.PathLike | None = None) -> torch.Tensor | list[torch.Tensor]:
    """One random ``patch``×``patch`` LR crop from each of the first ``n`` images of a calibration set.

    Args:
        name_or_path: a set under ``<data_root>/calibration/`` (e.g. ``"DIV2K_test_LRx4"``) or a folder.
        patch: crop size in LR pixels (GBA: HR 384 → LR 96 at x4); ``None`` keeps whole images.
        n: number of images (default 100; ``None``: all).
        seed: crop positions are drawn from ``numpy.random.default_rng(seed)``.
    Returns:
        (n, 3, patch, patch) float32 in [0, 1]; a list of (1, 3, h, w) tensors when ``patch`` is None.
    """
    files = calibration_images(name_or_path, data_root=data_root)
    if n is not None:
        if n < 1:
            raise SrqError(f"the number of calibration images must be at least 1, got {n}")
        files = files[:n]
    rng = np.random.default_rng(seed)
    crops = []
    for path in files:
        img = read_image(path)
        if patch is not None:
            h, w = img.shape[:2]
            if h < patch or w < patch:
                raise SrqError(f"calibration image {path.name} ({w}×{h}) is smaller than the patch {patch}; "
                               f"use a smaller --patch")
            top, left = int(rng.integers(h - patch + 1)), int(rng.integers(w - patch + 1))
            img = img[top:top + patch, left:left + patch]
        crops.append(torch.from_numpy(np.ascontiguousarray(img)).permute(2, 0, 1).float() / 255.0)
    if patch is None:
        return [c.unsqueeze(0) for c in crops]
    return torch.stack(crops)
