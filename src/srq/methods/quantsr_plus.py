"""QuantSR+ (Qin et al., 2026) on any network srq quantizes: QuantSR's quantizers and shortcut scales, plus

* RBD (``rbd``): weights by redistribution-driven bit determination (grid ``rbd``: learnable per-bit thresholds,
  tanh-staircase backward; plain n-bit integers × step when deployed) instead of ``lsq_tanh``, and activations by
  RLQ with the same bit determination (grid ``rbd_act``; ``rbd_activations=false`` keeps QuantSR's RLQ there).
* QSA (``qsa_budget``): the quantized network starts at its released depth; during the first ``qsa_end`` of
  training the residual blocks with the smallest learned shortcut scale ``|γ_b|`` are removed one at a time, at
  evenly spaced steps, until ``qsa_metric`` (BitOPs per image or storage bits) is at most ``qsa_budget`` × its value
  at the start. Removed blocks become ``nn.Identity`` (``srq.engine.slimming``); the run folder reloads the slimmed
  network.
* SFD (``sfd``): the feature term (normalised MSE, weight ``sfd_weight``) aligns, in each phase between two
  removals, the output of every remaining block's *segment* — the block and the removed blocks right after it,
  whose function it now carries — to the FP teacher's output at the segment's end; the targets follow the slimming.

Each switch is independent, for the ablation QuantSR → +RBD → +QSA → +SFD (docs/methods.md, "QuantSR+").
"""

from __future__ import annotations

import dataclasses
import math
import re
import warnings
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import nn

from ..engine.evaluate import validation_psnr
from ..engine.qat import QATConfig, TrainBatches, train_qat
from ..engine.shortcut_scale import GAMMA, is_shortcut_scaled, shortcut_gammas
from ..engine.slimming import (METRICS, cost_of, least_critical, plan_removals, prepare_shortcut_scaled,
                               remove_blocks, segment_ends, structure_record)
from ..errors import SrqError
from ..quant import QuantConfig, quantizers
from ..quant.cost import default_input_size
from ..quant.grid_placement import grid_placement
from ..quant.prepare import execution_order
from .qat import _QAT
from .registry import register_method

__all__ = ["QuantSRPlus", "phase_bounds", "phase_config"]


def phase_bounds(iterations: int, removals: int, end: float) -> list[int]:
    """The steps (0 < step < iterations, non-decreasing) at which the ``removals`` blocks go: evenly spaced over the
    first ``end`` fraction of training, the last at ``⌊end·iterations⌉``."""
    return [min(max(1, round(end * iterations * i / removals)), iterations - 1) for i in range(1, removals + 1)]


def phase_config(train: QATConfig, start: int, stop: int, **changes: Any) -> QATConfig:
    """``train`` for the steps ``start … stop − 1`` of a run split into phases: the multistep schedule continues
    (rates at ``start`` as the whole run has them there, its remaining milestones moved into the phase)."""
    total = train.iterations
    marks = sorted({max(1, math.floor(m * total)) for m in train.milestones}) if train.schedule == "multistep" else []
    factor = train.gamma ** sum(m <= start for m in marks)
    inside = tuple((m - start + 0.5) / (stop - start) for m in marks if start < m < stop)
    return dataclasses.replace(train, iterations=stop - start, lr=train.lr * factor, quant_lr=train.quant_lr * factor,
                               milestones=inside, **changes)


class _Offset:
    """The batches of ``data`` from step ``start`` on: a phase sees the batches the whole run has there."""

    def __init__(self, data: TrainBatches, start: int) -> None:
        self.data, self.start = data, start

    def batch(self, step: int, batch_size: int, rank: int = 0,
              world_size: int = 1) -> tuple[torch.Tensor, torch.Tensor | None]:
        return self.data.batch(self.start + step, batch_size, rank, world_size)


@register_method("quantsr_plus", description="QuantSR with bit-plane weight quantizers (RBD), blocks pruned by "
                 "learned shortcut scales to a BitOPs/size budget (QSA) and segment-wise feature distillation (SFD)",
                 paper="QuantSR+ (Qin et al., 2026)")
@dataclass(frozen=True)
class QuantSRPlus(_QAT):
    """QuantSR+ recipe (module docstring). Fields beyond the QAT ones:

    ``rbd``: RBD weights (else QuantSR's ``lsq_tanh``) and, with ``rbd_activations``, RBD on RLQ activations (else
    RLQ). ``shortcut_scale``: learnable γ_b per residual block.
    ``qsa_budget``: the cost to reach, a fraction (0, 1) of the start's (0: no slimming; needs ``shortcut_scale``).
    ``qsa_metric``: ``bitops`` or ``size``. ``qsa_end``: fraction of the iterations by which the last block goes.
    ``sfd``: segment-wise feature distillation at weight ``sfd_weight`` (else ``train.lambda_feat`` on ``blocks``).
    """

    rbd: bool = True
    rbd_activations: bool = True
    shortcut_scale: bool = True
    qsa_budget: float = 0.85
    qsa_metric: str = "bitops"
    qsa_end: float = 0.5
    sfd: bool = True
    sfd_weight: float = 0.1

    name: ClassVar[str] = "quantsr_plus"
    w_mode: ClassVar[str] = "lsq_tanh"  # "rbd" with rbd=True (config)
    a_mode: ClassVar[str] = "rlq"  # "rbd_act" with rbd and rbd_activations (config)
    a_observer: ClassVar[str] = "omse"  # RLQ's step and offset from the MSE range (as QuantSR)

    def validate(self) -> None:
        super().validate()
        if not 0 <= self.qsa_budget < 1:
            raise SrqError(f"{self.name}: qsa_budget is a fraction of the start's cost in (0, 1), or 0 for no "
                           f"slimming; got {self.qsa_budget}")
        if self.qsa_budget and not self.shortcut_scale:
            raise SrqError(f"{self.name}: qsa_budget needs shortcut_scale=true (blocks are ranked by their |γ|)")
        if self.qsa_metric not in METRICS:
            raise SrqError(f"{self.name}: qsa_metric must be one of {', '.join(METRICS)}, got {self.qsa_metric!r}")
        if not 0 < self.qsa_end < 1:
            raise SrqError(f"{self.name}: qsa_end must be in (0, 1), got {self.qsa_end}")
        if self.sfd_weight <= 0:
            raise SrqError(f"{self.name}: sfd_weight must be positive, got {self.sfd_weight}")
        if self.qsa_budget and self.train.schedule == "cosine":
            raise SrqError(f"{self.name}: slimming splits training into phases; use train.schedule=multistep or "
                           f"constant (or qsa_budget=0)")
        if self.rbd and min(self.w_bits, self.a_bits if self.rbd_activations else 2) < 2:
            raise SrqError(f"{self.name}: RBD needs at least 2 bits (w_bits={self.w_bits}, a_bits={self.a_bits}); "
                           f"or rbd=false")

    def config(self) -> QuantConfig:
        return dataclasses.replace(super().config(), w_mode="rbd" if self.rbd else "lsq_tanh",
                                   a_mode="rbd_act" if self.rbd and self.rbd_activations else "rlq")

    def prepare(self, model: nn.Module, example: torch.Tensor | None = None) -> nn.Module:
        if not self.shortcut_scale:
            return super().prepare(model, example)
        return prepare_shortcut_scaled(model, self.config(), example, self.blocks)

    def run(self, model: nn.Module, calib: torch.Tensor, progress: bool = True) -> nn.Module:
        (example, scale, folders, data), qmodel, teacher = self.start(model, calib, progress)
        structure = getattr(qmodel, "srq_structure", None)
        blocks = execution_order(model, example.to(next(model.parameters()).device), structure["blocks"]) \
            if structure else []
        size = default_input_size(scale)
        start_cost = cost_of(qmodel, self.qsa_metric, size)
        removals, skipped = self._plan(qmodel, blocks, size)
        marks = phase_bounds(self.train.iterations, removals, self.qsa_end) if removals else []
        edges = [0, *marks, self.train.iterations]
        removed: list[dict[str, Any]] = []
        phases: list[dict[str, Any]] = []
        val = self.train.val_set

        def validate(m: nn.Module) -> float:
            return validation_psnr(m, val, scale, images=self.train.val_images, task=self.restoration_task())

        for i, (a, b) in enumerate(zip(edges[:-1], edges[1:])):
            if i:  # a removal point: the least critical block goes (at the last one, as many as the budget needs)
                removed += self._slim(qmodel, blocks, removed, a, self.qsa_budget * start_cost, size,
                                      final=i == len(marks))
            if b <= a:
                continue
            phases.append(self._train_phase(qmodel, teacher, data, a, b, blocks, [r["block"] for r in removed],
                                            validate if val and b == self.train.iterations else None, progress,
                                            last=b == self.train.iterations, count=len(edges) - 1, index=i))
        gone = [r["block"] for r in removed]
        if structure:
            setattr(qmodel, "srq_structure", structure_record(blocks, gone, structure["shortcut_scale"]))
        report: dict[str, Any] = {"training": _merged(phases, self.train), "quantizer_grids": grid_placement(qmodel),
                                  "shortcut_gammas": shortcut_gammas(qmodel)}
        report["training"]["data"] = self.data_record(folders, data, scale)
        task = self.restoration_task()
        if val and task is not None:
            self._check_not_pass_through(report["training"], task, val)
        if self.qsa_budget:
            report["qsa"] = {"metric": self.qsa_metric, "budget": self.qsa_budget, "input_size": list(size),
                             "start": start_cost, "end": cost_of(qmodel, self.qsa_metric, size),
                             "blocks": blocks, "removed": removed, **({"skipped": skipped} if skipped else {})}
        if self.sfd:
            report["sfd"] = [{"start": p["start"], "stop": p["stop"], "targets": p["targets"]} for p in phases]
        setattr(qmodel, "srq_report", report)
        return qmodel.eval()

    def _plan(self, qmodel: nn.Module, blocks: list[str], size: tuple[int, int]) -> tuple[int, str | None]:
        """How many blocks QSA removes, and why it removes none where the budget cannot be met on this model (then a
        one-line warning: the method still runs on any model, and the run's cost shows what it is)."""
        if not self.qsa_budget:
            return 0, None
        try:
            return plan_removals(qmodel, blocks, self.qsa_budget, self.qsa_metric, size), None
        except SrqError as e:
            message = f"{self.name}: {e}; trained without slimming (QSA)"
            warnings.warn(message)
            return 0, message

    def _slim(self, qmodel: nn.Module, blocks: list[str], removed: list[dict[str, Any]], step: int, target: float,
              size: tuple[int, int], *, final: bool) -> list[dict[str, Any]]:
        """Remove the remaining block with the smallest |γ| while the cost is above ``target`` (once, or until it
        is not, if ``final``); the removals as ``{"block", "step", "gamma"}``."""
        gone = [r["block"] for r in removed]
        out: list[dict[str, Any]] = []
        while cost_of(qmodel, self.qsa_metric, size) > target:
            victim = least_critical(qmodel, [n for n in blocks if n not in gone])
            out.append({"block": victim, "step": step, "gamma": shortcut_gammas(qmodel)[victim]})
            remove_blocks(qmodel, [victim])
            gone.append(victim)
            if not final:
                break
        return out

    def _train_phase(self, qmodel: nn.Module, teacher: nn.Module, data: TrainBatches, start: int, stop: int,
                     blocks: list[str], removed: list[str], validate: Any, progress: bool, *, last: bool, count: int,
                     index: int) -> dict[str, Any]:
        """Train steps ``start … stop − 1`` on the current structure; the phase's record, with its SFD targets."""
        targets = segment_ends(blocks, removed) if self.sfd and blocks else []
        pattern = "|".join(re.escape(n) for n in targets) if targets else self.blocks
        config = phase_config(self.train, start, stop, keep=self.train.keep if last else "last",
                              lambda_feat=self.sfd_weight if self.sfd else self.train.lambda_feat)
        gammas = [getattr(m, GAMMA) for m in qmodel.modules() if is_shortcut_scaled(m)]
        quant_params = [p for _, q in quantizers(qmodel) for p in q.parameters()] + gammas
        weights = [p for p in qmodel.parameters() if all(p is not q for q in quant_params)]
        phase = f" phase {index + 1}/{count}" if count > 1 else ""
        record = train_qat(qmodel, teacher, _Offset(data, start), config, weights=weights, quant_params=quant_params,
                           validate=validate, progress=progress, description=f"{self.name} QAT{phase}",
                           blocks=pattern)
        return {**record, "start": start, "stop": stop, "targets": targets or ([pattern] if pattern else [])}


def _merged(phases: list[dict[str, Any]], train: QATConfig) -> dict[str, Any]:
    """One training record over the phases: the log with global step numbers, the last phase's best state."""
    log = [{**row, "step": row["step"] + p["start"]} for p in phases for row in p["log"]]
    last: dict[str, Any] = phases[-1] if phases else {"best": {"step": 0, "psnr": None}, "start": 0, "world_size": 1}
    best = dict(last["best"])
    if best.get("step") is not None:
        best["step"] += last["start"]
    return {"log": log, "best": best, "start_psnr": phases[0].get("start_psnr") if phases else None,
            "seconds": sum(p["seconds"] for p in phases), "steps_skipped": sum(p["steps_skipped"] for p in phases),
            "world_size": last["world_size"], "config": dataclasses.asdict(train),
            "phases": [{"start": p["start"], "stop": p["stop"], "best": p["best"]} for p in phases]}
