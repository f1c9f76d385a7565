"""The grid part of a quantizer: which values ``Q(x)`` may take and the learnable bounds that place them."""

from __future__ import annotations

import torch

from ..functional import RoundFn, round_ste
from ..registry import Registry
from ..rounding import STE

__all__ = ["GRIDS", "Grid", "Params", "fusable"]

GRIDS = Registry("grid")

Params = dict[str, torch.Tensor]  # the quantizer's bound parameters by name, e.g. {"lower": …, "upper": …}


FUSED = True  # whether grids use their one-node forms (fake_quant_step, soft_step_quant); False: the composed
# expressions, for benchmarks and tests


def fusable(rounding: RoundFn, *params: torch.Tensor) -> bool:
    """Whether a grid may quantize through :func:`~srq.quant.functional.fake_quant_step`: rounding by the STE
    (or plain ``torch.round``) and one-element parameters (per tensor), unless :data:`FUSED` is off."""
    if not FUSED:
        return False
    ste = type(rounding) is STE or rounding is round_ste or rounding is torch.round  # not a subclass: its own rounding
    return ste and all(p.numel() == 1 for p in params)


class Grid:
    """A stateless grid; the quantizer owns the parameters named in :attr:`params` and passes them in.

    Methods that quantize get the parameters broadcast against ``x`` (shape (C, 1, …) per channel, () per
    tensor); the others get them as stored (shape (C,) or ()).
    """

    name: str
    params: tuple[str, ...]  # names of the tensors the grid reads; the first sets the bound shape and dtype
    buffers: tuple[str, ...] = ()  # those of :attr:`params` kept as buffers (not trained); others are nn.Parameters
    unitless: tuple[str, ...] = ()  # trained params not in the input's units (thresholds in steps, coefficients)
    counts_samples = False  # whether quantize takes ``samples=``: the number of samples in ``x`` (1 for weights)
    variable_bits = False  # whether the bit width may be a tensor (continuous offset, per-sample extra bits)
    observer: str | None = None  # observer forced on this grid (None: the one asked for)

    def init(self, shape: tuple[int, ...]) -> Params:
        """Initial parameter values of ``shape`` (before calibration)."""
        raise NotImplementedError

    def fit(self, lower: torch.Tensor, upper: torch.Tensor, bits: int | None = None) -> Params:
        """Parameter values for an observed range ``lower … upper`` (flat, one value per bound pair) at ``bits``
        (the quantizer's integer width; grids whose parameters do not depend on it ignore it)."""
        raise NotImplementedError

    def project_(self, p: Params) -> None:
        """Put trained parameters back into their valid set, in place."""
        raise NotImplementedError

    def bounds(self, p: Params, bits: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """The represented range ``(lower, upper)`` (at ``bits``, for grids whose range depends on it)."""
        raise NotImplementedError

    def quantize(self, x: torch.Tensor, p: Params, bits: int | torch.Tensor, rounding: RoundFn) -> torch.Tensor:
        """``Q(x)`` with autograd; ``bits`` an int, or a tensor broadcastable to ``x`` if :attr:`variable_bits`."""
        raise NotImplementedError

    def quantize_fwd(self, x: torch.Tensor, p: Params, bits: int) -> torch.Tensor:
        """:meth:`quantize` without autograd (same values), for parameters of ``x``'s dtype; a new tensor."""
        raise NotImplementedError

    def snap(self, offset: torch.Tensor, scale: torch.Tensor, p: Params, bits: int | torch.Tensor) -> torch.Tensor:
        """A normaliser's offset ``m`` of ``Q(x) = s·Q((x − m)/s) + m``, moved where the grid needs it
        (unchanged here)."""
        return offset
