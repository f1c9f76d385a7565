"""The activation quantizer of RLQ and RBD in one autograd node: ``Q(x) = s·code(u) + β + τ`` with
``u = clip((x − τ − β)/s, 0, qp)`` and a soft-staircase gradient.

``code`` and the staircase whose slope is passed back:

* RLQ (no thresholds): ``round(u)``; the slope of QuantSR's tanh staircase at ``u``
  (:mod:`srq.quant.soft_rounding`).
* RBD (level thresholds ``T`` and bit thresholds ``t``): ``rbd_code(u, t)``; the slope of ``Σ_m σ(u − T_m)``,
  ``σ(v) = ½ + tanh(k·v)/(2·tanh(k/2))`` on ``|v| ≤ ½``, from the two terms that can vary at ``u``
  (:func:`srq.quant.grids.rbd.soft_levels`), and its gradient in each ``T_m``.

The values and gradients equal those of the same expression written with ``tanh_round`` / ``soft_levels`` and
autograd (up to float rounding; tested in float64), computed in ``x``'s dtype as that expression is under autocast.
The node keeps ``x`` and the codes (1 byte each) and recomputes the rest in the backward pass, which takes most of
the elementwise work and memory out of a QuantSR / QuantSR+ training step.
"""

from __future__ import annotations

import math
from typing import Callable

import torch

__all__ = ["soft_step_quant"]

CodeFn = Callable[[torch.Tensor], torch.Tensor]


def _tanh_slope(v: torch.Tensor, k: float) -> torch.Tensor:
    """``σ′(v) = c·(1 − tanh²(k·v))``, ``c = k / (2·tanh(k/2))``, overwriting ``v``."""
    c = k / (2 * math.tanh(k / 2))
    th = v.mul_(k).tanh_()
    return torch.addcmul(torch.full((), c, dtype=v.dtype), th, th, value=-c)


def _storage_order(t: torch.Tensor) -> tuple[list[int], list[int]]:
    """The dimension order in which ``t`` is laid out in memory (outermost first) and its inverse permutation:
    ``t.permute(order)`` is contiguous for a dense tensor of any memory format (channels-last included)."""
    strides = t.stride()
    order = sorted(range(t.dim()), key=lambda d: -strides[d])
    return order, sorted(range(t.dim()), key=order.__getitem__)


def _lookup(table: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """``table[index]`` for an int32 ``index`` of any shape and memory format (a 1-D gather in storage order:
    int32 indices and ``index_select`` cost a third of int64 ones and ``take`` here)."""
    order, inverse = _storage_order(index)
    flat = index.permute(order)
    return table.index_select(0, flat.reshape(-1)).view(flat.shape).permute(inverse)


def _level_slopes(u: torch.Tensor, levels: torch.Tensor, k: float) -> tuple[torch.Tensor, list[tuple]]:
    """The slope of ``Σ_m σ(u − T_m)`` at ``u`` and, per candidate level ``m ∈ {⌊u + ½⌋, ⌊u + ½⌋ + 1}``,
    ``(m, σ′(u − T_m) where |u − T_m| ≤ ½, else 0)``. ``levels`` is ``(−∞′, T_1 … T_count, +∞′)``: the padding
    (far from any ``u``) stands for the levels that do not exist, m = 0 and m = count + 1."""
    count = levels.numel() - 2
    m = (u + 0.5).to(torch.int32).clamp_(max=count)  # u ≥ 0: truncation is ⌊u + ½⌋ (bfloat16 may round u + ½ up)
    parts = []
    for index in (m, m + 1):
        v = torch.sub(u, _lookup(levels, index))
        near = v.clamp(-0.5, 0.5).eq_(v)  # 1 where |u − T_m| ≤ ½, else 0
        parts.append((index, _tanh_slope(v, k).mul_(near)))
    return parts[0][1] + parts[1][1], parts


def _scatter_sum(total: torch.Tensor, index: torch.Tensor, values: torch.Tensor) -> None:
    """``total[i] += Σ values[index == i]`` (``index`` int32, ``values`` laid out as ``index``), summed in
    ``total``'s dtype."""
    order, _ = _storage_order(index)
    total.index_add_(0, index.permute(order).reshape(-1), values.permute(order).reshape(-1).to(total.dtype))


class _SoftStepQuant(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, step: torch.Tensor, offset: torch.Tensor, shift: torch.Tensor,
                levels: torch.Tensor | None, qp: int, k: float, code_fn: CodeFn | None) -> torch.Tensor:
        u = _code_axis(x, step, offset, shift).clamp_(0, qp)
        code = u.round_() if code_fn is None else code_fn(u)
        ctx.save_for_backward(x, step, offset, shift, levels, code.to(torch.uint8))  # qp ≤ 255
        ctx.qp, ctx.k = qp, k
        return code.mul_(step.reshape(())).add_(_shift_plus_offset(offset, shift, x.dtype))

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        x, step, offset, shift, levels, code = ctx.saved_tensors
        v = _code_axis(x, step, offset, shift)
        u = v.clamp(0, ctx.qp)
        inside = u.clone().eq_(v)  # 1 where 0 ≤ v ≤ qp (x gets a gradient), else 0: arithmetic masks are fast
        if levels is None:
            slope = _tanh_slope(torch.frac(u).sub_(0.5), ctx.k)  # u ≥ 0: frac(u) = u − ⌊u⌋
            parts: list[tuple] = []
        else:
            far = torch.full((1,), 1e9, dtype=u.dtype)  # stands for the levels m = 0 and count + 1
            slope, parts = _level_slopes(u, torch.cat([-far, levels.to(u.dtype), far]), ctx.k)
        g = grad.to(u.dtype).reshape(u.shape)
        grad_x = slope.mul_(inside).mul_(g)
        grad_step = grad_offset = grad_shift = grad_levels = None
        if ctx.needs_input_grad[1]:  # ∂out/∂s = code − slope·inside·v
            acc = torch.promote_types(u.dtype, torch.float32)
            value = code.to(u.dtype).mul_(g).sum(dtype=acc) - v.mul_(grad_x).sum(dtype=acc)
            grad_step = value.to(step.dtype).expand(step.shape).clone()
        if ctx.needs_input_grad[2] or ctx.needs_input_grad[3]:  # ∂out/∂β = ∂out/∂τ = 1 − slope·inside
            rest = g.sub(grad_x)
            if ctx.needs_input_grad[2]:
                grad_offset = rest.sum().to(offset.dtype).expand(offset.shape).clone()
            if ctx.needs_input_grad[3]:
                grad_shift = rest.sum_to_size(shift.shape).to(shift.dtype)
        if levels is not None and ctx.needs_input_grad[4]:  # ∂out/∂T_m = −s·σ′(u − T_m)
            total = torch.zeros(levels.numel() + 2, dtype=torch.promote_types(u.dtype, torch.float32))
            for index, d in parts:  # accumulated in float32 at least (a bfloat16 running sum would saturate)
                _scatter_sum(total, index, d.mul_(g))
            grad_levels = (total[1:-1] * -step.to(total.dtype).reshape(-1)[0]).to(levels.dtype)
        return grad_x.to(x.dtype) if ctx.needs_input_grad[0] else None, grad_step, grad_offset, grad_shift, \
            grad_levels, None, None, None


def _shift_plus_offset(offset: torch.Tensor, shift: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """``τ + β`` in ``dtype``."""
    return (shift + offset).to(dtype)


def _code_axis(x: torch.Tensor, step: torch.Tensor, offset: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
    """``(x − τ − β)/s`` as a new tensor in ``x``'s dtype (as the composed expression computes it under autocast:
    ``s`` and ``β`` are one-element tensors that do not promote ``x``)."""
    return torch.sub(x, _shift_plus_offset(offset, shift, x.dtype)).div_(step.reshape(()))


def soft_step_quant(x: torch.Tensor, step: torch.Tensor, offset: torch.Tensor, shift: torch.Tensor, qp: int,
                    k: float, levels: torch.Tensor | None = None, code_fn: CodeFn | None = None) -> torch.Tensor:
    """``s·code(u) + β + τ``, ``u = clip((x − τ − β)/s, 0, qp)`` (module docstring), as one autograd node.

    Args:
        x: activations, any shape and float dtype.
        step, offset: one-element tensors (``s > 0``, ``β``), with any gradient scaling already applied.
        shift: ``τ``, one value or a view that broadcasts against ``x`` (one value per channel).
        qp: the top code, ``2ⁿ − 1``.
        k: the tanh temperature.
        levels: RBD's level thresholds ``T_1 … T_qp`` (shape (qp,), in steps); None for RLQ.
        code_fn: with ``levels``, the code of ``u`` (``code_fn(u)``: RBD's bit determination).
    Returns:
        Tensor like ``x`` (its dtype) on the grid ``β + τ + s·{0 … qp}``.
    """
    if (levels is None) != (code_fn is None):
        raise ValueError("levels and code_fn go together (RBD) or are both None (RLQ)")
    return _SoftStepQuant.apply(x, step, offset, shift, levels, int(qp), float(k), code_fn)
