"""Helpers for hand-written official state-dict key lists: ``{key: shape}`` of a conv, layer norm or linear layer.
Nothing here imports srq."""

from __future__ import annotations

Shapes = dict[str, tuple[int, ...]]


def conv(prefix: str, cout: int, cin: int, k: int) -> Shapes:
    return {f"{prefix}.weight": (cout, cin, k, k), f"{prefix}.bias": (cout,)}


def ln(prefix: str, c: int) -> Shapes:
    return {f"{prefix}.weight": (c,), f"{prefix}.bias": (c,)}


def linear(prefix: str, cout: int, cin: int, bias: bool = True) -> Shapes:
    return {f"{prefix}.weight": (cout, cin), **({f"{prefix}.bias": (cout,)} if bias else {})}
