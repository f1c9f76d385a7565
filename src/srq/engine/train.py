"""A small, reproducible L1 training loop for SR models from HR photographs.

Used to train srq's embedded demo model (``srq train``); not meant for large-scale training.
HR patches are cut at random positions (with flips and 90° rotations), LR patches are made by
MATLAB-exact bicubic downsampling, the loss is L1 on [0, 1] pixels, the optimiser Adam with a
cosine learning-rate schedule.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..data.bicubic import imresize
from .inference import model_device
from ..utils.progress import progress_bar

if TYPE_CHECKING:
    from ..tasks import Task

__all__ = ["TrainConfig", "train_l1", "random_patches", "task_pairs"]


@dataclass
class TrainConfig:
    """Training hyper-parameters. ``patch`` is the HR patch size in pixels (a multiple of the scale)."""

    steps: int = 3000
    batch: int = 16
    patch: int = 96
    lr: float = 2e-3
    seed: int = 0


def random_patches(images: Sequence[np.ndarray], n: int, patch: int, rng: np.random.Generator) -> torch.Tensor:
    """``n`` random (patch × patch) crops with random flips/rotations → (n, 3, patch, patch) float [0, 1]."""
    out = np.empty((n, patch, patch, 3), np.uint8)
    for i in range(n):
        img = images[int(rng.integers(len(images)))]
        top = rng.integers(img.shape[0] - patch + 1)
        left = rng.integers(img.shape[1] - patch + 1)
        crop = img[top:top + patch, left:left + patch]
        if rng.random() < 0.5:
            crop = crop[:, ::-1]
        out[i] = np.rot90(crop, k=int(rng.integers(4)))
    return torch.from_numpy(out).permute(0, 3, 1, 2).float() / 255.0


def task_pairs(images: Sequence[np.ndarray], n: int, patch: int, rng: np.random.Generator,
               task: "Task") -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` random clean crops (flips/rotations as :func:`random_patches`) made into ``(input, target)`` by ``task``
    (e.g. noisy / clean), each (n, 3, patch, patch) float32."""
    from ..tasks.data import to_tensor

    inputs, targets = [], []
    for _ in range(n):
        img = images[int(rng.integers(len(images)))]
        top, left = rng.integers(img.shape[0] - patch + 1), rng.integers(img.shape[1] - patch + 1)
        crop = img[top:top + patch, left:left + patch]
        if rng.random() < 0.5:
            crop = crop[:, ::-1]
        crop = np.ascontiguousarray(np.rot90(crop, k=int(rng.integers(4))))
        inputs.append(task.degrade_patch(crop, rng))
        targets.append(task.target(crop))
    return to_tensor(inputs), to_tensor(targets)


def train_l1(model: nn.Module, images: Sequence[np.ndarray], scale: int, config: TrainConfig,
             progress: bool = True, task: "Task | None" = None) -> list[float]:
    """Train ``model`` in place on random patches of ``images`` ((H, W, 3) uint8); returns the loss curve.

    ``task`` (:mod:`srq.tasks`, e.g. ``Denoise(25, calib_sigma=(0, 55))``): inputs are the task's degradation of the
    clean patches (``scale`` must be 1); None: bicubic ×``scale`` LR, as the SR benchmarks make it."""
    if task is not None and task.name != "sr" and scale != 1:
        raise ValueError(f"the {task.name} task trains models at scale 1, not x{scale}")
    if task is not None and task.name == "sr":
        task = None
    if config.patch % scale:
        raise ValueError(f"patch {config.patch} must be a multiple of the scale {scale}")
    small = [img.shape[:2] for img in images if min(img.shape[:2]) < config.patch]
    if small:
        raise ValueError(f"images smaller than the patch size {config.patch}: {small}")
    torch.manual_seed(config.seed)
    rng = np.random.default_rng(config.seed)
    device = model_device(model)
    opt = torch.optim.Adam(model.parameters(), lr=config.lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=config.steps)
    losses: list[float] = []
    model.train()
    for _ in progress_bar(range(config.steps), total=config.steps, description="training", enabled=progress):
        if task is not None:
            lr_img, hr = (t.to(device) for t in task_pairs(images, config.batch, config.patch, rng, task))
        else:
            hr = random_patches(images, config.batch, config.patch, rng).to(device)
            lr_img = (imresize(hr, scale=1 / scale).clamp(0, 1) * 255).round() / 255  # as 8-bit LR files
        loss = F.l1_loss(model(lr_img), hr)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        losses.append(loss.item())
    model.eval()
    return losses
