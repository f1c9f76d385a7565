"""What every task is: how a model's input is made from a clean image, and how its output is scored.

A task never knows a model or a method: evaluation, calibration and training ask it for inputs and scores, so
methods and models stay task-agnostic. Images are (H, W, 3) arrays: clean images and targets uint8 RGB, model
inputs uint8 RGB or float32 RGB on the [0, 1] scale (a noisy input is not clipped), outputs uint8 RGB (the
model's [0, 1] output clamped, ×255 and rounded).
"""

from __future__ import annotations

import zlib
from typing import Any

import numpy as np

__all__ = ["Task", "image_rng"]


def image_rng(seed: int, name: str) -> np.random.Generator:
    """The random generator of one test image: ``Generator(PCG64(SeedSequence([seed, crc32(name)])))``.

    Keyed by the image's file stem, not its position, so every method, subset and order sees the same draws.
    """
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence([seed, zlib.crc32(name.encode())])))


class Task:
    """Base class of the tasks (:class:`~srq.tasks.SR`, :class:`~srq.tasks.Denoise`, :class:`~srq.tasks.JPEG`).

    Subclasses set ``name`` and implement :meth:`degrade`, :meth:`target` and :meth:`score`.
    """

    name: str = ""
    #: the model's upscaling factor for this task (1 for restoration)
    scale: int = 1

    def degrade(self, clean: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """The model input made from a clean (H, W, 3) uint8 image: uint8, or float32 on the [0, 1] scale."""
        raise NotImplementedError

    def degrade_patch(self, clean: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """A calibration / training input made from a clean crop (default: :meth:`degrade`; a blind denoiser's task
        draws σ from its range)."""
        return self.degrade(clean, rng)

    def degrade_image(self, clean: np.ndarray, name: str) -> np.ndarray:
        """The input of the test image ``name``: :meth:`degrade` with that image's own generator."""
        return self.degrade(clean, image_rng(getattr(self, "seed", 0), name))

    def target(self, clean: np.ndarray) -> np.ndarray:
        """What the output is compared with, (H', W', 3) uint8 (default: the clean image)."""
        return clean

    def score(self, output: np.ndarray, target: np.ndarray) -> tuple[float, float]:
        """``(psnr in dB, ssim)`` of a (H, W, 3) uint8 output against its target."""
        raise NotImplementedError

    def to_dict(self) -> dict[str, Any]:
        """The task and its parameters, as results files and run folders record them."""
        raise NotImplementedError

    def protocol(self) -> dict[str, Any]:
        """How inputs were made and outputs scored, in words (the ``protocol`` entry of a results file)."""
        raise NotImplementedError

    def label(self) -> str:
        """A short tag for tables and file names, e.g. ``denoise_s25``."""
        raise NotImplementedError

    def model_keywords(self, keywords: dict[str, Any]) -> dict[str, Any]:
        """Architecture keywords this task sets on a model whose builder takes them (``keywords``: the builder's
        keywords and defaults), e.g. FFDNet's noise level; default: none."""
        return {}
