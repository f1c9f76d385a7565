"""Observers: collect statistics of a tensor over calibration batches and turn them into bounds.

Every observer reduces over all dimensions except ``channel_axis`` (None: one bound pair for the whole
tensor) and returns ``(lower, upper)`` shaped to broadcast against the observed tensor.

* :class:`MinMaxObserver` — running min / max.
* :class:`EMAMinMaxObserver` — per-batch min / max smoothed with an exponential moving average
  (decay 0.9, as in GBA and AdaBM): ``v ← β·v + (1 − β)·v_batch``, the first batch initialises ``v``.
* :class:`PercentileObserver` — bounds at low/high percentiles of a histogram (per tensor).
* :class:`OMSEObserver` — the clipping ratio r (bounds r·min, r·max) that minimises the quantization MSE
  (Choukroun et al., 2019), searched on a grid; exact on the tensor for weights, on a histogram for
  activations.
* :class:`DBDCObserver` — PTQ4SR's density-based dual clipping: trim the sparser tail of a histogram
  until a fraction of the values is clipped; mean over batches.
* :class:`StandardisedMSEObserver` — the MSE-optimal range of the per-sample standardised values (σ units), the
  fitted initialisation of a DLS range.
* :class:`MeanAbsObserver`, :class:`SignedMeanAbsObserver`, :class:`SampleMaxAbsObserver` — mean |x|, the
  same with its sign, mean per-sample max |x|: the statistics that binary, LSQ and PAMS grids force.
"""

from __future__ import annotations

import math

import torch

from .functional import fake_quant

__all__ = ["Observer", "MinMaxObserver", "EMAMinMaxObserver", "PercentileObserver", "OMSEObserver",
           "MeanAbsObserver", "SignedMeanAbsObserver", "SampleMaxAbsObserver", "DBDCObserver",
           "StandardisedMSEObserver", "BIT_AWARE_OBSERVERS", "density_dual_clip",
           "make_observer", "OBSERVERS"]


def _reduce_dims(x: torch.Tensor, channel_axis: int | None) -> list[int]:
    return [d for d in range(x.dim()) if channel_axis is None or d != channel_axis % x.dim()]


def _shape_like(v: torch.Tensor, x: torch.Tensor, channel_axis: int | None) -> torch.Tensor:
    if channel_axis is None:
        return v.reshape(())
    shape = [1] * x.dim()
    shape[channel_axis % x.dim()] = -1
    return v.reshape(shape)


class Observer:
    """Base class. ``observe(x)`` per batch, then ``bounds()``; ``reset()`` starts over."""

    def __init__(self, channel_axis: int | None = None) -> None:
        self.channel_axis = channel_axis
        self.reset()

    def reset(self) -> None:
        self.lo: torch.Tensor | None = None
        self.hi: torch.Tensor | None = None
        self._ndim = 0

    def _batch_minmax(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        dims = _reduce_dims(x, self.channel_axis)
        x = x.detach().float()
        return x.amin(dim=dims), x.amax(dim=dims)

    def observe(self, x: torch.Tensor) -> None:
        lo, hi = self._batch_minmax(x)
        self.lo = lo if self.lo is None else torch.minimum(self.lo, lo)
        self.hi = hi if self.hi is None else torch.maximum(self.hi, hi)
        self._ndim = x.dim()

    def bounds(self) -> tuple[torch.Tensor, torch.Tensor]:
        if self.lo is None or self.hi is None:  # (set together)
            raise RuntimeError("observer saw no data: run calibration batches through the model first")
        like = torch.empty((1,) * self._ndim)
        return _shape_like(self.lo, like, self.channel_axis), _shape_like(self.hi, like, self.channel_axis)


class MinMaxObserver(Observer):
    """Running minimum and maximum."""


class EMAMinMaxObserver(Observer):
    """Exponential moving average of per-batch min/max with decay ``beta`` (default 0.9)."""

    def __init__(self, channel_axis: int | None = None, beta: float = 0.9) -> None:
        self.beta = beta
        super().__init__(channel_axis)

    def observe(self, x: torch.Tensor) -> None:
        lo, hi = self._batch_minmax(x)
        if self.lo is None or self.hi is None:  # (set together)
            self.lo, self.hi = lo, hi
        else:
            self.lo = self.beta * self.lo + (1 - self.beta) * lo
            self.hi = self.beta * self.hi + (1 - self.beta) * hi
        self._ndim = x.dim()


class _Histogram:
    """A per-tensor histogram over a range that widens as data arrives (counts are re-binned)."""

    def __init__(self, bins: int = 2048) -> None:
        self.bins = bins
        self.counts: torch.Tensor | None = None
        self.lo = self.hi = 0.0

    def add(self, x: torch.Tensor) -> None:
        x = x.detach().float().flatten().cpu()  # counts live on the CPU whatever the model's device
        lo, hi = float(x.min()), float(x.max())
        if self.counts is None:
            self.lo, self.hi = lo, max(hi, lo + 1e-8)
            self.counts = torch.histc(x, self.bins, self.lo, self.hi).double()
            return
        if lo < self.lo or hi > self.hi:  # widen: move old counts to the new bins by their centres
            new_lo, new_hi = min(lo, self.lo), max(hi, self.hi)
            centres = self.centres()
            idx = ((centres - new_lo) / (new_hi - new_lo) * self.bins).long().clamp(0, self.bins - 1)
            self.counts = torch.zeros(self.bins, dtype=torch.float64).index_add_(0, idx, self.counts)
            self.lo, self.hi = new_lo, new_hi
        self.counts += torch.histc(x, self.bins, self.lo, self.hi).double()

    def centres(self) -> torch.Tensor:
        width = (self.hi - self.lo) / self.bins
        return self.lo + width * (torch.arange(self.bins, dtype=torch.float64) + 0.5)

    def quantile(self, q: float) -> float:
        """Value below which a fraction ``q`` of the mass lies (linear inside a bin)."""
        assert self.counts is not None, "quantile of an empty histogram"
        cdf = torch.cumsum(self.counts, 0) / self.counts.sum()
        i = int(torch.searchsorted(cdf, torch.tensor([q], dtype=torch.float64)).clamp(max=self.bins - 1))
        prev = float(cdf[i - 1]) if i > 0 else 0.0
        frac = (q - prev) / max(float(cdf[i]) - prev, 1e-12)
        width = (self.hi - self.lo) / self.bins
        return self.lo + width * (i + min(max(frac, 0.0), 1.0))


class PercentileObserver(Observer):
    """Bounds at the ``low``/``high`` percentiles of a histogram of all observed values (per tensor).

    Defaults 0.01 / 99.99 (percent). A per-channel request falls back to per tensor for activations,
    which is how activation quantizers are used.
    """

    def __init__(self, channel_axis: int | None = None, low: float = 0.01, high: float = 99.99,
                 bins: int = 2048) -> None:
        if not 0 <= low < high <= 100:
            raise ValueError(f"percentiles must satisfy 0 ≤ low < high ≤ 100, got {low}, {high}")
        self.low, self.high, self.nbins = low, high, bins
        super().__init__(None)

    def reset(self) -> None:
        super().reset()
        self.hist = _Histogram(self.nbins)

    def observe(self, x: torch.Tensor) -> None:
        self.hist.add(x)
        self._ndim = x.dim()

    def bounds(self) -> tuple[torch.Tensor, torch.Tensor]:
        if self.hist.counts is None:
            raise RuntimeError("observer saw no data: run calibration batches through the model first")
        return (torch.tensor(self.hist.quantile(self.low / 100)), torch.tensor(self.hist.quantile(self.high / 100)))


class OMSEObserver(Observer):
    """Clipping ratio minimising the MSE between a tensor and its n-bit quantization.

    Bounds are ``(r·min, r·max)`` for the best ``r`` on a grid of ``steps`` values in ``(0, 1]``. With
    ``keep_tensor`` (weights) the MSE is exact on the last observed tensor and per channel when
    ``channel_axis`` is set; otherwise it is computed on a per-tensor histogram of everything observed.
    """

    def __init__(self, channel_axis: int | None = None, bits: int = 8, steps: int = 100,
                 keep_tensor: bool = False, bins: int = 2048) -> None:
        self.bits, self.steps, self.keep_tensor, self.nbins = bits, steps, keep_tensor, bins
        super().__init__(channel_axis)

    def reset(self) -> None:
        super().reset()
        self.tensor: torch.Tensor | None = None
        self.hist = _Histogram(self.nbins)

    def observe(self, x: torch.Tensor) -> None:
        super().observe(x)
        if self.keep_tensor:
            self.tensor = x.detach().float()
        else:
            self.hist.add(x)

    def ratios(self) -> torch.Tensor:
        return torch.linspace(1.0 / self.steps, 1.0, self.steps)

    def bounds(self) -> tuple[torch.Tensor, torch.Tensor]:
        lo, hi = super().bounds()
        if self.keep_tensor and self.tensor is not None:
            x = self.tensor
            dims = _reduce_dims(x, self.channel_axis)
            best_err: torch.Tensor | None = None
            best_r: torch.Tensor | None = None
            ratios = self.ratios()
            for value, r in zip(ratios.tolist(), ratios.to(x.device)):  # r on x's device: no sync per ratio
                err = (fake_quant(x, lo * r, hi * r, self.bits) - x).pow(2).mean(dim=dims)
                if best_err is None or best_r is None:  # (set together)
                    best_err, best_r = err, torch.full_like(err, value)
                else:
                    better = err < best_err
                    best_err, best_r = torch.where(better, err, best_err), torch.where(better, r, best_r)
            assert best_r is not None  # there is at least one ratio (steps ≥ 1)
            best_r = best_r.reshape(lo.shape)
            return lo * best_r, hi * best_r
        centres, counts = self.hist.centres(), self.hist.counts
        assert counts is not None  # observe() filled it (super().bounds() raised otherwise)
        best = (float("inf"), 1.0)
        for ratio in self.ratios().double():
            q = fake_quant(centres, self.hist.lo * ratio, self.hist.hi * ratio, self.bits)
            hist_err = float((counts * (q - centres) ** 2).sum())
            best = min(best, (hist_err, float(ratio)))
        best_ratio = best[1]
        return torch.tensor(self.hist.lo * best_ratio), torch.tensor(self.hist.hi * best_ratio)


def density_dual_clip(counts: torch.Tensor, lo: float, hi: float, clip_fraction: float) -> tuple[float, float]:
    """PTQ4SR's density-based dual clipping on one histogram (``counts`` over equal bins from ``lo`` to ``hi``).

    Bins are trimmed one at a time from whichever end is *less dense* (the upper end on ties) until at
    least ``clip_fraction`` of the values lie outside; returns the outer edges of the bins kept.
    """
    counts = counts.double()
    total = float(counts.sum())
    keep = (1.0 - clip_fraction) * total
    i, j = 0, len(counts) - 1
    inside = total
    c = counts.tolist()
    while inside > keep and i < j:
        if c[i] < c[j]:
            inside -= c[i]
            i += 1
        else:
            inside -= c[j]
            j -= 1
    width = (hi - lo) / len(counts)
    return lo + width * i, lo + width * (j + 1)


class DBDCObserver(Observer):
    """PTQ4SR (Tu et al., CVPR 2023) density-based dual clipping, per tensor.

    Every batch gets a 2048-bin histogram over its own [min, max] and :func:`density_dual_clip` with
    ``clip_fraction`` (PTQ4SR: 1e-4 below 8 bit, 1e-5 at 8 bit); the bounds are the mean over batches.
    """

    def __init__(self, channel_axis: int | None = None, clip_fraction: float = 1e-4, bins: int = 2048) -> None:
        if not 0 <= clip_fraction < 1:
            raise ValueError(f"clip_fraction must be in [0, 1), got {clip_fraction}")
        self.clip_fraction, self.nbins = clip_fraction, bins
        super().__init__(None)

    def reset(self) -> None:
        super().reset()
        self.sums = [0.0, 0.0]
        self.batches = 0

    def observe(self, x: torch.Tensor) -> None:
        x = x.detach().float()
        lo, hi = float(x.min()), float(x.max())
        if hi <= lo:
            bounds = (lo, hi)
        else:
            bounds = density_dual_clip(torch.histc(x, bins=self.nbins, min=lo, max=hi), lo, hi, self.clip_fraction)
        self.sums = [self.sums[0] + bounds[0], self.sums[1] + bounds[1]]
        self.batches += 1
        self._ndim = x.dim()

    def bounds(self) -> tuple[torch.Tensor, torch.Tensor]:
        if not self.batches:
            raise RuntimeError("observer saw no data: run calibration batches through the model first")
        return torch.tensor(self.sums[0] / self.batches), torch.tensor(self.sums[1] / self.batches)


class MeanAbsObserver(Observer):
    """Mean of |x| (per channel or per tensor), returned as the symmetric bounds (−m, m).

    This is the optimal scale of a 1-bit quantizer sign(x)·α in the least-squares sense (XNOR-Net)."""

    def reset(self) -> None:
        super().reset()
        self.total: torch.Tensor | None = None
        self.count = 0

    def observe(self, x: torch.Tensor) -> None:
        dims = _reduce_dims(x, self.channel_axis)
        s = x.detach().float().abs().sum(dim=dims)
        self.total = s if self.total is None else self.total + s
        self.count += x.numel() // max(s.numel(), 1)
        self._ndim = x.dim()

    def bounds(self) -> tuple[torch.Tensor, torch.Tensor]:
        if self.total is None:
            raise RuntimeError("observer saw no data: run calibration batches through the model first")
        m = _shape_like(self.total / self.count, torch.empty((1,) * self._ndim), self.channel_axis)
        return -m, m


class SignedMeanAbsObserver(MeanAbsObserver):
    """:class:`MeanAbsObserver`'s ``(−m, m)`` where the data went below 0, ``(0, m)`` where it never did: the
    statistic and the signed/unsigned choice LSQ's step is initialised from."""

    def observe(self, x: torch.Tensor) -> None:
        super().observe(x)
        lo, _ = self._batch_minmax(x)
        self.lo = lo if self.lo is None else torch.minimum(self.lo, lo)

    def bounds(self) -> tuple[torch.Tensor, torch.Tensor]:
        low, m = super().bounds()
        assert self.lo is not None  # set with the total
        return torch.where(self.lo.reshape(m.shape) < 0, low, torch.zeros_like(m)), m


class MeanStdObserver(Observer):
    """``(−m, m)`` with ``m = max(|μ − 3σ|, |μ + 3σ|)`` of the data seen (per channel or per tensor; σ the population
    standard deviation): the statistic LSQ+ initialises its weight step from."""

    def reset(self) -> None:
        super().reset()
        self.sums: tuple[torch.Tensor, torch.Tensor] | None = None  # Σx, Σx² (float64)
        self.count = 0

    def observe(self, x: torch.Tensor) -> None:
        dims = _reduce_dims(x, self.channel_axis)
        x = x.detach().double()
        s1, s2 = x.sum(dim=dims), x.square().sum(dim=dims)
        self.sums = (s1, s2) if self.sums is None else (self.sums[0] + s1, self.sums[1] + s2)
        self.count += x.numel() // max(s1.numel(), 1)
        self._ndim = x.dim()

    def bounds(self) -> tuple[torch.Tensor, torch.Tensor]:
        if self.sums is None:
            raise RuntimeError("observer saw no data: run calibration batches through the model first")
        mean = self.sums[0] / self.count
        std = (self.sums[1] / self.count - mean.square()).clamp_min(0).sqrt()
        m = torch.maximum((mean - 3 * std).abs(), (mean + 3 * std).abs()).float()
        m = _shape_like(m, torch.empty((1,) * self._ndim), self.channel_axis)
        return -m, m


class SampleMaxAbsObserver(MeanAbsObserver):
    """Mean over samples (axis 0) of each sample's max |x|, as ``(−m, m)``: the statistic PAMS initialises its
    activation max scale with (an EMA of the batch mean of it). Per channel (weights): each channel's max |x|."""

    def observe(self, x: torch.Tensor) -> None:
        x = x.detach().float().abs()
        if self.channel_axis is None:
            m = x.reshape(x.shape[0] if x.dim() > 1 else 1, -1).amax(dim=1)
            s, n = m.sum(), m.numel()
        else:
            s, n = x.amax(dim=_reduce_dims(x, self.channel_axis)), 1
        self.total = s if self.total is None else self.total + s
        self.count += n
        self._ndim = x.dim()


class StandardisedMSEObserver(Observer):
    """The range ``[l, u]``, in units of each sample's standard deviation around its mean, that minimises the
    ``bits``-bit quantization MSE of the standardised values ``z = (x − μ)/σ`` of every sample seen (axis 0; σ
    without Bessel's correction; constant samples are skipped): the MSE-fitted initialisation of a DLS range
    ``[μ + l·σ, μ + u·σ]``. Searched on a histogram of ``z`` over ``steps`` candidates per end — lower ends at
    quantiles from 0 to ½ of the mass, upper ends from ½ to 1, spaced geometrically towards the tails — then
    refined once between the neighbours of the best pair; each batch adds its standardised values at a stride that
    keeps about :attr:`max_values` of them. Returns ``(l, u)`` as 0-d tensors."""

    max_values = 1 << 20  # per batch: every sample's values at one stride, at most about this many in all

    def __init__(self, channel_axis: int | None = None, bits: int = 8, steps: int = 48, bins: int = 2048) -> None:
        self.bits, self.steps, self.nbins = bits, steps, bins
        super().__init__(None)

    def reset(self) -> None:
        super().reset()
        self.hist = _Histogram(self.nbins)

    def observe(self, x: torch.Tensor) -> None:
        flat = x.detach().float().reshape(x.shape[0] if x.dim() > 1 else 1, -1)
        mean, std = flat.mean(dim=1, keepdim=True), flat.std(dim=1, correction=0, keepdim=True)
        keep = std.squeeze(1) > 1e-6 * flat.abs().amax(dim=1).clamp_min(1e-30)
        if bool(keep.any()):
            stride = max(1, int(keep.sum()) * flat.shape[1] // self.max_values)  # a histogram needs no more
            self.hist.add((flat[keep, ::stride] - mean[keep]) / std[keep])
        self._ndim = x.dim()

    def _error(self, lows: torch.Tensor, highs: torch.Tensor) -> torch.Tensor:
        """(len(lows), len(highs)) histogram MSE of every pair of range ends (float32: 2048 bins). The values are
        :func:`fake_quant`'s with ``torch.round``, written out: without its clipping ``where`` and rounding wrapper
        this 48 × 48 × 2048 search runs 4× faster."""
        centres, counts = self.hist.centres().float(), self.hist.counts
        assert counts is not None
        lo, hi = lows.float().view(-1, 1, 1), highs.float().view(1, -1, 1)
        step = (hi - lo).clamp_min(1e-6) / (2 ** self.bits - 1)
        level = torch.minimum(torch.maximum(((centres - lo) / step).round_(), torch.zeros(())),
                              torch.tensor(float(2 ** self.bits - 1)))
        return ((level * step + lo - centres).square_() * counts.float()).sum(dim=-1)

    def bounds(self) -> tuple[torch.Tensor, torch.Tensor]:
        if self.hist.counts is None:
            raise RuntimeError("observer saw no data with a spread (every sample was constant): nothing to fit")
        tails = [0.0, *torch.logspace(-6, math.log10(0.5), self.steps - 1).tolist()]
        lows = torch.tensor([self.hist.quantile(p) for p in tails])
        highs = torch.tensor([self.hist.quantile(1 - p) for p in tails])
        err = self._error(lows, highs)
        i, j = divmod(int(err.argmin()), len(highs))
        last = len(tails) - 1
        fine_lows = torch.linspace(float(lows[max(i - 1, 0)]), float(lows[min(i + 1, last)]), self.steps)
        fine_highs = torch.linspace(float(highs[min(j + 1, last)]), float(highs[max(j - 1, 0)]), self.steps)
        fine = self._error(fine_lows, fine_highs)
        if float(fine.min()) < float(err[i, j]):
            k, m = divmod(int(fine.argmin()), len(fine_highs))
            return fine_lows[k].clone(), fine_highs[m].clone()
        return lows[i].clone(), highs[j].clone()


OBSERVERS = {"minmax": MinMaxObserver, "meanabs": MeanAbsObserver, "ema_minmax": EMAMinMaxObserver,
             "percentile": PercentileObserver, "omse": OMSEObserver, "dbdc": DBDCObserver,
             "signed_meanabs": SignedMeanAbsObserver, "sample_maxabs": SampleMaxAbsObserver,
             "mean_3std": MeanStdObserver, "dls_mse": StandardisedMSEObserver}
BIT_AWARE_OBSERVERS = frozenset({"omse", "dls_mse"})  # searched at the quantizer's bits (``bits=`` argument)


def make_observer(name: str, channel_axis: int | None = None, **kwargs) -> Observer:
    """Observer by name: ``minmax``, ``ema_minmax``, ``percentile``, ``omse``, ``dbdc`` or ``meanabs``."""
    if name not in OBSERVERS:
        raise ValueError(f"unknown observer {name!r}; choose from {', '.join(OBSERVERS)}")
    return OBSERVERS[name](channel_axis=channel_axis, **kwargs)
