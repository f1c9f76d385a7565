"""Evaluation runner: model + benchmark sets → PSNR/SSIM per image and per set, with wall time."""

from __future__ import annotations

import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

import torch
from torch import nn

from ..data import SRBenchmark, write_image
from ..metrics import psnr, ssim
from .inference import super_resolve
from .progress import progress_bar

__all__ = ["ImageScore", "DatasetScore", "evaluate", "evaluate_dataset"]


@dataclass
class ImageScore:
    """Scores of one image: PSNR in dB, SSIM in [0, 1], inference + metric time in seconds."""

    name: str
    psnr: float
    ssim: float
    seconds: float


@dataclass
class DatasetScore:
    """Scores of one benchmark set at one scale; ``psnr``/``ssim`` are means over images."""

    dataset: str
    scale: int
    images: list[ImageScore] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def psnr(self) -> float:
        return sum(i.psnr for i in self.images) / max(len(self.images), 1)

    @property
    def ssim(self) -> float:
        return sum(i.ssim for i in self.images) / max(len(self.images), 1)

    def to_dict(self) -> dict:
        return {"dataset": self.dataset, "scale": self.scale, "psnr": self.psnr, "ssim": self.ssim,
                "num_images": len(self.images), "seconds": self.seconds,
                "images": [asdict(i) for i in self.images]}


@torch.no_grad()
def evaluate_dataset(model: nn.Module, dataset: SRBenchmark, *, tile: int | None = None, overlap: int = 16,
                     y_channel: bool = True, save_dir: str | os.PathLike | None = None,
                     progress: bool = True) -> DatasetScore:
    """Super-resolve every image of ``dataset`` and score it with the benchmark protocol.

    Protocol: HR mod-cropped to the scale, LR by MATLAB-exact bicubic, SR clamped and rounded to uint8,
    PSNR/SSIM on Y (BT.601) with ``crop_border = scale``; ``y_channel=False`` scores RGB instead.
    """
    scale = dataset.scale
    result = DatasetScore(dataset.name, scale)
    start = time.perf_counter()
    for name, lr, hr in progress_bar(dataset, total=len(dataset), description=f"{dataset.name} x{scale}",
                                     enabled=progress):
        t0 = time.perf_counter()
        sr = super_resolve(model, lr, scale, tile=tile, overlap=overlap)
        score = ImageScore(name, psnr(sr, hr, scale, y_channel), ssim(sr, hr, scale, y_channel), 0.0)
        score.seconds = time.perf_counter() - t0
        result.images.append(score)
        if save_dir is not None:
            write_image(Path(save_dir) / dataset.name / f"{Path(name).stem}_x{scale}.png", sr)
    result.seconds = time.perf_counter() - start
    return result


def evaluate(model: nn.Module, datasets: Sequence[str | os.PathLike] | str, scale: int, *,
             data_root: str | os.PathLike | None = None, tile: int | None = None, overlap: int = 16,
             y_channel: bool = True, save_dir: str | os.PathLike | None = None,
             progress: bool = True) -> list[DatasetScore]:
    """Evaluate ``model`` on benchmark sets given by name (``"Set5"``) or folder.

    All sets are resolved before any work starts, so a missing set fails at once.
    Returns one :class:`DatasetScore` per set, in the given order.
    """
    names: Iterable[str | os.PathLike] = [datasets] if isinstance(datasets, (str, os.PathLike)) else datasets
    sets = [SRBenchmark(n, scale, data_root=data_root) for n in names]
    was_training = model.training
    model.eval()
    try:
        return [evaluate_dataset(model, s, tile=tile, overlap=overlap, y_channel=y_channel,
                                 save_dir=save_dir, progress=progress) for s in sets]
    finally:
        model.train(was_training)
