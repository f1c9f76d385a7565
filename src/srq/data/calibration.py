"""Calibration inputs: LR patches cut from a folder of LR images, or made at the model's scale from HR images.

Targets are always the FP model's outputs. An LR set (``DIV2K_test_LRx4``) was made for one scale; an HR source
(``hr:train/BSD200,train/T91``) gives LR inputs at any scale, by srq's MATLAB-exact bicubic of the mod-cropped HR
images (rounded to uint8, as the benchmarks' LR), so a ×2 model is calibrated on ×2 inputs.
"""

from __future__ import annotations

import os
import re
import warnings
from pathlib import Path

import numpy as np
import torch

from ..errors import SrqError
from .datasets import calibration_images
from .io import read_image

__all__ = ["calibration_set", "HR_PREFIX", "default_calibration"]

HR_PREFIX = "hr:"  # a calibration source of HR images: "hr:<folder or name under the data root>[,<...>]"
DEFAULT_HR_SOURCE = "hr:train/BSD200,train/T91"


def default_calibration(scale: int) -> str:
    """The calibration source srq uses for a ×``scale`` model: DIV2K's ×4 LR test images at ×4 (the papers'
    inputs), else LR made at that scale from BSD200 and T91 (the "291" training set, disjoint from the benchmarks)."""
    return "DIV2K_test_LRx4" if scale == 4 else DEFAULT_HR_SOURCE


def calibration_set(name_or_path: str | os.PathLike, patch: int | None = 96, n: int | None = 100,
                    seed: int = 0, data_root: str | os.PathLike | None = None,
                    scale: int | None = None) -> torch.Tensor | list[torch.Tensor]:
    """One random ``patch``×``patch`` LR crop from each of the first ``n`` images of a calibration source.

    Args:
        name_or_path: an LR set under ``<data_root>/calibration/`` (e.g. ``"DIV2K_test_LRx4"``) or a folder of LR
            images; or ``"hr:"`` and comma-separated folders of HR images (paths, or names under the data root,
            e.g. ``"hr:train/BSD200,train/T91"``), downscaled ×``scale`` (images too small for the patch are
            left out).
        patch: crop size in LR pixels (GBA: HR 384 → LR 96 at x4); ``None`` keeps whole images.
        n: number of images (default 100; ``None``: all).
        seed: crop positions are drawn from ``numpy.random.default_rng(seed)``.
        scale: the model's scale: needed for an HR source; for an LR set whose name says another scale
            (``…x4`` for a ×2 model) srq warns.
    Returns:
        (n, 3, patch, patch) float32 in [0, 1]; a list of (1, 3, h, w) tensors when ``patch`` is None.
    """
    if n is not None and n < 1:
        raise SrqError(f"the number of calibration images must be at least 1, got {n}")
    if str(name_or_path).startswith(HR_PREFIX):
        images, names = _lr_from_hr(str(name_or_path)[len(HR_PREFIX):], scale, patch, data_root)
    else:
        _check_named_scale(str(name_or_path), scale)
        files = calibration_images(name_or_path, data_root=data_root)
        images, names = [read_image(p) for p in files[:n]], [p.name for p in files[:n]]
    images, names = images[:n], names[:n]
    rng = np.random.default_rng(seed)
    crops = []
    for img, name in zip(images, names):
        if patch is not None:
            h, w = img.shape[:2]
            if h < patch or w < patch:
                raise SrqError(f"calibration image {name} ({w}×{h}) is smaller than the patch {patch}; "
                               f"use a smaller --patch")
            top, left = int(rng.integers(h - patch + 1)), int(rng.integers(w - patch + 1))
            img = img[top:top + patch, left:left + patch]
        crops.append(torch.from_numpy(np.ascontiguousarray(img)).permute(2, 0, 1).float() / 255.0)
    if patch is None:
        return [c.unsqueeze(0) for c in crops]
    return torch.stack(crops)


def _lr_from_hr(folders: str, scale: int | None, patch: int | None,
                data_root: str | os.PathLike | None) -> tuple[list[np.ndarray], list[str]]:
    """LR images (uint8) made ×``scale`` from the HR images of comma-separated ``folders``, and their names."""
    from ..paths import data_root as resolve_root
    from .training import TrainingSet

    if scale is None:
        raise SrqError("an HR calibration source (hr:...) needs the model's scale to make LR inputs")
    root = resolve_root(data_root)
    paths = []
    for item in (f.strip() for f in folders.split(",") if f.strip()):
        path = Path(item).expanduser()
        paths.append(path if path.is_dir() else root / item)
    if not paths:
        raise SrqError("hr: names no folder; write hr:<folder>[,<folder>...], e.g. hr:train/BSD200")
    hr_patch = scale * (patch or 1)
    data = TrainingSet(paths, scale, hr_patch, skip_small=True, cache_dir=Path("~/.cache/srq/lr").expanduser())
    return data.lr_images, [p.name for p in data.files]


def _check_named_scale(name: str, scale: int | None) -> None:
    """Warn when an LR set's name says it was made for another scale than the model's (``DIV2K_test_LRx4``)."""
    found = re.search(r"(?:lr|_)x(\d)\b", Path(name).name, re.IGNORECASE)
    if scale is not None and found and int(found[1]) != scale:
        warnings.warn(f"calibration set {Path(name).name} holds x{found[1]} LR images but the model is x{scale}: "
                      f"its inputs are not what it sees at test time; use --calib "
                      f"{default_calibration(scale)} (LR made x{scale} from HR images)", stacklevel=2)
