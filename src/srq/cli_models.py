"""How the command line gets its model: a zoo model by name (with a width/depth variant), the user's own
``file.py:function``, or a quantized run folder; one-line errors for every mistake."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, NamedTuple, Optional

from .errors import SrqError

__all__ = ["LoadedModel", "build_model", "probe", "load_model", "MODEL_HELP", "ARCH_HELP", "PIXEL_RANGE_HELP",
           "MODEL_CODE_HELP"]


class LoadedModel(NamedTuple):
    """A model the command line built or loaded, with what its tables and result files say of it."""

    net: Any  # an nn.Module (torch is imported only by the commands that need it)
    name: str
    scale: int
    weights: Optional[Path]  # the checkpoint file (None for a run folder or a parameterless model)
    label: str
    extra: dict  # what a results file records about a run folder or a model of the user's own


MODEL_HELP = ("model name (see `srq models`), a run folder from `srq quantize`, or your own model as "
              "path/to/my_arch.py:build_model")
ARCH_HELP = ("architecture parameter key=value, repeatable: a width/depth variant of a zoo model (e.g. "
             "-a feature_channels=48 for RLFN-S; a wrong key lists the valid ones) or a keyword of your build "
             "function")
PIXEL_RANGE_HELP = "for your own model: the pixel range it was trained on, 1 ([0, 1], default) or 255 ([0, 255])"
MODEL_CODE_HELP = ("for a run folder of your own model: the file.py:function that built it (srq never imports "
                   "code named in a run folder by itself)")


def build_model(model: str, scale: Optional[int], weights: str, weights_root: Optional[Path], arch: list[str],
                 pixel_range: Optional[float]) -> LoadedModel:
    """A float model: a zoo model by name or the user's ``file.py:function``, with its weights and variant."""
    from .models import create_model
    from .models.registry import check_arch_params, check_scale, get_model_info, parse_arch_params, resolve_weights
    from .models.user import code_label, from_file, is_code_spec

    params: dict[str, Any] = parse_arch_params(arch)
    if not is_code_spec(model):
        try:
            get_model_info(model)
        except SrqError as e:  # the command line also takes run folders: say that it is not one either
            raise SrqError(f"{model!r} is neither a run folder nor a model name: {e}") from None
    if scale is None:
        raise SrqError(f"--scale is required when a model is given by {'its file' if is_code_spec(model) else 'name'}")
    if is_code_spec(model):
        path = None if weights == "official" else Path(weights).expanduser()
        if path is not None and not path.is_file():
            raise SrqError(f"weights file {weights!r} does not exist; check the path")
        net = from_file(model, scale, path, pixel_range=1.0 if pixel_range is None else pixel_range, arch=params)
        label = code_label(model)
        return LoadedModel(net, label, scale, path, f"{label} x{scale}", {"code": net.srq_source})
    info = get_model_info(model)
    if pixel_range is not None:
        raise SrqError(f"--pixel-range is for a model from your own file; {info.name} is registered with its "
                       f"range ({info.pixel_range:g}); drop --pixel-range")
    check_scale(info, scale)
    check_arch_params(info, params)  # a wrong keyword is the user's first mistake to hear of, before missing weights
    path = resolve_weights(info, scale, weights, weights_root)
    net = create_model(model, scale, path, **params)
    variant = "".join(f" {k}={v}" for k, v in params.items())
    return LoadedModel(net, info.name, scale, path, f"{info.name} x{scale}{variant}",
                        {"arch": getattr(net, "srq_spec")["arch"]} if params else {})


def probe(loaded: LoadedModel, x: Any = None) -> None:
    """For a model of the user's own: one forward on ``x`` (default a small random image) checks its output's
    shape (an error) and range (a warning line)."""
    import torch

    from .models import check_output_range

    if "code" not in loaded.extra:
        return
    if x is None:
        x = torch.rand(1, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    check_output_range(loaded.net, x, loaded.scale, name=loaded.label.rsplit(" x", 1)[0])


def load_model(model: str, scale: Optional[int], weights: str, weights_root: Optional[Path],
                arch: list[str] = [], pixel_range: Optional[float] = None,  # noqa: B006 - never mutated
                model_code: Optional[str] = None) -> LoadedModel:
    """A zoo model by name (``scale`` needed), the user's ``file.py:function``, or a quantized run folder."""
    from .api import load
    from .run_folder import read_meta
    from .models.user import code_label, from_file, from_record, is_code_spec

    if Path(model).is_dir():
        meta = read_meta(model)
        for given, option in ((arch, "--arch-param"), (pixel_range, "--pixel-range")):
            if given:
                raise SrqError(f"{option} is for building a model; the run folder {model} records its own, drop it")
        spec, user = meta["architecture"], meta.get("user_model") or {}
        extra = {"run": str(model), "recipe": meta.get("recipe"), "placement": meta.get("placement")}
        if spec is None:
            code = user.get("code")
            if model_code is None:
                built_by = f"{code['file']}:{code['function']}" if code else "file.py:function"
                raise SrqError(f"{model} holds a model of your own architecture ({user.get('class', '?')}); add "
                               f"--model-code {built_by} (srq does not import the code a run folder names by itself)")
            if not is_code_spec(model_code):
                raise SrqError(f"--model-code {model_code}: write path/to/my_arch.py:build_model")
            if code is None:
                if scale is None:
                    raise SrqError(f"{model} does not record its scale; pass --scale")
                float_model = from_file(model_code, scale)
            else:
                float_model = from_record(code, model_code)
            name, run_scale = code_label(model_code), (code or {}).get("scale") or scale
            if run_scale is None:
                raise SrqError(f"{model} does not record its scale; pass --scale")
            net = load(model, model=float_model)
            extra["code"] = getattr(float_model, "srq_source")
        else:
            if model_code is not None:
                raise SrqError(f"{model} holds the zoo model {spec['model']}; drop --model-code")
            name, run_scale = spec["model"], spec["scale"]
            net = load(model)
        if scale is not None and scale != run_scale:
            raise SrqError(f"{model} is a x{run_scale} model; drop --scale or pass --scale {run_scale}")
        return LoadedModel(net, name, run_scale, None, f"{name} x{run_scale} {Path(model).name}", extra)
    if model_code is not None:
        raise SrqError("--model-code is for a run folder of your own model; give a model file as "
                       "path/to/my_arch.py:build_model instead")
    if ("/" in model or os.sep in model) and not is_code_spec(model):
        raise SrqError(f"run folder {model} does not exist; give a folder written by `srq quantize`, a model name "
                       f"or path/to/my_arch.py:build_model")
    loaded = build_model(model, scale, weights, weights_root, arch, pixel_range)
    probe(loaded)
    return loaded
