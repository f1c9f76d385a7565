"""Recipe base class: a small dataclass of hyper-parameters with ``run(model, calib) -> quantized model``."""

from __future__ import annotations

import copy
import dataclasses
import json
import types
import typing
from dataclasses import asdict, dataclass, field
from typing import ClassVar

import torch
from torch import nn

from ..errors import SrqError
from ..quant import QuantConfig, prepare

__all__ = ["Recipe", "apply_params"]


@dataclass
class Recipe:
    """Common settings of every quantization method.

    Attributes:
        w_bits, a_bits: weight / activation bits of the body layers (1 … 8).
        first_last: ``"8bit"`` (default), ``"fp"`` or ``"same"`` for the first and last layers.
        rules: per-layer overrides (see :class:`srq.quant.LayerRule`), e.g. a mixed-precision map.
    """

    w_bits: int = 4
    a_bits: int = 4
    first_last: str = "8bit"
    rules: list = field(default_factory=list)

    name: ClassVar[str] = "recipe"
    w_observer: ClassVar[str] = "minmax"
    a_observer: ClassVar[str] = "minmax"

    def config(self) -> QuantConfig:
        """The quantizer placement and initialisation this method uses."""
        return QuantConfig(w_bits=self.w_bits, a_bits=self.a_bits, first_last=self.first_last,
                           w_observer=self.w_observer, a_observer=self.a_observer, rules=list(self.rules))

    def prepare(self, model: nn.Module, example: torch.Tensor | None = None) -> nn.Module:
        """A quantizer-equipped deep copy of ``model`` (the FP model is left untouched)."""
        return prepare(copy.deepcopy(model), self.config(), example_input=example)

    def run(self, model: nn.Module, calib: torch.Tensor, progress: bool = True) -> nn.Module:
        raise NotImplementedError

    @staticmethod
    def require_patches(calib: torch.Tensor | list[torch.Tensor], what: str) -> None:
        """Training stages batch the calibration inputs, so they must be one (N, 3, h, w) tensor."""
        if not isinstance(calib, torch.Tensor):
            raise ValueError(f"{what} needs calibration patches of one size (pass patch=...)")

    def to_dict(self) -> dict:
        """Method name, every field and the bound initialisation (observers) of weights and activations."""
        return {"method": self.name, **asdict(self), "w_observer": self.w_observer, "a_observer": self.a_observer}


_SCALAR = (int, float, str, bool, tuple, type(None))


def _field_types(cls: type) -> dict[str, object]:
    """The resolved type annotations of a dataclass's fields (``int | None`` → ``typing.Optional[int]``)."""
    return typing.get_type_hints(cls)


def tunable_params(recipe: Recipe) -> dict[str, tuple[object, object]]:
    """The recipe's scalar hyper-parameters (numbers, flags, text, tuples) as ``{key: (type, current value)}``;
    those of a nested config are named ``<field>.<name>`` (e.g. GBA's ``alloc.lambda_feat``)."""
    fixed = {"w_bits", "a_bits", "first_last", "rules"}  # set through their own options
    out: dict[str, tuple[object, object]] = {}
    types = _field_types(type(recipe))
    for f in dataclasses.fields(recipe):
        value = getattr(recipe, f.name)
        if not f.init or f.name in fixed:
            continue
        if isinstance(value, _SCALAR):
            out[f.name] = (types[f.name], value)
        elif dataclasses.is_dataclass(value):
            inner = _field_types(type(value))
            out.update({f"{f.name}.{g.name}": (inner[g.name], getattr(value, g.name)) for g in dataclasses.fields(value)
                        if g.init and isinstance(getattr(value, g.name), _SCALAR)})
    return out


def apply_params(recipe: Recipe, params: list[str]) -> Recipe:
    """A copy of ``recipe`` with hyper-parameters from ``["key=value", ...]`` (values read as JSON, else text).

    Raises :class:`SrqError` with one line naming the valid keys for an unknown key, or when a value has the
    wrong type (e.g. ``iterations=1.5``).
    """
    tunable = tunable_params(recipe)
    changes: dict[str, object] = {}
    for item in params:
        key, sep, text = (part.strip() for part in item.partition("="))
        if not sep or key not in tunable:
            raise SrqError(f"--param {item!r}: write key=value with key one of {', '.join(tunable)}")
        try:
            value = json.loads(text)
        except json.JSONDecodeError:
            value = text
        changes[key] = _coerce(key, value, *tunable[key])
    nested: dict[str, dict[str, object]] = {}
    for key in [k for k in changes if "." in k]:
        outer, inner = key.split(".", 1)
        nested.setdefault(outer, {})[inner] = changes.pop(key)
    try:
        changes.update({outer: dataclasses.replace(getattr(recipe, outer), **values)
                        for outer, values in nested.items()})
        return dataclasses.replace(recipe, **changes)
    except (TypeError, ValueError) as e:
        raise SrqError(f"--param: {e}")


def _fits(value: object, kind: object) -> tuple[bool, object]:
    """Whether a JSON ``value`` fits the annotation ``kind``, and the value converted to it."""
    origin, args = typing.get_origin(kind), typing.get_args(kind)
    if origin in (typing.Union, types.UnionType):
        for option in args:
            ok, converted = _fits(value, option)
            if ok:
                return True, converted
        return False, value
    if kind is type(None):
        return value is None, value
    if kind is bool:
        return isinstance(value, bool), value
    if kind is int:
        return isinstance(value, int) and not isinstance(value, bool), value
    if kind is float:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        return ok, float(value) if ok else value
    if kind is str:
        return isinstance(value, str), value
    if origin is tuple and isinstance(value, list):
        item = args[0] if args else object
        fitted = [_fits(v, item) if item is not object else (True, v) for v in value]
        return all(ok for ok, _ in fitted), tuple(v for _, v in fitted)
    return False, value


def _coerce(key: str, value: object, kind: object, current: object) -> object:
    """``value`` converted to the parameter's annotated type ``kind``, or a one-line error."""
    ok, converted = _fits(value, kind)
    if not ok:
        name = getattr(kind, "__name__", None) if not typing.get_args(kind) else None
        raise SrqError(f"--param {key}: {value!r} does not fit its type, {name or str(kind).replace('typing.', '')} "
                       f"(current value {current!r})")
    return converted
