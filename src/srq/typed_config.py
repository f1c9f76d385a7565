"""Frozen configs checked at construction: field types from the annotations, value checks, plain dicts.

Used by the method recipes (:mod:`srq.methods`) and their nested configs (e.g.
:class:`srq.engine.distill.FinetuneConfig`). Every failed check raises :class:`srq.errors.ConfigError` (a
``ValueError`` and a user error) with one line naming the class, the field and what it accepts.
"""

from __future__ import annotations

import dataclasses
import numbers
import re
import types
import typing
from collections.abc import Iterable, Mapping
from typing import Any

from .errors import ConfigError

__all__ = ["fits", "type_name", "check_types", "check_bits", "check_at_least", "check_above", "check_choice",
           "to_plain", "plain_kwargs", "from_plain"]


def fits(value: object, kind: object) -> tuple[bool, object]:
    """Whether ``value`` fits the annotation ``kind``, and the value converted to it (an int for a float field
    becomes a float, a list for a tuple field a tuple)."""
    origin, args = typing.get_origin(kind), typing.get_args(kind)
    if kind is Any or kind is object:
        return True, value
    if origin in (typing.Union, types.UnionType):
        for option in args:
            ok, converted = fits(value, option)
            if ok:
                return True, converted
        return False, value
    if kind is type(None):
        return value is None, value
    if kind is bool:
        return isinstance(value, bool), value
    if kind is int:
        if isinstance(value, numbers.Integral) and not isinstance(value, bool):
            return True, int(value)
        return False, value
    if kind is float:
        if isinstance(value, numbers.Real) and not isinstance(value, bool):
            return True, float(value)
        return False, value
    if kind is str:
        return isinstance(value, str), value
    if origin is tuple and isinstance(value, (list, tuple)):
        item = args[0] if args else object
        fitted = [fits(v, item) for v in value]
        return all(ok for ok, _ in fitted), tuple(v for _, v in fitted)
    if isinstance(kind, type) and origin is None:
        return isinstance(value, kind), value
    return False, value


def type_name(kind: object) -> str:
    """``int``, ``int | None``, ``tuple[int, ...]``: an annotation as a user reads it."""
    name = getattr(kind, "__name__", None) if not typing.get_args(kind) else None
    return name or re.sub(r"\b(?:\w+\.)+(\w+)", r"\1", str(kind))  # without module paths


def _owner(config: object) -> str:
    return type(config).__name__


def check_types(config: object) -> None:
    """Check every init field of the dataclass ``config`` against its annotation and store the converted value."""
    hints = typing.get_type_hints(type(config))
    for f in dataclasses.fields(config):  # type: ignore[arg-type]
        if not f.init:
            continue
        value = getattr(config, f.name)
        ok, converted = fits(value, hints[f.name])
        if not ok:
            raise ConfigError(f"{_owner(config)}.{f.name} must be {type_name(hints[f.name])}, got {value!r}")
        if converted is not value:
            object.__setattr__(config, f.name, converted)


def check_bits(config: object, *names: str) -> None:
    """Bit widths: integers from 1 to 8."""
    for name in names:
        value = getattr(config, name)
        if not 1 <= value <= 8:
            raise ConfigError(f"{_owner(config)}.{name} must be an integer from 1 to 8, got {value!r}")


def check_at_least(config: object, low: float, *names: str) -> None:
    """Each named field is ``≥ low`` (or None)."""
    for name in names:
        value = getattr(config, name)
        if value is not None and not value >= low:
            raise ConfigError(f"{_owner(config)}.{name} must be at least {low}, got {value!r}")


def check_above(config: object, low: float, *names: str) -> None:
    """Each named field is ``> low`` (or None)."""
    for name in names:
        value = getattr(config, name)
        if value is not None and not value > low:
            raise ConfigError(f"{_owner(config)}.{name} must be above {low}, got {value!r}")


def check_choice(config: object, name: str, choices: Iterable[str]) -> None:
    """The named text field is one of ``choices``."""
    value, choices = getattr(config, name), tuple(choices)
    if value not in choices:
        raise ConfigError(f"{_owner(config)}.{name} must be one of {', '.join(choices)}, got {value!r}")


def to_plain(config: object) -> dict:
    """The init fields of a dataclass as JSON-ready values (nested dataclasses as dicts, tuples as lists)."""
    return {f.name: _plain(getattr(config, f.name)) for f in dataclasses.fields(config) if f.init}  # type: ignore[arg-type]


def _plain(value: object) -> object:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return to_plain(value)
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def plain_kwargs(cls: type, data: Mapping) -> dict[str, Any]:
    """Constructor arguments of the dataclass ``cls`` from :func:`to_plain`'s output (unknown keys: an error)."""
    if not isinstance(data, Mapping):
        raise ConfigError(f"{cls.__name__} settings must be a mapping, got {data!r}")
    names = [f.name for f in dataclasses.fields(cls) if f.init]
    unknown = sorted(set(data) - set(names))
    if unknown:
        raise ConfigError(f"unknown {cls.__name__} key(s) {', '.join(map(repr, unknown))}; valid keys are "
                          f"{', '.join(names)}")
    hints = typing.get_type_hints(cls)
    return {key: _from_plain_value(value, hints[key]) for key, value in data.items()}


def from_plain(cls: type, data: Mapping) -> Any:
    """The dataclass ``cls`` rebuilt from :func:`to_plain`'s output."""
    return cls(**plain_kwargs(cls, data))


def _from_plain_value(value: object, kind: object) -> object:
    if isinstance(value, Mapping):
        options = typing.get_args(kind) if typing.get_origin(kind) in (typing.Union, types.UnionType) else (kind,)
        for option in options:
            if dataclasses.is_dataclass(option):
                return from_plain(option, value)  # type: ignore[arg-type]
    if typing.get_origin(kind) is tuple and isinstance(value, (list, tuple)):
        item = typing.get_args(kind)[0] if typing.get_args(kind) else object
        return tuple(_from_plain_value(v, item) for v in value)
    return value
