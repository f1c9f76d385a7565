"""Distillation from the FP model: pixel L1 to the FP output plus per-block feature alignment.

``L = ‖f_q(x) − f_FP(x)‖₁ + λ · Σ_l ‖φ_l(f_q(x)) − φ_l(f_FP(x))‖²`` (SPR²Q Eq. 4–6; GBA's loss has the
same form), where φ_l are the outputs of the model's blocks (:mod:`srq.engine.blocks`: found automatically,
or named by a recipe's ``blocks`` pattern). The squared error is averaged over elements (MSE), as in common
implementations, so λ does not depend on feature size; ``feature_loss="mse_norm"`` also divides each block's
MSE by its FP feature's mean square, so λ does not depend on the features' magnitude either.
:func:`finetune` never returns a model worse on its calibration objective than the one it started from.
"""

from __future__ import annotations

import math
import statistics
import warnings
from dataclasses import dataclass
from typing import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ConfigError, SrqError
from ..typed_config import check_above, check_at_least, check_choice, check_types
from .blocks import capture_outputs, find_blocks, resolve_blocks
from .checkpoint import active_work_area
from .inference import model_device
from .inplace import inplace_message
from .rates import ACT_LR_SCALES, pixel_scaled_groups
from ..utils.memory import release_memory, reuse_freed_memory
from ..utils.progress import progress_bar

__all__ = ["find_blocks", "resolve_blocks", "capture_outputs", "distill_loss", "feature_term", "energy_map",
           "FinetuneConfig", "finetune", "FEATURE_LOSSES"]


def energy_map(f: torch.Tensor) -> torch.Tensor:
    """PTQ4SR's feature summary: the per-pixel channel mean of f², L2-normalised per sample → (N, H·W)."""
    return F.normalize(f.pow(2).mean(dim=1).flatten(1), dim=1)


FEATURE_LOSSES = ("mse", "mse_norm", "energy")


def feature_term(feats_q: dict[str, torch.Tensor], feats_fp: dict[str, torch.Tensor],
                 feature_loss: str = "mse") -> torch.Tensor:
    """The feature term over the blocks (``feats_*``: block name → output, any shape, same keys).

    ``"mse"``: Σ_blocks MSE(f_q, f_fp) (GBA, SPR²Q) — in the features' own units, so its size follows the
    model's feature magnitudes (mean f_fp² from 0.01 to 10⁴ across the zoo, see docs/methods.md).
    ``"mse_norm"``: Σ_blocks MSE(f_q, f_fp) / mean(f_fp²) — each block's error relative to its FP feature's
    energy (about 1 for a feature off by its own size, whatever the model; QAT's feature term).
    ``"energy"``: the mean over blocks of the MSE between :func:`energy_map` s (PTQ4SR's pixel-aware term).
    """
    names = list(feats_q)
    if feature_loss == "energy":
        terms = [F.mse_loss(energy_map(feats_q[n]), energy_map(feats_fp[n])) for n in names]
        return sum(terms, torch.zeros(())) / max(len(terms), 1)
    if feature_loss == "mse_norm":
        return sum((F.mse_loss(feats_q[n], feats_fp[n]) / feats_fp[n].detach().float().pow(2).mean().clamp_min(1e-12)
                    for n in names), torch.zeros(()))
    return sum((F.mse_loss(feats_q[n], feats_fp[n]) for n in names), torch.zeros(()))


def distill_loss(out_q: torch.Tensor, out_fp: torch.Tensor, feats_q: dict, feats_fp: dict,
                 lambda_feat: float, feature_loss: str = "mse") -> torch.Tensor:
    """Pixel L1 + ``lambda_feat`` × :func:`feature_term` over the blocks."""
    loss = F.l1_loss(out_q, out_fp)
    if lambda_feat and feats_q:
        loss = loss + lambda_feat * feature_term(feats_q, feats_fp, feature_loss).to(loss.device)
    return loss


@dataclass(frozen=True)
class FinetuneConfig:
    """Bound fine-tuning (GBA supplementary defaults: Adam, lr 0.01, 2 epochs, batch 2, λ_feat 10).

    Frozen and checked when made (one-line :class:`~srq.errors.ConfigError`); change it with ``dataclasses.replace``.
    """

    lr: float = 0.01
    epochs: int = 2
    batch: int = 2
    lambda_feat: float = 10.0
    seed: int = 0
    optimizer: str = "adam"  # or "sgd"
    steps: int | None = None  # if set, this many steps (epochs repeat as needed) instead of ``epochs``; 0: none
    lr_min: float | None = None  # if set, cosine annealing from ``lr`` to ``lr_min`` over the run
    feature_loss: str = "mse"  # or "mse_norm", "energy" (see feature_term)
    # if set, a step whose loss exceeds this many times the median loss of the steps taken so far (after 3) is
    # skipped: on a batch where the quantized network runs away (no static clipping under DAN) one step's
    # gradients are many orders of magnitude above the rest and would dominate Adam's moments or a gradient mean
    outlier_factor: float | None = None
    act_lr_scale: str = "pixel_range"  # or "none": activation bounds of a [0, 255] model at lr × 255 (engine.rates)

    def __post_init__(self) -> None:
        check_types(self)
        check_at_least(self, 1, "epochs", "batch")
        check_at_least(self, 0, "steps", "lambda_feat")  # steps 0: the stage is switched off
        if not self.lr > 0 or (self.lr_min is not None and not 0 <= self.lr_min <= self.lr):
            raise ConfigError(f"FinetuneConfig: lr must be above 0 and lr_min (if set) within 0 … lr, got "
                              f"lr={self.lr}, lr_min={self.lr_min}")
        check_choice(self, "optimizer", ("adam", "sgd"))
        check_choice(self, "act_lr_scale", ACT_LR_SCALES)
        check_choice(self, "feature_loss", FEATURE_LOSSES)
        check_above(self, 1, "outlier_factor")


def finetune(qmodel: nn.Module, fp_model: nn.Module, inputs: torch.Tensor, params: list,
             config: FinetuneConfig, progress: bool = True, after_backward: Callable[[], None] | None = None,
             description: str = "fine-tuning", extra_loss: Callable[[], torch.Tensor] | None = None,
             stats: dict | None = None, carry: dict | None = None, blocks: str | None = None,
             guard: bool = True) -> list[float]:
    """Train ``params`` of ``qmodel`` to match ``fp_model`` on ``inputs`` ((N, 3, h, w) LR in [0, 1]).

    ``params``: parameters, or optimiser parameter groups (dicts with ``params`` and optionally ``lr``).
    Everything else stays frozen; quantizer bounds are projected back to their valid set after each step; a
    step whose gradients are not finite, or whose loss is an outlier (``config.outlier_factor``), is skipped
    (with a warning at the end). ``extra_loss()`` (if given) is added to each step's loss after the forward
    pass; ``after_backward`` is called after each backward pass of a step that is taken, before the optimiser
    step (e.g. to record gradients, in ``carry``). Returns the loss per step, skipped ones included. ``stats``
    (if given) receives :func:`step_stats`, and with ``guard`` the objective before and after (see below).

    ``blocks``: which modules' outputs the feature term aligns (see :func:`~srq.engine.blocks.resolve_blocks`;
    None: the automatic rule). ``guard`` (never worse): the loss over all of ``inputs`` is measured before and
    after; if training did not lower it, ``params`` go back to their values before the stage, with a one-line
    warning (``stats["kept"]`` says which state was kept). Off for stages whose trained values are thrown away
    (GBA's bit-allocation offsets).

    Within :func:`~srq.engine.checkpoint.resumable` the call is a checkpointed stage of the run: it continues
    from the stage's checkpoint (model, optimiser, LR schedule, RNG, losses and ``carry``: a dict of JSON-able
    values the caller updates during the stage) and saves one as it goes.
    """
    names = resolve_blocks(fp_model, blocks, inputs[:1].to(model_device(fp_model))) if config.lambda_feat else []
    groups = params if params and isinstance(params[0], dict) else [{"params": list(params)}]
    params = [p for g in groups for p in g["params"]]
    reuse_freed_memory()  # each step frees and reallocates the same tensors
    frozen = [p for p in qmodel.parameters() if p.requires_grad and all(p is not q for q in params)]
    for p in frozen:
        p.requires_grad_(False)
    for p in params:
        p.requires_grad_(True)
    groups = pixel_scaled_groups(qmodel, groups, config.lr, config.act_lr_scale)
    opt = (torch.optim.Adam if config.optimizer == "adam" else torch.optim.SGD)(groups, lr=config.lr)
    gen = torch.Generator().manual_seed(config.seed)
    per_epoch = -(-len(inputs) // config.batch)
    epochs = config.epochs if config.steps is None else -(-config.steps // per_epoch)
    schedule = [order[start:start + config.batch]
                for order in (torch.randperm(len(inputs), generator=gen) for _ in range(epochs))
                for start in range(0, len(inputs), config.batch)]
    if config.steps is not None:
        schedule = schedule[:config.steps]
    scheduler = None if config.lr_min is None else \
        torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(len(schedule), 1), eta_min=config.lr_min)
    device = model_device(qmodel)  # the batches go where the model is (``inputs`` may stay on the CPU)
    project_bounds: list[Callable[[], None]] = [getattr(m, "project_bounds_") for m in qmodel.modules()
                                                if hasattr(m, "project_bounds_")]  # the quantizers'
    losses: list[float] = []
    taken: list[float] = []  # losses of the steps taken (the outlier test's reference)
    skipped = outliers = done = 0  # done: steps done before this call (resumed from a checkpoint)
    work = active_work_area()
    stage = work.stage(description, len(schedule)) if work is not None else None

    guard = guard and len(schedule) > 0
    before: float | None = None  # the objective over all inputs before the stage (guard)
    start: list[torch.Tensor] = []  # the trained parameters' values before the stage (guard)

    def checkpoint(step: int) -> None:
        assert stage is not None  # called only with a work area
        stage.save(step, {"losses": losses, "taken": taken, "skipped": skipped, "outliers": outliers,
                          "carry": carry, "objective_before": before}, qmodel, opt, scheduler,
                   tensors={f"start.{i}": t for i, t in enumerate(start)})

    fp_model.eval()
    qmodel.eval()  # no dropout/BN updates; gradients still flow
    try:
        saved = stage.restore(qmodel, opt, scheduler) if stage is not None else None
        if saved is not None and stage is not None:
            done, record = saved
            losses, taken, skipped, outliers = record["losses"], record["taken"], record["skipped"], record["outliers"]
            if carry is not None:
                carry.update(record["carry"])
            before = record.get("objective_before")
            start = [stage.tensors[f"start.{i}"].to(p) for i, p in enumerate(params) if f"start.{i}" in stage.tensors]
        if guard and (saved is None or len(start) != len(params)):
            before = calibration_objective(qmodel, fp_model, inputs, names, config, extra_loss)
            start = [p.detach().clone() for p in params]
        with capture_outputs(qmodel, names) as fq, capture_outputs(fp_model, names) as ffp:
            steps = progress_bar(schedule[done:], total=len(schedule), description=description, enabled=progress,
                                 status=lambda: f"loss {losses[-1]:.4g}" if losses else "", completed=done)
            for step, idx in enumerate(steps, done + 1):  # step: steps done once this one is
                x = inputs[idx].to(device)
                with torch.no_grad():
                    target = fp_model(x)
                    feats_fp = dict(ffp)
                loss = distill_loss(qmodel(x), target, dict(fq), feats_fp, config.lambda_feat, config.feature_loss)
                if extra_loss is not None:
                    loss = loss + extra_loss()
                opt.zero_grad(set_to_none=True)
                _backward(loss, qmodel, x)
                value = loss.item()
                if config.outlier_factor is not None and len(taken) >= 3 \
                        and not value <= config.outlier_factor * statistics.median(taken):
                    outliers += 1
                elif _finite_gradients(params):
                    if after_backward is not None:
                        after_backward()
                    opt.step()
                    for project in project_bounds:
                        project()
                    taken.append(value)
                else:  # skip the update (as AMP's grad scaler does) and count it
                    skipped += 1
                if scheduler is not None:
                    scheduler.step()
                losses.append(value)
                if stage is not None and step < len(schedule) and stage.due(step):
                    checkpoint(step)
        if stage is not None and done < len(schedule):
            checkpoint(len(schedule))
        kept = _keep_if_better(qmodel, fp_model, inputs, names, config, extra_loss, params, start, before,
                               description) if guard else None
    finally:
        for p in frozen:
            p.requires_grad_(True)
        release_memory()
    if stats is not None:
        stats.update(step_stats(losses, len(taken)))
        if kept is not None:
            stats.update(kept)
    if skipped:
        warnings.warn(f"{description}: {skipped} of {len(schedule)} steps skipped (non-finite gradients)")
    if outliers:
        warnings.warn(f"{description}: {outliers} of {len(schedule)} steps skipped (loss above "
                      f"{config.outlier_factor:g}× the median of the steps before)")
    return losses


@torch.no_grad()
def calibration_objective(qmodel: nn.Module, fp_model: nn.Module, inputs: torch.Tensor, names: list[str],
                          config: FinetuneConfig, extra_loss: Callable[[], torch.Tensor] | None = None,
                          batch: int = 8) -> float:
    """The fine-tuning loss (``config``'s, on blocks ``names``) averaged over all of ``inputs`` in batches of
    ``batch``, without gradients: the objective the guard of :func:`finetune` compares before and after. With
    ``config.outlier_factor`` the batches are ``config.batch`` and, as in training, those above that factor × the
    median batch loss are left out (a runaway patch would otherwise be the whole objective)."""
    device = model_device(qmodel)
    batch = config.batch if config.outlier_factor is not None else batch
    rows: list[tuple[float, int]] = []
    with capture_outputs(qmodel, names) as fq, capture_outputs(fp_model, names) as ffp:
        for i in range(0, len(inputs), batch):
            x = inputs[i:i + batch].to(device)
            target = fp_model(x)
            feats_fp = dict(ffp)
            loss = distill_loss(qmodel(x), target, dict(fq), feats_fp, config.lambda_feat, config.feature_loss)
            if extra_loss is not None:
                loss = loss + extra_loss()
            rows.append((float(loss), len(x)))
    if config.outlier_factor is not None and rows:
        median = statistics.median(v for v, _ in rows)
        rows = [(v, n) for v, n in rows if v <= config.outlier_factor * median] or rows
    return sum(v * n for v, n in rows) / max(sum(n for _, n in rows), 1)


def _keep_if_better(qmodel: nn.Module, fp_model: nn.Module, inputs: torch.Tensor, names: list[str],
                    config: FinetuneConfig, extra_loss: Callable[[], torch.Tensor] | None, params: list,
                    start: list[torch.Tensor], before: float | None, description: str) -> dict:
    """The guard's decision after a stage: keep the trained ``params`` if they lowered the objective, else put
    back ``start`` and warn. Returns ``objective_before``, ``objective_after`` (None: not finite) and ``kept``."""
    after = calibration_objective(qmodel, fp_model, inputs, names, config, extra_loss)
    better = before is None or not math.isfinite(before) or after <= before  # NaN after a finite start: worse
    if not better:
        with torch.no_grad():
            for p, t in zip(params, start):
                p.copy_(t)
        warnings.warn(f"{description} made the model worse on its calibration objective ({before:.4g} → "
                      f"{after:.4g}); kept the state before {description}")

    def plain(v: float | None) -> float | None:
        return v if v is not None and math.isfinite(v) else None

    return {"objective_before": plain(before), "objective_after": plain(after),
            "kept": "trained" if better else "start"}


def step_stats(losses: list[float], taken: int) -> dict:
    """What a fine-tuning run met: ``steps`` (all), ``steps_taken``, ``loss_median`` (of all steps) and the 25
    largest step losses over that median (``largest_loss_ratios``, largest first; None: not finite, so the
    dict stays strict JSON), which show where an outlier factor would cut."""
    median = statistics.median(losses) if losses else 0.0
    ratios = sorted((v / median if 0 < median < math.inf else math.inf) for v in losses)[-25:]
    return {"steps": len(losses), "steps_taken": taken, "loss_median": median if math.isfinite(median) else None,
            "largest_loss_ratios": [float(f"{r:.3g}") if math.isfinite(r) else None for r in reversed(ratios)]}


def _backward(loss: torch.Tensor, model: nn.Module | None = None, x: torch.Tensor | None = None) -> None:
    """``loss.backward()``, with autograd's in-place error turned into one line for the model's author: naming the
    module whose forward does it (found by re-running ``model`` on ``x``, only when the backward has failed)."""
    try:
        loss.backward()
    except RuntimeError as e:
        if "modified by an inplace operation" not in str(e):
            raise
        if model is None or x is None:
            raise SrqError("the model's forward modifies a tensor in place that autograd needs to fine-tune it "
                           "(e.g. `x *= y`, `h += x` after an activation); write `x = x * y` / `h = h + x` "
                           "instead") from None
        raise SrqError(inplace_message(model, x, str(e))) from None


def _finite_gradients(params: Sequence[torch.Tensor]) -> bool:
    """Whether every gradient of ``params`` is finite (one device sync)."""
    grads = [p.grad for p in params if p.grad is not None]
    return not grads or bool(torch.stack([torch.isfinite(g).all() for g in grads]).all())
