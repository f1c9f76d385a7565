"""Quantization-aware training: the loop every QAT method runs (weights and quantizer parameters trained together).

Each step takes the batch of its step number from a training set (``batch(step, size, rank, world_size)`` →
``(lr, hr)``, e.g. :class:`srq.data.training.TrainingSet`; ``hr`` None for LR-only sets), so a resumed run sees
the batches of an uninterrupted one. The loss is a weighted sum of

* ``lambda_gt``·L1(Q(lr), hr) — the ground truth (needs HR),
* ``lambda_out``·L1(Q(lr), FP(lr)) — the FP teacher's output,
* ``lambda_feat``·Σ_blocks MSE(f_q, f_fp) / mean(f_fp²) — the teacher's per-block features, each normalised by
  the FP feature's mean square, so the term is about 1 for a feature off by its own size, whatever the model.

Within :func:`~srq.engine.checkpoint.resumable` the loop is a checkpointed stage (model, optimiser, schedule, RNG,
log and best state), and a killed run resumes to bit-identical weights. Under ``torch.distributed`` (``torchrun``)
each rank takes its share of every global batch and DDP averages the gradients; the process group is joined from
``torchrun``'s environment if the caller has not joined one (:func:`srq.utils.distributed.init_from_env`).
"""

from __future__ import annotations

import contextlib
import math
import time
import warnings
from dataclasses import dataclass
from typing import Any, Callable, Protocol

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ConfigError
from ..typed_config import check_above, check_at_least, check_choice, check_types
from ..utils.device import native_bf16
from ..utils.distributed import init_from_env
from ..utils.memory import release_memory, reuse_freed_memory
from ..utils.progress import progress_bar
from .checkpoint import active_work_area
from .blocks import capture_outputs, resolve_blocks
from .distill import _backward, _finite_gradients, feature_term
from .inference import memory_format, model_device
from .rates import ACT_LR_SCALES, pixel_scaled_groups

__all__ = ["QATConfig", "TrainBatches", "train_qat", "LOG_COLUMNS"]

LOG_COLUMNS = ("step", "loss", "lr", "psnr", "step_ms")  # one log row per step; psnr only where validated


class TrainBatches(Protocol):
    def batch(self, step: int, batch_size: int, rank: int = 0,
              world_size: int = 1) -> tuple[torch.Tensor, torch.Tensor | None]: ...


@dataclass(frozen=True)
class QATConfig:
    """Hyper-parameters of the QAT loop. ``lr`` is the weights' learning rate, ``quant_lr`` the quantizer
    parameters' (steps, clipping values, offsets). ``milestones``: fractions of ``iterations`` where a multistep
    schedule multiplies the rates by ``gamma``. ``validate_every``: steps between validations on ``val_set``
    (0: once, at the end); the best validated state is what the run returns (``keep="best"``) or the last.
    ``precision="bf16"`` runs the training forward passes under bfloat16 autocast (about 5× faster steps on a CPU
    with AMX; about 10× slower on a CPU without native bfloat16, which a warning says); validation and the
    returned model stay float32. ``lr`` 5e-4 suits budgets of a few thousand steps (measured, docs/methods.md);
    long GPU schedules usually want less. ``act_lr_scale="pixel_range"``: the activation quantizers' parameters
    in the activations' units (steps, offsets, clipping values, shifts) train at ``quant_lr`` × the model's pixel
    range (255 for [0, 255] checkpoints; :mod:`srq.engine.rates`); ``"none"``: all at ``quant_lr``."""

    iterations: int = 2000
    batch: int = 16
    hr_patch: int = 192
    lr: float = 5e-4
    quant_lr: float = 1e-3
    optimizer: str = "adam"
    weight_decay: float = 0.0
    schedule: str = "multistep"
    milestones: tuple[float, ...] = (0.5, 0.75)
    gamma: float = 0.5
    grad_clip: float | None = None
    lambda_gt: float = 1.0
    lambda_out: float = 0.0
    lambda_feat: float = 0.0
    validate_every: int = 0
    val_set: str = "Set5"
    val_images: int = 0  # 0: every image of val_set
    keep: str = "best"
    precision: str = "fp32"  # "bf16": forward passes under bfloat16 autocast (AMX/tensor cores); losses in fp32
    memory_format: str = "contiguous"  # "channels_last": train (and run the teacher) in NHWC layout
    seed: int = 0
    act_lr_scale: str = "pixel_range"  # or "none": see the class docstring

    def __post_init__(self) -> None:
        check_types(self)
        check_at_least(self, 1, "iterations", "batch", "hr_patch")
        check_at_least(self, 0, "weight_decay", "lambda_gt", "lambda_out", "lambda_feat", "validate_every",
                       "val_images", "seed")
        check_above(self, 0, "lr", "quant_lr", "gamma")
        check_above(self, 0, "grad_clip")
        check_choice(self, "optimizer", ("adam", "adamw", "sgd"))
        check_choice(self, "schedule", ("multistep", "cosine", "constant"))
        check_choice(self, "keep", ("best", "last"))
        check_choice(self, "precision", ("fp32", "bf16"))
        check_choice(self, "memory_format", ("contiguous", "channels_last"))
        check_choice(self, "act_lr_scale", ACT_LR_SCALES)
        if not all(0 < m < 1 for m in self.milestones) or list(self.milestones) != sorted(self.milestones):
            raise ConfigError(f"QATConfig: milestones must be increasing fractions of the run in (0, 1), "
                              f"got {self.milestones}")
        if not (self.lambda_gt or self.lambda_out or self.lambda_feat):
            raise ConfigError("QATConfig: lambda_gt, lambda_out and lambda_feat are all 0: nothing to train on")


def train_qat(qmodel: nn.Module, fp_model: nn.Module | None, data: TrainBatches, config: QATConfig, *,
              weights: list[nn.Parameter], quant_params: list[nn.Parameter],
              validate: Callable[[nn.Module], float] | None = None, progress: bool = True,
              description: str = "QAT", blocks: str | None = None) -> dict[str, Any]:
    """Train ``weights`` (at ``config.lr``) and ``quant_params`` (at ``config.quant_lr``) of ``qmodel`` on ``data``.

    ``fp_model``: the FP teacher (needed when ``lambda_out`` or ``lambda_feat`` is set, or for LR-only data).
    ``validate(model) -> PSNR``: called every ``validate_every`` steps and at the end (model in eval mode).
    With ``keep="best"`` the state before training is validated too and is a candidate (never worse: if no trained
    state beats it, it is kept, with a one-line warning). ``blocks``: the feature term's blocks (a regular
    expression over module names, see :func:`~srq.engine.blocks.resolve_blocks`; None: automatic).
    Returns the record: ``log`` (rows of :data:`LOG_COLUMNS`), ``best`` (step and PSNR of the kept state; step 0:
    the state before training), ``start_psnr``, ``seconds`` and ``steps_skipped`` (non-finite gradients).
    ``qmodel`` ends in the kept state, in eval mode.
    """
    teacher = fp_model is not None and (config.lambda_out > 0 or config.lambda_feat > 0)
    if fp_model is None and config.lambda_gt == 0:
        raise ConfigError("QAT without ground truth (lambda_gt=0) needs the FP teacher")
    device = model_device(qmodel)
    rank, world = init_from_env(device)
    groups = pixel_scaled_groups(qmodel, [{"params": weights, "lr": config.lr},
                                          {"params": quant_params, "lr": config.quant_lr, "weight_decay": 0.0}],
                                 config.lr, config.act_lr_scale)
    trained = [*weights, *quant_params]
    reuse_freed_memory()  # each step frees and reallocates the same tensors
    frozen = [p for p in qmodel.parameters() if p.requires_grad and all(p is not q for q in trained)]
    for p in frozen:
        p.requires_grad_(False)
    opt = _optimizer(config, groups)
    scheduler = _scheduler(config, opt)
    project = [getattr(m, "project_bounds_") for m in qmodel.modules() if hasattr(m, "project_bounds_")]
    names = resolve_blocks(fp_model, blocks, data.batch(0, 1)[0][:1].to(device)) \
        if teacher and config.lambda_feat and fp_model is not None else []
    if config.precision == "bf16" and not native_bf16(device):
        warnings.warn(f"{description}: train.precision=bf16 on a {device.type} without native bfloat16 (no "
                      f"AVX512-BF16/AMX): autocast is emulated and about 10x slower than train.precision=fp32")
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=config.precision == "bf16")
    log: list[dict[str, Any]] = []
    best: dict[str, Any] = {"step": 0, "psnr": None}
    start_psnr: float | None = None
    best_state: dict[str, torch.Tensor] | None = None
    skipped, done, seconds = 0, 0, 0.0
    work = active_work_area()  # every rank restores from it; rank 0 writes it
    stage = work.stage(description, config.iterations) if work is not None else None

    def checkpoint(step: int) -> None:
        assert stage is not None
        if rank == 0:
            stage.save(step, {"log": log, "best": best, "skipped": skipped, "seconds": seconds,
                              "start_psnr": start_psnr}, qmodel, opt,
                       scheduler, tensors={f"best.{k}": v for k, v in (best_state or {}).items()})

    def validation(step: int) -> float | None:
        nonlocal best_state
        if validate is None:
            return None
        psnr = validate(qmodel)
        qmodel.train()
        if best["psnr"] is None or psnr > best["psnr"]:
            best.update(step=step, psnr=psnr)
            best_state = {k: v.detach().clone() for k, v in qmodel.state_dict().items()}
        return psnr

    fmt = torch.channels_last if config.memory_format == "channels_last" else torch.contiguous_format
    layout = _training_layout(config, qmodel, fp_model)  # before DDP: its gradient buckets follow the layout
    net: nn.Module = qmodel
    try:
        if world > 1:
            net = nn.parallel.DistributedDataParallel(qmodel)
        saved = stage.restore(qmodel, opt, scheduler) if stage is not None else None
        if saved is not None and stage is not None:
            done, record = saved
            log, skipped, seconds = record["log"], record["skipped"], record["seconds"]
            best.update(record["best"])
            best_state = {k[5:]: v for k, v in stage.tensors.items() if k.startswith("best.")} or None
            start_psnr = record.get("start_psnr")
        if done == 0 and config.keep == "best" and validate is not None and config.iterations:
            start_psnr = validation(0)  # the state before training is a candidate: never worse
        if fp_model is not None:
            fp_model.eval()
        qmodel.train()
        with capture_outputs(qmodel, names) as fq, capture_outputs(fp_model or qmodel, names) as ffp:
            steps = progress_bar(range(done, config.iterations), total=config.iterations, description=description,
                                 enabled=progress and rank == 0, completed=done,
                                 status=lambda: f"loss {log[-1]['loss']:.4g}" if log else "")
            for step in steps:
                t0 = time.perf_counter()
                lr_in, hr = data.batch(step, config.batch, rank, world)
                lr_in = lr_in.to(device).contiguous(memory_format=fmt)
                with autocast:
                    out = net(lr_in).float()
                loss = out.new_zeros(())
                if config.lambda_gt and hr is not None:
                    loss = loss + config.lambda_gt * F.l1_loss(out, hr.to(device))
                if teacher or hr is None:
                    assert fp_model is not None
                    with torch.no_grad(), autocast:
                        target = fp_model(lr_in).float()
                    if config.lambda_out or hr is None:
                        loss = loss + (config.lambda_out or 1.0) * F.l1_loss(out, target)
                    if names:
                        loss = loss + config.lambda_feat * feature_term(dict(fq), dict(ffp), "mse_norm").to(device)
                opt.zero_grad(set_to_none=True)
                _backward(loss, qmodel, lr_in)
                if _finite_gradients(trained):
                    if config.grad_clip is not None:
                        torch.nn.utils.clip_grad_norm_(trained, config.grad_clip)
                    opt.step()
                    for fn in project:
                        fn()
                else:
                    skipped += 1
                rate = opt.param_groups[0]["lr"]
                if scheduler is not None:
                    scheduler.step()
                seconds += time.perf_counter() - t0
                row = {"step": step + 1, "loss": loss.item(), "lr": rate, "psnr": None,
                       "step_ms": 1000 * (time.perf_counter() - t0)}
                if config.validate_every and (step + 1) % config.validate_every == 0 \
                        and step + 1 < config.iterations:
                    row["psnr"] = validation(step + 1)
                log.append(row)
                if stage is not None and step + 1 < config.iterations and stage.due(step + 1):
                    checkpoint(step + 1)
        if log and log[-1]["psnr"] is None and done < config.iterations:
            log[-1]["psnr"] = validation(config.iterations)
        if stage is not None and done < config.iterations:
            checkpoint(config.iterations)
    finally:
        layout.close()  # parameters back in their own layout, with the trained values
        for p in frozen:
            p.requires_grad_(True)
        release_memory()
    if config.keep == "best" and best_state is not None and best["step"] != config.iterations:
        qmodel.load_state_dict(best_state)
        trained = [r["psnr"] for r in log if r["psnr"] is not None]
        if best["step"] == 0 and trained:
            warnings.warn(f"{description} made the model worse on its validation set (PSNR {best['psnr']:.2f} dB "
                          f"before, {max(trained):.2f} dB at best after); kept the state before {description}")
    elif config.keep == "last" or best_state is None:
        best = {"step": config.iterations, "psnr": log[-1]["psnr"] if log else None}
    qmodel.eval()
    return {"log": log, "best": best, "start_psnr": start_psnr, "seconds": seconds, "steps_skipped": skipped,
            "world_size": world,
            "config": {k: getattr(config, k) for k in config.__dataclass_fields__}}


def _training_layout(config: QATConfig, *models: nn.Module | None) -> contextlib.ExitStack:
    """The layout the models train in: an open stack of :func:`~srq.engine.inference.memory_format` contexts (close
    it to put every 4-D parameter and buffer back in its own layout, keeping the values)."""
    stack = contextlib.ExitStack()
    if config.memory_format == "channels_last":
        for model in {id(m): m for m in models if m is not None}.values():
            stack.enter_context(memory_format(model, torch.channels_last))
    return stack


def _optimizer(config: QATConfig, groups: list[dict]) -> torch.optim.Optimizer:
    if config.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=config.lr, momentum=0.9, weight_decay=config.weight_decay)
    cls = torch.optim.AdamW if config.optimizer == "adamw" else torch.optim.Adam
    return cls(groups, lr=config.lr, weight_decay=config.weight_decay)


def _scheduler(config: QATConfig, opt: torch.optim.Optimizer) -> torch.optim.lr_scheduler.LRScheduler | None:
    if config.schedule == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=config.iterations)
    if config.schedule == "multistep":
        steps = sorted({max(1, math.floor(m * config.iterations)) for m in config.milestones})
        return torch.optim.lr_scheduler.MultiStepLR(opt, milestones=steps, gamma=config.gamma)
    return None
