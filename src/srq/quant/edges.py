"""First and last layers of a model, found by data flow on an example input.

Rule: the *first* layers are the first quantizable layer that runs, every layer fed the model input, and every
layer fed directly by a first layer; the *last* layers are the last quantizable layer that runs and every layer
that directly feeds a last layer. "Directly" means the tensor goes from one layer to the next with nothing in
between but shape-only ops (view, reshape, flatten, permute, transpose, contiguous, squeeze, pixel (un)shuffle,
dropout), and nothing else reads it on the way. Any other op ends the chain: a nonlinearity (in place or not),
an add (a residual), a normalisation, a concatenation, an interpolation, a second reader of the same tensor (a
skip). So a separable stem (1x1 then depthwise 3x3) is two first layers, ``conv -> ReLU -> conv`` one, and a
head ``conv -> PixelShuffle -> conv`` two last layers.

The flow is recorded on one no-grad forward pass: forward hooks give each layer's input and output tensor, a
``TorchFunctionMode`` sees every torch op that reads them. It works on models ``torch.fx`` cannot trace. Reads
outside torch (a custom kernel called with ``.data_ptr()``) are not seen.
"""

from __future__ import annotations

import weakref
from typing import Any, Callable, Iterator

import torch
from torch import nn
from torch.overrides import TorchFunctionMode

__all__ = ["edge_layers", "SHAPE_ONLY"]

# ops (by name) that pass a tensor on without changing its values
SHAPE_ONLY = frozenset({"view", "view_as", "reshape", "reshape_as", "flatten", "unflatten", "permute", "transpose",
                        "t", "movedim", "contiguous", "clone", "squeeze", "unsqueeze", "pixel_shuffle",
                        "pixel_unshuffle", "dropout"})


def _tensors(value: Any) -> Iterator[torch.Tensor]:
    """Every tensor in a (nested) value: a tensor, tuple/list or dict values."""
    if isinstance(value, torch.Tensor):
        yield value
    elif isinstance(value, (tuple, list)):
        for v in value:
            yield from _tensors(v)
    elif isinstance(value, dict):
        for v in value.values():
            yield from _tensors(v)


def _version(t: torch.Tensor) -> int:
    """The tensor's in-place version counter (-1 for an inference tensor, which has none)."""
    try:
        return t._version
    except RuntimeError:
        return -1


class _Flow(TorchFunctionMode):
    """Counts the torch ops that read each tracked tensor; shape-only copies of a tracked tensor are tracked with
    their source as parent. Tensors are held weakly (a dead one's id may be reused)."""

    def __init__(self) -> None:
        super().__init__()
        self.ids: dict[int, tuple[weakref.ref, int]] = {}
        self.readers: list[int] = []  # per serial number
        self.parent: list[int | None] = []

    def track(self, t: torch.Tensor, parent: int | None = None) -> int:
        serial = len(self.readers)
        self.readers.append(0)
        self.parent.append(parent)
        self.ids[id(t)] = (weakref.ref(t), serial)
        return serial

    def serial(self, t: torch.Tensor) -> int | None:
        entry = self.ids.get(id(t))
        return entry[1] if entry is not None and entry[0]() is t else None

    def __torch_function__(self, func: Callable, types: Any, args: tuple = (), kwargs: dict | None = None) -> Any:
        kwargs = kwargs or {}
        given = list(_tensors((args, kwargs)))
        tracked = [(t, s) for t in given if (s := self.serial(t)) is not None]
        if not tracked:
            return func(*args, **kwargs)
        before = [_version(t) for t, _ in tracked]
        out = func(*args, **kwargs)
        made = list(_tensors(out))
        changed = [t for (t, _), v in zip(tracked, before) if _version(t) != v]  # written in place
        if not changed and all(any(m is g for g in given) for m in made):
            return out  # metadata (size, shape, ...) or a no-op such as .float() of a float tensor
        for _, s in tracked:
            self.readers[s] += 1
        for t in changed:  # no longer what the layer produced
            self.ids.pop(id(t), None)
        name = getattr(func, "__name__", "")
        if name in SHAPE_ONLY and not changed and len(made) == 1 and tracked[0][0] is given[0]:
            self.track(made[0], parent=tracked[0][1])
        return out


def edge_layers(model: nn.Module, example: torch.Tensor, names: list[str]) -> tuple[list[str], set[str], set[str]]:
    """``(order, first, last)`` for the layers ``names`` (module names) on ``example``: the ones that ran, in the
    order they first ran, and the first and last layers by the rule of the module docstring. The model runs once
    in eval mode without autograd; its train/eval mode is kept."""
    modules = dict(model.named_modules())
    flow = _Flow()
    order: list[str] = []
    inputs: dict[str, int | None] = {}  # name -> serial of its first tensor input (first call)
    outputs: dict[str, int] = {}  # name -> serial of its output (first call)

    def pre(name: str, args: tuple) -> None:
        if name not in order:
            order.append(name)
            given = next(_tensors(args), None)
            inputs[name] = None if given is None else flow.serial(given)

    def post(name: str, out: Any) -> None:
        made = next(_tensors(out), None)
        if name not in outputs and made is not None:
            outputs[name] = flow.track(made)

    handles = [h for n in names for h in (
        modules[n].register_forward_pre_hook(lambda m, a, n=n: pre(n, a)),
        modules[n].register_forward_hook(lambda m, a, o, n=n: post(n, o)))]
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad(), flow:
            source_of_input = flow.track(example)
            model(example)
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    if not order:
        return order, set(), set()

    made_by = {s: n for n, s in outputs.items()}

    def source(serial: int | None, sole: bool) -> int | None:
        """The tensor behind shape-only copies (each read once when ``sole``), stopping at a layer's output."""
        while serial is not None and serial not in made_by:
            up = flow.parent[serial]
            if up is None or sole and (flow.readers[serial] != 1 or flow.readers[up] != 1):
                break
            serial = up
        return serial

    first = {order[0]} | {n for n in order if source(inputs[n], False) == source_of_input}
    last = {order[-1]}
    feeder = {}  # layer -> the layer that feeds it directly
    for n in order:
        src = source(inputs[n], True)
        if src in made_by and flow.readers[src] == 1:
            feeder[n] = made_by[src]
    grown = True
    while grown:  # follow direct edges forward from the first layers, backward from the last ones
        grown = False
        for n, src_layer in feeder.items():
            if src_layer in first and n not in first:
                first.add(n)
                grown = True
            if n in last and src_layer not in last:
                last.add(src_layer)
                grown = True
    return order, first, last
