"""The fake-quantizer module: bits, granularity, learnable bounds, an observer for calibration.

A :class:`Quantizer` is used for weights (``channel_axis=0``: one bound pair per output channel) and for
activations (per tensor). Its life cycle:

1. created with ``bits`` and an observer name (bounds not yet known: ``initialized`` is False);
2. ``start_calibration()`` — forward passes only *observe* (identity output);
3. ``finish_calibration()`` — bounds are set from the observer (``initialized`` becomes True);
4. forward passes fake-quantize; ``lower``/``upper`` (or ``alpha``) are ``nn.Parameter``s that methods
   may fine-tune (their autograd gradients are SPR²Q Eq. 8).

Modes: ``"uniform"`` (asymmetric, Eq. 1, bounds ``lower``/``upper``), ``"affine"`` (the same range with an
integer zero point, so 0 is on the grid), ``"symmetric"`` (signed, zero on the grid, bound ``alpha``), ``"binary"`` (1 bit, sign·α, bound ``alpha``). One bit means binary, unless ``one_bit="levels"``: then the
quantizer is ``"uniform"`` with the two learnable levels ``lower`` and ``upper`` (Eq. 1 with n = 1).

Two optional extras used by GBA (and usable by any method):

* a continuous **bit offset** ``s`` (:meth:`enable_bit_offset`): the grid has ``2^(bits + s) − 1`` steps, so
  ``∂L/∂s`` measures how much the loss would drop with more bits; :meth:`set_bits` fixes an integer
  width and removes ``s``;
* **DAN** (dynamic activation normalization, ``dan``): every sample's channels are normalised over the
  other axes before quantization and the inverse is applied after, ``Q(x) = s·Q((x − m)/s) + m`` with
  ``m, s`` per (sample, channel) computed on the fly: ``"range"`` maps each channel to [0, 1]
  (m = min, s = max − min), ``"std"`` to zero mean and unit standard deviation (inputs with one value
  per channel, such as pooled vectors, are normalised over their channels). ``"capped"`` (not in the
  paper) is ``"range"`` with each sample's min and max clamped into the per-channel extremes the float
  network reached during calibration: values beyond them saturate, as on a static grid, instead of
  coarsening the grid of the whole channel. The bounds then live in the
  normalised space. On an affine grid ``m`` is rounded to a multiple of the grid step ``s·(b − a)/(2ⁿ − 1)``,
  so that an input 0 stays exactly 0, as without DAN.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .functional import (affine_step, binarize, binarize_fwd, fake_quant, fake_quant_affine, fake_quant_affine_fwd,
                         fake_quant_fwd, fake_quant_symmetric, fake_quant_symmetric_fwd)
from .config import DAN_CHOICES
from .observers import Observer, make_observer

__all__ = ["Quantizer", "MODES"]

MODES = ("uniform", "affine", "symmetric", "binary")
DAN_MODES = (None, *(m for m in DAN_CHOICES if m != "none"))  # the config's choices, "none" as None


class Quantizer(nn.Module):
    """Fake quantizer ``x → Q(x)``.

    Args:
        bits: 1 … 8.
        mode: ``"uniform"``, ``"affine"``, ``"symmetric"`` or ``"binary"`` (forced when ``bits == 1``
            and ``one_bit="binary"``).
        channel_axis: ``None`` for per-tensor bounds, else the axis with one bound pair per index.
        num_channels: size of that axis (the number of bound pairs).
        observer: ``"minmax"``, ``"ema_minmax"``, ``"percentile"``, ``"omse"`` or ``"meanabs"``.
        observer_kwargs: extra arguments for the observer.
        dan: ``None`` (off), ``"range"``, ``"std"`` or ``"capped"`` dynamic activation normalization.
        dan_axis: channel axis of the input for DAN (1 for NCHW conv inputs, -1 for token inputs).
        dan_channels: the input's number of channels (size of ``dan_axis``); needed by ``"capped"``, whose
            caps (buffers ``dan_low``/``dan_high``, set anew by every calibration) hold one value per channel.
        dan_window: ``"range"`` DAN statistics over square windows of this many pixels of NCHW inputs
            (0: over the whole sample, the paper's form); other inputs are always normalised whole.
        one_bit: at 1 bit, ``"binary"`` (sign·α) or ``"levels"`` (two learnable levels, Eq. 1 with n = 1).
    """

    def __init__(self, bits: int, *, mode: str = "uniform", channel_axis: int | None = None,
                 num_channels: int = 1, observer: str = "minmax", observer_kwargs: dict | None = None,
                 dan: str | None = None, dan_axis: int = 1, dan_window: int = 0, dan_channels: int = 0,
                 one_bit: str = "binary") -> None:
        super().__init__()
        if not 1 <= int(bits) <= 8:
            raise ValueError(f"bits must be between 1 and 8, got {bits}")
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
        self.bits = int(bits)
        if one_bit not in ("binary", "levels"):
            raise ValueError(f"one_bit must be 'binary' or 'levels', got {one_bit!r}")
        self.mode = mode if self.bits > 1 else "binary" if one_bit == "binary" else "uniform"
        self.channel_axis = channel_axis
        shape = (num_channels,) if channel_axis is not None else ()
        if self.mode in ("uniform", "affine"):
            self.lower = nn.Parameter(torch.zeros(shape))
            self.upper = nn.Parameter(torch.ones(shape))
        else:
            self.alpha = nn.Parameter(torch.ones(shape))
        self.register_buffer("initialized", torch.tensor(False))
        self.observer_name = "meanabs" if self.mode == "binary" else observer
        self.observer_kwargs = dict(observer_kwargs or {})
        self.observer: Observer | None = None
        self.enabled = True
        if dan not in DAN_MODES:
            raise ValueError(f"dan must be one of {DAN_MODES}, got {dan!r}")
        if dan_window < 0 or (dan_window and dan != "range"):
            raise ValueError(f"dan_window must be 0, or a positive window size with dan='range'; got {dan_window} "
                             f"with dan={dan!r}")
        self.dan = dan
        self.dan_axis = dan_axis
        self.dan_window = int(dan_window)
        if dan == "capped":
            if dan_channels < 1:
                raise ValueError("dan='capped' needs dan_channels, the input's number of channels")
            self.register_buffer("dan_low", torch.full((dan_channels,), float("inf")))  # empty until calibrated
            self.register_buffer("dan_high", torch.full((dan_channels,), float("-inf")))
        self.bit_offset: nn.Parameter | None = None
        self.extra_bits: torch.Tensor | None = None  # set by input-adaptive methods (AdaBM): () or (N,)

    # ---- bit width ------------------------------------------------------------------------------
    def enable_bit_offset(self, low: float | None = None, high: float | None = None) -> nn.Parameter:
        """Add a learnable continuous offset ``s`` (initialised to 0) to the bit width; returns it.

        ``low … high`` (default: whatever keeps the width in 1 … 8) is where training keeps ``s``; the width
        stays in 1 … 8 either way.
        """
        if self.mode not in ("uniform", "affine"):
            raise ValueError(f"a continuous bit offset needs a uniform/affine grid, not {self.mode!r}")
        lo, hi = 1 - self.bits, 8 - self.bits
        self.bit_offset_range = (lo if low is None else max(lo, low), hi if high is None else min(hi, high))
        if self.bit_offset_range[0] > 0 or self.bit_offset_range[1] < 0:
            raise ValueError(f"the bit offset range {low} … {high} must contain 0")
        self.bit_offset = nn.Parameter(torch.zeros((), device=self.lower.device))
        return self.bit_offset

    def effective_bits(self) -> int | torch.Tensor:
        """``bits + s + extra`` — a tensor while a bit offset or extra bits are set, else ``bits``.

        ``extra_bits`` (no parameter of this module) is an offset computed elsewhere with its own graph, e.g.
        AdaBM's per-image offsets, shape () or (N,) for a batch of N samples.
        """
        bits = self.bits if self.bit_offset is None else self.bits + self.bit_offset
        return bits if self.extra_bits is None else bits + self.extra_bits

    def set_bits(self, bits: int) -> None:
        """Fix the bit width (2 … 8 on a uniform/affine grid) and drop any bit offset; bounds are kept."""
        if self.mode in ("uniform", "affine") and not 2 <= int(bits) <= 8:
            raise ValueError(f"bits must be between 2 and 8 on a {self.mode} grid, got {bits}")
        self.bits = int(bits)
        self.bit_offset = None

    # ---- bounds -------------------------------------------------------------------------------
    def _broadcast(self, v: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        if self.channel_axis is None:
            return v
        shape = [1] * x.dim()
        shape[self.channel_axis % x.dim()] = -1
        return v.reshape(shape)

    @torch.no_grad()
    def set_bounds(self, lower: torch.Tensor, upper: torch.Tensor) -> None:
        """Set the bounds (any shape with the right number of elements, or one value for every channel, as
        per-tensor observers such as ``percentile`` give); symmetric modes use max(|l|, |u|)."""
        shape = (self.lower if self.mode in ("uniform", "affine") else self.alpha).shape
        lower, upper = (torch.as_tensor(v).float().reshape(-1) for v in (lower, upper))
        if lower.numel() == 1 and upper.numel() == 1:
            lower, upper = lower.expand(shape.numel()), upper.expand(shape.numel())
        if self.mode in ("uniform", "affine"):
            upper = torch.maximum(upper, lower + 1e-8)
            self.lower.copy_(lower.reshape(self.lower.shape).to(self.lower))
            self.upper.copy_(upper.reshape(self.upper.shape).to(self.upper))
        else:
            alpha = torch.maximum(lower.abs(), upper.abs()).clamp_min(1e-8)
            self.alpha.copy_(alpha.reshape(self.alpha.shape).to(self.alpha))
        self.initialized.fill_(True)

    @torch.no_grad()
    def project_bounds_(self) -> None:
        """Put trained bounds back into their valid set after an optimiser step: ``lower ≤ 0 ≤ upper`` for
        affine grids (whose forward widens the range to contain 0 — a bound left on the wrong side of 0 would
        get no gradient and never come back), ``upper > lower``, ``α > 0``; a bit offset stays in the range
        given to :meth:`enable_bit_offset` (one SGD step of GBA's allocation at lr 0.1 could otherwise send it
        past 100 bits, where ``2^bits`` overflows and every later gradient is non-finite)."""
        if self.bit_offset is not None:
            self.bit_offset.clamp_(*self.bit_offset_range)
        if self.mode in ("uniform", "affine"):
            if self.mode == "affine":
                self.lower.clamp_(max=0.0)
                self.upper.clamp_(min=0.0)
            self.upper.copy_(torch.maximum(self.upper, self.lower + 1e-8))
        else:
            self.alpha.clamp_(min=1e-8)

    def bounds(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Current ``(lower, upper)`` (for symmetric/binary modes: ``(−α, α)``)."""
        if self.mode in ("uniform", "affine"):
            return self.lower, self.upper
        return -self.alpha, self.alpha

    # ---- calibration ----------------------------------------------------------------------------
    def start_calibration(self) -> None:
        """Following forward passes observe their input and return it unchanged.

        A bit-aware observer (OMSE) searches at the current ``bits``, which may differ from those the
        quantizer was created with (``set_bits`` after a bit allocation)."""
        kwargs = dict(self.observer_kwargs)
        if "bits" in kwargs:
            kwargs["bits"] = self.bits
        self.observer = make_observer(self.observer_name, self.channel_axis, **kwargs)
        if self.dan == "capped":
            self.dan_low.fill_(float("inf"))
            self.dan_high.fill_(float("-inf"))

    def finish_calibration(self) -> None:
        """Set the bounds from what the observer saw and leave calibration mode."""
        if self.observer is None:
            raise RuntimeError("finish_calibration() without start_calibration()")
        self.set_bounds(*self.observer.bounds())
        self.observer = None

    @property
    def calibrating(self) -> bool:
        return self.observer is not None

    # ---- forward --------------------------------------------------------------------------------
    def _dan_stats(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-(sample, channel) offset and scale of the normalisation."""
        axis = self.dan_axis % x.dim()
        dims = [d for d in range(1, x.dim()) if d != axis]
        if all(x.shape[d] == 1 for d in dims):  # one value per channel (e.g. pooled): normalise over channels
            dims = list(range(1, x.dim()))
        elif self.dan == "range" and self.dan_window and x.dim() == 4 and axis == 1:
            return self._window_range(x)
        if self.dan == "std":
            return x.mean(dims, keepdim=True), x.std(dims, keepdim=True, unbiased=False) + 1e-5
        low, high = x.amin(dims, keepdim=True), x.amax(dims, keepdim=True)
        if self.dan == "capped":
            cap_low, cap_high = self._caps(x, low)
            low, high = low.clamp(cap_low, cap_high), high.clamp(cap_low, cap_high)
        return low, (high - low).clamp_min(1e-8)

    def _caps(self, x: torch.Tensor, stat: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The calibrated per-channel extremes, shaped like the statistic ``stat`` (one pair for all channels
        where ``stat`` has a single channel entry, i.e. inputs normalised over their channels)."""
        axis = self.dan_axis % x.dim()
        if stat.shape[axis] == 1:
            return self.dan_low.min(), self.dan_high.max()
        shape = [1] * x.dim()
        shape[axis] = -1
        return self.dan_low.view(shape), self.dan_high.view(shape)

    @torch.no_grad()
    def _observe_caps(self, x: torch.Tensor) -> None:
        """Widen ``dan_low``/``dan_high`` to the per-channel extremes of ``x``."""
        axis = self.dan_axis % x.dim()
        if x.shape[axis] != self.dan_low.numel():
            raise ValueError(f"dan='capped' was set up for {self.dan_low.numel()} channels, the input has "
                             f"{x.shape[axis]} on axis {axis}")
        per_channel = x.detach().movedim(axis, 0).reshape(x.shape[axis], -1).float()
        torch.minimum(self.dan_low, per_channel.amin(1), out=self.dan_low)
        torch.maximum(self.dan_high, per_channel.amax(1), out=self.dan_high)

    def _window_range(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Min and max − min of every (sample, channel, k × k window) of an NCHW ``x``, spread over its pixels."""
        k, (h, w) = self.dan_window, x.shape[-2:]
        high = F.max_pool2d(x, k, k, ceil_mode=True)
        low = -F.max_pool2d(-x, k, k, ceil_mode=True)

        def spread(t: torch.Tensor) -> torch.Tensor:
            return t.repeat_interleave(k, -2).repeat_interleave(k, -1)[..., :h, :w]

        return spread(low), spread((high - low).clamp_min(1e-8))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.enabled and self.observer is None:
            return x
        if self.dan is None:
            return self._quantize(x)
        if self.dan == "capped" and self.observer is not None:
            self._observe_caps(x)
        offset, scale = self._dan_stats(x)
        if self.observer is None and self.mode == "affine":
            offset = self._zero_on_grid(offset, scale, x)
        y = self._quantize((x - offset) / scale)
        if self.observer is not None:
            return x
        return y.mul_(scale).add_(offset) if self.forward_only(x) else y * scale + offset

    def _bits_like(self, x: torch.Tensor) -> int | torch.Tensor:
        """:meth:`effective_bits`, with one width per sample shaped to broadcast against ``x``."""
        bits = self.effective_bits()
        if isinstance(bits, torch.Tensor) and bits.dim() == 1:  # one width per sample
            bits = bits.view(-1, *([1] * (x.dim() - 1)))
        return bits

    def _zero_on_grid(self, offset: torch.Tensor, scale: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """DAN's offset rounded to a multiple of the grid step in input units, so that an input 0 lands on a
        grid level and stays exactly 0 (the affine grid's promise). Without it a sparse channel's zeros are
        shifted by up to half a step, the same way at every pixel, and convolutions add those shifts up.
        The rounding passes no gradient (the offset's gradient to ``x`` is kept)."""
        step = affine_step(self._broadcast(self.lower, x), self._broadcast(self.upper, x), self._bits_like(x),
                           scale).detach()
        return offset + (torch.round(offset.detach() / step) * step - offset.detach())

    def forward_only(self, x: torch.Tensor) -> bool:
        """Whether ``Q(x)`` may skip autograd: no gradient is wanted for ``x`` or the bounds, the bit width is a
        plain int and the bounds have ``x``'s dtype. Then the ``*_fwd`` functions give the same values."""
        bound = self.lower if self.mode in ("uniform", "affine") else self.alpha
        wants_grad = torch.is_grad_enabled() and (x.requires_grad or any(p.requires_grad for p in self.parameters()))
        return not wants_grad and isinstance(self.effective_bits(), int) and bound.dtype == x.dtype

    def _quantize(self, x: torch.Tensor) -> torch.Tensor:
        if self.observer is not None:
            self.observer.observe(x)
            return x
        if not bool(self.initialized):
            raise RuntimeError("quantizer used before calibration: calibrate the model (srq.quantize) first")
        if self.forward_only(x):
            return self._quantize_fwd(x)
        if self.mode in ("uniform", "affine"):
            fq = fake_quant if self.mode == "uniform" else fake_quant_affine
            return fq(x, self._broadcast(self.lower, x), self._broadcast(self.upper, x), self._bits_like(x))
        alpha = self._broadcast(self.alpha, x)
        if self.mode == "symmetric":
            return fake_quant_symmetric(x, alpha, self.bits)
        return binarize(x, alpha)

    def _quantize_fwd(self, x: torch.Tensor) -> torch.Tensor:
        """:meth:`_quantize` through the forward-only functions (see :meth:`forward_only`)."""
        if self.mode in ("uniform", "affine"):
            fq = fake_quant_fwd if self.mode == "uniform" else fake_quant_affine_fwd
            return fq(x, self._broadcast(self.lower, x), self._broadcast(self.upper, x), self.bits)
        alpha = self._broadcast(self.alpha, x)
        if self.mode == "symmetric":
            return fake_quant_symmetric_fwd(x, alpha, self.bits)
        return binarize_fwd(x, alpha)

    def extra_repr(self) -> str:
        axis = "per-tensor" if self.channel_axis is None else f"per-channel(axis={self.channel_axis})"
        window = f", window={self.dan_window}" if self.dan_window else ""
        dan = "" if self.dan is None else f", dan={self.dan}(axis={self.dan_axis}{window})"
        return f"bits={self.bits}, mode={self.mode}, {axis}, observer={self.observer_name}{dan}"
