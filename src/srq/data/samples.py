"""Photographs that ship inside scikit-image's wheel: training and held-out images for the embedded model.

They need no download and no data root, which makes them the data of ``srq demo`` and ``srq train``.
The split is fixed: ``train`` images teach srq's tiny model, ``test`` images are never seen in training.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import torch

from ..errors import SrqError
from .bicubic import imresize_uint8
from .datasets import Sample
from .io import mod_crop, read_image

__all__ = ["SAMPLE_SPLITS", "sample_calibration", "sample_images", "sample_set", "SampleSet"]

SAMPLE_SPLITS: dict[str, tuple[str, ...]] = {
    "train": ("astronaut.png", "coffee.png", "rocket.jpg", "hubble_deep_field.jpg", "retina.jpg", "ihc.png",
              "brick.png", "grass.png", "gravel.png", "moon.png", "coins.png", "page.png"),
    "test": ("chelsea.png", "camera.png", "motorcycle_left.png"),
}


def _skimage_data_dir() -> Path:
    spec = importlib.util.find_spec("skimage")
    if spec is None or not spec.submodule_search_locations:
        raise SrqError("scikit-image is not installed; `pip install scikit-image` (it ships the demo photos)")
    return Path(list(spec.submodule_search_locations)[0]) / "data"


def sample_images(split: str) -> list[tuple[str, np.ndarray]]:
    """``[(name, (H, W, 3) uint8 RGB)]`` for the ``"train"`` or ``"test"`` split."""
    if split not in SAMPLE_SPLITS:
        raise SrqError(f"unknown sample split {split!r}; use one of {', '.join(SAMPLE_SPLITS)}")
    folder = _skimage_data_dir()
    return [(Path(f).stem, read_image(folder / f)) for f in SAMPLE_SPLITS[split]]


class SampleSet:
    """The sample photos as a benchmark set: yields ``(name, lr, hr)`` like :class:`~srq.data.SRBenchmark`."""

    def __init__(self, split: str, scale: int) -> None:
        self.name = f"skimage-{split}"
        self.scale = scale
        self._images = sample_images(split)

    def __len__(self) -> int:
        return len(self._images)

    def __getitem__(self, index: int) -> Sample:
        name, img = self._images[index]
        hr = mod_crop(img, self.scale)
        return Sample(name, imresize_uint8(hr, 1 / self.scale), hr)

    def __iter__(self):
        return (self[i] for i in range(len(self)))


def sample_calibration(scale: int, n: int = 32, patch: int = 48, seed: int = 0) -> torch.Tensor:
    """``n`` LR calibration patches (n, 3, patch, patch) in [0, 1] from the *train* photos: random HR crops
    of ``patch·scale`` pixels, downsampled with MATLAB-exact bicubic."""
    rng = np.random.default_rng(seed)
    size = patch * scale
    images = [img for _, img in sample_images("train") if min(img.shape[:2]) >= size]
    crops = []
    for i in range(n):
        img = images[i % len(images)]
        top, left = int(rng.integers(img.shape[0] - size + 1)), int(rng.integers(img.shape[1] - size + 1))
        lr = imresize_uint8(np.ascontiguousarray(img[top:top + size, left:left + size]), 1 / scale)
        crops.append(torch.from_numpy(lr).permute(2, 0, 1).float() / 255.0)
    return torch.stack(crops)


def sample_set(split: str, scale: int) -> SampleSet:
    """The ``split`` sample photos at ``scale`` (HR mod-cropped, LR by MATLAB bicubic)."""
    return SampleSet(split, scale)
