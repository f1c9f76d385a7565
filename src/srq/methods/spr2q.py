"""SPR²Q: static priority-based rectifier routing quantization (PTQ with fused low-rank rectifiers).

Stages on the calibration patches (targets: the FP model's outputs), the backbone weights frozen:

0. **Bound initialisation** — weights per output channel and activations per tensor by OMSE.
1. **Rectifier group training (RGT; PQFR when N = 1)** — every layer with a weight quantizer gets ``N``
   rank-``r`` rectifiers mixed by an input-dependent gate (:mod:`srq.methods.rectifiers`); the layer
   computes ``Q_{a,b}(W + Σ g_i B_i A_i)`` (Eq. 10). Rectifiers, gates and all quantizer bounds are
   trained with Adam (lr 1e-2, β (0.9, 0.999), cosine to 0) on ``L1(f_q, f_FP) + λ Σ_blocks MSE`` (Eq. 4–6).
2. **Offline static routing calibration (OSRC)** — the gate is replaced by one static weight vector per
   layer, ``ĝ = softmax(θ)`` initialised at the gate's mean output over the calibration set; with everything
   else frozen, θ is trained on the same loss (500 iterations, Eq. 12). Without OSRC the mean gate output
   itself is the static routing.
3. **Fusion** — ``W ← W + Σ ĝ_i ΔW_i``; rectifiers and gates are removed, so the deployed model is a plain
   quantized model (same structure, parameter count and cost) with the same outputs.

``rank=0`` gives the ablation baseline (bounds only, same schedule). The routing table (ĝ per layer), the
relative size of each fused increment and the wall time of each stage are kept in ``qmodel.srq_report``.

Choices the paper leaves open: the gate (a linear map of the layer input's channel means, pooled over the
batch, softmax output — one routing per batch, so one fused weight per step), the admissible set of static
weights (the probability simplex, through the softmax), the bound initialisation (OMSE), λ (10, as the FT
baselines) and the learning rate of the rectifiers (see ``rectifier_lr``).
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass, replace
from typing import Any, ClassVar

import torch
from torch import nn

from ..engine.batches import calibration_batches
from ..engine.blocks import check_blocks_pattern
from ..engine.distill import FEATURE_LOSSES, FinetuneConfig, finetune
from ..engine.rates import ACT_LR_SCALES
from ..quant import QuantConfig, calibrate, quantizers
from ..quant.layers import QUANT_LAYER_TYPES
from ..typed_config import check_above, check_at_least, check_choice
from .base import Recipe
from .rectifiers import attach_rectifiers, fuse_rectifiers, mean_routing_weights, rectifier_groups
from .registry import register_method

__all__ = ["SPR2Q", "static_routing_calibration"]


@register_method("spr2q", description="low-rank rectifier groups with static routing, fused into the weights",
                 paper="SPR²Q (static priority-based rectifier routing quantization)")
@dataclass(frozen=True)
class SPR2Q(Recipe):
    """Rectifier-compensated PTQ (defaults: the paper's, except where ``docs/methods.md`` says otherwise).

    Attributes:
        rank: r of each rectifier (0: no rectifiers, bounds only — the ablation baseline).
        group_size: N rectifiers per layer (1: PQFR, a single rectifier and no routing).
        osrc: learn the static routing (else the mean gate output is used).
        iterations, osrc_iterations: optimiser steps of RGT and of OSRC.
        batch: patches per step; lr: Adam learning rate of the bounds, gates and routing logits, cosine
            annealed to 0; rectifier_lr: that of A and B (None: ``lr``).
        lambda_feat: weight of the per-block feature MSE; feature_loss: ``"mse"`` or ``"mse_norm"`` (see
            :func:`srq.engine.distill.feature_term`); blocks: the blocks (a regex over module names; None: automatic).
        act_lr_scale: ``"none"`` (every bound at ``lr``) or ``"pixel_range"`` (activation bounds of a [0, 255] model
            at ``lr`` × 255; trained with the rectifiers it diverged on RLFN, docs/methods.md).
    """

    rank: int = 8
    group_size: int = 4
    osrc: bool = True
    iterations: int = 12000
    osrc_iterations: int = 500
    batch: int = 8
    lr: float = 1e-2
    rectifier_lr: float | None = None
    lambda_feat: float = 10.0
    feature_loss: str = "mse"
    blocks: str | None = None  # the feature loss's blocks: a regex over module names (None: automatic)
    act_lr_scale: str = "none"  # or "pixel_range" (bounds of a [0, 255] model at lr × 255): diverged on RLFN
    seed: int = 0

    name: ClassVar[str] = "spr2q"
    w_observer: ClassVar[str] = "omse"
    a_observer: ClassVar[str] = "omse"

    def validate(self) -> None:
        check_at_least(self, 0, "rank", "iterations", "osrc_iterations", "lambda_feat")
        check_at_least(self, 1, "group_size", "batch")
        check_above(self, 0, "lr", "rectifier_lr")
        check_choice(self, "feature_loss", FEATURE_LOSSES)
        check_choice(self, "act_lr_scale", ACT_LR_SCALES)
        check_blocks_pattern(self, self.blocks)

    def config(self) -> QuantConfig:
        return replace(super().config(), one_bit="levels")  # Eq. 1 holds at n = 1 too: two learnable levels

    def _stage_config(self, steps: int) -> FinetuneConfig:
        return FinetuneConfig(lr=self.lr, batch=self.batch, steps=steps, lr_min=0.0,
                              lambda_feat=self.lambda_feat, feature_loss=self.feature_loss, seed=self.seed,
                              act_lr_scale=self.act_lr_scale)

    def run(self, model: nn.Module, calib: torch.Tensor, progress: bool = True) -> nn.Module:
        self.require_patches(calib, "SPR²Q")
        seconds: dict[str, float] = {}
        t0 = time.perf_counter()
        fp_model = copy.deepcopy(model).eval()
        qmodel = self.prepare(model, calib[:1])
        batches = calibration_batches(calib, 16)
        calibrate(qmodel, batches, total=len(batches), progress=progress)
        seconds["calibration"] = time.perf_counter() - t0

        torch.manual_seed(self.seed)  # rectifier initialisation
        layers = attach_rectifiers(qmodel, self.rank, self.group_size) if self.rank > 0 else []
        groups = rectifier_groups(qmodel)
        bounds = [p for _, q in quantizers(qmodel) for p in q.parameters()]
        rect = [p for g in groups.values() for p in (g.A, g.B)]
        gates = [p for g in groups.values() if g.gate is not None for p in g.gate.parameters()]
        param_groups: list[dict[str, Any]] = [{"params": bounds + gates}]  # torch.optim's parameter groups
        if rect:
            param_groups.append({"params": rect, **({} if self.rectifier_lr is None else {"lr": self.rectifier_lr})})
        t0 = time.perf_counter()
        losses = finetune(qmodel, fp_model, calib, param_groups, self._stage_config(self.iterations),
                          progress=progress, blocks=self.blocks, description="rectifier group training" if gates
                          else ("PQFR training" if rect else "bound training")) if self.iterations else []
        seconds["rgt"] = time.perf_counter() - t0

        t0 = time.perf_counter()
        osrc_losses = static_routing_calibration(
            qmodel, fp_model, calib, self._stage_config(self.osrc_iterations if self.osrc else 0), progress,
            blocks=self.blocks)
        seconds["osrc"] = time.perf_counter() - t0

        report = {"layers": layers, "rank": self.rank, "group_size": self.group_size,
                  "routing": {n: [round(float(v), 6) for v in g.routing_weights().detach()] for n, g in groups.items()},
                  "increment_norm_ratio": {n: _relative_norm(qmodel.get_submodule(n)) for n in groups},
                  "final_loss": {"rgt": _tail_mean(losses), "osrc": _tail_mean(osrc_losses)}}
        t0 = time.perf_counter()
        fuse_rectifiers(qmodel)
        seconds["fusion"] = time.perf_counter() - t0
        report["seconds"] = seconds
        setattr(qmodel, "srq_report", report)  # a plain attribute (nn.Module's __setattr__ is typed for modules)
        return qmodel.eval()


def static_routing_calibration(qmodel: nn.Module, fp_model: nn.Module, calib: torch.Tensor,
                               config: FinetuneConfig, progress: bool = True, blocks: str | None = None) -> list[float]:
    """OSRC (Eq. 12): switch every rectifier group of ``qmodel`` to static routing and learn it.

    Each group's static weights start at its mean gate output over ``calib`` ((N, 3, h, w) LR patches), then
    only the routing logits are trained for ``config.steps`` steps on the distillation loss (backbone, bounds
    and rectifiers frozen; 0 steps: keep the mean routing). Returns the loss per step.
    """
    routed = {n: g for n, g in rectifier_groups(qmodel).items() if g.group_size > 1}
    if not routed:
        return []
    means = mean_routing_weights(qmodel, calibration_batches(calib, config.batch))
    logits = [g.make_static(means[n]) for n, g in routed.items()]
    if not config.steps:
        return []
    return finetune(qmodel, fp_model, calib, logits, config, progress=progress,
                    description="static routing calibration", blocks=blocks)


@torch.no_grad()
def _relative_norm(layer: nn.Module) -> float:
    """‖ΔW‖ / ‖W‖ of a layer's current (static) increment."""
    assert isinstance(layer, QUANT_LAYER_TYPES) and layer.weight_delta is not None  # a layer with rectifiers
    delta = layer.weight_delta(layer.weight)
    return float(delta.norm() / layer.weight.norm().clamp_min(1e-12))


def _tail_mean(losses: list[float], n: int = 50) -> float | None:
    """Mean of the last ``n`` losses (None if there are none)."""
    return sum(losses[-n:]) / len(losses[-n:]) if losses else None
