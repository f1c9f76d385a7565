"""PAMS (Li et al., ECCV 2020) activations: a learnable max scale α, ``round(clip(x, −α, α)·k/α)·α/k``, k = 2ᵇ⁻¹ − 1."""

from __future__ import annotations

from .base import GRIDS
from .symmetric import SymmetricGrid

__all__ = ["PAMSGrid"]


@GRIDS.register("pams")
class PAMSGrid(SymmetricGrid):
    """The symmetric grid (the same formula; autograd with the STE gives α the paper's gradient: ``sign(x)`` where
    ``|x| > α``, ``(q − x)/α`` inside), with PAMS's init: α is the mean over the calibration samples of each
    sample's max |x| (the official code sets α to an EMA of the batch mean of that during the first epoch),
    per channel the channel's max |w|. PAMS's weights are the ``symmetric`` grid with max |w| (``minmax``)."""

    observer = "sample_maxabs"
