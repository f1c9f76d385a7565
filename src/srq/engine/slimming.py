"""Block slimming (QuantSR+'s QSA, generically): remove whole residual blocks until a cost budget is met, and the
structure record that lets :func:`srq.load` rebuild a slimmed, shortcut-scaled network.

A removed block is replaced by :class:`RemovedBlock` (an ``nn.Identity`` that also takes a block's further arguments,
such as a Swin layer's ``x_size``: what a block with shortcut scale γ = 0 computes): its parameters,
quantizers and MACs are gone from the model, so :func:`srq.quant.cost.model_cost` counts the slimmed network. The
structure record (``srq.json`` ``structure``) is ``{"version": 1, "blocks": [all candidate blocks, in execution
order], "removed": [...], "shortcut_scale": [scaled blocks that remain]}``.
"""

from __future__ import annotations

import copy
import warnings
from typing import Any

import torch
from torch import nn

from ..errors import SrqError
from ..quant import QuantConfig, prepare
from ..quant.cost import model_cost
from .blocks import _example, find_blocks, resolve_blocks
from .shortcut_scale import GAMMA, is_shortcut_scaled, residual_blocks, scale_blocks

__all__ = ["RemovedBlock", "STRUCTURE_VERSION", "METRICS", "remove_blocks", "structure_record", "apply_structure",
           "cost_of", "plan_removals", "least_critical", "segment_ends", "prepare_shortcut_scaled"]

STRUCTURE_VERSION = 1
METRICS = ("bitops", "size")  # what a QSA budget bounds: BitOPs per image, or storage bits


class RemovedBlock(nn.Identity):
    """A removed block: returns its first argument (and ignores the others); no parameters."""

    def forward(self, input: torch.Tensor, *args: object, **kwargs: object) -> torch.Tensor:
        return input


def _set_module(model: nn.Module, name: str, new: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent_name) if parent_name else model, child, new)


def remove_blocks(model: nn.Module, names: list[str]) -> None:
    """Replace the sub-modules ``names`` of ``model`` by :class:`RemovedBlock`, in place."""
    for name in names:
        model.get_submodule(name)  # raises AttributeError for a name the model lacks
        _set_module(model, name, RemovedBlock())


def structure_record(blocks: list[str], removed: list[str], scaled: list[str]) -> dict[str, Any]:
    """The ``structure`` entry of ``srq.json`` (module docstring)."""
    return {"version": STRUCTURE_VERSION, "blocks": list(blocks), "removed": list(removed),
            "shortcut_scale": [n for n in scaled if n not in removed]}


def apply_structure(model: nn.Module, record: dict[str, Any] | None) -> nn.Module:
    """Rebuild a recorded structure on a float ``model`` (before quantizers are inserted): remove the ``removed``
    blocks, scale the ``shortcut_scale`` ones; in place, and records it as ``model.srq_structure``. None: unchanged.
    One-line :class:`SrqError` for a record of another version or a name the model lacks."""
    if record is None:
        return model
    if record.get("version") != STRUCTURE_VERSION:
        raise SrqError(f"structure version {record.get('version')!r} is not readable by this srq "
                       f"(it reads {STRUCTURE_VERSION})")
    modules = dict(model.named_modules())
    missing = [n for n in (*record.get("removed", []), *record.get("shortcut_scale", [])) if n not in modules]
    if missing:
        raise SrqError(f"the saved structure names blocks the model lacks ({', '.join(missing[:3])}); the run folder "
                       f"belongs to another architecture")
    remove_blocks(model, list(record.get("removed", [])))
    scale_blocks(model, list(record.get("shortcut_scale", [])))
    setattr(model, "srq_structure", dict(record))
    return model


def cost_of(model: nn.Module, metric: str, input_size: tuple[int, int]) -> float:
    """The model's ``metric`` (:data:`METRICS`): BitOPs per image of ``input_size`` (h, w), or storage bits."""
    cost = model_cost(model, input_size)
    return float(cost.bitops if metric == "bitops" else cost.size_bits)


def _without(model: nn.Module, name: str, metric: str, input_size: tuple[int, int]) -> float:
    """``metric`` with block ``name`` removed (put back afterwards)."""
    block = model.get_submodule(name)
    _set_module(model, name, RemovedBlock())
    try:
        return cost_of(model, metric, input_size)
    finally:
        _set_module(model, name, block)


def plan_removals(model: nn.Module, blocks: list[str], budget: float, metric: str,
                  input_size: tuple[int, int]) -> int:
    """The fewest of ``blocks`` whose removal can bring ``metric`` to ``budget`` × its current value (0 < budget ≤
    1): removing the costliest first. One-line :class:`SrqError` if removing them all does not."""
    full = cost_of(model, metric, input_size)
    savings = sorted((full - _without(model, n, metric, input_size) for n in blocks), reverse=True)
    target, left = budget * full, full
    for count, saved in enumerate(savings):
        if left <= target:
            return count
        left -= saved
    if left <= target:
        return len(savings)
    raise SrqError(f"qsa_budget={budget:g} cannot be met: removing all {len(blocks)} removable blocks leaves "
                   f"{left / full:.3f} of the {metric}; give a larger budget")


def least_critical(model: nn.Module, blocks: list[str]) -> str:
    """Of the remaining ``blocks`` (each shortcut-scaled), the one with the smallest ``|γ|`` (ties: the later
    block)."""
    modules = dict(model.named_modules())
    scored = [(abs(float(getattr(modules[n], GAMMA).detach())), -i, n) for i, n in enumerate(blocks)
              if n in modules and is_shortcut_scaled(modules[n])]
    if not scored:
        raise SrqError("QSA: no shortcut-scaled block is left to remove")
    return min(scored)[2]


def segment_ends(blocks: list[str], removed: list[str]) -> list[str]:
    """For each remaining block (``blocks`` in execution order), the last block of its segment: itself, or the last
    of the removed blocks that directly follow it (whose function it now stands for). Removed blocks before the first
    remaining one start no segment."""
    ends: list[str] = []
    for name in blocks:
        if name not in removed:
            ends.append(name)
        elif ends:
            ends[-1] = name
    return ends


def prepare_shortcut_scaled(model: nn.Module, config: QuantConfig, example: torch.Tensor | None = None,
                            pattern: str | None = None) -> nn.Module:
    """A deep copy of the float ``model`` with its residual-shaped blocks scaled (as :func:`add_shortcut_scales`;
    recorded as ``srq_structure`` for :func:`srq.load`; none, with a warning, if it has none), then quantizers
    inserted by ``config``."""
    copy_ = copy.deepcopy(model)
    probe = example[:1] if example is not None else _example(copy_)
    if probe is None:
        raise SrqError("shortcut scales need an example input to find the residual-shaped blocks; pass one")
    names = resolve_blocks(copy_, pattern, probe) if pattern is not None else find_blocks(copy_, probe)
    names = residual_blocks(copy_, names, probe)
    if names:
        scale_blocks(copy_, names)
        setattr(copy_, "srq_structure", structure_record(names, [], names))
    else:
        warnings.warn("shortcut scales: the model has no residual-shaped blocks (blocks whose output has their "
                      "input's shape); it is quantized without them (name blocks with blocks=REGEX)")
    return prepare(copy_, config, example_input=example)
