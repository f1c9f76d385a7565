"""GBA ("Gradient Knows Best", supplementary Appendix A): gradient-guided mixed-precision PTQ.

Three stages on the calibration patches, the network's weights never change:

1. **Bound initialisation** — weights per output channel by OMSE; activations MinMax then EMA (β 0.9) over
   one epoch of batches of 16 (observed on the float network); optional DAN on every layer input.
2. **Gradient-guided bit allocation** — every body activation quantizer (then, for GBA*, every body weight
   quantizer) gets a continuous bit offset ``s_k = 0``; for two epochs of batches of 2 the offsets are
   trained with Adam at lr 0.1 on the output L1 (see Losses), kept within the candidate span (−1 … +1 by
   default), and the gradients ``g_k = ∂L/∂s_k`` are averaged over all steps.
   :func:`srq.quant.bit_allocation.allocate_bits` turns them into integer offsets from the candidate set
   (default {−1, 0, +1}) such that the average bit width stays at the base: weighted by parameters for
   weights and by activation elements (per LR pixel) for activations.
3. **Bit-aware fine-tuning** — the bits fixed, all bounds are trained with Adam at lr 0.01 (2 epochs, batch 2).

Losses: stage 2 takes its gradients on the L1 to the FP output alone (the paper's L_grad, Eq. (3) of its main
text, not in our copy); stage 3 minimises L1 + λ_feat (10) · per-block feature MSE (Eq. (1)). With the feature
term in stage 2 too (``alloc.lambda_feat = 10``, srq's default before db5c371) the layers after the last
block barely register (an error in block i counts in the feature terms of blocks i … N, the tail's only in
the L1), their sensitivity ranked against the measured error at ρ 0.30 instead of 0.67 (PAN W4), and GBA*
was 0.9 … 1.0 dB (Set5) lower on IMDN, RLFN and PAN x4 W4A4 (docs/methods.md). First and last layers stay
at 8 bit and take no part in the allocation.
``mp_weights=False`` is the paper's "4/4MP" (mixed precision on activations only), ``True`` is "4MP/4MP" (GBA*).

Choices the supplementary leaves open (its main text is not in our copy): the update rule of ``s`` (Adam,
as in stage 3, with ``s`` kept within the candidate span: plain SGD at lr 0.1 moves ``s`` by 0.1·g_k per
step, and on RLFN, whose loss at the initial bounds has gradients of 10²–10³, that sent the widths to the
ends of 1 … 8 bits and the averaged gradients to 10¹⁷), the averaging of ``g_k`` over all steps of the
sub-stage, and the allocation rule (a 4^(−Δb) noise model fitted to ``g_k``, solved exactly as a knapsack;
see :mod:`srq.quant.bit_allocation`). In stages 2 and 3 a step whose loss is above 1000× the median of the
stage's steps so far is skipped (and left out of the gradient mean): under DAN no activation is clipped to a
static range, so on PAN x4 some calibration patches (24 of 100 at the stage-1 bounds) make the quantized trunk
run away (×10 per block, loss 10²⁸ or infinite) and their gradients, 10⁸ … 10³² times the others, would
otherwise be the whole gradient mean of stage 2 (in stage 3 one such step would fill Adam's second moment and
stall the bounds; after PAN's W4A4 allocation GBA met none, GBA* one). On PAN the runaway losses are ≥ 10¹⁰×
the median and the hardest ordinary batches ≤ 30×, so 1000 separates them. At 3 bits most PAN patches run
away and the guard has no ordinary median to go by: GBA collapses there (see docs/methods.md). The report
records each stage's step statistics (``a``, ``w``, ``finetune``).
"""

from __future__ import annotations

import copy
import re
from dataclasses import dataclass, field, replace
from typing import ClassVar

import torch
from torch import nn

from ..engine.batches import shuffled_batches
from ..engine.blocks import check_blocks_pattern
from ..engine.distill import FinetuneConfig, finetune
from ..errors import ConfigError
from ..quant import LayerRule, QuantConfig, calibrate_activations, calibrate_weights, quantizers
from ..quant.bit_allocation import allocate_bits
from ..quant.config import DAN_CHOICES
from ..typed_config import check_at_least, check_choice
from .base import Recipe
from .bit_slots import BitSlot, bit_slots, budget_sizes
from .registry import register_method

__all__ = ["GBA", "bit_gradients"]


def bit_gradients(qmodel: nn.Module, fp_model: nn.Module, inputs: torch.Tensor, slots: list[BitSlot],
                  config: FinetuneConfig, progress: bool = True,
                  span: tuple[float, float] | None = None, stats: dict | None = None,
                  blocks: str | None = None) -> list[float]:
    """Mean ``∂L/∂s_k`` over the steps taken in one allocation sub-stage, for every slot (the offsets are then
    removed). Steps that ``finetune`` skips (non-finite gradients, outlier losses) are not in the mean.

    ``span = (low, high)``: training keeps every ``s_k`` in ``low … high`` (default: widths 1 … 8).
    ``stats``: if given, receives :func:`~srq.engine.distill.step_stats` of the sub-stage. ``blocks``: the feature
    term's blocks (None: automatic). The offsets are thrown away, so ``finetune``'s never-worse guard is off.
    """
    low, high = span if span is not None else (None, None)
    offsets = [s.quantizer.enable_bit_offset(low, high) for s in slots]
    carry = {"sums": [0.0] * len(offsets)}  # checkpointed with the stage in a resumable run
    stats = {} if stats is None else stats

    def record() -> None:
        sums = carry["sums"]
        for i, p in enumerate(offsets):
            if p.grad is not None:
                sums[i] += float(p.grad)

    finetune(qmodel, fp_model, inputs, offsets, config, progress=progress, after_backward=record,
             description=f"bit allocation ({slots[0].kind if slots else '-'})", stats=stats, carry=carry,
             blocks=blocks, guard=False)
    for s in slots:
        s.quantizer.set_bits(s.quantizer.bits)  # drop the continuous offset
    return [v / max(stats["steps_taken"], 1) for v in carry["sums"]]


@register_method("gba_star", preset={"mp_weights": True},
                 description="GBA with mixed precision on weights too (\"4MP/4MP\")",
                 paper="Gradient Knows Best (supplementary, Appendix A): GBA*")
@register_method("gba", description="gradient-guided mixed-precision activation bits, DAN, bit-aware fine-tuning "
                 "(\"4/4MP\")", paper="Gradient Knows Best (supplementary, Appendix A)")
@dataclass(frozen=True)
class GBA(Recipe):
    """Gradient-guided bit allocation + DAN + bit-aware fine-tuning (defaults: the paper's).

    ``reinit_weight_bounds``: after the weight allocation (GBA*), initialise every weight quantizer's bounds
    by OMSE again at its new bit width instead of keeping the base-width OMSE bounds (not in the paper).
    ``budget``: what the average that stays at the base is weighted by — ``"size"`` (the paper's: parameters
    for weights, activation elements for activations) or ``"bitops"`` (not in the paper: each layer's MACs
    × its other side's bits, so BitOPs stay at those of uniform bits; slots BitOPs do not see keep the base).
    The report's ``average_bits`` is always weighted by size.
    """

    mp_weights: bool = False
    dan: str = "range"
    dan_window: int = 0  # not in the paper: DAN statistics over windows of this many LR pixels (0: whole image)
    candidates: tuple[int, ...] = (-1, 0, 1)
    init_batch: int = 16
    init_epochs: int = 1
    alloc: FinetuneConfig = field(default_factory=lambda: FinetuneConfig(lr=0.1, optimizer="adam", lambda_feat=0.0,
                                                                        outlier_factor=1000))
    # bounds at the fine-tuning's own rate on a [0, 255] model too: × 255 diverged on RLFN (docs/methods.md)
    finetune_config: FinetuneConfig = field(default_factory=lambda: FinetuneConfig(outlier_factor=1000,
                                                                                  act_lr_scale="none"))
    reinit_weight_bounds: bool = False
    offset_span: str = "candidates"  # or "full": s may take the width anywhere in 1 … 8 bits (before 56f44b9)
    budget: str = "size"
    blocks: str | None = None  # the feature loss's blocks: a regex over module names (None: automatic)
    seed: int = 0

    name: ClassVar[str] = "gba"
    w_observer: ClassVar[str] = "omse"
    a_observer: ClassVar[str] = "ema_minmax"
    BUDGETS: ClassVar[tuple[str, ...]] = ("size", "bitops")
    OFFSET_SPANS: ClassVar[tuple[str, ...]] = ("candidates", "full")

    def validate(self) -> None:
        check_choice(self, "dan", DAN_CHOICES)
        check_choice(self, "budget", self.BUDGETS)
        check_choice(self, "offset_span", self.OFFSET_SPANS)
        check_at_least(self, 0, "dan_window")
        check_at_least(self, 1, "init_batch", "init_epochs")
        check_blocks_pattern(self, self.blocks)
        if self.dan_window and self.dan != "range":
            raise ConfigError(f"GBA.dan_window needs dan='range', got dan={self.dan!r} with "
                              f"dan_window={self.dan_window}")
        if 0 not in self.candidates or len(set(self.candidates)) != len(self.candidates) \
                or not all(-7 <= c <= 7 for c in self.candidates):
            raise ConfigError(f"GBA.candidates must be distinct bit offsets within -7 … 7 that contain 0, got "
                              f"{self.candidates!r}")

    def config(self) -> QuantConfig:
        return replace(super().config(), a_dan=self.dan, a_dan_window=self.dan_window)

    def moves_weight_bits(self) -> bool:
        return self.mp_weights

    def run(self, model: nn.Module, calib: torch.Tensor, progress: bool = True) -> nn.Module:
        self.require_patches(calib, "GBA")
        fp_model = copy.deepcopy(model).eval()
        qmodel = self.initial_bounds(model, calib, progress)
        report: dict = {"candidates": list(self.candidates)}
        for kind in ["a", "w"] if self.mp_weights else ["a"]:
            row = self.allocate(qmodel, fp_model, calib, kind, progress)
            if row is not None:
                report[kind] = row
        report["finetune"] = self.tune_bounds(qmodel, fp_model, calib, progress)
        self._record_bit_map(qmodel, report)
        setattr(qmodel, "srq_report", report)  # a plain attribute (nn.Module's __setattr__ is typed for modules)
        return qmodel.eval()

    def initial_bounds(self, model: nn.Module, calib: torch.Tensor, progress: bool = True) -> nn.Module:
        """Stage 1: a quantizer-equipped copy of ``model`` with OMSE weight and EMA MinMax activation bounds."""
        qmodel = self.prepare(model, calib[:1])
        calibrate_weights(qmodel)
        init = shuffled_batches(calib, self.init_batch, self.init_epochs, self.seed)
        calibrate_activations(qmodel, init, total=len(init), progress=progress)
        return qmodel

    def allocate(self, qmodel: nn.Module, fp_model: nn.Module, calib: torch.Tensor, kind: str,
                 progress: bool = True) -> dict | None:
        """Stage 2 for ``kind`` ("a" or "w"): set each body quantizer's bits; returns the report (None: no slots)."""
        slots = bit_slots(qmodel, kind)
        if not slots:
            return None
        base = self.a_bits if kind == "a" else self.w_bits
        stats: dict = {}
        grads = self.allocation_gradients(qmodel, fp_model, calib, slots, progress, stats)
        sizes = budget_sizes(qmodel, slots, calib[:1])
        costs = sizes if self.budget == "size" else budget_sizes(qmodel, slots, calib[:1], by=self.budget)
        free = [k for k, c in enumerate(costs) if c > 0]  # slots the budget does not see keep the base width
        offsets = [0] * len(slots)
        result = allocate_bits([grads[k] for k in free], [costs[k] for k in free], base, tuple(self.candidates)) \
            if free else None
        for k, o in zip(free, result.offsets if result else []):
            offsets[k] = o
        bits = [min(8, max(2, s.quantizer.bits + o)) for s, o in zip(slots, offsets)]  # rules may differ
        for s, b in zip(slots, bits):
            s.quantizer.set_bits(b)
        if kind == "w" and self.reinit_weight_bounds:
            calibrate_weights(qmodel)  # OMSE again, now at each layer's allocated bit width
        row = {"base_bits": base, "average_bits": base + sum(n * o for n, o in zip(sizes, offsets)) / sum(sizes),
               "average_weighted_by": "activation elements per LR pixel" if kind == "a" else "parameters",
               "budget": self.budget, "predicted_loss_change": result.predicted_change if result else 0.0, **stats,
               "layers": [{"name": s.owner, "gradient": g, "size": n, "offset": o, "bits": b}
                          for s, g, n, o, b in zip(slots, grads, sizes, offsets, bits)]}
        if self.budget == "bitops":
            row["bitops_average_bits"] = result.average_bits if result else float(base)
            for layer, c in zip(row["layers"], costs):
                layer["bitops_weight"] = c
        return row

    def tune_bounds(self, qmodel: nn.Module, fp_model: nn.Module, calib: torch.Tensor, progress: bool = True) -> dict:
        """Stage 3: bit-aware fine-tuning of every quantizer's bounds, the bits fixed; returns its step stats."""
        params = [p for _, q in quantizers(qmodel) for p in q.parameters()]
        stats: dict = {}
        finetune(qmodel, fp_model, calib, params, self.finetune_config, progress=progress, stats=stats,
                 blocks=self.blocks)
        return stats

    def allocation_gradients(self, qmodel: nn.Module, fp_model: nn.Module, calib: torch.Tensor,
                             slots: list[BitSlot], progress: bool = True, stats: dict | None = None) -> list[float]:
        """Stage 2's sensitivities ``g_k`` for ``slots`` (offsets trained by ``alloc`` within ``offset_span``)."""
        span = (min(self.candidates), max(self.candidates)) if self.offset_span == "candidates" else None
        return bit_gradients(qmodel, fp_model, calib, slots, self.alloc, progress=progress, span=span, stats=stats,
                             blocks=self.blocks)

    @staticmethod
    def _record_bit_map(qmodel: nn.Module, report: dict) -> None:
        """Write the allocation into the model's config as exact-name rules, so save/load rebuild it."""
        config: QuantConfig = getattr(qmodel, "srq_quant_config")  # set by prepare()
        bits: dict[str, dict] = {}
        for kind in ("a", "w"):
            for row in report.get(kind, {}).get("layers", []):
                if row["offset"]:
                    bits.setdefault(row["name"], {})[f"{kind}_bits"] = row["bits"]
        config.rules = list(config.rules) + [LayerRule(re.escape(n), **b) for n, b in bits.items()]
