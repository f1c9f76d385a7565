"""Model registry: ``register_model`` / ``create_model`` / ``list_models``.

Architectures register a builder ``fn(scale: int, *, <architecture keywords with defaults>) -> nn.Module``
together with what is known about their official checkpoints (file names per scale, colour space, pixel range).
``create_model`` builds the network (``**arch`` picks a width/depth variant through the builder's keywords),
loads weights safely and wraps it so that every model srq returns takes and returns RGB float tensors in
[0, 1], NCHW.

A model of your own joins the registry with the decorator::

    @srq.models.register_model("my_net", scales=(2, 4))
    def my_net(scale: int, *, channels: int = 32) -> nn.Module:
        return MyNet(scale, channels)

    srq.create_model("my_net", scale=4, weights="my_net_x4.pth", channels=48)
"""

from __future__ import annotations

import fnmatch
import inspect
import os
import re
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

from torch import nn

from ..errors import ConfigError, SrqError
from ..paths import weights_root as _weights_root
from ..typed_config import fits, type_name

__all__ = ["ModelInfo", "register_model", "create_model", "list_models", "get_model_info", "resolve_weights",
           "check_scale", "arch_defaults", "check_arch_params", "parse_arch_params"]

_NAME = re.compile(r"^[a-z0-9][a-z0-9_.-]*$")  # no '/', ':' or spaces: the CLI tells names from paths by them


@dataclass(frozen=True)
class ModelInfo:
    """What the registry knows about one architecture.

    Attributes:
        name: registry name (lower case), e.g. ``"imdn"``.
        scales: upscaling factors the architecture supports.
        builder: ``builder(scale, **arch) -> nn.Module`` with the official key names; its keyword parameters
            (with defaults) are the architecture parameters ``create_model`` accepts (see :func:`arch_defaults`).
        weights: official checkpoint file name per scale, looked up in the weights root (an absolute
            path, for weights that ship inside srq, is used as is).
        color: ``"rgb"`` (3-channel in/out), ``"y"`` (1-channel luma; wrapped to RGB at creation) or ``"grey"``
            (1-channel grey restoration network at scale 1; wrapped to run on the channel mean of RGB input).
        pixel_range: value range the checkpoint was trained on, 1.0 or 255.0 (wrapped to [0, 1]).
        description: one line for ``srq models``.
        source: where the official weights come from (repository / paper).
        adapt_state_dict: optional ``fn(state) -> state`` that renames keys of other official releases
            (e.g. BasicSR vs. the original repository) to this architecture's names; must leave
            native state dicts unchanged.
        tasks: the tasks the weights were trained for (``"sr"``, ``"denoise"``, ``"jpeg"``; see :mod:`srq.tasks`).
    """

    name: str
    scales: tuple[int, ...]
    builder: Callable[..., nn.Module]
    weights: Mapping[int, str | os.PathLike] = field(default_factory=dict)
    color: str = "rgb"
    pixel_range: float = 1.0
    description: str = ""
    source: str = ""
    adapt_state_dict: Callable[[dict], dict] | None = None
    tasks: tuple[str, ...] = ("sr",)


_REGISTRY: dict[str, ModelInfo] = {}


def _first_line(text: str | None) -> str:
    lines = [ln.strip() for ln in (text or "").strip().splitlines() if ln.strip()]
    return lines[0] if lines else ""


def _builder_params(fn: Callable[..., nn.Module]) -> list[inspect.Parameter]:
    """The builder's parameters after ``scale``; raises :class:`ConfigError` unless they have defaults."""
    try:
        params = list(inspect.signature(fn).parameters.values())
    except (TypeError, ValueError):
        raise ConfigError(f"cannot read the signature of {fn!r}; register a plain function fn(scale, ...)")
    positional = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    if not params or params[0].kind not in positional:
        raise ConfigError(f"{getattr(fn, '__name__', fn)} must take the scale as its first argument: "
                          f"def {getattr(fn, '__name__', 'builder')}(scale: int, ...) -> nn.Module")
    rest = params[1:]
    bad = [p.name for p in rest if p.kind in (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD)
           or p.default is inspect.Parameter.empty]
    if bad:
        raise ConfigError(f"{fn.__name__}: parameters after scale must be keywords with defaults "
                          f"(architecture parameters), not {', '.join(bad)}")
    return rest


def register_model(
    name: str,
    *,
    scales: tuple[int, ...] | list[int],
    weights: Mapping[int, str | os.PathLike] | None = None,
    color: str = "rgb",
    pixel_range: float = 1.0,
    description: str = "",
    source: str = "",
    adapt_state_dict: Callable[[dict], dict] | None = None,
    replace: bool = False,
    tasks: tuple[str, ...] = ("sr",),
) -> Callable[[Callable[..., nn.Module]], Callable[..., nn.Module]]:
    """Decorator registering a builder ``fn(scale, *, key=default, ...) -> nn.Module`` under ``name``.

    Args:
        name: lower-case letters, digits, ``_``, ``-``, ``.`` (``create_model`` and the CLI find it by this name).
        scales: the upscaling factors the builder supports (positive integers).
        weights: official checkpoint file per scale (a file name in the weights root, or an absolute path).
        color: ``"rgb"``, ``"y"`` (a 1-channel luma SR network, wrapped to RGB) or ``"grey"`` (a 1-channel
            restoration network at scale 1, run on the channel mean; its output is copied to R, G and B).
        pixel_range: 1.0 if the network takes and returns [0, 1] pixels, 255.0 for [0, 255] (wrapped to [0, 1]).
        description: one line for ``srq models``; default: the first line of the builder's docstring, else the name.
        source: where the weights come from.
        adapt_state_dict: ``fn(state) -> state`` renaming the keys of other releases (optional).
        replace: replace an earlier registration of ``name`` (e.g. a notebook cell run twice).
        tasks: what the network restores: ``("sr",)`` (default), ``("denoise",)``, ``("jpeg",)`` or several.

    The builder's keyword parameters (each with a default) are the architecture's width/depth parameters:
    ``create_model(name, scale, **arch)`` passes them through. Bad arguments raise
    :class:`~srq.errors.ConfigError` (a ``ValueError``) with one line.
    """
    if not isinstance(name, str) or not _NAME.match(name.lower()):
        raise ConfigError(f"register_model: name must be a non-empty string of letters, digits, '_', '-' or '.', "
                          f"not {name!r}")
    if isinstance(scales, int) or not scales or not all(isinstance(s, int) and not isinstance(s, bool) and s > 0
                                                        for s in scales):
        raise ConfigError(f"register_model({name!r}): scales must be a tuple of positive integers, e.g. (2, 4); "
                          f"got {scales!r}")
    if color not in ("rgb", "y", "grey"):
        raise ConfigError(f"register_model({name!r}): color must be 'rgb', 'y' or 'grey', not {color!r}")
    if isinstance(tasks, str) or not tasks or not set(tasks) <= {"sr", "denoise", "jpeg"}:
        raise ConfigError(f"register_model({name!r}): tasks must be a tuple of 'sr', 'denoise', 'jpeg'; got {tasks!r}")
    if isinstance(pixel_range, bool) or not isinstance(pixel_range, (int, float)) or pixel_range <= 0:
        raise ConfigError(f"register_model({name!r}): pixel_range must be a positive number (1.0 or 255.0), "
                          f"not {pixel_range!r}")
    extra = sorted(set(weights or {}) - set(scales), key=str)
    if extra:
        raise ConfigError(f"register_model({name!r}): weights are given for scale(s) {extra} that are not in "
                          f"scales {tuple(scales)}")
    if adapt_state_dict is not None and not callable(adapt_state_dict):
        raise ConfigError(f"register_model({name!r}): adapt_state_dict must be a function, not {adapt_state_dict!r}")

    def deco(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        if not callable(fn):
            raise ConfigError(f"register_model({name!r}) decorates a function fn(scale) -> nn.Module, not {fn!r}")
        _builder_params(fn)
        key = name.lower()
        if key in _REGISTRY and not replace:
            raise ConfigError(f"model {key!r} is registered twice; pass replace=True to replace it")
        _REGISTRY[key] = ModelInfo(key, tuple(scales), fn, dict(weights or {}), color, float(pixel_range),
                                   description or _first_line(fn.__doc__) or key, source, adapt_state_dict,
                                   tuple(tasks))
        return fn

    return deco


def list_models(pattern: str = "*") -> list[str]:
    """Registered model names matching a shell-style ``pattern``, sorted."""
    return sorted(n for n in _REGISTRY if fnmatch.fnmatch(n, pattern.lower()))


def get_model_info(name: str) -> ModelInfo:
    """The :class:`ModelInfo` for ``name``; raises :class:`SrqError` listing known names."""
    info = _REGISTRY.get(name.lower())
    if info is None:
        close = [n for n in _REGISTRY if name.lower()[:3] in n]
        hint = f" (did you mean {', '.join(close)}?)" if close else ""
        raise SrqError(f"unknown model {name!r}{hint}; run `srq models` to list the available ones")
    return info


def check_scale(info: ModelInfo, scale: int) -> None:
    """Raise :class:`SrqError` unless ``scale`` is one of the architecture's scales."""
    if scale not in info.scales:
        raise SrqError(f"{info.name} supports scales {', '.join(map(str, info.scales))}, not {scale}; "
                       f"pass --scale with one of those")


def arch_defaults(info: ModelInfo) -> dict[str, Any]:
    """The architecture parameters of ``info``'s builder and their defaults, e.g. ``{"feature_channels": 52, ...}``."""
    return {p.name: p.default for p in _builder_params(info.builder)}


def _describe(params: Mapping[str, Any]) -> str:
    return ", ".join(f"{k}={v!r}" for k, v in params.items())


def check_arch_params(info: ModelInfo, arch: Mapping[str, object]) -> dict[str, Any]:
    """``arch`` checked against the builder's keywords and converted to their types (``[6, 6]`` → tuple).

    Raises :class:`SrqError` with one line listing the accepted keywords and their defaults.
    """
    defaults = arch_defaults(info)
    try:
        hints = typing.get_type_hints(info.builder)
    except Exception:  # annotations that do not resolve: check nothing beyond the names
        hints = {}
    checked: dict[str, Any] = {}
    for key, value in arch.items():
        if key not in defaults:
            accepted = f"it accepts {_describe(defaults)}" if defaults else "it takes none"
            raise SrqError(f"{info.name} has no architecture parameter {key!r}; {accepted}")
        kind = hints.get(key)
        if kind is not None:
            ok, value = fits(value, kind)
            if not ok:
                raise SrqError(f"{info.name} architecture parameter {key}={value!r} must be {type_name(kind)} "
                               f"(default {defaults[key]!r})")
        checked[key] = value
    return checked


def parse_arch_params(items: list[str], option: str = "--arch-param") -> dict[str, object]:
    """``["feature_channels=48", "depths=[4,4]"]`` → a dict; values read as JSON, else as text (unchecked)."""
    import json

    parsed: dict[str, object] = {}
    for item in items:
        key, sep, text = (part.strip() for part in item.partition("="))
        if not sep or not key:
            raise SrqError(f"{option} {item!r}: write key=value, e.g. {option} feature_channels=48")
        try:
            parsed[key] = json.loads(text)
        except json.JSONDecodeError:
            parsed[key] = text
    return parsed


def resolve_weights(info: ModelInfo, scale: int, weights: str | os.PathLike | bool | None,
                    weights_root: str | os.PathLike | None = None) -> Path | None:
    """Turn a ``weights`` argument into a file path.

    ``None``/``False``: random initialisation. ``True`` or ``"official"``: the official file for this
    scale in the weights root. Anything else: a path to a checkpoint.
    """
    if weights is None or weights is False or (weights == "official" and not info.weights
                                                and not any(True for _ in info.builder(scale).parameters())):
        return None  # nothing to load (e.g. the parameter-free bicubic baseline)
    if weights is True or weights == "official":
        fname = info.weights.get(scale)
        if fname is None:
            raise SrqError(f"no official weights are known for {info.name} x{scale}; pass a checkpoint path")
        path = Path(fname) if Path(fname).is_absolute() else _weights_root(weights_root) / fname
        if not path.is_file():
            raise SrqError(f"official weights {fname} not found in {path.parent}; download them from "
                           f"{info.source or 'the official repository'} or set --weights-root / SRQ_WEIGHTS")
        return path
    path = Path(weights).expanduser()
    if not path.is_file():
        raise SrqError(f"weights file {str(path)!r} does not exist; check the path")
    return path


def create_model(name: str, scale: int, weights: str | os.PathLike | bool | None = None, *,
                 weights_root: str | os.PathLike | None = None, wrap: bool = True, **arch: Any) -> nn.Module:
    """Build a registered model, optionally load a checkpoint, and return it in eval mode.

    Args:
        name: registry name (see :func:`list_models`).
        scale: upscaling factor; must be one of the architecture's scales.
        weights: ``None`` (random init), ``"official"``/``True`` (file from the weights root) or a path
            (``.pth``/``.pt``/``.safetensors``/``.pdparams``), loaded without executing code.
        weights_root: overrides ``$SRQ_WEIGHTS`` for ``"official"``.
        wrap: if True (default), wrap Y-only and [0, 255] models so the result maps RGB [0, 1]
            NCHW to RGB [0, 1] NCHW. ``False`` returns the bare architecture.
        **arch: width/depth of a variant, passed to the builder, e.g. ``feature_channels=48`` for RLFN-S
            (:func:`arch_defaults` lists them; an unknown one is refused in one line). Recorded in
            ``model.srq_spec["arch"]`` so :func:`srq.save` / :func:`srq.load` rebuild the same variant.
    """
    from .checkpoint import load_weights
    from .wrappers import wrap_model

    info = get_model_info(name)
    check_scale(info, scale)
    arch = check_arch_params(info, arch)
    net = info.builder(scale, **arch)
    path = resolve_weights(info, scale, weights, weights_root)
    if path is not None:
        variant = "".join(f" {k}={v}" for k, v in arch.items())
        load_weights(net, path, model_name=f"{info.name} x{scale}{variant}", adapt=info.adapt_state_dict,
                     arch_params={**arch_defaults(info), **arch})
    net.eval()
    model = wrap_model(net, info, scale) if wrap else net
    # lets srq.save rebuild it; a plain attribute (setattr: nn.Module's __setattr__ is typed for modules)
    setattr(model, "srq_spec", {"model": info.name, "scale": scale, "wrapped": wrap,
                                "weights": path.name if path is not None else None,
                                **({"arch": _plain(arch)} if arch else {})})
    return model


def _plain(arch: Mapping[str, Any]) -> dict[str, Any]:
    """JSON-ready architecture parameters (tuples as lists)."""
    return {k: list(v) if isinstance(v, tuple) else v for k, v in arch.items()}
