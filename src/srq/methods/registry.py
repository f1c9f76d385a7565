"""The method registry: every recipe (and named variant) registers itself with ``@register_method``.

The CLI's ``--method`` choices, ``srq methods`` and the README's method table are read from here.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, TypeVar

from ..errors import ConfigError

if TYPE_CHECKING:
    from .base import Recipe

__all__ = ["MethodInfo", "register_method", "get_method", "list_methods", "method_names", "methods_markdown"]

R = TypeVar("R", bound=type)


@dataclass(frozen=True)
class MethodInfo:
    """One registered method: a recipe class with preset fields (empty for the plain method)."""

    name: str
    recipe: type
    description: str
    paper: str
    preset: Mapping[str, Any]
    savable: bool

    def create(self, **fields: Any) -> Recipe:
        """The recipe with the preset fields and ``fields`` (which may not contradict the preset)."""
        clash = [k for k, v in self.preset.items() if k in fields and fields[k] != v]
        if clash:
            raise ConfigError(f"method {self.name} fixes {', '.join(f'{k}={self.preset[k]!r}' for k in clash)}; "
                              f"use another method for other values")
        return self.recipe(**{**self.preset, **fields})


_REGISTRY: dict[str, MethodInfo] = {}


def register_method(name: str, *, description: str, paper: str, preset: Mapping[str, Any] | None = None,
                    savable: bool = True) -> Callable[[R], R]:
    """Class decorator: register a recipe dataclass as method ``name`` (stack it for named variants).

    ``description``: one line on what the method does; ``paper``: what it implements; ``preset``: fields a
    variant fixes (e.g. ``{"fine_tune": True}``); ``savable``: whether its models can be saved as run folders.
    """
    def decorate(cls: R) -> R:
        if name in _REGISTRY:
            raise ValueError(f"method {name!r} is registered twice")
        fields = {f.name for f in dataclasses.fields(cls) if f.init}
        unknown = sorted(set(preset or {}) - fields)
        if unknown:
            raise ValueError(f"method {name!r}: preset key(s) {', '.join(unknown)} are not fields of {cls.__name__}")
        _REGISTRY[name] = MethodInfo(name, cls, description, paper, MappingProxyType(dict(preset or {})), savable)
        return cls
    return decorate


def get_method(name: str) -> MethodInfo:
    """The registered method ``name`` (unknown: a one-line :class:`~srq.errors.ConfigError`)."""
    if name not in _REGISTRY:
        raise ConfigError(f"unknown method {name!r}; choose from {', '.join(method_names())} (see `srq methods`)")
    return _REGISTRY[name]


def list_methods() -> list[MethodInfo]:
    """Every registered method, by name."""
    return [_REGISTRY[n] for n in method_names()]


def method_names() -> list[str]:
    """The names of the registered methods, sorted."""
    return sorted(_REGISTRY)


def methods_markdown() -> str:
    """The README's method table (one row per registered method)."""
    rows = ["| method | what it does | implements | run folder |", "|---|---|---|---|"]
    rows += [f"| `{m.name}` | {m.description} | {m.paper} | {'yes' if m.savable else 'no'} |" for m in list_methods()]
    return "\n".join(rows) + "\n"
