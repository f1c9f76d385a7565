"""Model registry: ``register_model`` / ``create_model`` / ``list_models``.

Architectures register a builder ``fn(scale: int) -> nn.Module`` together with what is known
about their official checkpoints (file names per scale, colour space, pixel range). ``create_model``
builds the network, loads weights safely and wraps it so that every model srq returns takes and
returns RGB float tensors in [0, 1], NCHW.
"""

from __future__ import annotations

import fnmatch
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Mapping

from torch import nn

from ..errors import SrqError
from ..paths import weights_root as _weights_root

__all__ = ["ModelInfo", "register_model", "create_model", "list_models", "get_model_info", "resolve_weights",
           "check_scale"]


@dataclass(frozen=True)
class ModelInfo:
    """What the registry knows about one architecture.

    Attributes:
        name: registry name (lower case), e.g. ``"imdn"``.
        scales: upscaling factors the architecture supports.
        builder: ``builder(scale) -> nn.Module`` with the official key names.
        weights: official checkpoint file name per scale, looked up in the weights root (an absolute
            path, for weights that ship inside srq, is used as is).
        color: ``"rgb"`` (3-channel in/out) or ``"y"`` (1-channel luma; wrapped to RGB at creation).
        pixel_range: value range the checkpoint was trained on, 1.0 or 255.0 (wrapped to [0, 1]).
        description: one line for ``srq models``.
        source: where the official weights come from (repository / paper).
        adapt_state_dict: optional ``fn(state) -> state`` that renames keys of other official releases
            (e.g. BasicSR vs. the original repository) to this architecture's names; must leave
            native state dicts unchanged.
    """

    name: str
    scales: tuple[int, ...]
    builder: Callable[[int], nn.Module]
    weights: Mapping[int, str | os.PathLike] = field(default_factory=dict)
    color: str = "rgb"
    pixel_range: float = 1.0
    description: str = ""
    source: str = ""
    adapt_state_dict: Callable[[dict], dict] | None = None


_REGISTRY: dict[str, ModelInfo] = {}


def register_model(
    name: str,
    *,
    scales: tuple[int, ...],
    weights: Mapping[int, str | os.PathLike] | None = None,
    color: str = "rgb",
    pixel_range: float = 1.0,
    description: str = "",
    source: str = "",
    adapt_state_dict: Callable[[dict], dict] | None = None,
) -> Callable[[Callable[[int], nn.Module]], Callable[[int], nn.Module]]:
    """Decorator registering ``fn(scale) -> nn.Module`` under ``name``."""
    if color not in ("rgb", "y"):
        raise ValueError(f"color must be 'rgb' or 'y', not {color!r}")

    def deco(fn: Callable[[int], nn.Module]) -> Callable[[int], nn.Module]:
        key = name.lower()
        if key in _REGISTRY:
            raise ValueError(f"model {key!r} is registered twice")
        _REGISTRY[key] = ModelInfo(key, tuple(scales), fn, dict(weights or {}), color, pixel_range,
                                   description or (fn.__doc__ or "").strip().splitlines()[0], source,
                                   adapt_state_dict)
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
                 weights_root: str | os.PathLike | None = None, wrap: bool = True) -> nn.Module:
    """Build a registered model, optionally load a checkpoint, and return it in eval mode.

    Args:
        name: registry name (see :func:`list_models`).
        scale: upscaling factor; must be one of the architecture's scales.
        weights: ``None`` (random init), ``"official"``/``True`` (file from the weights root) or a path
            (``.pth``/``.pt``/``.safetensors``/``.pdparams``), loaded without executing code.
        weights_root: overrides ``$SRQ_WEIGHTS`` for ``"official"``.
        wrap: if True (default), wrap Y-only and [0, 255] models so the result maps RGB [0, 1]
            NCHW to RGB [0, 1] NCHW. ``False`` returns the bare architecture.
    """
    from .checkpoint import load_weights
    from .wrappers import wrap_model

    info = get_model_info(name)
    check_scale(info, scale)
    net = info.builder(scale)
    path = resolve_weights(info, scale, weights, weights_root)
    if path is not None:
        load_weights(net, path, model_name=f"{info.name} x{scale}", adapt=info.adapt_state_dict)
    net.eval()
    model = wrap_model(net, info, scale) if wrap else net
    # lets srq.save rebuild it; a plain attribute (setattr: nn.Module's __setattr__ is typed for modules)
    setattr(model, "srq_spec", {"model": info.name, "scale": scale, "wrapped": wrap,
                                "weights": path.name if path is not None else None})
    return model
