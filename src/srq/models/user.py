"""A model of your own, built by a function in a Python file: ``"path/to/my_arch.py:build_model"``.

The file is your code, so srq imports it (its folder is on ``sys.path`` while it is imported and the builder
runs, so it may import its neighbours). Weights still load without executing code
(:func:`srq.models.checkpoint.load_weights`). The builder is called as ``build_model(scale=s, **arch)`` when it
has a ``scale`` parameter (or ``**kwargs``), else as ``build_model(**arch)``; it may be a class. What was built
(file, function, the file's SHA-256, scale, architecture keywords, pixel range) is kept in ``model.srq_source``
and saved in a run folder's ``srq.json`` under ``user_model.code``, so it can be rebuilt:
``srq.load(folder, model=srq.models.from_file(...))`` or ``srq eval FOLDER --model-code FILE.py:FUNCTION``.
A run folder never imports code by itself: the file has to be named again.
"""

from __future__ import annotations

import importlib.util
import inspect
import os
import sys
import traceback
import warnings
from contextlib import contextmanager
from pathlib import Path
from types import ModuleType
from typing import Any, Iterator, Mapping

from torch import nn

from ..errors import SrqError
from ..fileio import file_sha256
from .checkpoint import load_weights
from .wrappers import wrap

__all__ = ["is_code_spec", "parse_code_spec", "from_file", "from_record", "code_label"]


def is_code_spec(text: str) -> bool:
    """Whether a model argument names a Python file (``my_arch.py:build_model``, or a bare ``my_arch.py``)."""
    return text.endswith(".py") or ".py:" in text


def parse_code_spec(spec: str) -> tuple[Path, str]:
    """``"dir/my_arch.py:build_model"`` → (path of an existing file, function name); one-line errors."""
    file, sep, function = str(spec).rpartition(":") if ".py:" in str(spec) else (str(spec), "", "")
    if not sep or not function:
        raise SrqError(f"{spec}: name the function that builds the model after a colon, e.g. {spec}:build_model")
    if not function.isidentifier():
        raise SrqError(f"{spec}: {function!r} is not a Python function name; write FILE.py:FUNCTION")
    path = Path(file).expanduser()
    if not path.is_file():
        raise SrqError(f"model file {file} does not exist; give the path of your Python file, e.g. "
                       f"path/to/my_arch.py:{function}")
    return path, function


def code_label(spec: str) -> str:
    """A short name for messages and tables: ``my_arch.py:build_model``."""
    file, _, function = str(spec).rpartition(":")
    return f"{Path(file).name}:{function}"


def _where(error: BaseException, path: Path) -> str:
    """`` (my_arch.py line 12)`` for the deepest frame of ``error`` in the user's file, else ``""``."""
    frames = [f for f in traceback.extract_tb(error.__traceback__) if Path(f.filename).resolve() == path.resolve()]
    if isinstance(error, SyntaxError) and error.lineno:
        return f" ({path.name} line {error.lineno})"
    return f" ({path.name} line {frames[-1].lineno})" if frames else ""


def _one_line(error: BaseException) -> str:
    text = (str(error).strip().splitlines() or [""])[0][:200]
    return f"{type(error).__name__}: {text}" if text else type(error).__name__


@contextmanager
def _on_path(folder: Path) -> Iterator[None]:
    entry = str(folder)
    sys.path.insert(0, entry)
    try:
        yield
    finally:
        if entry in sys.path:
            sys.path.remove(entry)


def _import(path: Path) -> ModuleType:
    """Import the user's file as a module named after it (reused if that file is imported already; one srq
    imported from another file of that name is replaced)."""
    name = path.stem if path.stem.isidentifier() else "srq_user_model"
    known = sys.modules.get(name)
    if known is not None and getattr(known, "__file__", None) and Path(known.__file__).resolve() == path.resolve():  # type: ignore[arg-type]
        return known
    if known is not None and not getattr(known, "__srq_user_file__", False):
        name = f"srq_user_{name}"  # another module has that name (e.g. a file called torch.py): keep it
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise SrqError(f"cannot import {path}: not a Python source file")
    module = importlib.util.module_from_spec(spec)
    setattr(module, "__srq_user_file__", True)  # a later file of the same name may replace it
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except Exception as e:  # the user's module: report where, in one line
        del sys.modules[name]
        raise SrqError(f"importing {path} failed{_where(e, path)}: {_one_line(e)}")
    return module


def _call_builder(fn: Any, label: str, path: Path, scale: int | None, arch: Mapping[str, Any]) -> nn.Module:
    """``fn(scale=scale, **arch)`` (``scale`` only if ``fn`` takes it), checked to return an ``nn.Module``."""
    try:
        params: Mapping[str, inspect.Parameter] = inspect.signature(fn).parameters
    except (TypeError, ValueError):
        params = {}
    open_kwargs = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
    keywords = [n for n, p in params.items() if p.kind in (inspect.Parameter.POSITIONAL_OR_KEYWORD,
                                                          inspect.Parameter.KEYWORD_ONLY) and n != "scale"]
    unknown = [k for k in arch if k not in keywords] if not open_kwargs else []
    if unknown:
        accepted = f"it accepts {', '.join(keywords)}" if keywords else "it takes no keyword arguments"
        raise SrqError(f"{label} has no parameter {unknown[0]!r}; {accepted}")
    kwargs = dict(arch)
    if scale is not None and ("scale" in params or open_kwargs):
        kwargs["scale"] = scale
    required = [n for n, p in params.items() if p.default is inspect.Parameter.empty and n not in kwargs
                and p.kind not in (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD)]
    if required:
        raise SrqError(f"{label} needs {', '.join(required)}; give "
                       f"{'--scale' if required == ['scale'] else 'them as -a name=value (arch= in Python)'}")
    try:
        net = fn(**kwargs)
    except Exception as e:  # the user's builder
        raise SrqError(f"{label}({', '.join(f'{k}={v!r}' for k, v in kwargs.items())}) failed{_where(e, path)}: "
                       f"{_one_line(e)}")
    if not isinstance(net, nn.Module):
        raise SrqError(f"{label} returned an object of type {type(net).__name__}, not a torch nn.Module; "
                       f"return the network")
    return net


def _arch_defaults(fn: Any) -> dict[str, Any]:
    try:
        return {n: p.default for n, p in inspect.signature(fn).parameters.items()
                if p.default is not inspect.Parameter.empty}
    except (TypeError, ValueError):
        return {}


def from_file(spec: str, scale: int | None = None, weights: str | os.PathLike | None = None, *,
              pixel_range: float = 1.0, arch: Mapping[str, Any] | None = None) -> nn.Module:
    """Build your model from ``"path/to/my_arch.py:build_model"`` and return it in eval mode.

    Args:
        spec: ``FILE.py:FUNCTION``; FUNCTION (a function or a class) returns the ``nn.Module``.
        scale: passed as ``scale=`` when the builder takes it.
        weights: a checkpoint (``.pth``/``.pt``/``.safetensors``) loaded strictly into the built network without
            executing code; ``None`` keeps the parameters the builder returns.
        pixel_range: the pixel range the network was trained on (1 or 255); not 1 wraps it with
            :func:`srq.models.wrap` so the result takes and returns [0, 1].
        arch: more keyword arguments of the builder (e.g. ``{"channels": 48}``).
    Returns:
        The model, with ``srq_source`` recording how it was built (saved by :func:`srq.save`).
    """
    path, function = parse_code_spec(spec)
    label = f"{path.name}:{function}"
    arch = dict(arch or {})
    with _on_path(path.resolve().parent):
        module = _import(path)
        fn = getattr(module, function, None)
        if fn is None or not callable(fn):
            found = sorted(n for n, v in vars(module).items() if callable(v) and not n.startswith("_")
                           and getattr(v, "__module__", None) == module.__name__)
            defines = f" (it defines {', '.join(found[:8])})" if found else ""
            raise SrqError(f"{path} has no function {function!r}{defines}; write FILE.py:FUNCTION")
        net = _call_builder(fn, label, path, scale, arch)
    if weights is not None:
        load_weights(net, weights, model_name=label, arch_params={**_arch_defaults(fn), **arch})
    model = wrap(net, pixel_range).eval()
    setattr(model, "srq_source", {"file": str(path.resolve()), "function": function, "sha256": file_sha256(path),
                                  "scale": scale, "arch": arch, "pixel_range": float(pixel_range),
                                  "weights": Path(weights).name if weights is not None else None})
    return model


def from_record(record: Mapping[str, Any], spec: str | None = None) -> nn.Module:
    """Rebuild the float model a run folder's ``user_model.code`` record describes (without its weights).

    ``spec`` (``FILE.py:FUNCTION``) names the code to use; it defaults to the recorded one. Warns when the file
    differs from the recorded SHA-256 (the folder's tensors still have to fit it).
    """
    spec = spec or f"{record['file']}:{record['function']}"
    model = from_file(spec, record.get("scale"), None, pixel_range=record.get("pixel_range", 1.0),
                      arch=record.get("arch") or {})
    source = getattr(model, "srq_source")
    if record.get("sha256") and source["sha256"] != record["sha256"]:
        warnings.warn(f"{code_label(spec)}: the file differs from the one the run was made with (SHA-256 "
                      f"{source['sha256'][:12]}… vs {record['sha256'][:12]}…); its tensors are loaded only if "
                      f"they fit", UserWarning, stacklevel=2)
    return model
