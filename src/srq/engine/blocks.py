"""The blocks of a network, whose outputs the feature term of the distillation loss aligns.

Automatic rule (:func:`find_blocks`): candidates are the modules that are not the root, not plain containers
(``nn.Sequential``, ``nn.ModuleList``, ``nn.ModuleDict``), have parameters and children, run in a forward pass on
an example input, and are not *single layers*. A single layer is a wrapper that computes one (possibly factorised
or re-parameterisable) convolution: it holds at most one conv/linear layer (conv + norm + activation wrappers), or
each of its conv/linear/norm layers reads the wrapper's input or another one's output unchanged (BSConv's 1×1 +
depthwise 3×3 pair, a re-param conv's parallel 3×3/1×1/identity branches). Candidates are grouped by class (an
instance nested in another instance of its class does not count); the class maximising
``instances × share of all parameters they hold`` wins: IMDN's six IMDBs rather than the CCA layers inside them,
MambaIRv2's 20 layers rather than its 4 groups, the 5 ResBlocks of a BSConv network rather than its 37 BSConvs.

Override (:func:`resolve_blocks`): a regular expression that must match a whole module name (``"body\\.\\d+"``).
"""

from __future__ import annotations

import contextlib
import re
from collections import defaultdict
from typing import Iterator

import torch
from torch import nn

from ..errors import ConfigError

__all__ = ["find_blocks", "resolve_blocks", "capture_outputs", "is_single_layer", "check_blocks_pattern"]

_CONTAINERS = (nn.Sequential, nn.ModuleList, nn.ModuleDict)
_WEIGHTED = (nn.modules.conv._ConvNd, nn.Linear)
_LINEAR = (*_WEIGHTED, nn.modules.batchnorm._NormBase, nn.LayerNorm, nn.GroupNorm)


def resolve_blocks(model: nn.Module, pattern: str | None = None, example: torch.Tensor | None = None) -> list[str]:
    """The block names the feature loss uses: :func:`find_blocks` (``pattern`` None) or the modules whose whole
    name matches the regular expression ``pattern``; one-line :class:`~srq.errors.ConfigError` (with example
    names) if it matches none. ``example``: an input of the model ((1, C, h, w)), for the automatic rule."""
    if pattern is None:
        return find_blocks(model, example)
    try:
        regex = re.compile(pattern)
    except re.error as e:
        raise ConfigError(f"blocks={pattern!r} is not a regular expression: {e}") from None
    names = [n for n, _ in model.named_modules() if n and regex.fullmatch(n)]
    if not names:
        examples = ", ".join(n for n, m in model.named_modules() if n and any(True for _ in m.children()))
        examples = examples if len(examples) < 200 else examples[:200].rsplit(",", 1)[0] + ", ..."
        raise ConfigError(f"blocks={pattern!r} matches no module name (it must match a whole name); the model's "
                          f"composite modules are e.g. {examples}")
    return names


def find_blocks(model: nn.Module, example: torch.Tensor | None = None) -> list[str]:
    """Names of the model's blocks by the automatic rule (module docstring); empty if nothing repeats.

    ``example``: an input ((1, C, h, w)) for the forward pass that tells single layers and unused modules apart;
    None: a random (1, C, 16, 16) input, C the first convolution's input channels. If that forward pass fails the
    rule goes by structure alone (single layers: at most one conv/linear layer inside).
    """
    modules = dict(model.named_modules())
    found: dict[type, list[str]] = defaultdict(list)
    for name, m in modules.items():
        if name and not isinstance(m, _CONTAINERS) and any(True for _ in m.children()) \
                and any(True for _ in m.parameters()) and _weighted_count(m) > 1:
            found[type(m)].append(name)
    groups = [g for g in (_outermost(names) for names in found.values()) if len(g) >= 2]
    trace = _trace(model, [n for g in groups for n in g], example)
    if trace is not None:
        ran, single = trace
        groups = [[n for n in g if n in ran] for g in groups if not all(n in single for n in g if n in ran)]
        groups = [g for g in groups if len(g) >= 2]
    total = sum(p.numel() for p in model.parameters()) or 1

    def score(names: list[str]) -> float:  # instances × share of the parameters they hold
        return len(names) * sum(p.numel() for n in names for p in modules[n].parameters()) / total

    return max(groups, key=score) if groups else []


def is_single_layer(model: nn.Module, name: str, example: torch.Tensor | None = None) -> bool:
    """Whether the sub-module ``name`` is a single (possibly factorised or re-parameterisable) layer."""
    m = model.get_submodule(name)
    if _weighted_count(m) <= 1:
        return True
    trace = _trace(model, [name], example)
    return trace is not None and name in trace[1]


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


def _weighted_count(m: nn.Module) -> int:
    return sum(isinstance(x, _WEIGHTED) for x in m.modules())


def _outermost(names: list[str]) -> list[str]:
    return [n for n in names if not any(n.startswith(o + ".") for o in names if o != n)]


def _example(model: nn.Module) -> torch.Tensor | None:
    first = next((m for m in model.modules() if isinstance(m, nn.modules.conv._ConvNd)), None)
    param = next(model.parameters(), None)
    if first is None or param is None or first.in_channels < 1:
        return None
    gen = torch.Generator().manual_seed(0)
    return torch.rand(1, first.in_channels, 16, 16, generator=gen).to(param)


def _trace(model: nn.Module, names: list[str], example: torch.Tensor | None
           ) -> tuple[set[str], set[str]] | None:
    """One forward pass on ``example``: which of ``names`` ran, and which of those are single layers (each
    conv/linear/norm layer inside reads the module's input, or another such layer's output, unchanged). None if
    the pass fails."""
    if not names:
        return set(), set()
    x = example[:1] if example is not None else _example(model)
    if x is None:
        return None
    modules = dict(model.named_modules())
    inner = {n: [c for c, m in modules.items() if c.startswith(n + ".") and isinstance(m, _LINEAR)] for n in names}
    seen: dict[str, list[torch.Tensor]] = defaultdict(list)  # inputs of the blocks and layers, outputs of layers
    handles = []

    def record_input(key: str):
        return lambda m, args: seen[key].append(args[0].detach().clone()) \
            if args and isinstance(args[0], torch.Tensor) else None

    def record_output(key: str):
        return lambda m, args, out: seen[key].append(out.detach().clone()) if isinstance(out, torch.Tensor) else None

    for n in names:
        handles.append(modules[n].register_forward_pre_hook(record_input(f"in:{n}")))
    for layer in {c for cs in inner.values() for c in cs}:
        handles.append(modules[layer].register_forward_pre_hook(record_input(f"in:{layer}")))
        handles.append(modules[layer].register_forward_hook(record_output(f"out:{layer}")))
    try:
        with torch.no_grad():
            model(x.to(next(model.parameters()).device))
    except Exception:  # a model that needs another input: go by structure alone
        return None
    finally:
        for h in handles:
            h.remove()

    def same(a: torch.Tensor, options: list[torch.Tensor]) -> bool:
        return any(a.shape == b.shape and torch.equal(a, b) for b in options)

    ran = {n for n in names if seen.get(f"in:{n}")}
    single = set()
    for n in ran:
        sources = seen[f"in:{n}"] + [t for c in inner[n] for t in seen.get(f"out:{c}", [])]
        if all(same(t, sources) for c in inner[n] for t in seen.get(f"in:{c}", [])):
            single.add(n)
    return ran, single


def check_blocks_pattern(owner: object, pattern: str | None) -> None:
    """One-line :class:`~srq.errors.ConfigError` if a recipe's ``blocks`` is not a regular expression."""
    if pattern is not None:
        try:
            re.compile(pattern)
        except re.error as e:
            raise ConfigError(f"{type(owner).__name__}.blocks must be a regular expression over module names "
                              f"(or None: automatic), got {pattern!r}: {e}") from None
