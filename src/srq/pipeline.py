"""One pipeline for every entry point: float model → recipe → quantized model → run folder → optional scores.

``srq quantize``, ``srq.pipeline.run`` from Python and the benchmark scripts all go through :func:`run`, so a run
folder and a benchmark row made with the same recipe and calibration inputs hold the same model, the same
artefacts (placement with the layers left float, bit map, routing, cost, timings) and the same scores.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
import warnings
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ContextManager, Sequence

import torch
from torch import nn

from . import api
from .engine.blocks import resolve_blocks
from .engine.collapse import collapse_check, collapse_warning
from .engine.evaluate import DatasetScore, evaluate
from .engine.results import provenance
from .methods.base import Recipe
from .quant import float_layers, format_placement, model_cost, placement
from .quant.cost import ModelCost

__all__ = ["Run", "run", "artefacts", "feature_blocks", "recipe_hash", "tensor_sha256"]


@dataclass
class Run:
    """What :func:`run` made: the quantized model, its cost, the text artefacts, and scores if it evaluated."""

    model: nn.Module
    name: str  # the model's name, e.g. "imdn" (for messages and result files)
    scale: int
    quantize_seconds: float
    cost: ModelCost
    files: dict[str, str]  # run-folder text files by name: placement.txt, bitmap.txt/.svg, routing.txt
    folder: Path | None = None
    scores: list[DatasetScore] = field(default_factory=list)
    record: dict[str, Any] = field(default_factory=dict)  # what srq.json records beyond the model itself

    @property
    def summary(self) -> str:
        """One line: model, method, bits, time, size and BitOPs against FP32."""
        r: dict[str, Any] = getattr(self.model, "srq_recipe", None) or {}
        c = self.cost
        return (f"{self.name} x{self.scale} {r.get('method', '?')} w{r.get('w_bits', '?')}a{r.get('a_bits', '?')}: "
                f"{self.quantize_seconds:.1f} s; size {c.size_kb:.1f} KB (FP32 {c.fp32_size_kb:.1f} KB), "
                f"BitOPs {c.bitops / 1e9:.1f} G (FP32 {c.fp32_bitops / 1e9:.1f} G)")


def run(model: nn.Module, recipe: Recipe, calib: torch.Tensor | list[torch.Tensor], *, name: str, scale: int,
        output: str | os.PathLike | None = None, calibration: dict[str, Any] | None = None,
        datasets: Sequence[str] = (), eval_options: dict[str, Any] | None = None,
        checkpoints: ContextManager | None = None, progress: bool = True,
        extra: dict[str, Any] | None = None) -> Run:
    """Quantize ``model`` (float, on its device; not modified) with ``recipe`` on ``calib``; save and score it.

    Args:
        name, scale: what the model is (recorded; ``scale`` also sets the cost's output size and the evaluation).
        output: run folder to write (replaced whole); None: keep the model in memory only.
        calibration: what the calibration inputs were (e.g. set name, images, patch); their SHA-256 is added.
        datasets: benchmark sets to score the quantized model on after it is saved (empty: no evaluation).
        eval_options: keyword arguments of :func:`srq.engine.evaluate.evaluate` (tile, split, score_logs, ...).
        checkpoints: a context manager that makes the quantization resumable (``srq.engine.checkpoint.resumable``).
        extra: more entries for ``srq.json``.
    """
    t0 = time.perf_counter()
    with checkpoints if checkpoints is not None else nullcontext():
        qmodel = api.quantize(model, recipe, calib, progress=progress)
    seconds = time.perf_counter() - t0
    cost = model_cost(qmodel, scale=scale)
    check = collapse_check(qmodel, model, calib)  # a few forward passes; per-layer only when collapsed
    message = collapse_warning(check, f"{name} x{scale} quantized")
    if message:
        warnings.warn(message)
    blocks = feature_blocks(model, recipe, calib)
    record = {"calibration": {**(calibration or {}), "sha256": tensor_sha256(calib)}, "quantize_seconds": seconds,
              "recipe_hash": recipe_hash(recipe), "cost": cost.to_dict(), "provenance": provenance(),
              "collapse_check": check, **blocks, **(extra or {})}
    result = Run(qmodel, name, scale, seconds, cost, artefacts(qmodel, f"{name} x{scale}", blocks.get("blocks")),
                 record=record)
    if output is not None:
        result.folder = api.save(qmodel, output, files=result.files, extra=record)
    if datasets:
        result.scores = evaluate(qmodel, list(datasets), scale, progress=progress, **(eval_options or {}))
    return result


def feature_blocks(model: nn.Module, recipe: Recipe, calib: torch.Tensor | list[torch.Tensor]) -> dict[str, Any]:
    """``{"blocks": [...]}``: the modules whose outputs the recipe's feature loss aligned (its ``blocks`` pattern,
    or the automatic rule); ``{}`` for recipes without a feature loss (or with its weight at 0)."""
    if not hasattr(recipe, "blocks") or not _uses_feature_loss(recipe.to_dict()):
        return {}
    example = calib[:1] if isinstance(calib, torch.Tensor) else calib[0][None] if calib[0].dim() == 3 else calib[0]
    return {"blocks": resolve_blocks(model, getattr(recipe, "blocks"), example.to(next(model.parameters()).device))}


def _uses_feature_loss(fields: dict[str, Any]) -> bool:
    """Whether a recipe (its ``to_dict()``) trains with a feature term: some ``lambda_feat`` above 0, not counting
    a ``finetune_config`` that ``fine_tune=False`` switches off."""
    for key, value in fields.items():
        if key == "lambda_feat" and isinstance(value, (int, float)) and value > 0:
            return True
        if isinstance(value, dict) and not (key == "finetune_config" and fields.get("fine_tune") is False) \
                and _uses_feature_loss(value):
            return True
    return False


def artefacts(qmodel: nn.Module, title: str, blocks: list[str] | None = None) -> dict[str, str]:
    """The text files of a run folder: the placement (with the layers left float, and why, and the ``blocks`` whose
    outputs a feature loss aligned), and the method's bit map (text and SVG), routing table and training log (CSV
    and SVG) where its report has them."""
    text = format_placement(placement(qmodel), float_layers(qmodel))
    if blocks is not None:
        text += (f"\n\nfeature-loss blocks ({len(blocks)}; set with -p blocks=REGEX): {', '.join(blocks)}" if blocks
                 else "\n\nfeature-loss blocks: none found (pixel loss only; set with -p blocks=REGEX)")
    report = api.current_report(qmodel)
    if report and report.get("quantizer_grids"):  # methods that mix grids (Q-MambaIR, QuantSR) say which is where
        from .quant.grid_placement import format_grid_placement

        text += "\n\n" + format_grid_placement(report["quantizer_grids"])
    files = {"placement.txt": text + "\n"}
    if report and ("a" in report or "w" in report):
        from .report import bit_offsets_svg, format_bit_map

        files["bitmap.txt"] = format_bit_map(report) + "\n"
        recipe = getattr(qmodel, "srq_recipe", None) or {}
        files["bitmap.svg"] = bit_offsets_svg(report, f"{title} {recipe.get('method', '')} "
                                                      f"w{recipe.get('w_bits')}a{recipe.get('a_bits')}: "
                                                      f"bit offset per layer")
    if report and "routing" in report:
        from .report import format_routing

        files["routing.txt"] = format_routing(report) + "\n"
    if report and report.get("training", {}).get("log"):
        from .report import training_csv, training_svg

        log = report["training"]["log"]
        files["training.csv"] = training_csv(log)
        files["training.svg"] = training_svg(log, f"{title}: quantization-aware training")
    return files


def recipe_hash(recipe: Recipe | dict) -> str:
    """First 8 hex digits of the SHA-256 of the recipe's canonical JSON (sorted keys): equal recipes, equal hash.
    A dict is taken as a recipe's ``to_dict()`` (e.g. read back from a file)."""
    data = recipe if isinstance(recipe, dict) else recipe.to_dict()
    text = json.dumps(data, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:8]


def tensor_sha256(data: torch.Tensor | list[torch.Tensor]) -> str:
    """SHA-256 of calibration inputs (a tensor or a list of tensors), to tell runs' inputs apart."""
    h = hashlib.sha256()
    for t in data if isinstance(data, list) else [data]:
        h.update(t.detach().contiguous().cpu().numpy().tobytes())
    return h.hexdigest()
