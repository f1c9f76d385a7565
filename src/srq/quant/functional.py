"""Fake-quantization functions with their gradient estimators.

All functions quantize and immediately de-quantize ("QDQ"), so the result is a float tensor on the grid.
Rounding of the data uses the straight-through estimator (STE: forward ``round(z)``, backward identity) unless a
``rounding`` estimator (``srq.quant.rounding``) is passed.

* :func:`fake_quant` — uniform affine quantizer of SPR²Q Eq. 1 with bounds ``lower``/``upper``:
  ``x̂ = clip(x, a, b)``, ``s = (b − a)/(2ⁿ − 1)``, ``x_q = round((x̂ − a)/s)·s + a``. Autograd through this
  expression gives exactly Eq. 8 for the bounds (see ``tests/test_quant_functional.py``).
* :func:`fake_quant_affine` — the same range with an integer zero point (0 exactly representable).
* :func:`fake_quant_symmetric` — signed, zero-preserving grid ``{−(2ⁿ⁻¹−1) … 2ⁿ⁻¹−1}·α/(2ⁿ⁻¹−1)``.
* :func:`binarize` — 1 bit, ``sign(x)·α``.

Each has a forward-only twin (``*_fwd``) for evaluation: no autograd graph, no STE, bits a plain int, the
same floating-point operations done in place on one fresh buffer — so the values equal those of the STE
versions (a zero may differ in sign; ``tests/test_quant_fastpath.py``) at a fraction of the memory traffic.
"""

from __future__ import annotations

from typing import Callable, overload

import torch

__all__ = ["round_ste", "clip_bounds", "fake_quant", "fake_quant_range", "fake_quant_symmetric", "fake_quant_affine",
           "binarize", "fake_quant_step", "num_levels", "affine_step", "fake_quant_fwd", "fake_quant_affine_fwd",
           "fake_quant_symmetric_fwd", "binarize_fwd"]

_EPS = 1e-8

RoundFn = Callable[[torch.Tensor], torch.Tensor]


def round_ste(x: torch.Tensor) -> torch.Tensor:
    """``round(x)`` in the forward pass, identity gradient in the backward pass."""
    return x + (torch.round(x) - x).detach()


@overload
def num_levels(bits: int) -> int: ...


@overload
def num_levels(bits: float) -> float: ...


@overload
def num_levels(bits: torch.Tensor) -> torch.Tensor: ...


def num_levels(bits: int | float | torch.Tensor) -> int | float | torch.Tensor:
    """Number of steps ``2ⁿ − 1`` of an n-bit uniform grid (``bits`` may be a tensor, e.g. for GBA)."""
    return 2**bits - 1


def clip_bounds(x: torch.Tensor, lower: torch.Tensor, upper: torch.Tensor) -> torch.Tensor:
    """``clip(x, lower, upper)``; the gradient goes to ``x`` inside ``[lower, upper]`` (ties included) and to
    the bound that clips outside, as in Eq. 8 (∂x̂/∂a = 1 where x < a, ∂x̂/∂b = 1 where x > b)."""
    return torch.where(x < lower, lower, torch.where(x > upper, upper, x))


def fake_quant(x: torch.Tensor, lower: torch.Tensor, upper: torch.Tensor,
               bits: int | float | torch.Tensor, rounding: RoundFn = round_ste) -> torch.Tensor:
    """Uniform asymmetric fake quantization (SPR²Q Eq. 1).

    Args:
        x: any shape.
        lower, upper: bounds broadcastable to ``x`` (e.g. shape (C, 1, 1, 1) per output channel), upper > lower.
        bits: n ≥ 1 (2ⁿ levels from ``lower`` to ``upper`` inclusive).
        rounding: estimator for ``round`` of the grid coordinate.
    Returns:
        Tensor like ``x`` whose values lie on the grid ``lower + k·s``, k = 0 … 2ⁿ − 1.
    """
    x_hat = clip_bounds(x, lower, upper)
    s = (upper - lower).clamp_min(_EPS) / num_levels(bits)
    return rounding((x_hat - lower) / s) * s + lower


def _clamp_levels(v: torch.Tensor, n: int | float | torch.Tensor) -> torch.Tensor:
    """``clamp(v, 0, n)``; a tensor ``n`` (continuous bits) receives the gradient of values clipped at the top."""
    if isinstance(n, torch.Tensor):
        return torch.minimum(torch.clamp(v, min=0), n)
    return torch.clamp(v, min=0, max=n)


def affine_step(lower: torch.Tensor, upper: torch.Tensor, bits: int | float | torch.Tensor,
                scale: float | torch.Tensor = 1.0) -> torch.Tensor:
    """Step ``s = scale·(max(b, 0) − min(a, 0))/(2ⁿ − 1)`` of the affine grid over bounds ``a … b`` widened to
    contain 0; ``scale`` maps a normalised grid back to input units (DAN)."""
    return scale * (torch.clamp(upper, min=0.0) - torch.clamp(lower, max=0.0)).clamp_min(_EPS) / num_levels(bits)


def fake_quant_affine(x: torch.Tensor, lower: torch.Tensor, upper: torch.Tensor,
                      bits: int | float | torch.Tensor, rounding: RoundFn = round_ste) -> torch.Tensor:
    """Uniform asymmetric fake quantization with an integer zero point, so 0 is exactly on the grid.

    ``s = (b − a)/(2ⁿ − 1)``, ``z = round(−a/s)``, ``x_q = (clip(round(x/s) + z, 0, 2ⁿ − 1) − z)·s``
    (the usual integer-arithmetic scheme of Jacob et al., 2018). The range is first widened to contain 0
    (``a ← min(a, 0)``, ``b ← max(b, 0)``). Unlike :func:`fake_quant`, zero weights and zero activations stay
    exactly zero, which avoids a systematic offset on near-zero values. ``rounding`` rounds ``x/s``; the zero
    point always uses the STE.
    """
    n = num_levels(bits)
    s = affine_step(lower, upper, bits)  # the range is widened to contain 0
    z = round_ste(_clamp_levels(-torch.clamp(lower, max=0.0) / s, n))
    q = _clamp_levels(rounding(x / s) + z, n)  # clipped values pass no gradient to x
    return (q - z) * s


def fake_quant_symmetric(x: torch.Tensor, alpha: torch.Tensor, bits: int,
                         rounding: RoundFn = round_ste) -> torch.Tensor:
    """Signed symmetric fake quantization with zero on the grid: steps ``s = α/(2ⁿ⁻¹ − 1)``,
    integers clipped to ±(2ⁿ⁻¹ − 1) (2ⁿ − 1 levels). Needs ``bits ≥ 2``; use :func:`binarize` for 1 bit."""
    if bits < 2:
        raise ValueError("symmetric quantization needs at least 2 bits; use binarize() for 1 bit")
    qmax = 2 ** (bits - 1) - 1
    alpha = alpha.clamp_min(_EPS)
    return rounding(clip_bounds(x, -alpha, alpha) / alpha * qmax) * (alpha / qmax)


def binarize(x: torch.Tensor, alpha: torch.Tensor) -> torch.Tensor:
    """1-bit quantization ``sign(x)·α`` (sign(0) = +1) with the clipped STE: the gradient to ``x`` passes
    where ``|x| ≤ α``; ``α`` receives ``sign(x)`` times the incoming gradient."""
    sign = torch.where(x >= 0, 1.0, -1.0).to(x.dtype)
    inside = (x.abs() <= alpha).to(x.dtype)
    x_ste = x * inside - (x * inside).detach()  # zero forward, clipped identity backward
    return sign * alpha + x_ste


class _FakeQuantStep(torch.autograd.Function):
    """``round(clamp((x − β)/s, lo, hi))·s + β`` with the STE, forward and backward written out (see
    :func:`fake_quant_step`)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, step: torch.Tensor, offset: torch.Tensor | None,
                lo: float, hi: float, integer_offset: bool = False) -> torch.Tensor:
        ctx.save_for_backward(x, step, offset)
        ctx.limits = (lo, hi)
        ctx.integer_offset = integer_offset
        if integer_offset and offset is not None:  # levels (r + k)·s, r = round(β/s): an integer zero point
            r = torch.round(offset / step)
            return _between(torch.div(x, step), r + lo, r + hi).round_().mul_(step)
        v = torch.div(x if offset is None else x - offset, step)
        out = v.clamp_(lo, hi).round_().mul_(step)
        return out if offset is None else out.add_(offset)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        # arithmetic only: on CPU a boolean mask (comparison, logical_and, where, mixed-dtype multiply) costs
        # 5–30× an elementwise multiply, so "inside" is a 1/0 tensor of x's dtype made by an in-place eq_
        x, step, offset = ctx.saved_tensors
        lo, hi = ctx.limits
        if ctx.integer_offset:
            ratio = offset / step  # β/s; the levels are (round(β/s) + lo … hi)·s
            r = torch.round(ratio)
            v = torch.div(x, step)
            q = _between(v, r + lo, r + hi)
        else:
            v = torch.div(x if offset is None else x - offset, step)
            q = torch.clamp(v, lo, hi)
        inside = q.clone().eq_(v)  # 1 where lo ≤ v ≤ hi, else 0
        grad_x = grad * inside
        grad_step = grad_offset = None
        if ctx.needs_input_grad[1]:  # ∂out/∂s = q − v inside the range, q (= lo or hi) outside
            if ctx.integer_offset:  # inside round(v) − v; outside q − β/s (r = round(β/s) passes β/s's gradient)
                slope = q.round_().sub_(ratio).sub_(v.sub_(ratio).mul_(inside))
            else:
                slope = q.round_().sub_(v.mul_(inside))
            grad_step = torch.sum(grad * slope, dtype=torch.float32).to(step.dtype).reshape(step.shape)
        if offset is not None and ctx.needs_input_grad[2]:  # ∂out/∂β = 1 outside the range, 0 inside
            outside = torch.sum(grad, dtype=torch.float32) - torch.sum(grad_x, dtype=torch.float32)
            grad_offset = outside.to(offset.dtype).reshape(offset.shape)
        return grad_x if ctx.needs_input_grad[0] else None, grad_step, grad_offset, None, None, None


def fake_quant_step(x: torch.Tensor, step: torch.Tensor, lo: float, hi: float,
                    offset: torch.Tensor | None = None, integer_offset: bool = False) -> torch.Tensor:
    """``round(clamp((x − β)/s, lo, hi))·s + β`` with the STE, for one step ``s`` and offset ``β`` per tensor.

    The values and gradients of the same expression built from :func:`round_ste` and ``torch.clamp`` (∂/∂x = 1
    inside ``[lo, hi]`` (ties included), 0 outside; ∂/∂s = q − v inside, q outside, v = (x − β)/s; ∂/∂β = 1
    outside), in one autograd node that keeps only ``x``: the grids of the QAT baselines (LSQ, LSQ+, PAMS) run
    their per-tensor activations through it, which takes a third of the elementwise work out of a training step.

    Args:
        x: any shape and float dtype.
        step, offset: one-element tensors (shape () or (1,)), step > 0.
        lo, hi: the integer range, e.g. ``−Qn`` and ``Qp``.
        integer_offset: the offset snapped to the grid, ``round(clamp(x/s, r + lo, r + hi))·s`` with
            ``r = round(β/s)`` (an integer zero point ``−r``, as ``QuantizeLinear`` computes it); the gradients
            are those of ``r`` by the STE (``∂r/∂β = 1/s``): ∂/∂β = 1 outside, ∂/∂s = q − β/s outside.
    Returns:
        Tensor like ``x`` on the grid ``β + k·s``, k = lo … hi (``(r + k)·s`` with ``integer_offset``).
    """
    if integer_offset and offset is None:
        raise ValueError("integer_offset needs an offset")
    return _FakeQuantStep.apply(x, step, offset, float(lo), float(hi), integer_offset)


def _between(x: torch.Tensor, lower: torch.Tensor, upper: torch.Tensor) -> torch.Tensor:
    """``clamp(x, lower, upper)`` for tensor bounds, as two broadcasting ops (on a CPU several times faster than
    ``torch.clamp`` with tensor bounds)."""
    return torch.minimum(torch.maximum(x, lower), upper)


class _FakeQuantRange(torch.autograd.Function):
    """:func:`fake_quant` with the STE, forward and backward written out (see :func:`fake_quant_range`)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, lower: torch.Tensor, upper: torch.Tensor, levels: int) -> torch.Tensor:
        ctx.save_for_backward(x, lower, upper)
        ctx.levels = levels
        s = (upper - lower).clamp_min(_EPS) / levels
        return _between(x, lower, upper).sub_(lower).div_(s).round_().mul_(s).add_(lower)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        # in x's dtype, as the composed expression under autocast (sums accumulate in float32 inside torch.sum)
        x, lower, upper = ctx.saved_tensors
        g, lo, up = grad.to(x.dtype), lower.to(x.dtype), upper.to(x.dtype)
        dtype = x.dtype
        width = up - lo
        s = width.clamp_min(_EPS) / ctx.levels
        x_hat = _between(x, lo, up)
        inside = x_hat.clone().eq_(x)  # 1 where lower ≤ x ≤ upper, else 0 (arithmetic masks: see _FakeQuantStep)
        grad_x = g * inside
        z = (x_hat - lo).div_(s)
        # ∂out/∂s = round(z) − z (0 where clipped); s = (upper − lower)/K unless the width is below _EPS
        g_s = torch.round(z).sub_(z).mul_(g).sum_to_size(s.shape) * (width > _EPS).to(dtype) / ctx.levels
        outside = g.sum_to_size(lo.shape) - grad_x.sum_to_size(lo.shape)  # below + above
        signed = x_hat.sub_(x).sign_().mul_(g).sum_to_size(lo.shape)  # below − above (x_hat − x > 0 below)
        grad_lower = (outside + signed) / 2 - g_s
        grad_upper = (outside - signed) / 2 + g_s
        return grad_x.to(grad.dtype), grad_lower.to(lower.dtype), grad_upper.to(upper.dtype), None


def fake_quant_range(x: torch.Tensor, lower: torch.Tensor, upper: torch.Tensor, bits: int) -> torch.Tensor:
    """:func:`fake_quant` with :func:`round_ste` as one autograd node that keeps only ``x`` and the bounds: the
    same values and gradients (∂/∂x = 1 inside ``[lower, upper]``; the clipping bound gets the gradient outside;
    both get the step's, ``round(z) − z`` times ∓1/(2ⁿ − 1)), for bounds of any broadcastable shape (DLS: one
    pair per sample, (N, 1, …))."""
    return _FakeQuantRange.apply(x, lower, upper, int(num_levels(int(bits))))


# ---- forward-only twins (evaluation: no gradient, integer bits) ----------------------------------------

def _is_cpu_scalar(v: torch.Tensor) -> bool:
    """Whether ``v`` is a one-element CPU tensor: clamping to its Python value is several times faster on CPU
    than to a broadcast tensor."""
    return v.numel() == 1 and v.device.type == "cpu"


def _clamp(x: torch.Tensor, lower: torch.Tensor, upper: torch.Tensor, *, inplace: bool = False) -> torch.Tensor:
    """``clamp(x, lower, upper)`` (in place if ``inplace``), with the bounds as Python numbers when both are
    one-element CPU tensors (:func:`_is_cpu_scalar`). ``torch.clamp`` takes two tensors or two numbers."""
    if _is_cpu_scalar(lower) and _is_cpu_scalar(upper):
        lo, hi = lower.item(), upper.item()
        return x.clamp_(lo, hi) if inplace else torch.clamp(x, lo, hi)
    if inplace:  # tensor bounds: maximum/minimum, several times faster than clamp on a CPU (see _between)
        return torch.minimum(torch.maximum(x, lower, out=x), upper, out=x)
    return _between(x, lower, upper)


def fake_quant_fwd(x: torch.Tensor, lower: torch.Tensor, upper: torch.Tensor, bits: int) -> torch.Tensor:
    """:func:`fake_quant` without autograd, for ``lower ≤ upper`` of ``x``'s dtype (shapes as there); a new
    tensor like ``x``."""
    s = (upper - lower).clamp_min(_EPS) / num_levels(bits)
    x = _clamp(x, lower, upper)
    return x.sub_(lower).div_(s).round_().mul_(s).add_(lower)


def fake_quant_affine_fwd(x: torch.Tensor, lower: torch.Tensor, upper: torch.Tensor, bits: int) -> torch.Tensor:
    """:func:`fake_quant_affine` without autograd; a new tensor like ``x``.

    ``clip(round(x/s) + z, 0, n) − z`` is computed as ``clip(round(x/s), −z, n − z)``: the same integers, as
    ``z`` is an integer.
    """
    n = num_levels(bits)
    s = affine_step(lower, upper, bits)
    z = torch.round(torch.clamp(-torch.clamp(lower, max=0.0) / s, 0, n))
    return _clamp(torch.div(x, s).round_(), -z, n - z, inplace=True).mul_(s)


def fake_quant_symmetric_fwd(x: torch.Tensor, alpha: torch.Tensor, bits: int) -> torch.Tensor:
    """:func:`fake_quant_symmetric` without autograd, for ``α`` of ``x``'s dtype; a new tensor like ``x``."""
    if bits < 2:
        raise ValueError("symmetric quantization needs at least 2 bits; use binarize() for 1 bit")
    qmax = 2 ** (bits - 1) - 1
    alpha = alpha.clamp_min(_EPS)
    x = _clamp(x, -alpha, alpha)
    return x.div_(alpha).mul_(qmax).round_().mul_(alpha / qmax)


def binarize_fwd(x: torch.Tensor, alpha: torch.Tensor) -> torch.Tensor:
    """:func:`binarize` without autograd: ``sign(x)·α`` (sign(0) = +1); a new tensor like ``x``."""
    return torch.where(x >= 0, 1.0, -1.0).to(x.dtype) * alpha
