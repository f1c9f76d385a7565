"""Tasks: how a model's input is made from a clean image and how its output is scored.

* ``sr``: ×s super-resolution (MATLAB bicubic LR, Y PSNR/SSIM, ``crop_border = s``): :class:`SR`;
* ``denoise``: Gaussian noise of level σ, unclipped, seeded per image; RGB PSNR/SSIM, no crop: :class:`Denoise`;
* ``jpeg``: grey / Y JPEG at quality q (Pillow's libjpeg); grey PSNR/SSIM, no crop: :class:`JPEG`.

Methods and models know nothing of tasks: evaluation (:func:`srq.evaluate` with ``task=``), calibration
(:func:`task_calibration_set`) and training data (:class:`TaskTrainingSet`) ask the task.

>>> import srq
>>> task = srq.tasks.Denoise(sigma=25)
>>> calib = srq.tasks.task_calibration_set(task, n=32, patch=64)     # doctest: +SKIP
>>> srq.evaluate(model, ["Urban100"], scale=1, task=task)             # doctest: +SKIP
"""

from __future__ import annotations

from typing import Any, Mapping

from ..errors import SrqError
from .base import Task, image_rng
from .data import DEFAULT_CLEAN_SOURCES, TaskBenchmark, TaskTrainingSet, task_calibration_set
from .denoise import Denoise
from .jpeg import JPEG, grey_uint8, jpeg_roundtrip
from .sr import SR

__all__ = ["TASKS", "Task", "SR", "Denoise", "JPEG", "DEFAULT_CLEAN_SOURCES", "TaskBenchmark", "TaskTrainingSet",
           "get_task", "task_from_dict", "task_calibration_set", "image_rng", "grey_uint8", "jpeg_roundtrip"]

TASKS = ("sr", "denoise", "jpeg")


def get_task(name: str, *, scale: int | None = None, sigma: float | None = None, quality: int | None = None,
             calib_sigma: tuple[float, float] | None = None) -> Task:
    """The task ``name`` with its parameters; a parameter of another task, or an unknown name, is one clear line.

    Defaults: σ 25 for ``denoise``, quality 10 for ``jpeg``, the model's ``scale`` for ``sr``.
    """
    key = (name or "").strip().lower()
    if key not in TASKS:
        raise SrqError(f"unknown task {name!r}; choose one of {', '.join(TASKS)}")
    foreign = [opt for opt, value, owner in (("--sigma", sigma, "denoise"), ("--calib-sigma", calib_sigma, "denoise"),
                                             ("--quality", quality, "jpeg")) if value is not None and owner != key]
    if foreign:
        raise SrqError(f"{foreign[0]} is not a parameter of the {key} task; drop it or pass --task "
                       f"{'denoise' if foreign[0] != '--quality' else 'jpeg'}")
    if key == "denoise":
        return Denoise(25.0 if sigma is None else sigma, calib_sigma)
    if key == "jpeg":
        return JPEG(10 if quality is None else quality)
    return SR(4 if scale is None else scale)


def task_from_dict(record: Mapping[str, Any] | None) -> Task | None:
    """The task a results file or run folder recorded (:meth:`Task.to_dict`); None for none."""
    if not record:
        return None
    name = record.get("task")
    if name == "denoise":
        cs = record.get("calib_sigma")
        return Denoise(record.get("sigma", 25.0), tuple(cs) if cs else None, record.get("seed", 0))
    if name == "jpeg":
        return JPEG(record.get("quality", 10))
    if name == "sr":
        return SR(record.get("scale", 4))
    raise SrqError(f"unknown task record {dict(record)!r}; the file was written by a newer srq or is damaged")
