"""Evaluation runner: model + benchmark sets → PSNR/SSIM per image and per set, with wall time."""

from __future__ import annotations

import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from concurrent.futures import ThreadPoolExecutor
from typing import Iterable, Iterator, Sequence

import torch
from torch import nn

from ..data import SRBenchmark, write_image
from ..metrics import psnr_ssim
from .inference import super_resolve
from .memory import release_memory
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

    @classmethod
    def from_dict(cls, d: dict) -> "DatasetScore":
        """Inverse of :meth:`to_dict` (e.g. to reuse scores from a results file)."""
        return cls(d["dataset"], d["scale"], [ImageScore(**i) for i in d["images"]], d.get("seconds", 0.0))


def _prefetch(dataset: Sequence, pool: ThreadPoolExecutor) -> Iterator:
    """Yield ``dataset[i]`` while ``dataset[i + 1]`` is read and downsampled in ``pool``."""
    if len(dataset) == 0:
        return
    nxt = pool.submit(dataset.__getitem__, 0)
    for i in range(len(dataset)):
        item = nxt.result()
        if i + 1 < len(dataset):
            nxt = pool.submit(dataset.__getitem__, i + 1)
        yield item


@torch.no_grad()
def evaluate_dataset(model: nn.Module, dataset: Sequence, *, tile: int | None = None, overlap: int = 32,
                     y_channel: bool = True, save_dir: str | os.PathLike | None = None,
                     progress: bool = True, split: int | None = None) -> DatasetScore:
    """Super-resolve every image of ``dataset`` and score it with the benchmark protocol.

    ``dataset`` is an indexable set of ``(name, lr, hr)`` with ``.name`` and ``.scale`` (e.g.
    :class:`~srq.data.SRBenchmark`). Protocol: HR mod-cropped to the scale, LR by MATLAB-exact bicubic,
    SR clamped and rounded to uint8, PSNR/SSIM on Y (BT.601) with ``crop_border = scale``;
    ``y_channel=False`` scores RGB instead. Reading the next image and scoring the last one run in a
    helper thread while the model works; ``ImageScore.seconds`` is the model's time on that image.
    """
    scale = dataset.scale
    result = DatasetScore(dataset.name, scale)
    start = time.perf_counter()
    pending, writes = [], []
    with ThreadPoolExecutor(max_workers=1) as pool:
        for name, lr, hr in progress_bar(_prefetch(dataset, pool), total=len(dataset),
                                         description=f"{dataset.name} x{scale}", enabled=progress):
            t0 = time.perf_counter()
            sr = super_resolve(model, lr, scale, tile=tile, overlap=overlap, split=split)
            seconds = time.perf_counter() - t0
            release_memory(collect=False)  # image sizes vary: do not let freed buffers pile up
            pending.append((name, seconds, pool.submit(psnr_ssim, sr, hr, scale, y_channel)))
            if save_dir is not None:
                writes.append(pool.submit(write_image, Path(save_dir) / dataset.name / f"{Path(name).stem}_x{scale}.png", sr))
        for name, seconds, scores in pending:
            result.images.append(ImageScore(name, *scores.result(), seconds))
        for w in writes:
            w.result()
    result.seconds = time.perf_counter() - start
    return result


def evaluate(model: nn.Module, datasets: Sequence[str | os.PathLike] | str, scale: int, *,
             data_root: str | os.PathLike | None = None, tile: int | None = None, overlap: int = 32,
             y_channel: bool = True, save_dir: str | os.PathLike | None = None,
             progress: bool = True, channels_last: bool = True, split: int | None = None) -> list[DatasetScore]:
    """Evaluate ``model`` on benchmark sets given by name (``"Set5"``) or folder.

    All sets are resolved before any work starts, so a missing set fails at once. ``channels_last``
    converts the model's weights to the NHWC memory format in place (same values, ≈10 % faster
    convolutions on CPU). ``tile`` / ``split``: tiled or partitioned inference (see
    :func:`~srq.engine.inference.super_resolve`; ``split=200`` is MambaIRv2's official test).
    Returns one :class:`DatasetScore` per set, in the given order.
    """
    names: Iterable[str | os.PathLike] = [datasets] if isinstance(datasets, (str, os.PathLike)) else datasets
    sets = [SRBenchmark(n, scale, data_root=data_root) for n in names]
    was_training = model.training
    model.eval()
    if channels_last:
        model.to(memory_format=torch.channels_last)
    try:
        return [evaluate_dataset(model, s, tile=tile, overlap=overlap, y_channel=y_channel,
                                 save_dir=save_dir, progress=progress, split=split) for s in sets]
    finally:
        model.train(was_training)
