"""Batching of calibration inputs for the methods' calibration and training stages."""

from __future__ import annotations

import torch

__all__ = ["calibration_batches", "shuffled_batches"]


def calibration_batches(calib: torch.Tensor | list[torch.Tensor], batch: int = 16) -> list[torch.Tensor]:
    """Split calibration inputs into batches ((N, 3, h, w) tensor) or pass a list of tensors through."""
    if isinstance(calib, list):
        return calib
    return [calib[i:i + batch] for i in range(0, len(calib), batch)]


def shuffled_batches(inputs: torch.Tensor, batch: int, epochs: int, seed: int) -> list[torch.Tensor]:
    """``epochs`` passes over ``inputs`` ((N, 3, h, w)) in batches of ``batch``, reshuffled each pass."""
    gen = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(epochs):
        order = torch.randperm(len(inputs), generator=gen)
        out += [inputs[order[i:i + batch]] for i in range(0, len(inputs), batch)]
    return out
