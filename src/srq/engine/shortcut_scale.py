"""Learnable shortcut scales (QuantSR's depth-dynamic blocks, generically): ``y = γ_b·f_b(x, …) + (1 − γ_b)·x``.

Each residual-shaped block ``f_b`` of a network (its output a tensor of its first argument's shape) gets a learnable
scalar ``γ_b`` (init 1: the network computes exactly what it did, bit for bit, since ``1·f + 0·x = f``) that mixes
its output with its input. ``γ_b = 0`` turns the block into the identity, so ``|γ_b|`` tells how much the network
leans on the block; QSA (:mod:`srq.engine.slimming`) removes the blocks with the smallest ``|γ_b|``.

The block stays where it is, under its own name: ``γ_b`` is its parameter ``shortcut_gamma`` (state-dict key
``<name>.shortcut_gamma``) and the mix is a forward hook on it, so layer names, placement and per-layer rules are
those of the unscaled network. Which blocks are scaled is recorded in ``srq.json`` (``structure``) so
:func:`srq.load` scales them again.
"""

from __future__ import annotations


import torch
from torch import nn

from ..errors import SrqError
from .blocks import find_blocks, resolve_blocks

__all__ = ["GAMMA", "add_shortcut_scale", "is_shortcut_scaled", "residual_blocks", "add_shortcut_scales",
           "scale_blocks", "shortcut_gammas"]

GAMMA = "shortcut_gamma"  # the parameter's name on a scaled block


def _mix(module: nn.Module, args: tuple, output: torch.Tensor) -> torch.Tensor:
    """The forward hook of a scaled block: ``γ·output + (1 − γ)·args[0]``."""
    g = getattr(module, GAMMA).to(output.dtype)
    return g * output + (1 - g) * args[0]


def is_shortcut_scaled(module: nn.Module) -> bool:
    """Whether ``module`` carries a learnable shortcut scale."""
    return isinstance(getattr(module, GAMMA, None), nn.Parameter)


def add_shortcut_scale(block: nn.Module) -> None:
    """Give ``block`` a shortcut scale γ = 1 (a () parameter on the block's device) and its mixing hook, in place."""
    if is_shortcut_scaled(block):
        return
    device = next(block.parameters()).device
    block.register_parameter(GAMMA, nn.Parameter(torch.ones((), device=device)))
    block.register_forward_hook(_mix)


def residual_blocks(model: nn.Module, names: list[str], example: torch.Tensor) -> list[str]:
    """Those of ``names`` that run on ``example`` ((1, C, h, w)) and, every time, return one tensor of the shape of
    their first argument (a tensor), in the given order."""
    modules = dict(model.named_modules())
    shapes: dict[str, bool] = {}

    def hook(name: str):
        def record(m: nn.Module, args: tuple, kwargs: dict, out: object) -> None:
            ok = bool(args) and isinstance(args[0], torch.Tensor) and isinstance(out, torch.Tensor) \
                and out.shape == args[0].shape
            shapes[name] = shapes.get(name, True) and ok
        return record

    handles = [modules[n].register_forward_hook(hook(n), with_kwargs=True) for n in names]
    try:
        with torch.no_grad():
            model(example.to(next(model.parameters()).device))
    finally:
        for h in handles:
            h.remove()
    return [n for n in names if shapes.get(n)]


def scale_blocks(model: nn.Module, names: list[str]) -> None:
    """Give the sub-modules ``names`` of ``model`` a shortcut scale γ = 1 (:func:`add_shortcut_scale`), in place."""
    for name in names:
        add_shortcut_scale(model.get_submodule(name))


def add_shortcut_scales(model: nn.Module, example: torch.Tensor, pattern: str | None = None) -> list[str]:
    """Scale ``model``'s residual-shaped blocks (srq's blocks, :func:`~srq.engine.blocks.find_blocks`, or those
    matching ``pattern``) in place; returns their names. One-line :class:`SrqError` if there are none."""
    names = resolve_blocks(model, pattern, example) if pattern is not None else find_blocks(model, example)
    found = residual_blocks(model, names, example)
    if not found:
        raise SrqError("shortcut scales: the model has no residual-shaped blocks (blocks whose output has their "
                       "input's shape); name them with blocks=REGEX or turn shortcut_scale off")
    scale_blocks(model, found)
    return found


def shortcut_gammas(model: nn.Module) -> dict[str, float]:
    """``{block name: γ}`` of every shortcut-scaled block of ``model``."""
    return {n: float(getattr(m, GAMMA).detach()) for n, m in model.named_modules() if is_shortcut_scaled(m)}
