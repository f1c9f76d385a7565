"""Helpers for ``adapt_state_dict`` functions: Paddle ``Linear`` layouts and derived buffers.

* Paddle stores ``Linear`` weights [in, out], torch [out, in]. Which entries are ``Linear`` weights is
  taken from the architecture (the ``nn.Linear`` modules it builds), never guessed from a tensor's
  shape; only the *direction* of a file is read off its non-square ``Linear`` weights.
* Buffers that follow from the configuration (relative-position indices, shifted-window masks) are
  recomputed by the models; a checkpoint's copy is compared with the recomputation and dropped.
"""

from __future__ import annotations

import functools

import torch
from torch import nn

from ..errors import SrqError

__all__ = ["linear_weight_shapes", "transpose_linear_weights", "check_derived_buffer"]


@functools.lru_cache(maxsize=None)
def linear_weight_shapes(cls: type, **kwargs) -> dict[str, tuple[int, int]]:
    """``{"<module>.weight": (out, in)}`` for every ``nn.Linear`` in ``cls(**kwargs)`` (built once, cached)."""
    net = cls(**kwargs)
    return {f"{name}.weight": (m.out_features, m.in_features)  # the weight's shape
            for name, m in net.named_modules() if isinstance(m, nn.Linear)}


def transpose_linear_weights(state: dict[str, torch.Tensor], linear_shapes: dict[str, tuple[int, int]],
                             source: str = "checkpoint") -> dict[str, torch.Tensor]:
    """Return ``state`` with ``Linear`` weights in torch's [out, in] layout.

    A file whose non-square ``Linear`` weights are all [in, out] (a Paddle export) has every ``Linear``
    weight named in ``linear_shapes`` transposed, square ones included; a file in torch layout is
    returned unchanged; a file mixing both is refused with :class:`SrqError`.
    """
    votes = set()
    for name, (n_out, n_in) in linear_shapes.items():
        t = state.get(name)
        if t is None or t.dim() != 2 or n_out == n_in:
            continue
        if tuple(t.shape) == (n_out, n_in):
            votes.add("torch")
        elif tuple(t.shape) == (n_in, n_out):
            votes.add("paddle")
    if len(votes) > 1:
        raise SrqError(f"{source} mixes [out, in] and [in, out] Linear weight layouts; re-export it from one framework")
    if votes != {"paddle"}:
        return state
    state = dict(state)
    for name in linear_shapes:
        if name in state and state[name].dim() == 2:
            state[name] = state[name].t().contiguous()
    return state


def check_derived_buffer(state: dict[str, torch.Tensor], key: str, expected: torch.Tensor, what: str) -> None:
    """Remove ``key`` from ``state`` (if present) after checking that it equals the recomputed ``expected``."""
    t = state.pop(key, None)
    if t is not None and (tuple(t.shape) != tuple(expected.shape) or not torch.equal(t.to(expected.dtype), expected)):
        raise SrqError(f"checkpoint entry {key} {tuple(t.shape)} is not the {what} this architecture computes; "
                       f"the file is for another window size or is damaged")
