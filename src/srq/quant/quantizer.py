"""The fake-quantizer module, composed of parts: a grid, a rounding estimator, a bit width, an optional normaliser.

A :class:`Quantizer` is used for weights (``channel_axis=0``: one bound pair per output channel) and for
activations (per tensor). Its life cycle:

1. created with ``bits`` and an observer name (bounds not yet known: ``initialized`` is False);
2. ``start_calibration()`` — forward passes only *observe* (identity output);
3. ``finish_calibration()`` — bounds are set from the observer (``initialized`` becomes True);
4. forward passes fake-quantize; the grid's bounds (``lower``/``upper`` or ``alpha``) are ``nn.Parameter``s that
   methods may fine-tune (their autograd gradients are SPR²Q Eq. 8).

The parts (``grids``, ``rounding``, ``bitwidth``, ``normalisers``) are stateless and registered by name. The
quantizer owns every tensor they declare, under the declared name (``lower``, ``upper``, ``alpha``,
``bit_offset``, ``dan_low``, ``dan_high``), and passes them in: state-dict keys are those names, and ``.to()``,
``load_state_dict`` and optimisers see ordinary parameters and buffers of this module.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from .bitwidth import BITWIDTHS, FixedBits, OffsetBits
from .grids import GRIDS, Grid, Params
from .normalisers import NORMALISERS, Normaliser
from .observers import BIT_AWARE_OBSERVERS, Observer, make_observer
from .rounding import ROUNDINGS, Rounding

__all__ = ["Quantizer", "MODES"]

MODES = tuple(GRIDS)  # the grids registered at import


class Quantizer(nn.Module):
    """Fake quantizer ``x → Q(x)``; with a normaliser ``Q(x) = s·Q((x − m)/s) + m``.

    Args:
        bits: 1 … 8.
        mode: grid name (``"uniform"``, ``"affine"``, ``"symmetric"``, ``"binary"``, and the QAT baselines'
            ``"lsq"``, ``"lsqplus"``, ``"pams"``, ``"dorefa"``); at 1 bit ``one_bit`` decides.
        channel_axis: ``None`` for per-tensor bounds, else the axis with one bound pair per index.
        num_channels: size of that axis (the number of bound pairs).
        observer: ``"minmax"``, ``"ema_minmax"``, ``"percentile"``, ``"omse"``, ``"dbdc"`` or ``"meanabs"``
            (a grid may force its own).
        observer_kwargs: extra arguments for the observer.
        dan: normaliser name (``None``: off; ``"range"``, ``"std"``, ``"capped"``).
        dan_axis: channel axis of the input for the normaliser (1 for NCHW conv inputs, −1 for token inputs).
        dan_window: window size in pixels for normalisers that take one (0: whole sample).
        dan_channels: the input's number of channels, for normalisers and grids with per-channel state (RLQ);
            ``dan_axis`` is then that channel axis.
        one_bit: at 1 bit, ``"binary"`` (sign·α) or ``"levels"`` (the uniform grid with n = 1).
        rounding: rounding estimator name (``"ste"``).
        bit_width: bit-width part name (``"fixed"``; ``"offset"`` adds a learnable offset at once).
        batch_axis: the axis of the input that counts samples (activations: 0; weights: None), for grids whose
            gradient depends on the elements per sample (LSQ's gradient scale).

    Per-sample extra bits (``extra_bits``: None, or a tensor () or (N,) with its own graph, e.g. AdaBM's) are
    added to the width of grids with a variable bit width; set and clear them around a forward pass.
    """

    initialized: torch.Tensor  # buffer: bool (), whether the bounds were set

    def __init__(self, bits: int, *, mode: str = "uniform", channel_axis: int | None = None,
                 num_channels: int = 1, observer: str = "minmax", observer_kwargs: dict | None = None,
                 dan: str | None = None, dan_axis: int = 1, dan_window: int = 0, dan_channels: int = 0,
                 one_bit: str = "binary", rounding: str = "ste", bit_width: str = "fixed",
                 batch_axis: int | None = None) -> None:
        super().__init__()
        if not 1 <= int(bits) <= 8:
            raise ValueError(f"bits must be between 1 and 8, got {bits}")
        if mode not in GRIDS:
            raise ValueError(f"mode must be one of {tuple(GRIDS)}, got {mode!r}")
        if one_bit not in ("binary", "levels"):
            raise ValueError(f"one_bit must be 'binary' or 'levels', got {one_bit!r}")
        self.grid: Grid = GRIDS[mode if int(bits) > 1 else "binary" if one_bit == "binary" else "uniform"]()
        self.rounding: Rounding = ROUNDINGS.get_class(rounding)()
        self.channel_axis = channel_axis
        self.batch_axis = batch_axis
        shape = (num_channels,) if channel_axis is not None else ()
        # grids whose tensors are sized by the bit width or the input's channels (RFA thresholds, RLQ shifts)
        sized = getattr(self.grid, "init_sized", None)
        values = sized(shape, int(bits), dan_channels, dan_axis) if sized else self.grid.init(shape)
        for name, value in values.items():
            if name in self.grid.buffers:
                self.register_buffer(name, value)
            else:
                self.register_parameter(name, nn.Parameter(value))
        self.register_buffer("initialized", torch.tensor(False))
        self.observer_name = self.grid.observer or observer
        # the arguments were for the observer asked for, not for one the grid forces
        self.observer_kwargs = dict(observer_kwargs or {}) if self.observer_name == observer else {}
        self.observer: Observer | None = None
        self.enabled = True
        if dan is not None and dan not in NORMALISERS:
            raise ValueError(f"dan must be one of {(None, *NORMALISERS)}, got {dan!r}")
        if dan_window < 0 or (dan_window and not (dan and NORMALISERS[dan].windowed)):
            raise ValueError(f"dan_window must be 0, or a positive window size with dan='range'; got {dan_window} "
                             f"with dan={dan!r}")
        self.normaliser: Normaliser | None = \
            None if dan is None else NORMALISERS[dan](dan_axis, dan_window, dan_channels)
        for name, value in (self.normaliser.init() if self.normaliser else {}).items():
            self.register_buffer(name, value)
        self.bit_offset: nn.Parameter | None = None  # the learnable offset while OffsetBits is in use
        self.extra_bits: torch.Tensor | None = None
        self.bitwidth: FixedBits = FixedBits(int(bits))
        if bit_width != "fixed":
            self._set_bitwidth(BITWIDTHS.get_class(bit_width)(int(bits)))

    # ---- the parts' view -----------------------------------------------------------------------------
    @property
    def mode(self) -> str:
        return self.grid.name

    @property
    def bits(self) -> int:
        """The integer bit width (without offsets)."""
        return self.bitwidth.bits

    @property
    def dan(self) -> str | None:
        return None if self.normaliser is None else self.normaliser.name

    @property
    def dan_axis(self) -> int:
        return 1 if self.normaliser is None else self.normaliser.axis

    @property
    def dan_window(self) -> int:
        return 0 if self.normaliser is None else self.normaliser.window

    def _tensors(self, names: tuple[str, ...]) -> Params:
        return {n: getattr(self, n) for n in names}

    def _broadcast(self, v: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        if self.channel_axis is None:
            return v
        shape = [1] * x.dim()
        shape[self.channel_axis % x.dim()] = -1
        return v.reshape(shape)

    def _grid_params(self, x: torch.Tensor) -> Params:
        """The grid's parameters broadcast against ``x``."""
        return {n: self._broadcast(getattr(self, n), x) for n in self.grid.params}

    # ---- bit width ------------------------------------------------------------------------------------
    def _set_bitwidth(self, part: FixedBits) -> None:
        """Use ``part``; the parameters of the one it replaces are dropped (set to None)."""
        if part.params:
            self._check_learnable_bits()
        for name in self.bitwidth.params:
            setattr(self, name, None)
        device = getattr(self, self.grid.params[0]).device
        for name, value in part.init().items():
            setattr(self, name, nn.Parameter(value.to(device)))
        self.bitwidth = part

    def _check_learnable_bits(self) -> None:
        if not self.grid.variable_bits:
            raise ValueError(f"a continuous bit offset needs a "
                             f"{'/'.join(n for n, g in GRIDS.items() if g.variable_bits)} grid, not {self.mode!r}")

    def enable_bit_offset(self, low: float | None = None, high: float | None = None) -> nn.Parameter:
        """Add a learnable continuous offset ``s`` (initialised to 0) to the bit width; returns it.

        ``low … high`` (default: whatever keeps the width in 1 … 8) is where training keeps ``s``; the width
        stays in 1 … 8 either way.
        """
        self._check_learnable_bits()
        self._set_bitwidth(OffsetBits(self.bits, low, high))
        assert self.bit_offset is not None  # set by _set_bitwidth: OffsetBits declares it
        return self.bit_offset

    def set_bits(self, bits: int) -> None:
        """Fix the bit width (2 … 8 on a grid with a variable width) and drop any offset; bounds are kept."""
        if self.grid.variable_bits and not 2 <= int(bits) <= 8:
            raise ValueError(f"bits must be between 2 and 8 on a {self.mode} grid, got {bits}")
        self._set_bitwidth(FixedBits(int(bits)))

    def effective_bits(self) -> int | torch.Tensor:
        """``bits + s + extra`` — a tensor while a bit offset or extra bits are set, else ``bits``."""
        bits = self.bitwidth.value(self._tensors(self.bitwidth.params))
        return bits if self.extra_bits is None else bits + self.extra_bits

    def _bits_like(self, x: torch.Tensor) -> int | torch.Tensor:
        """:meth:`effective_bits`, with one width per sample shaped to broadcast against ``x``."""
        bits = self.effective_bits()
        if isinstance(bits, torch.Tensor) and bits.dim() == 1:  # one width per sample
            bits = bits.view(-1, *([1] * (x.dim() - 1)))
        return bits

    # ---- bounds ----------------------------------------------------------------------------------------
    @torch.no_grad()
    def set_bounds(self, lower: torch.Tensor, upper: torch.Tensor) -> None:
        """Set the bounds from a range (any shape with the right number of elements, or one value for every
        channel, as per-tensor observers such as ``percentile`` give); the grid maps it to its parameters."""
        shape = getattr(self, self.grid.params[0]).shape
        lower, upper = (torch.as_tensor(v).float().reshape(-1) for v in (lower, upper))
        if lower.numel() == 1 and upper.numel() == 1:
            lower, upper = lower.expand(shape.numel()), upper.expand(shape.numel())
        for name, value in self.grid.fit(lower, upper, self.bits).items():
            param = getattr(self, name)
            param.copy_(value.reshape(param.shape).to(param))
        self.initialized.fill_(True)

    @torch.no_grad()
    def project_bounds_(self) -> None:
        """Put trained parameters back into their valid sets after an optimiser step (bit width, then grid)."""
        self.bitwidth.project_(self._tensors(self.bitwidth.params))
        self.grid.project_(self._tensors(self.grid.params))

    def input_unit_parameters(self) -> list[nn.Parameter]:
        """The trained grid parameters in the input's units (steps, offsets, bounds, shifts): scaling the input by c
        scales them by c. Not the unitless ones (thresholds in steps, DLS's coefficients, bit widths)."""
        names = [n for n in self.grid.params if n not in self.grid.buffers and n not in self.grid.unitless]
        return [p for n in names if isinstance(p := getattr(self, n, None), nn.Parameter)]

    def bounds(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Current ``(lower, upper)`` of the represented range."""
        return self.grid.bounds(self._tensors(self.grid.params), self.bits)

    # ---- calibration -----------------------------------------------------------------------------------
    def start_calibration(self) -> None:
        """Following forward passes observe their input and return it unchanged.

        A bit-aware observer (OMSE, ``dls_mse``) searches at the current ``bits``, which may differ from those the
        quantizer was created with (``set_bits`` after a bit allocation)."""
        kwargs = dict(self.observer_kwargs)
        if self.observer_name in BIT_AWARE_OBSERVERS:
            kwargs["bits"] = self.bits
        self.observer = make_observer(self.observer_name, self.channel_axis, **kwargs)
        if self.normaliser is not None:
            self.normaliser.start_calibration(self._tensors(self.normaliser.buffers))

    def finish_calibration(self) -> None:
        """Set the bounds from what the observer saw and leave calibration mode."""
        if self.observer is None:
            raise RuntimeError("finish_calibration() without start_calibration()")
        self.set_bounds(*self.observer.bounds())
        self.observer = None

    @property
    def calibrating(self) -> bool:
        return self.observer is not None

    # ---- forward ---------------------------------------------------------------------------------------
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.enabled and self.observer is None:
            return x
        if self.normaliser is None:
            return self._quantize(x)
        buffers = self._tensors(self.normaliser.buffers)
        if self.observer is not None:
            self.normaliser.observe(x, buffers)
        offset, scale = self.normaliser.stats(x, buffers)
        if self.observer is None:
            offset = self.grid.snap(offset, scale, self._grid_params(x), self._bits_like(x))
        y = self._quantize((x - offset) / scale)
        if self.observer is not None:
            return x
        return y.mul_(scale).add_(offset) if self.forward_only(x) else y * scale + offset

    def forward_only(self, x: torch.Tensor) -> bool:
        """Whether ``Q(x)`` may skip autograd: no gradient is wanted for ``x`` or the parameters, the bit width
        is a plain int and the bounds have ``x``'s dtype. Then the grid's forward-only path gives the same values."""
        bound = getattr(self, self.grid.params[0])
        wants_grad = torch.is_grad_enabled() and (x.requires_grad or any(p.requires_grad for p in self.parameters()))
        return not wants_grad and isinstance(self.effective_bits(), int) and bound.dtype == x.dtype

    def _quantize(self, x: torch.Tensor) -> torch.Tensor:
        if self.observer is not None:
            self.observer.observe(x)
            return x
        if not bool(self.initialized):
            raise RuntimeError("quantizer used before calibration: calibrate the model (srq.quantize) first")
        if self.forward_only(x):
            return self.grid.quantize_fwd(x, self._grid_params(x), self.bits)
        bits = self._bits_like(x) if self.grid.variable_bits else self.bits
        if self.grid.counts_samples:
            samples = 1 if self.batch_axis is None else x.shape[self.batch_axis]
            grid: Any = self.grid  # a grid with counts_samples takes samples= (the base signature does not)
            return grid.quantize(x, self._grid_params(x), bits, self.rounding, samples=samples)
        return self.grid.quantize(x, self._grid_params(x), bits, self.rounding)

    def extra_repr(self) -> str:
        axis = "per-tensor" if self.channel_axis is None else f"per-channel(axis={self.channel_axis})"
        window = f", window={self.dan_window}" if self.dan_window else ""
        dan = "" if self.dan is None else f", dan={self.dan}(axis={self.dan_axis}{window})"
        return f"bits={self.bits}, mode={self.mode}, {axis}, observer={self.observer_name}{dan}"
