"""A quick probe of a model srq did not build: does it map [0, 1] RGB to [0, 1] RGB at its scale?

:func:`check_output_range` runs the model once on a small input. A model that fails, or returns the wrong shape,
is a user error (one line); outputs far outside [0, 1] (a model trained on [0, 255] pixels and not declared so)
give one warning line, since srq cannot tell a bad range from a bad model for sure.
"""

from __future__ import annotations

import warnings

import torch
from torch import nn

from ..errors import SrqError

__all__ = ["check_output_range", "OUTPUT_MEAN_RANGE"]

OUTPUT_MEAN_RANGE = (-1.0, 2.0)  # an output mean outside this, for an input in [0, 1], is not a [0, 1] image


def check_output_range(model: nn.Module, x: torch.Tensor, scale: int | None = None, name: str = "the model") -> float:
    """Run ``model`` on ``x`` ((N, 3, h, w) in [0, 1]; a batch of one or two is enough) and return the output mean.

    Raises :class:`SrqError` (one line) when the model fails on ``x``, returns no tensor, or (with ``scale``)
    does not return (N, C, scale·h, scale·w). Warns (``UserWarning``, one line) when the output mean is outside
    :data:`OUTPUT_MEAN_RANGE`: srq feeds [0, 1] pixels and expects [0, 1] back, so a model trained on
    [0, 255] must be declared (``srq.models.wrap(model, pixel_range=255)``, ``--pixel-range 255``).
    """
    param = next(iter(model.parameters()), None)
    x = x.to(param.device) if param is not None else x
    shape = tuple(x.shape)
    try:
        with torch.no_grad():
            y = model(x)
    except Exception as e:  # the user's forward: any failure is reported in one line
        first = (str(e).strip().splitlines() or [""])[0][:200]
        raise SrqError(f"{name} fails on a {shape} input in [0, 1] ({type(e).__name__}: {first}); srq feeds "
                       f"(N, 3, h, w) RGB images")
    if not isinstance(y, torch.Tensor):
        raise SrqError(f"{name} returns a {type(y).__name__}, not a tensor; srq needs forward(x) -> (N, 3, s·h, s·w)")
    if scale is not None:
        want = (shape[0], shape[1], scale * shape[2], scale * shape[3])
        if tuple(y.shape) != want:
            raise SrqError(f"{name} maps a {shape} input to {tuple(y.shape)}, not {want} (x{scale}); check --scale "
                           f"and that the model returns the SR image")
    mean = float(y.float().mean())
    low, high = OUTPUT_MEAN_RANGE
    if not low <= mean <= high:
        declared = getattr(model, "pixel_range", None)
        hint = (f"check its declared pixel range ({declared:g})" if declared is not None else
                "if it was trained on [0, 255] pixels, declare it: srq.models.wrap(model, pixel_range=255) or "
                "--pixel-range 255")
        warnings.warn(f"{name} returns values with mean {mean:.3g} for an input in [0, 1], far outside [0, 1]: "
                      f"scores will be wrong; {hint}", UserWarning, stacklevel=2)
    return mean
