"""The top-level verbs: ``quantize``, ``save``, ``load``.

A saved quantized model is a folder with ``model.safetensors`` (every parameter and buffer: FP weights,
quantizer bounds) and ``srq.json`` (architecture, scale, quantization config, placement, bit map, method,
cost, provenance). ``load`` rebuilds the architecture from the registry, re-inserts the quantizers from
the config and loads the tensors strictly, so outputs are bit-identical. A zoo variant's architecture
keywords (``srq_spec["arch"]``, e.g. ``feature_channels=48``) are rebuilt too; a spec without them means the
defaults. A model of the user's own architecture is saved with ``architecture: null`` and its class under
``user_model`` (with ``code``: file, function, SHA-256, scale, keywords and pixel range, when it was built by
:func:`srq.models.from_file`); ``load(folder, model=float_model)`` rebuilds it on a float instance of that
architecture. A folder never imports code by itself.
"""

from __future__ import annotations

import copy
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from .errors import SrqError
from .fileio import file_sha256, follow_umask, replace_folder
from .methods.base import Recipe
from .models import create_model
from .engine.slimming import apply_structure
from .models.wrappers import PixelRangeWrapper
from .quant import QuantConfig, float_layers, placement, prepare
from .quant.prepare import float_weight_point, weight_points
from .run_folder import read_meta

__all__ = ["quantize", "save", "load", "FORMAT_VERSION"]

FORMAT_VERSION = 1
MODEL_FILE = "model.safetensors"


def quantize(model: nn.Module, recipe: Recipe, calib: torch.Tensor | list[torch.Tensor],
             progress: bool = True) -> nn.Module:
    """Quantize a float model with a method recipe on calibration inputs; the float model is not modified.

    The quantized model is on the float model's device (move it first, e.g. ``model.to("cuda")``): quantizers,
    observers, rectifiers and bit offsets are made there, and ``calib`` (which may stay on the CPU) is moved
    there one batch at a time.
    """
    qmodel = recipe.run(model, calib, progress=progress)  # type: ignore[arg-type]  # methods that batch check
    setattr(qmodel, "srq_spec", getattr(model, "srq_spec", None))
    if getattr(model, "srq_source", None) is not None:
        setattr(qmodel, "srq_source", model.srq_source)
    setattr(qmodel, "srq_recipe", recipe.to_dict())
    return qmodel


def save(model: nn.Module, folder: str | os.PathLike, extra: dict[str, Any] | None = None,
         files: dict[str, str] | None = None) -> Path:
    """Write ``model`` (quantized by srq; from :func:`srq.create_model` or any ``nn.Module``) to ``folder`` atomically.

    The folder gets ``model.safetensors``, ``srq.json`` (with ``extra`` merged in, and the model file's size
    and SHA-256, checked by :func:`load`) and any text ``files`` (name → content). It is written beside its
    final place and renamed into it, replacing whatever ``folder`` held; it follows the umask like any file.
    A model not made by :func:`srq.create_model` is recorded with its class; load it with ``model=``.
    """
    refusal = getattr(model, "srq_savable", None)
    if isinstance(refusal, str):
        raise SrqError(f"this model cannot be saved: {refusal}")
    spec = getattr(model, "srq_spec", None)
    config = getattr(model, "srq_quant_config", None)
    folder = Path(folder)
    meta = {"format_version": FORMAT_VERSION, "architecture": spec,
            **({} if spec is not None else {"user_model": _user_model_info(model)}),
            "quant_config": config.to_dict() if config is not None else None,
            "placement": [e.to_dict() for e in placement(model)],
            "float_layers": [f.to_dict() for f in float_layers(model)],
            "recipe": getattr(model, "srq_recipe", None), "report": current_report(model),
            **_structure_entry(model), **(extra or {})}
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=folder.parent))
    try:
        state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
        save_file(state, str(tmp / MODEL_FILE))
        meta["model_file"] = {"name": MODEL_FILE, "bytes": (tmp / MODEL_FILE).stat().st_size,
                              "sha256": file_sha256(tmp / MODEL_FILE)}
        (tmp / "srq.json").write_text(json.dumps(meta, indent=2) + "\n")
        for name, text in (files or {}).items():
            (tmp / name).write_text(text)
        for path in (tmp, *tmp.iterdir()):
            follow_umask(path)
        replace_folder(tmp, folder)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return folder


def _structure_entry(model: nn.Module) -> dict[str, Any]:
    """``{"structure": record}`` for a model whose blocks were wrapped or removed (``model.srq_structure``), else {}."""
    record = getattr(model, "srq_structure", None)
    return {} if record is None else {"structure": record}


def _user_model_info(model: nn.Module) -> dict:
    """What ``srq.json`` records of a user's architecture: its class and the example input ``prepare`` ran."""
    inner = model.net if isinstance(model, PixelRangeWrapper) else model  # the user's class, not srq's wrapper
    cls = type(inner)
    source = getattr(model, "srq_source", None)
    return {"class": f"{cls.__module__}.{cls.__qualname__}", "example_shape": getattr(model, "srq_example_shape", None),
            **({"code": source} if source is not None else {})}


def current_report(model: nn.Module) -> dict | None:
    """The method's report (``model.srq_report``: a dict, or a callable giving the report as of now)."""
    report = getattr(model, "srq_report", None)
    return report() if callable(report) else report


def load(folder: str | os.PathLike, model: nn.Module | None = None) -> nn.Module:
    """Rebuild a model saved by :func:`save`; its outputs equal the saved model's bit for bit.

    ``model``: for a model of your own architecture, a float instance of it built as before quantization
    (weights need not be loaded: every tensor comes from the folder). It is copied, not modified.
    ``folder`` may also be a packed ``.safetensors`` file from ``srq export --format packed``
    (:func:`srq.export.packed.load_packed`).

    The folder holds CPU tensors (:func:`save` writes them from any device); the rebuilt model is on the CPU, or on
    ``model``'s device when one is given: ``srq.load(folder).to("cuda")`` runs it on a GPU.
    """
    if Path(folder).is_file() and str(folder).endswith(".safetensors"):  # a packed file (srq export --format packed)
        from .export.packed import load_packed

        return load_packed(folder, model)
    meta = read_meta(folder)
    if meta.get("format_version") != FORMAT_VERSION:
        raise SrqError(f"{folder} has format version {meta.get('format_version')}, this srq reads {FORMAT_VERSION}")
    spec = meta["architecture"]
    if model is not None:
        return _load_onto(copy.deepcopy(model), Path(folder), meta)
    if spec is None:
        cls = meta.get("user_model", {}).get("class", "your model's class")
        code = meta.get("user_model", {}).get("code")
        if code is not None:
            raise SrqError(f"{folder} holds a model of your own architecture ({cls}, built by "
                           f"{code['file']}:{code['function']}); pass a float instance of it: "
                           f"srq.load(folder, model={_from_file_call(code)}), or on the command line "
                           f"--model-code {code['file']}:{code['function']}")
        raise SrqError(f"{folder} holds a model of your own architecture ({cls}); pass a float instance of it: "
                       f"srq.load(folder, model={cls.rpartition('.')[2]}(...))")
    model = create_model(spec["model"], spec["scale"], None, wrap=spec.get("wrapped", True), **(spec.get("arch") or {}))
    apply_structure(model, meta.get("structure"))  # shortcut-scaled / removed blocks (QuantSR+), before quantizers
    if meta.get("quant_config") is not None:
        prepare(model, QuantConfig.from_dict(meta["quant_config"]))
        _as_saved(model, meta)
    state = _read_model_file(Path(folder), meta)
    problem = _state_mismatch(model.state_dict(), state)
    if problem is not None:
        raise SrqError(f"{folder}/{MODEL_FILE} does not match its srq.json ({problem}); the run folder is damaged")
    return _loaded(model, state, meta)


def _from_file_call(code: dict) -> str:
    """The ``srq.models.from_file(...)`` call that rebuilds a recorded user model, as text."""
    args = [repr(f"{code['file']}:{code['function']}")]
    if code.get("scale") is not None:
        args.append(f"scale={code['scale']}")
    if code.get("pixel_range", 1.0) != 1.0:
        args.append(f"pixel_range={code['pixel_range']:g}")
    if code.get("arch"):
        args.append(f"arch={code['arch']!r}")
    return f"srq.models.from_file({', '.join(args)})"


def _load_onto(model: nn.Module, folder: Path, meta: dict) -> nn.Module:
    """Quantize the float ``model`` as saved in ``folder`` and load its tensors; checks it is the same model."""
    saved = meta.get("user_model", {}).get("class", "the saved model")
    apply_structure(model, meta.get("structure"))
    reverted: set[str] = set()
    if meta.get("quant_config") is not None:
        shape = meta.get("user_model", {}).get("example_shape")
        try:
            prepare(model, QuantConfig.from_dict(meta["quant_config"]), None if shape is None else torch.rand(shape))
        except SrqError as e:
            raise SrqError(f"cannot rebuild {folder} on the model passed ({e}); pass the float model of {saved}")
        reverted = _as_saved(model, meta)
    state = _read_model_file(folder, meta)
    problem = _state_mismatch(model.state_dict(), state)
    if problem is None and [e.to_dict() for e in placement(model) if e.name not in reverted] != meta["placement"]:
        problem = "its quantizer placement differs from the saved one"
    if problem is not None:
        raise SrqError(f"the model passed is not the architecture saved in {folder} ({saved}): {problem}; "
                       f"pass a float instance built with the same configuration")
    return _loaded(model, state, meta)


def _as_saved(model: nn.Module, meta: dict) -> set[str]:
    """Marked raw weights (``WeightPoint``) that a run folder's placement does not list were saved before srq
    quantized them: they stay in float, as the folder's model computed. Returns their names."""
    listed = {e["name"] for e in meta.get("placement") or []}
    reverted = {name for name, _, _ in weight_points(model) if name not in listed}
    for name in reverted:
        float_weight_point(model, name, "saved by an srq that kept marked raw weights in float")
    return reverted


def _loaded(model: nn.Module, state: dict[str, torch.Tensor], meta: dict) -> nn.Module:
    """``model`` with the saved tensors (keys and shapes already checked) and ``srq.json``'s records, in eval mode."""
    model.load_state_dict(state, strict=True)
    for name, value in (("srq_spec", meta["architecture"]), ("srq_recipe", meta.get("recipe")),
                        ("srq_report", meta.get("report"))):
        setattr(model, name, value)
    return model.eval()


def _state_mismatch(expected: dict[str, torch.Tensor], state: dict[str, torch.Tensor]) -> str | None:
    """A short description of how ``state``'s keys or shapes differ from ``expected``'s; None if they match."""
    missing, unexpected = sorted(set(expected) - set(state)), sorted(set(state) - set(expected))
    shapes = [f"{k} {tuple(state[k].shape)} vs {tuple(expected[k].shape)}"
              for k in sorted(set(expected) & set(state)) if state[k].shape != expected[k].shape]
    found = (("keys not in the file", missing), ("keys not in the model", unexpected), ("shapes differ", shapes))
    parts = [f"{what} {len(keys)} ({', '.join(keys[:3])}{', ...' if len(keys) > 3 else ''})"
             for what, keys in found if keys]
    return "; ".join(parts) or None


def _read_model_file(folder: Path, meta: dict) -> dict[str, torch.Tensor]:
    """The tensors of ``folder/model.safetensors``, checked against the size and SHA-256 in ``srq.json``."""
    path = folder / MODEL_FILE
    record = meta.get("model_file")  # absent in folders written before srq recorded it
    damaged = f"damaged run folder {folder}"
    if not path.is_file():
        raise SrqError(f"{damaged}: {MODEL_FILE} is missing; quantize again")
    if record is not None:
        size = path.stat().st_size
        if size != record["bytes"]:
            raise SrqError(f"{damaged}: {MODEL_FILE} has {size} bytes, srq.json recorded {record['bytes']} "
                           f"(truncated or replaced); quantize again")
        if file_sha256(path) != record["sha256"]:
            raise SrqError(f"{damaged}: {MODEL_FILE} does not match the SHA-256 in srq.json; quantize again")
    try:
        return load_file(str(path))
    except Exception as e:  # safetensors raises its own error types for truncated or foreign files
        raise SrqError(f"{damaged}: {MODEL_FILE} cannot be read ({e}); quantize again")
