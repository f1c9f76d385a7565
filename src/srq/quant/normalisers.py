"""DAN (dynamic activation normalisation): per-(sample, channel) offset ``m`` and scale ``s`` computed on the fly,
so that a quantizer computes ``Q(x) = s·Q((x − m)/s) + m`` with its bounds in the normalised space.

Statistics are over all axes but the batch axis 0 and the channel axis; an input with one value per channel
(e.g. pooled, shape (N, C, 1, 1)) is normalised over its channels instead.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .registry import Registry

__all__ = ["NORMALISERS", "Normaliser", "RangeNorm", "StdNorm", "CappedRangeNorm"]

NORMALISERS = Registry("normaliser")

Buffers = dict[str, torch.Tensor]  # the quantizer's buffers named in ``Normaliser.buffers``


class Normaliser:
    """Base: ``axis`` is the input's channel axis (1 for NCHW, −1 for tokens); ``channels`` its size, where
    the normaliser keeps per-channel state."""

    name: str
    buffers: tuple[str, ...] = ()  # names of the quantizer buffers this normaliser reads and writes
    windowed = False  # whether it takes a window size (else ``window`` must be 0)

    def __init__(self, axis: int = 1, window: int = 0, channels: int = 0) -> None:
        self.axis = axis
        self.window = int(window)

    def init(self) -> Buffers:
        """Initial values of :attr:`buffers`."""
        return {}

    def start_calibration(self, b: Buffers) -> None:
        """Forget what earlier calibrations saw."""

    def observe(self, x: torch.Tensor, b: Buffers) -> None:
        """Record calibration input ``x``."""

    def stats(self, x: torch.Tensor, b: Buffers) -> tuple[torch.Tensor, torch.Tensor]:
        """``(m, s)`` broadcastable to ``x``, ``s > 0``."""
        raise NotImplementedError

    def _dims(self, x: torch.Tensor) -> tuple[int, list[int], bool]:
        """(channel axis, axes to reduce, whether the input has one value per channel)."""
        axis = self.axis % x.dim()
        dims = [d for d in range(1, x.dim()) if d != axis]
        if all(x.shape[d] == 1 for d in dims):
            return axis, list(range(1, x.dim())), True
        return axis, dims, False


@NORMALISERS.register("range")
class RangeNorm(Normaliser):
    """Each channel to [0, 1]: ``m = min``, ``s = max − min``; with ``window`` > 0, over square windows of that
    many pixels of NCHW inputs (axis 1) rather than the whole sample."""

    windowed = True

    def stats(self, x: torch.Tensor, b: Buffers) -> tuple[torch.Tensor, torch.Tensor]:
        axis, dims, pooled = self._dims(x)
        if not pooled and self.window and x.dim() == 4 and axis == 1:
            return self._window_range(x)
        low, high = self._clamp(x, x.amin(dims, keepdim=True), x.amax(dims, keepdim=True), b)
        return low, (high - low).clamp_min(1e-8)

    def _clamp(self, x: torch.Tensor, low: torch.Tensor, high: torch.Tensor,
               b: Buffers) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-sample extremes as used (unchanged here)."""
        return low, high

    def _window_range(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Min and max − min of every (sample, channel, k × k window) of an NCHW ``x``, spread over its pixels."""
        k, (h, w) = self.window, x.shape[-2:]
        high = F.max_pool2d(x, k, k, ceil_mode=True)
        low = -F.max_pool2d(-x, k, k, ceil_mode=True)

        def spread(t: torch.Tensor) -> torch.Tensor:
            return t.repeat_interleave(k, -2).repeat_interleave(k, -1)[..., :h, :w]

        return spread(low), spread((high - low).clamp_min(1e-8))


@NORMALISERS.register("std")
class StdNorm(Normaliser):
    """Each channel to zero mean and unit standard deviation (``s`` = population std + 1e-5)."""

    def stats(self, x: torch.Tensor, b: Buffers) -> tuple[torch.Tensor, torch.Tensor]:
        _, dims, _ = self._dims(x)
        return x.mean(dims, keepdim=True), x.std(dims, keepdim=True, unbiased=False) + 1e-5


@NORMALISERS.register("capped")
class CappedRangeNorm(RangeNorm):
    """``"range"`` with each sample's min and max clamped into the per-channel extremes (buffers ``dan_low``,
    ``dan_high``, shape (channels,)) that calibration saw: values beyond them saturate, as on a static grid,
    instead of coarsening the grid of the whole channel. Not in the DAN paper."""

    buffers = ("dan_low", "dan_high")
    windowed = False

    def __init__(self, axis: int = 1, window: int = 0, channels: int = 0) -> None:
        if channels < 1:
            raise ValueError("dan='capped' needs dan_channels, the input's number of channels")
        super().__init__(axis, window)
        self.channels = channels

    def init(self) -> Buffers:
        return {"dan_low": torch.full((self.channels,), float("inf")),  # empty until calibrated
                "dan_high": torch.full((self.channels,), float("-inf"))}

    def start_calibration(self, b: Buffers) -> None:
        b["dan_low"].fill_(float("inf"))
        b["dan_high"].fill_(float("-inf"))

    @torch.no_grad()
    def observe(self, x: torch.Tensor, b: Buffers) -> None:
        """Widen the caps to the per-channel extremes of ``x``."""
        axis = self.axis % x.dim()
        if x.shape[axis] != b["dan_low"].numel():
            raise ValueError(f"dan='capped' was set up for {b['dan_low'].numel()} channels, the input has "
                             f"{x.shape[axis]} on axis {axis}")
        per_channel = x.detach().movedim(axis, 0).reshape(x.shape[axis], -1).float()
        torch.minimum(b["dan_low"], per_channel.amin(1), out=b["dan_low"])
        torch.maximum(b["dan_high"], per_channel.amax(1), out=b["dan_high"])

    def _clamp(self, x: torch.Tensor, low: torch.Tensor, high: torch.Tensor,
               b: Buffers) -> tuple[torch.Tensor, torch.Tensor]:
        """Clamped into the caps (one pair for all channels where the input is normalised over its channels)."""
        axis = self.axis % x.dim()
        if low.shape[axis] == 1:
            cap_low, cap_high = b["dan_low"].min(), b["dan_high"].max()
        else:
            shape = [1] * x.dim()
            shape[axis] = -1
            cap_low, cap_high = b["dan_low"].view(shape), b["dan_high"].view(shape)
        return low.clamp(cap_low, cap_high), high.clamp(cap_low, cap_high)
