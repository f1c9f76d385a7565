"""Distillation from the FP model: pixel L1 to the FP output plus per-block feature alignment.

``L = ‖f_q(x) − f_FP(x)‖₁ + λ · Σ_l ‖φ_l(f_q(x)) − φ_l(f_FP(x))‖²`` (SPR²Q Eq. 4–6; GBA's loss has the
same form), where φ_l are the outputs of the model's blocks. :func:`find_blocks` finds the blocks of any
network as the instances of its most repeated composite module class (IMDN's IMDBs, RLFN's RLFBs, PAN's
SCPAs, EDSR's ResBlocks, MambaIRv2's blocks, ...). The squared error
is averaged over elements (MSE), as in common implementations, so λ does not depend on feature size.
"""

from __future__ import annotations

import contextlib
import math
import re
import statistics
import warnings
from collections import defaultdict
from dataclasses import dataclass
from typing import Callable, Iterator, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ConfigError, SrqError
from ..typed_config import check_above, check_at_least, check_choice, check_types
from .checkpoint import active_work_area
from .inference import model_device
from ..utils.memory import release_memory
from ..utils.progress import progress_bar

__all__ = ["find_blocks", "capture_outputs", "distill_loss", "energy_map", "FinetuneConfig", "finetune"]


def find_blocks(model: nn.Module) -> list[str]:
    """Names of the model's blocks: the instances of one repeated composite module class.

    Candidates are modules (not the root, not plain containers like ``nn.Sequential``) that have
    parameters and children, grouped by class (instances nested in another instance of the same class
    skipped). The class maximising ``instances × share of all parameters they hold`` wins: IMDN's six IMDBs
    rather than the CCA layers inside them, MambaIRv2's 20 blocks rather than its 4 groups or the 40
    ConvFFNs inside the blocks. Empty if nothing repeats.
    """
    containers = (nn.Sequential, nn.ModuleList, nn.ModuleDict)
    modules = dict(model.named_modules())
    found: dict[type, list[str]] = defaultdict(list)
    for name, m in modules.items():
        if name and not isinstance(m, containers) and any(True for _ in m.children()) \
                and any(True for _ in m.parameters()):
            found[type(m)].append(name)
    total = sum(p.numel() for p in model.parameters()) or 1

    def outermost(names: list[str]) -> list[str]:
        return [n for n in names if not any(n.startswith(o + ".") for o in names if o != n)]

    def score(names: list[str]) -> float:  # instances × share of the parameters they hold
        covered = sum(p.numel() for n in names for p in modules[n].parameters())
        return len(names) * covered / total

    groups = [outermost(names) for names in found.values()]
    groups = [g for g in groups if len(g) >= 2]
    return max(groups, key=score) if groups else []


@contextlib.contextmanager
def capture_outputs(model: nn.Module, names: list[str]) -> Iterator[dict[str, torch.Tensor]]:
    """Within the context, ``store[name]`` holds the latest output of each named sub-module."""
    store: dict[str, torch.Tensor] = {}
    modules = dict(model.named_modules())
    handles = [modules[n].register_forward_hook(lambda m, i, o, n=n: store.__setitem__(n, o)) for n in names]
    try:
        yield store
    finally:
        for h in handles:
            h.remove()


def energy_map(f: torch.Tensor) -> torch.Tensor:
    """PTQ4SR's feature summary: the per-pixel channel mean of f², L2-normalised per sample → (N, H·W)."""
    return F.normalize(f.pow(2).mean(dim=1).flatten(1), dim=1)


def distill_loss(out_q: torch.Tensor, out_fp: torch.Tensor, feats_q: dict, feats_fp: dict,
                 lambda_feat: float, feature_loss: str = "mse") -> torch.Tensor:
    """Pixel L1 + ``lambda_feat`` × a feature term over the blocks.

    ``feature_loss="mse"``: the sum over blocks of the feature MSE (GBA, SPR²Q). ``"energy"``: the mean over
    blocks of the MSE between :func:`energy_map` s (PTQ4SR's pixel-aware term).
    """
    loss = F.l1_loss(out_q, out_fp)
    if lambda_feat and feats_q:
        if feature_loss == "energy":
            terms = [F.mse_loss(energy_map(feats_q[n]), energy_map(feats_fp[n])) for n in feats_q]
            loss = loss + lambda_feat * sum(terms) / len(terms)
        else:
            loss = loss + lambda_feat * sum(F.mse_loss(feats_q[n], feats_fp[n]) for n in feats_q)
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
    feature_loss: str = "mse"  # or "energy" (see distill_loss)
    # if set, a step whose loss exceeds this many times the median loss of the steps taken so far (after 3) is
    # skipped: on a batch where the quantized network runs away (no static clipping under DAN) one step's
    # gradients are many orders of magnitude above the rest and would dominate Adam's moments or a gradient mean
    outlier_factor: float | None = None

    def __post_init__(self) -> None:
        check_types(self)
        check_at_least(self, 1, "epochs", "batch")
        check_at_least(self, 0, "steps", "lambda_feat")  # steps 0: the stage is switched off
        if not self.lr > 0 or (self.lr_min is not None and not 0 <= self.lr_min <= self.lr):
            raise ConfigError(f"FinetuneConfig: lr must be above 0 and lr_min (if set) within 0 … lr, got "
                              f"lr={self.lr}, lr_min={self.lr_min}")
        check_choice(self, "optimizer", ("adam", "sgd"))
        check_choice(self, "feature_loss", ("mse", "energy"))
        check_above(self, 1, "outlier_factor")


def finetune(qmodel: nn.Module, fp_model: nn.Module, inputs: torch.Tensor, params: list,
             config: FinetuneConfig, progress: bool = True, after_backward: Callable[[], None] | None = None,
             description: str = "fine-tuning", extra_loss: Callable[[], torch.Tensor] | None = None,
             stats: dict | None = None, carry: dict | None = None) -> list[float]:
    """Train ``params`` of ``qmodel`` to match ``fp_model`` on ``inputs`` ((N, 3, h, w) LR in [0, 1]).

    ``params``: parameters, or optimiser parameter groups (dicts with ``params`` and optionally ``lr``).
    Everything else stays frozen; quantizer bounds are projected back to their valid set after each step; a
    step whose gradients are not finite, or whose loss is an outlier (``config.outlier_factor``), is skipped
    (with a warning at the end). ``extra_loss()`` (if given) is added to each step's loss after the forward
    pass; ``after_backward`` is called after each backward pass of a step that is taken, before the optimiser
    step (e.g. to record gradients, in ``carry``). Returns the loss per step, skipped ones included. ``stats``
    (if given) receives :func:`step_stats`.

    Within :func:`~srq.engine.checkpoint.resumable` the call is a checkpointed stage of the run: it continues
    from the stage's checkpoint (model, optimiser, LR schedule, RNG, losses and ``carry``: a dict of JSON-able
    values the caller updates during the stage) and saves one as it goes.
    """
    blocks = find_blocks(fp_model) if config.lambda_feat else []  # no feature term: nothing to capture
    groups = params if params and isinstance(params[0], dict) else [{"params": list(params)}]
    params = [p for g in groups for p in g["params"]]
    frozen = [p for p in qmodel.parameters() if p.requires_grad and all(p is not q for q in params)]
    for p in frozen:
        p.requires_grad_(False)
    for p in params:
        p.requires_grad_(True)
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

    def checkpoint(step: int) -> None:
        assert stage is not None  # called only with a work area
        stage.save(step, {"losses": losses, "taken": taken, "skipped": skipped, "outliers": outliers,
                          "carry": carry}, qmodel, opt, scheduler)

    fp_model.eval()
    qmodel.eval()  # no dropout/BN updates; gradients still flow
    try:
        saved = stage.restore(qmodel, opt, scheduler) if stage is not None else None
        if saved is not None:
            done, record = saved
            losses, taken, skipped, outliers = record["losses"], record["taken"], record["skipped"], record["outliers"]
            if carry is not None:
                carry.update(record["carry"])
        with capture_outputs(qmodel, blocks) as fq, capture_outputs(fp_model, blocks) as ffp:
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
                _backward(loss)
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
    finally:
        for p in frozen:
            p.requires_grad_(True)
        release_memory()
    if stats is not None:
        stats.update(step_stats(losses, len(taken)))
    if skipped:
        warnings.warn(f"{description}: {skipped} of {len(schedule)} steps skipped (non-finite gradients)")
    if outliers:
        warnings.warn(f"{description}: {outliers} of {len(schedule)} steps skipped (loss above "
                      f"{config.outlier_factor:g}× the median of the steps before)")
    return losses


def step_stats(losses: list[float], taken: int) -> dict:
    """What a fine-tuning run met: ``steps`` (all), ``steps_taken``, ``loss_median`` (of all steps) and the 25
    largest step losses over that median (``largest_loss_ratios``, largest first; None: not finite, so the
    dict stays strict JSON), which show where an outlier factor would cut."""
    median = statistics.median(losses) if losses else 0.0
    ratios = sorted((v / median if 0 < median < math.inf else math.inf) for v in losses)[-25:]
    return {"steps": len(losses), "steps_taken": taken, "loss_median": median if math.isfinite(median) else None,
            "largest_loss_ratios": [float(f"{r:.3g}") if math.isfinite(r) else None for r in reversed(ratios)]}


def _backward(loss: torch.Tensor) -> None:
    """``loss.backward()``, with autograd's in-place error turned into a one-line hint for the model's author."""
    try:
        loss.backward()
    except RuntimeError as e:
        if "modified by an inplace operation" not in str(e):
            raise
        found = re.search(r"(\[[^\]]*\]\]?), which is output \d+ of (\w+)", str(e))
        what = f" (a tensor {found[1]} made by {found[2]})" if found else ""
        raise SrqError(f"the model's forward modifies a tensor in place{what} that autograd needs to fine-tune it "
                       f"(e.g. `x *= y`, `h += x` after an activation); write `x = x * y` / `h = h + x` "
                       f"instead") from None


def _finite_gradients(params: Sequence[torch.Tensor]) -> bool:
    """Whether every gradient of ``params`` is finite (one device sync)."""
    grads = [p.grad for p in params if p.grad is not None]
    return not grads or bool(torch.stack([torch.isfinite(g).all() for g in grads]).all())
