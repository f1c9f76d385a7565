"""Recipe base class: a frozen, validated dataclass of hyper-parameters with ``run(model, calib) -> qmodel``."""

from __future__ import annotations

import copy
import dataclasses
import json
import typing
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import nn

from ..errors import ConfigError, SrqError
from ..quant import LayerRule, QuantConfig, prepare
from ..quant.config import FIRST_LAST_POLICIES
from ..typed_config import check_bits, check_choice, check_types, fits, plain_kwargs, to_plain, type_name

__all__ = ["Recipe", "RECIPE_VERSION", "apply_params"]

RECIPE_VERSION = 1  # of the dict written by Recipe.to_dict
_DERIVED = ("method", "w_observer", "a_observer")  # keys of to_dict that follow from the fields


@dataclass(frozen=True)
class Recipe:
    """Common settings of every quantization method.

    Recipes are frozen and checked when made (one-line :class:`~srq.errors.ConfigError`, a ``ValueError``);
    change one with ``dataclasses.replace``.

    Attributes:
        w_bits, a_bits: weight / activation bits of the body layers (1 … 8).
        first_last: ``"8bit"`` (default), ``"fp"`` or ``"same"`` for the first and last layers.
        rules: per-layer overrides (see :class:`srq.quant.LayerRule`), e.g. a mixed-precision map.
        reduce_range: 7-bit weights in layers whose inputs and weights would both be 8 bit, so that integer CPUs
            without VNNI cannot overflow (:class:`~srq.quant.QuantConfig`, docs/deploy.md). Methods that move
            weight bits themselves (:meth:`moves_weight_bits`) refuse it.
    """

    w_bits: int = 4
    a_bits: int = 4
    first_last: str = "8bit"
    rules: tuple[LayerRule, ...] = ()
    reduce_range: bool = False

    name: ClassVar[str] = "recipe"
    w_observer: ClassVar[str] = "minmax"
    a_observer: ClassVar[str] = "minmax"
    w_mode: ClassVar[str] = "affine"  # the grids (see QuantConfig)
    a_mode: ClassVar[str] = "affine"

    def __post_init__(self) -> None:
        check_types(self)
        check_bits(self, "w_bits", "a_bits")
        check_choice(self, "first_last", FIRST_LAST_POLICIES)
        self.validate()
        if self.reduce_range:
            if self.moves_weight_bits():
                raise ConfigError(f"{self.method}: reduce_range keeps 7-bit weights where inputs are 8 bit, which this "
                                  f"recipe's weight-bit allocation would undo; use one of them")
            try:
                self.config()
            except SrqError as e:
                raise ConfigError(f"{self.method}: {e}") from None

    def moves_weight_bits(self) -> bool:
        """Whether this recipe chooses weight bits itself (a mixed-precision weight allocation)."""
        return False

    def validate(self) -> None:
        """Method-specific checks of the field values (the types are already checked)."""

    def config(self) -> QuantConfig:
        """The quantizer placement and initialisation this method uses."""
        return QuantConfig(w_bits=self.w_bits, a_bits=self.a_bits, first_last=self.first_last,
                           w_observer=self.w_observer, a_observer=self.a_observer, w_mode=self.w_mode,
                           a_mode=self.a_mode, rules=list(self.rules), reduce_range=self.reduce_range)

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

    @property
    def method(self) -> str:
        """The name ``to_dict`` records (the recipe's own name; variants may refine it)."""
        return self.name

    def to_dict(self) -> dict:
        """Method name, every field (JSON-ready), the bound initialisation (observers) and ``recipe_version``."""
        d = {"method": self.method, **to_plain(self), "w_observer": self.w_observer,
             "a_observer": self.a_observer, "recipe_version": RECIPE_VERSION}
        if not self.reduce_range:  # recipes without it read (and hash) as before the field
            del d["reduce_range"]
        return d

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Recipe:
        """The recipe :meth:`to_dict` wrote (a dict without ``recipe_version``, from before it, reads as version 1).

        ``Recipe.from_dict`` picks the class by ``method`` from the registry; a subclass checks it is that class.
        """
        from .registry import get_method

        data = dict(data)
        version = data.pop("recipe_version", RECIPE_VERSION)
        if version != RECIPE_VERSION:
            raise ConfigError(f"recipe_version {version!r} is not readable by this srq (it reads {RECIPE_VERSION})")
        derived = {k: data.pop(k) for k in _DERIVED if k in data}
        if "method" in derived:
            info = get_method(derived["method"])
            if not issubclass(info.recipe, cls):
                raise ConfigError(f"method {derived['method']!r} is not a {cls.__name__} recipe")
            recipe = info.create(**plain_kwargs(info.recipe, data))
        elif cls is Recipe:
            raise ConfigError("a recipe dict needs its 'method' to be read by Recipe.from_dict")
        else:
            recipe = cls(**plain_kwargs(cls, data))
        made = recipe.to_dict()
        wrong = [f"{k} {v!r} (the fields give {made[k]!r})" for k, v in derived.items() if made[k] != v]
        if wrong:
            raise ConfigError(f"recipe dict does not agree with itself: {', '.join(wrong)}")
        return recipe


_SCALAR = (int, float, str, bool, tuple, type(None))


def tunable_params(recipe: Recipe) -> dict[str, tuple[object, object]]:
    """The recipe's scalar hyper-parameters (numbers, flags, text, tuples) as ``{key: (type, current value)}``,
    the method's own first and the settings every recipe has (``reduce_range``) last; those of a nested config are
    named ``<field>.<name>`` (e.g. GBA's ``alloc.lambda_feat``)."""
    fixed = {"w_bits", "a_bits", "first_last", "rules"}  # set through their own options
    out: dict[str, tuple[object, object]] = {}
    hints = typing.get_type_hints(type(recipe))
    common = {f.name for f in dataclasses.fields(Recipe)}
    fields = dataclasses.fields(recipe)
    for f in [f for f in fields if f.name not in common] + [f for f in fields if f.name in common]:
        value = getattr(recipe, f.name)
        if not f.init or f.name in fixed:
            continue
        if isinstance(value, _SCALAR):
            out[f.name] = (hints[f.name], value)
        elif dataclasses.is_dataclass(value):
            inner = typing.get_type_hints(type(value))
            out.update({f"{f.name}.{g.name}": (inner[g.name], getattr(value, g.name)) for g in dataclasses.fields(value)
                        if g.init and isinstance(getattr(value, g.name), _SCALAR)})
    return out


def apply_params(recipe: Recipe, params: list[str]) -> Recipe:
    """A copy of ``recipe`` with hyper-parameters from ``["key=value", ...]`` (values read as JSON, else text).

    Raises :class:`SrqError` with one line naming the valid keys for an unknown key, or when a value has the
    wrong type (e.g. ``iterations=1.5``).
    """
    tunable = tunable_params(recipe)
    changes: dict[str, Any] = {}
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


def _coerce(key: str, value: object, kind: object, current: object) -> object:
    """``value`` converted to the parameter's annotated type ``kind``, or a one-line error."""
    ok, converted = fits(value, kind)
    if not ok:
        raise SrqError(f"--param {key}: {value!r} does not fit its type, {type_name(kind)} (current value {current!r})")
    return converted
