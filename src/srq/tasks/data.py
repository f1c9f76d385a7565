"""Data of a task: test sets whose inputs the task makes, and degraded calibration / training patches.

Calibration and training need no extra files: clean patches are cut from HR folders (default
``<data_root>/train/BSD200`` and ``train/T91``, disjoint from every test set) and degraded on the fly by the task
(noise with σ drawn from a blind denoiser's range, or a JPEG round trip of the patch).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from ..data.datasets import Sample, benchmark_dir, list_images
from ..data.io import read_image
from ..errors import SrqError
from .base import Task

__all__ = ["TaskBenchmark", "task_calibration_set", "TaskTrainingSet", "DEFAULT_CLEAN_SOURCES", "to_tensor"]

DEFAULT_CLEAN_SOURCES = ("train/BSD200", "train/T91")


class TaskBenchmark:
    """A test set as ``(name, input, target)`` samples made by ``task`` from the clean images, one at a time.

    ``input``: what :meth:`Task.degrade_image` makes (float32 noisy image or uint8 JPEG-decoded grey, (H, W, 3));
    ``target``: :meth:`Task.target` of the clean image. ``scale`` is 1; a set is named (``"Classic5"``,
    ``"Urban100"``, ...; see :func:`~srq.data.benchmark_dir`) or given as a folder of clean images.
    """

    def __init__(self, name_or_path: str | os.PathLike, task: Task, data_root: str | os.PathLike | None = None) -> None:
        self.task, self.scale = task, task.scale
        self.name, self.folder = benchmark_dir(name_or_path, data_root)
        self.files = list_images(self.folder)
        if not self.files:
            raise SrqError(f"test folder {self.folder} has no images: add PNG/JPEG/... files or pick another set")

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int) -> Sample:
        path = self.files[index]
        clean = read_image(path)
        return Sample(path.stem, self.task.degrade_image(clean, path.stem), self.task.target(clean))

    def __repr__(self) -> str:
        return f"TaskBenchmark({self.name!r}, {self.task!r}, images={len(self)}, folder='{self.folder}')"


def _clean_files(sources: Sequence[str | os.PathLike], data_root: str | os.PathLike | None) -> list[Path]:
    from ..paths import data_root as resolve_root

    root, files = resolve_root(data_root), []
    for item in sources:
        path = Path(item).expanduser()
        folder = path if path.is_dir() else root / str(item)
        if not folder.is_dir():
            raise SrqError(f"clean image folder {item} not found (nor under the data root {root}); give folders of "
                           f"clean images (e.g. train/BSD200,train/T91) or set --data-root / SRQ_DATA")
        found = list_images(folder)
        if not found:
            raise SrqError(f"clean image folder {folder} has no images")
        files += found
    return files


def to_tensor(images: Sequence[np.ndarray]) -> torch.Tensor:
    """(H, W, 3) uint8 or float32-on-[0, 1] arrays of one size → (N, 3, H, W) float32 model inputs/targets."""
    out = []
    for img in images:
        t = torch.from_numpy(np.ascontiguousarray(img)).permute(2, 0, 1)
        out.append(t.float() / 255.0 if img.dtype == np.uint8 else t.float())
    return torch.stack(out)


def task_calibration_set(task: Task, sources: Sequence[str | os.PathLike] = DEFAULT_CLEAN_SOURCES, patch: int = 96,
                         n: int | None = 100, seed: int = 0,
                         data_root: str | os.PathLike | None = None) -> torch.Tensor:
    """Degraded calibration inputs: one random clean ``patch``×``patch`` crop from each of the first ``n`` images of
    ``sources`` (folders, or names under the data root), made into model inputs by ``task``.

    Crop positions and degradations come from ``numpy.random.default_rng(seed)``, in file order. Images smaller than
    the patch are skipped. Returns (n, 3, patch, patch) float32 on the [0, 1] scale (noisy inputs unclipped).
    """
    if n is not None and n < 1:
        raise SrqError(f"the number of calibration images must be at least 1, got {n}")
    rng = np.random.default_rng(seed)
    inputs: list[np.ndarray] = []
    for path in _clean_files(sources, data_root):
        if n is not None and len(inputs) >= n:
            break
        img = read_image(path)
        h, w = img.shape[:2]
        if h < patch or w < patch:
            continue
        top, left = int(rng.integers(h - patch + 1)), int(rng.integers(w - patch + 1))
        inputs.append(task.degrade_patch(np.ascontiguousarray(img[top:top + patch, left:left + patch]), rng))
    if not inputs:
        raise SrqError(f"no clean image in {', '.join(map(str, sources))} is at least {patch}×{patch}; use a "
                       f"smaller --patch")
    return to_tensor(inputs)


class TaskTrainingSet:
    """Training pairs of a task: ``batch(step, size, rank, world_size) -> (input, target)``, (B, 3, p, p) float32.

    The same contract as :class:`srq.data.training.TrainingSet` (a batch is a pure function of ``(seed, step)``;
    rank ``r`` gets items ``r::world_size``), with the clean crop (one of the 8 symmetries of the square applied)
    as target and the task's degradation of it as input.
    """

    def __init__(self, task: Task, sources: Sequence[str | os.PathLike] = DEFAULT_CLEAN_SOURCES, patch: int = 96,
                 seed: int = 0, data_root: str | os.PathLike | None = None) -> None:
        from ..data.training import dihedral

        self._dihedral = dihedral
        self.task, self.patch, self.seed = task, int(patch), int(seed)
        self.files = _clean_files(sources, data_root)
        self.images: list[np.ndarray] = []
        self.skipped: list[Path] = []  # images smaller than the patch
        for path in self.files:
            img = read_image(path)
            if min(img.shape[:2]) >= patch:
                self.images.append(img)
            else:
                self.skipped.append(path)
        if not self.images:
            raise SrqError(f"no training image is at least {patch}×{patch}; use a smaller patch")

    def __len__(self) -> int:
        return len(self.images)

    def batch(self, step: int, batch_size: int, rank: int = 0,
              world_size: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
        rng = np.random.Generator(np.random.PCG64(np.random.SeedSequence([self.seed, step])))
        inputs, targets = [], []
        for i in range(batch_size):
            img = self.images[int(rng.integers(len(self.images)))]
            top = int(rng.integers(img.shape[0] - self.patch + 1))
            left = int(rng.integers(img.shape[1] - self.patch + 1))
            crop = np.ascontiguousarray(self._dihedral(img[top:top + self.patch, left:left + self.patch],
                                                       int(rng.integers(8))))
            degraded = self.task.degrade_patch(crop, rng)  # drawn for every item, so ranks share the stream
            if i % world_size == rank:
                inputs.append(degraded)
                targets.append(self.task.target(crop))
        return to_tensor(inputs), to_tensor(targets)
