"""The integer form of srq's fake-quantizers: every ≤ 8-bit grid as int8/uint8 integers, a scale and a zero point.

A quantizer's output is ``v·s`` with ``v`` an integer level in ``vmin … vmax`` (``v = q − z`` for the stored
integer ``q`` and zero point ``z``). ONNX's ``DequantizeLinear`` computes ``(q − z)·s`` in float32, the same
product srq's fake-quant computes, so the integer form reproduces srq's values bit for bit where the scale is
the float32 scale srq uses:

* ``affine``: ``s = (max(b, 0) − min(a, 0))/(2ⁿ − 1)``, ``v = −z … 2ⁿ − 1 − z``
  (:func:`~srq.quant.functional.affine_step`);
* ``symmetric`` / ``pams``: ``s = α/(2ⁿ⁻¹ − 1)``, ``v = −(2ⁿ⁻¹ − 1) … 2ⁿ⁻¹ − 1``;
* ``lsq``: ``s = step``, ``v = −2ⁿ⁻¹ … 2ⁿ⁻¹ − 1`` where signed, ``0 … 2ⁿ − 1`` where not;
* ``lsqplus_int`` (LSQ+ with its offset on the grid): ``s = step``, ``v = r … r + 2ⁿ − 1``, ``r = round(β/s)``;
* ``binary`` (weights only): ``s = α``, ``v ∈ {−1, 1}``;
* ``rfa`` / ``nu2u`` (Q-MambaIR's weights), ``rbd`` (QuantSR+'s): ``s = step``, ``v = −2ⁿ⁻¹ … 2ⁿ⁻¹ − 1`` (the
  learned thresholds only decided which level each weight took).

Grids without an integer zero point (``uniform``, ``lsqplus``: levels ``a + k·s`` with ``a`` off the grid; train
LSQ+ with ``zero_point="integer"`` for ``lsqplus_int``), DoReFa
weights, 1-bit activations, normalisers (DAN) and learnable bit offsets have no such form: :func:`int_grid` raises
an :class:`~srq.errors.SrqError` naming the quantizer.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..errors import SrqError
from ..quant.functional import affine_step
from ..quant.quantizer import Quantizer

__all__ = ["IntGrid", "IntWeight", "int_grid", "int_weight", "int_bias"]

_EPS = 1e-8  # srq's clamp of α (functional._EPS)


@dataclass(frozen=True)
class IntGrid:
    """Levels ``v·scale``, ``v`` in ``vmin … vmax`` (per tensor: shapes (); per channel: (C,))."""

    scale: torch.Tensor  # float32
    vmin: torch.Tensor  # int64
    vmax: torch.Tensor  # int64
    bits: int

    def as_uint8(self) -> tuple[torch.Tensor, int, int]:
        """Per-tensor storage as uint8: ``(zero_point, qmin, qmax)`` with ``q = v + zero_point`` in ``qmin … qmax``
        (the zero point is ``−vmin``, so ``qmin`` is 0, unless the levels are all above 0: then it is 0, and
        ``qmin = vmin``). ValueError if the levels do not fit 0 … 255 that way."""
        if self.scale.dim() != 0:
            raise ValueError("as_uint8 is for per-tensor grids")
        zp = max(-int(self.vmin), 0)
        if int(self.vmax) + zp > 255:
            raise ValueError(f"levels {int(self.vmin)} … {int(self.vmax)} do not fit uint8 with a zero point")
        return torch.tensor(zp, dtype=torch.uint8), int(self.vmin) + zp, int(self.vmax) + zp


@dataclass(frozen=True)
class IntWeight:
    """A quantized weight as stored integers: ``W_q = (q − zero_point)·scale`` along ``axis``.

    ``q``: int8 (``zero_point`` all 0) when every level fits in −128 … 127, else uint8 with one zero point per
    channel (an 8-bit affine grid whose zero point is not 128).
    """

    q: torch.Tensor  # int8 or uint8, shaped like the weight
    scale: torch.Tensor  # float32 (C,)
    zero_point: torch.Tensor  # same dtype as q, (C,)
    axis: int
    bits: int

    def dequantize(self) -> torch.Tensor:
        """``(q − zero_point)·scale`` in float32, as ``DequantizeLinear`` computes it."""
        shape = [1] * self.q.dim()
        shape[self.axis] = -1
        v = self.q.to(torch.int32) - self.zero_point.to(torch.int32).reshape(shape)
        return v.float() * self.scale.reshape(shape)


def _check_exportable(q: Quantizer, name: str, weight: bool) -> None:
    if q.normaliser is not None:
        raise SrqError(f"{name}: a quantizer with a normaliser (dan={q.dan}) has data-dependent ranges and cannot be "
                       f"exported to integers; quantize without DAN")
    if not isinstance(q.effective_bits(), int):
        raise SrqError(f"{name}: its bit width is still learnable (a bit offset or extra bits); fix the bits "
                       f"before export")
    if not bool(q.initialized):
        raise SrqError(f"{name}: quantizer was never calibrated; export a quantized run folder")
    if q.mode == "binary" and not weight:
        raise SrqError(f"{name}: 1-bit (sign) activations have no integer QuantizeLinear form; use ≥ 2-bit "
                       f"activations or one_bit='levels'")


def _param(q: Quantizer, name: str) -> torch.Tensor:
    """A copy of the quantizer's tensor ``name`` (float32 unless boolean), detached."""
    t: torch.Tensor = getattr(q, name).detach().clone()
    return t if t.dtype == torch.bool else t.float()


def int_grid(q: Quantizer, name: str = "quantizer", weight: bool = False) -> IntGrid:
    """The integer grid of quantizer ``q`` (one entry per channel for a per-channel quantizer)."""
    _check_exportable(q, name, weight)
    bits, mode = q.bits, q.mode
    with torch.no_grad():
        if mode == "affine":
            n = 2**bits - 1
            lower, upper = _param(q, "lower"), _param(q, "upper")
            s = affine_step(lower, upper, bits)
            z = torch.round(torch.clamp(-torch.clamp(lower, max=0.0) / s, 0, n)).long()
            return IntGrid(s, -z, n - z, bits)
        if mode in ("symmetric", "pams"):
            qmax = 2 ** (bits - 1) - 1
            s = _param(q, "alpha").clamp_min(_EPS) / qmax
            return IntGrid(s, torch.full_like(s, -qmax, dtype=torch.long), torch.full_like(s, qmax, dtype=torch.long),
                           bits)
        if mode in ("rfa", "nu2u", "rbd"):  # RFA (Q-MambaIR), RBD (QuantSR+): signed levels times the step
            s, half = _param(q, "step"), 2 ** (bits - 1)
            low = torch.full_like(s, -half, dtype=torch.long)
            return IntGrid(s, low, low + 2 * half - 1, bits)
        if mode == "lsqplus_int":  # the levels (r + k)·s, r = round(β/s), as the forward pass computes them
            s = _param(q, "step")
            r = torch.round(_param(q, "offset") / s).long()
            if not weight and int(r.max()) + 2**bits - 1 > 255:
                raise SrqError(f"{name}: its levels start {int(r.max())} steps above 0, too far for a uint8 zero point "
                               f"(at most {256 - 2**bits}); such a range is not exportable")
            return IntGrid(s, r, r + 2**bits - 1, bits)
        if mode in ("lsq", "lsq_tanh", "lsq_3sigma", "lsq_range"):  # LSQ's grid, another backward (tanh) or init
            signed = _param(q, "signed").bool()
            half = 2 ** (bits - 1)
            vmin = torch.where(signed, -half, 0).long()
            vmax = torch.where(signed, half - 1, 2 * half - 1).long()
            return IntGrid(_param(q, "step"), vmin, vmax, bits)
        if mode == "binary":
            s = _param(q, "alpha")
            return IntGrid(s, torch.full_like(s, -1, dtype=torch.long), torch.full_like(s, 1, dtype=torch.long), 1)
    if mode == "lsqplus":
        raise SrqError(f"{name}: LSQ+'s offset is off the integer grid (no integer zero point); train LSQ+ with "
                       f"-p zero_point=integer (the lsqplus_int grid) to export it")
    raise SrqError(f"{name}: the {mode!r} grid has no integer zero point (or, for DoReFa, no int8 form); export "
                   f"needs an affine, symmetric, pams, lsq, lsqplus_int or binary grid")


def int_weight(weight_q: torch.Tensor, q: Quantizer, name: str = "layer") -> IntWeight:
    """The integers of a fake-quantized weight ``weight_q`` (the layer's ``effective_weight()``) on ``q``'s grid.

    Raises :class:`SrqError` if a value is not exactly ``v·scale`` (which would mean the export is not faithful).
    """
    grid = int_grid(q, f"{name}.weight_quantizer", weight=True)
    axis = q.channel_axis if q.channel_axis is not None else 0
    channels = weight_q.shape[axis]
    scale = grid.scale.expand(channels) if grid.scale.dim() == 0 else grid.scale
    vmin = grid.vmin.expand(channels) if grid.vmin.dim() == 0 else grid.vmin
    vmax = grid.vmax.expand(channels) if grid.vmax.dim() == 0 else grid.vmax
    shape = [1] * weight_q.dim()
    shape[axis] = -1
    w = weight_q.detach().float()
    if grid.bits == 1:
        v = torch.where(w >= 0, 1, -1).long()
    else:
        v = torch.round(w / scale.reshape(shape)).long()
    v = torch.maximum(torch.minimum(v, vmax.reshape(shape)), vmin.reshape(shape))
    back = v.float() * scale.reshape(shape)
    if not torch.equal(back, w):
        worst = (back - w).abs().max().item()
        raise SrqError(f"{name}: its quantized weight is not on the integer grid (off by up to {worst:.3g}); "
                       f"cannot export it exactly")
    if int(v.min()) >= -128 and int(v.max()) <= 127:
        return IntWeight(v.to(torch.int8), scale.contiguous(), torch.zeros(channels, dtype=torch.int8), axis, grid.bits)
    if int((vmax - vmin).max()) > 255:
        raise SrqError(f"{name}: its weight grid spans more than 256 levels; cannot store it in 8 bits")
    zp = -vmin  # q = v − vmin in 0 … 255
    return IntWeight((v - vmin.reshape(shape)).to(torch.uint8), scale.contiguous(), zp.to(torch.uint8), axis,
                     grid.bits)


def int_bias(bias: torch.Tensor, input_scale: torch.Tensor, weight_scale: torch.Tensor,
             name: str = "layer") -> tuple[torch.Tensor, torch.Tensor]:
    """``(b_int32, scale)`` with ``scale = s_in·s_w`` per output channel and ``b_int32 = round(b/scale)``: the
    bias as integer runtimes add it to the int32 accumulator (off from the float bias by at most scale/2)."""
    scale = (input_scale.float() * weight_scale.float()).expand_as(bias)
    b = torch.round(bias.detach().float() / scale)
    if b.abs().max() >= 2**31:
        c = int(b.abs().argmax())
        raise SrqError(f"{name}: the bias of output channel {c} ({float(bias.detach()[c]):.3g}) does not fit in int32 "
                       f"at scale s_in·s_w = {float(scale[c]):.3g} (a near-zero input or weight step); export with "
                       f"--bias float (the bias added in float, as srq computes it)")
    return b.to(torch.int32), scale.contiguous()
