"""Which module's forward modifies, in place, a tensor that autograd needs (for a one-line error).

Autograd only says *that* a saved tensor was modified (``... which is output 0 of Sigmoid, is at version 1``).
:func:`find_inplace` re-runs one forward pass recording every in-place tensor operation (``x *= y``, ``h += x``,
``x.relu_()``, ``F.relu(x, inplace=True)``, ``x[...] = y``) with the module whose forward ran it, and
:func:`inplace_message` picks the one autograd complained about. Used only when the backward pass has failed,
so it costs nothing otherwise.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.overrides import TorchFunctionMode

__all__ = ["InplaceOp", "find_inplace", "inplace_message"]

_NOT_INPLACE = {"requires_grad_", "share_memory_", "retain_grad_", "__setstate__"}
_OPERATORS = {"__iadd__": "+=", "__isub__": "-=", "__imul__": "*=", "__itruediv__": "/=", "add_": "+=",
              "sub_": "-=", "mul_": "*=", "div_": "/="}
_REWRITE = {"+=": "h = h + x", "-=": "h = h - x", "*=": "out = out * x", "/=": "out = out / x"}


@dataclass
class InplaceOp:
    """One in-place operation: the module whose forward ran it (qualified name, class), the operation, what made
    the tensor it modified (autograd node name, or None for a leaf) and whose output that was (a child module's
    name, or None), and the tensor's shape."""

    module: str
    module_class: str
    op: str
    made_by: str | None
    child: str | None
    shape: tuple[int, ...]


def find_inplace(model: nn.Module, x: torch.Tensor) -> list[InplaceOp]:
    """The in-place operations of one forward pass of ``model`` on ``x`` (gradients on, as in training)."""
    modules = dict(model.named_modules())
    stack: list[str] = []
    outputs: dict[int, str] = {}  # id of a module's output → the module's name (outputs kept alive below)
    alive: list[Any] = []
    ops: list[InplaceOp] = []

    class Record(TorchFunctionMode):
        def __torch_function__(self, func, types, args=(), kwargs=None):
            kwargs = kwargs or {}
            name = getattr(func, "__name__", str(func))
            inplace = (name.endswith("_") and not name.startswith("_") and name not in _NOT_INPLACE) \
                or (name.startswith("__i") and name.endswith("__")) or name == "__setitem__" \
                or kwargs.get("inplace") is True
            if inplace and args and isinstance(args[0], torch.Tensor) and stack:
                t = args[0]
                where = stack[-1]
                ops.append(InplaceOp(where, type(modules[where]).__name__, name,
                                     type(t.grad_fn).__name__ if t.grad_fn is not None else None,
                                     outputs.get(id(t)), tuple(t.shape)))
            return func(*args, **kwargs)

    def enter(name: str):
        return lambda m, args: stack.append(name)

    def leave(name: str):
        def hook(m: nn.Module, args: Any, out: Any) -> None:
            stack.pop()
            if isinstance(out, torch.Tensor):
                outputs[id(out)] = name
                alive.append(out)
        return hook

    handles = [h for n, m in modules.items() for h in (m.register_forward_pre_hook(enter(n or "<model>")),
                                                          m.register_forward_hook(leave(n or "<model>")))]
    modules["<model>"] = model
    try:
        with torch.enable_grad(), Record():
            model(x)
    finally:
        for h in handles:
            h.remove()
    return ops


def inplace_message(model: nn.Module, x: torch.Tensor, error: str) -> str:
    """One line naming the module whose forward modified the tensor in autograd's ``error``, and what to write."""
    found = re.search(r"\[\w+\.?\w* \[([\d, ]*)\]\], which is output \d+ of (\w+)", error)
    shape = tuple(int(v) for v in found[1].split(",") if v.strip()) if found else None
    node = found[2] if found else None
    try:
        ops = find_inplace(model, x)
    except Exception:  # noqa: BLE001 - the diagnosis must not hide the original problem
        ops = []
    # activations with inplace=True modify their input, which the layer before rarely needs: those last
    candidates = [o for o in ops if (node is None or (o.made_by or "").startswith(node))
                  and (shape is None or o.shape == shape)] or ops
    what = f" (a tensor of shape {list(shape)} made by {node})" if found and shape is not None else ""
    if not candidates:
        return (f"the model's forward modifies a tensor in place{what} that autograd needs to fine-tune it "
                f"(e.g. `x *= y`, `h += x` after an activation); write `x = x * y` / `h = h + x` instead")
    o = candidates[0]
    operator = _OPERATORS.get(o.op, o.op)
    of = f"the output of `{o.child}`" if o.child and o.child != o.module else f"a tensor made by {o.made_by or 'it'}"
    fix = f"write `{_REWRITE[operator]}` instead of `{_REWRITE[operator].split(' = ')[0]} {operator} ...`" \
        if operator in _REWRITE else f"use the out-of-place form of `{o.op}` (e.g. `inplace=False`)"
    return (f"the forward of `{o.module}` ({o.module_class}) modifies {of} in place (`{operator}`), and autograd "
            f"needs that tensor to fine-tune the model: {fix}")
