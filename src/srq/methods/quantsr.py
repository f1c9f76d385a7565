"""QuantSR (Qin et al., NeurIPS 2023) as a QAT baseline: RLQ activations and tanh soft-rounding weights.

* Activations: RLQ (``srq.quant.grids.rlq``): a learnable shift per input channel redistributes the activation
  before a learned step-and-offset quantizer; rounding passes the slope of a tanh staircase backward.
* Weights: LSQ's learned step per output channel with the same tanh soft rounding (``lsq_tanh``).

* ``shortcut_scale=True`` (off by default): DQA's learnable shortcut scale, generically — every residual-shaped block
  ``f_b`` computes ``γ_b·f_b(x) + (1 − γ_b)·x`` (γ_b init 1: the same network at init; ``srq.engine.shortcut_scale``),
  rebuilt by ``srq.load`` from ``srq.json``'s ``structure``. Not included: DQA's depth-dynamic inference.
docs/methods.md says more.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import nn

from ..engine.slimming import prepare_shortcut_scaled
from .qat import _QAT
from .registry import register_method

__all__ = ["QuantSR"]


@register_method("quantsr", description="QAT with per-channel redistribution shifts before learned-step activations "
                 "(RLQ) and tanh soft rounding backward", paper="QuantSR (Qin et al., NeurIPS 2023), without DQA")
@dataclass(frozen=True)
class QuantSR(_QAT):
    """QuantSR's quantizers; ``shortcut_scale``: scale the residual-shaped blocks (those of ``blocks``, None:
    automatic) with a learnable shortcut scale γ_b (module docstring)."""

    shortcut_scale: bool = False

    name: ClassVar[str] = "quantsr"
    w_mode: ClassVar[str] = "lsq_tanh"
    a_mode: ClassVar[str] = "rlq"
    a_observer: ClassVar[str] = "omse"  # RLQ's step and offset from the MSE range, as srq's LSQ+ (docs/methods.md)

    def prepare(self, model: nn.Module, example: torch.Tensor | None = None) -> nn.Module:
        if not self.shortcut_scale:
            return super().prepare(model, example)
        return prepare_shortcut_scaled(model, self.config(), example, self.blocks)

