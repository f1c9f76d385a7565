"""RBD, QuantSR+'s redistribution-driven bit determination (Qin et al., 2026), in srq's form: a weight grid that
decides an n-bit code one bit plane at a time with a learnable threshold per bit.

Weights are ``ŵ = s·(q − 2ⁿ⁻¹)``: a learnable step ``s`` per output channel (LSQ's init ``2·mean|w|/√Qp`` and
gradient scale ``1/√(N·Qp)``, Qp = 2ⁿ⁻¹ − 1) and an unsigned code ``q ∈ {0 … 2ⁿ − 1}``, so the deployed weights are
plain signed n-bit integers ``q − 2ⁿ⁻¹`` times ``s``. With ``u = w/s + 2ⁿ⁻¹`` (the code axis, in steps):

* Forward (bit determination): from the most significant bit down, ``b_k = [r_k > t_k]``, ``r_{n−1} = u``,
  ``r_{k−1} = r_k − 2ᵏ·b_k``; ``q = Σ 2ᵏ·b_k``. ``t = (t_0 … t_{n−1})`` are the learnable per-bit thresholds (one
  set per layer, shared by its channels). At init ``t_k = 2ᵏ − ½`` and this is round-to-nearest of
  ``clip(u, 0, 2ⁿ − 1)`` (ties down). Moving ``t_k`` redistributes the values between the levels whose lowest set
  bit is k: the same code equals ``q = #{m : u > T_m}`` with level thresholds ``T_m = m − 2^{j(m)} + t_{j(m)}``
  (m = 1 … 2ⁿ − 1, j(m) the lowest set bit of m), so n parameters move all 2ⁿ − 1 rounding boundaries.
* Backward (redistributed gradient): the slope of the soft staircase ``Σ_m σ(u − T_m)``, ``σ(v) = ½ +
  tanh(k·v)/(2·tanh(k/2))`` on ``|v| ≤ ½`` (0 below, 1 above; k = QuantSR's tanh temperature), in ``u`` (zero
  outside ``[0, 2ⁿ − 1]``, the clip) and in the thresholds through the ``T_m``. At init it is QuantSR's tanh
  soft rounding.

After each optimiser step each ``t_k`` is kept in ``[2ᵏ − 1 + ε, 2ᵏ − ε]`` (ε = 0.05), which puts every ``T_m`` in
``(m − 1, m)``: the boundaries stay ordered and each level keeps a non-empty interval.

``rbd_act`` (activations) is QuantSR's RLQ (per-channel shift ``τ_c``, LSQ+ step ``s`` and offset ``β``) with the same
bit determination on its unsigned code ``u = clip((x − τ_c − β)/s, 0, 2ⁿ − 1)``: ``Q(x) = s·q + β + τ_c``. At init it
is RLQ (same values but at exact ties, same gradients).
"""

from __future__ import annotations

import math

import torch

from ..functional import RoundFn
from ..soft_rounding import TANH_TEMPERATURE
from . import base
from .base import GRIDS, Grid, Params
from .lsq import scale_grad
from .rlq import RLQGrid
from .soft_step import soft_step_quant

__all__ = ["RBDGrid", "RBDActivationGrid", "rbd_bits", "rbd_code", "level_thresholds", "soft_levels",
           "initial_thresholds", "BIT_MARGIN"]

BIT_MARGIN = 0.05  # ε: how close a bit threshold may come to the ends of its interval, in steps


def initial_thresholds(bits: int) -> torch.Tensor:
    """``t_k = 2ᵏ − ½`` (k = 0 … n − 1): the thresholds at which RBD is round-to-nearest; shape (n,)."""
    return torch.tensor([2.0**k - 0.5 for k in range(bits)])


def rbd_bits(u: torch.Tensor, thresholds: torch.Tensor) -> torch.Tensor:
    """The bit planes of ``u`` (any shape, in steps on the code axis): shape (n, *u.shape), index k = bit k (0/1,
    ``u``'s dtype), decided from the top bit down with ``thresholds`` (n,)."""
    n = thresholds.numel()
    r = u.detach()
    planes = []
    for k in reversed(range(n)):
        b = (r > thresholds[k].detach()).to(u.dtype)
        r = r - (2.0**k) * b
        planes.append(b)
    return torch.stack(planes[::-1])


def level_thresholds(thresholds: torch.Tensor) -> torch.Tensor:
    """The 2ⁿ − 1 rounding boundaries ``T_m = m − 2^{j(m)} + t_{j(m)}`` (m = 1 … 2ⁿ − 1) of bit thresholds (n,);
    differentiable in them."""
    n = thresholds.numel()
    m = torch.arange(1, 2**n)
    low = (m & -m)  # 2^{j(m)}, the lowest set bit
    j = torch.log2(low.double()).round().long()
    return (m - low).to(thresholds) + thresholds[j]


def rbd_code(u: torch.Tensor, thresholds: torch.Tensor) -> torch.Tensor:
    """``q = Σ 2ᵏ·b_k`` of :func:`rbd_bits` (same shape as ``u``, no gradient), without holding the planes: the
    remainder ``r`` after the last bit is ``u − q`` exactly (each step subtracts a power of two), so ``q = u − r``."""
    r = u.detach().clone()
    bit = torch.empty_like(r)
    for k in reversed(range(thresholds.numel())):  # a 0/1 mask in r's dtype: a bool one costs ~20× here
        r.sub_(torch.gt(r, thresholds[k].detach(), out=bit), alpha=2.0**k)
    return u.detach() - r


def soft_levels(u: torch.Tensor, thresholds: torch.Tensor, k: float = TANH_TEMPERATURE) -> torch.Tensor:
    """The terms of ``Σ_m σ(u − T_m)`` (module docstring) that vary at ``u``, whose gradient (in ``u`` and the
    thresholds) is RBD's backward; same shape as ``u``. Since ``T_m ∈ (m − 1, m)``, only ``m = ⌊u + ½⌋`` and
    ``⌊u + ½⌋ + 1`` can lie within ½ of ``u``; the other terms are constant there (0 or 1) and are left out, so
    memory stays that of ``u`` at any bit width."""
    t = level_thresholds(thresholds).to(u.dtype)
    count = t.numel()
    base = torch.floor(u.detach() + 0.5).long()
    out = torch.zeros_like(u)
    for m in (base, base + 1):
        v = u - t[m.clamp(1, count) - 1]
        inside = (m >= 1) & (m <= count) & (v.abs() <= 0.5)
        out = out + torch.where(inside, 0.5 + torch.tanh(k * v) / (2 * math.tanh(k / 2)), torch.zeros_like(v))
    return out


def _check(bits: int, thresholds: torch.Tensor) -> None:
    if bits < 2:
        raise ValueError("RBD needs at least 2 bits (1 bit is the binary grid)")
    if thresholds.numel() != bits:
        raise ValueError(f"RBD holds {thresholds.numel()} bit thresholds, {bits} bits need {bits}: its bit width "
                         f"cannot change after it is made")


@GRIDS.register("rbd")
class RBDGrid(Grid):
    """Learnable step per channel and n learnable bit thresholds per layer (``thresholds``, in steps). Weights only;
    2 … 8 bits."""

    params = ("step", "thresholds")
    unitless = ("thresholds",)
    observer = "signed_meanabs"
    temperature = TANH_TEMPERATURE

    def init(self, shape: tuple[int, ...]) -> Params:
        raise ValueError("the RBD grid is sized by the bit width (Quantizer calls init_sized)")

    def init_sized(self, shape: tuple[int, ...], bits: int, channels: int = 0, axis: int = 1) -> Params:
        return {"step": torch.ones(shape), "thresholds": initial_thresholds(bits)}

    def fit(self, lower: torch.Tensor, upper: torch.Tensor, bits: int | None = None) -> Params:
        assert bits is not None, "the RBD step depends on the bit width"
        qp = max(2 ** (bits - 1) - 1, 1)
        return {"step": (2 * upper / qp**0.5).clamp_min(1e-8), "thresholds": initial_thresholds(bits)}

    def project_(self, p: Params) -> None:
        p["step"].clamp_(min=1e-8)
        t = p["thresholds"]
        low = torch.tensor([2.0**k - 1 + BIT_MARGIN for k in range(t.numel())]).to(t)
        t.copy_(torch.minimum(torch.maximum(t, low), low + 1 - 2 * BIT_MARGIN))

    def bounds(self, p: Params, bits: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        assert bits is not None, "the RBD range depends on the bit width"
        half = 2 ** (bits - 1)
        return -half * p["step"], (half - 1) * p["step"]

    def quantize(self, x: torch.Tensor, p: Params, bits: int | torch.Tensor, rounding: RoundFn) -> torch.Tensor:
        bits = int(bits)
        t = p["thresholds"].reshape(-1)  # broadcast per channel by the quantizer: one set per layer
        _check(bits, t)
        half = 2 ** (bits - 1)
        g = (x.numel() / p["step"].numel() * max(half - 1, 1)) ** -0.5  # weights: N = one channel's elements
        s = scale_grad(p["step"], g)
        u = torch.clamp(x / s + half, 0, 2**bits - 1)
        q = rbd_code(u, t)
        y = soft_levels(u, t, self.temperature)
        return (q - half + (y - y.detach())) * s

    def quantize_fwd(self, x: torch.Tensor, p: Params, bits: int) -> torch.Tensor:
        with torch.no_grad():
            return self.quantize(x, p, bits, torch.round)


@GRIDS.register("rbd_act")
class RBDActivationGrid(Grid):
    """RLQ's step, offset and per-channel shift (its init, projection and range) with RBD's n learnable bit
    thresholds (``thresholds``, in steps) on the unsigned code. Activations only; 2 … 8 bits."""

    params = ("step", "offset", "shift", "shift_axis", "thresholds")
    buffers = ("shift_axis",)
    unitless = ("thresholds",)
    counts_samples = True
    temperature = TANH_TEMPERATURE
    _rlq = RLQGrid()

    def init(self, shape: tuple[int, ...]) -> Params:
        raise ValueError("the RBD grid is sized by the bit width (Quantizer calls init_sized)")

    def init_sized(self, shape: tuple[int, ...], bits: int, channels: int = 0, axis: int = 1) -> Params:
        return {**self._rlq.init_sized(shape, bits, channels, axis), "thresholds": initial_thresholds(bits)}

    def fit(self, lower: torch.Tensor, upper: torch.Tensor, bits: int | None = None) -> Params:
        assert bits is not None, "the RBD code depends on the bit width"
        return {**self._rlq.fit(lower, upper, bits), "thresholds": initial_thresholds(bits)}

    def project_(self, p: Params) -> None:
        self._rlq.project_(p)
        RBDGrid().project_({"step": p["step"], "thresholds": p["thresholds"]})

    def bounds(self, p: Params, bits: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        return self._rlq.bounds(p, bits)  # before the per-channel shifts

    def quantize(self, x: torch.Tensor, p: Params, bits: int | torch.Tensor, rounding: RoundFn,
                 samples: int = 1) -> torch.Tensor:
        bits = int(bits)
        t = p["thresholds"].reshape(-1)
        _check(bits, t)
        tau = self._rlq._shift(x, p).to(x.dtype)
        qp = 2**bits - 1
        g = (x.numel() / samples / p["step"].numel() * qp) ** -0.5
        s, beta = scale_grad(p["step"], g), scale_grad(p["offset"], g)
        if base.FUSED:
            return soft_step_quant(x, s, beta, tau, qp, self.temperature, level_thresholds(t),
                                   lambda u: rbd_code(u, t))
        u = torch.clamp((x - tau - beta) / s, 0, qp)  # the same, composed
        y = soft_levels(u, t, self.temperature)
        return (rbd_code(u, t) + (y - y.detach())) * s + beta + tau

    def quantize_fwd(self, x: torch.Tensor, p: Params, bits: int) -> torch.Tensor:
        with torch.no_grad():
            return self.quantize(x, p, bits, torch.round)
