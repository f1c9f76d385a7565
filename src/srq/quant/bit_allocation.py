"""Discrete bit allocation from per-layer bit-width gradients under an average-bit budget (GBA stage 2).

Each layer k has a sensitivity ``g_k = ∂L/∂s_k`` (the loss gradient with respect to a continuous offset on
its bit width) and a weight ``w_k`` in the average (parameters for weights, activation elements for
activations). We pick offsets ``o_k`` from a candidate set so that the ``w``-weighted average offset is
≤ 0 (the average bit width stays at the base) and the predicted loss is smallest.

Predicted loss. Quantization noise power falls by 4× per extra bit, so we model the loss a layer adds as
``c_k · 4^(−o)``; matching its slope at ``o = 0`` to the measured gradient gives ``c_k = −g_k / ln 4``
(``c_k = 0`` when ``g_k ≥ 0``: more bits do not help that layer). The change for offset ``o`` is
``c_k (4^(−o) − 1)``: convex, so returns diminish, and large offsets are only chosen where the gradient
is large. (GBA's main text is not in our copy of the paper; this rule is our reading of its supplementary
Appendix B: "a small or negative g_k means the layer needs more bits".)

Solver. A multiple-choice knapsack solved by dynamic programming over the budget, with the weights
rounded to ``resolution`` units of the total (exact when the weights are integers with a small total);
if rounding leaves the exact budget exceeded, the cheapest downgrades per unit of weight are applied.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

__all__ = ["BitAllocation", "allocate_bits"]


@dataclass
class BitAllocation:
    """Result of :func:`allocate_bits`: ``offsets[k]`` and ``bits[k] = base + offsets[k]``."""

    offsets: list[int]
    bits: list[int]
    average_bits: float  # weighted by the given weights
    predicted_change: float  # Σ c_k (4^(−o_k) − 1), in loss units


def allocate_bits(gradients: list[float], weights: list[float], base: int, candidates: tuple[int, ...] = (-1, 0, 1),
                  min_bits: int = 2, max_bits: int = 8, resolution: int = 4000) -> BitAllocation:
    """Offsets from ``candidates`` (kept within ``min_bits … max_bits``) with ``Σ w_k o_k ≤ 0``.

    Args:
        gradients: ``g_k = ∂L/∂s_k`` per layer (negative: more bits lower the loss).
        weights: positive weight of each layer in the average (parameters or activation elements).
        base: the base bit width.
        candidates: allowed offsets; must contain 0.
    """
    if len(gradients) != len(weights):
        raise ValueError("gradients and weights must have the same length")
    if 0 not in candidates:
        raise ValueError(f"the candidate offsets must contain 0, got {candidates}")
    if any(w <= 0 for w in weights):
        raise ValueError("layer weights must be positive")
    options = sorted({o for o in candidates if min_bits <= base + o <= max_bits})
    scale = [max(-g, 0.0) / math.log(4) for g in gradients]

    def change(k: int, o: int) -> float:
        return scale[k] * (4.0 ** (-o) - 1.0)

    def used(offsets: list[int]) -> float:
        return sum(w * o for w, o in zip(weights, offsets))

    total = float(sum(weights))
    exact = all(float(w).is_integer() for w in weights) and total <= resolution
    unit = 1.0 if exact else total / resolution
    units = [max(1, round(w / unit)) for w in weights]
    span = max(abs(o) for o in options) * sum(units)
    inf = float("inf")
    best = np.full(2 * span + 1, inf)
    best[span] = 0.0  # index = budget used + span
    choice = np.zeros((len(units), 2 * span + 1), dtype=np.int8)
    for k, u in enumerate(units):
        new = np.full_like(best, inf)
        for i, o in enumerate(options):
            shifted = np.full_like(best, inf)
            d = u * o
            if d >= 0:
                shifted[d:] = best[:len(best) - d]
            else:
                shifted[:d] = best[-d:]
            shifted += change(k, o)
            better = shifted < new
            new[better] = shifted[better]
            choice[k, better] = i
        best = new
    end = int(np.argmin(best[:span + 1]))
    offsets = [0] * len(units)
    for k in range(len(units) - 1, -1, -1):
        o = options[choice[k, end]]
        offsets[k] = o
        end -= units[k] * o
    while used(offsets) > 1e-9 * total:  # rounding repair: cheapest downgrade per unit of weight
        k = min((k for k, o in enumerate(offsets) if o > options[0]),
                key=lambda k: (change(k, options[options.index(offsets[k]) - 1]) - change(k, offsets[k])) / weights[k])
        offsets[k] = options[options.index(offsets[k]) - 1]
    return BitAllocation(offsets=offsets, bits=[base + o for o in offsets],
                         average_bits=base + used(offsets) / total,
                         predicted_change=sum(change(k, o) for k, o in enumerate(offsets)))
