"""How the command line picks a task (``--task``, ``--sigma``, ``--quality``, ``--calib-sigma``) and what follows from
it: the model's scale, the keywords the task sets on the model (FFDNet's σ), the default test sets, the calibration."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Optional

from .errors import SrqError

__all__ = ["TASK_HELP", "SIGMA_HELP", "QUALITY_HELP", "CALIB_SIGMA_HELP", "resolve_task", "task_scale",
           "task_arch", "default_datasets", "task_calibration", "parse_range"]

TASK_HELP = ("sr (super-resolution), denoise (Gaussian noise, --sigma) or jpeg (grey JPEG, --quality) "
             "[default: what the model or run folder is for]")
SIGMA_HELP = "denoise task: noise level σ on the 8-bit scale [default 25]"
QUALITY_HELP = "jpeg task: JPEG quality 1-100 [default 10]"
CALIB_SIGMA_HELP = "denoise task: σ range low,high of the calibration patches (a blind denoiser's, e.g. 0,55) " \
                   "[default: --sigma]"


def parse_range(text: Optional[str], option: str = "--calib-sigma") -> tuple[float, float] | None:
    """``"0,55"`` → (0.0, 55.0); None stays None; anything else is one clear line."""
    if text is None:
        return None
    parts = [p.strip() for p in text.split(",")]
    try:
        lo, hi = (float(p) for p in parts)
    except ValueError:
        raise SrqError(f"{option} {text!r}: write low,high, e.g. {option} 0,55") from None
    return lo, hi


def _recorded_task(model: str) -> dict | None:
    """The task a run folder recorded in its srq.json (None: an SR run or not a run folder)."""
    meta = Path(model) / "srq.json"
    if not meta.is_file():
        return None
    try:
        return json.loads(meta.read_text()).get("task")
    except (OSError, json.JSONDecodeError):
        return None  # load_model reports a damaged folder in its own words


def _model_tasks(model: str) -> tuple[str, ...]:
    from .models.registry import _REGISTRY

    info = _REGISTRY.get(model.lower())
    return info.tasks if info is not None else ("sr",)


def resolve_task(model: str, task: Optional[str], sigma: Optional[float], quality: Optional[int],
                 scale: Optional[int], calib_sigma: Optional[str] = None) -> Any:
    """The :class:`srq.tasks.Task` of a command: ``--task`` if given, else the run folder's recorded task, else the
    zoo model's first task (``sr`` for models of the user's own); the task's parameters from the options, or from
    the run folder's record."""
    from .tasks import get_task, task_from_dict

    if ("/" in model or os.sep in model) and ":" not in model and not Path(model).is_dir() \
            and not model.lower().endswith(".onnx"):  # an exported file: srq eval/upscale --runtime (cli_deploy)
        raise SrqError(f"run folder {model} does not exist; give a folder written by `srq quantize`, a model name "
                       f"or path/to/my_arch.py:build_model")
    recorded = _recorded_task(model)
    if task is None and recorded is not None and sigma is None and quality is None:
        found = task_from_dict(recorded)
        if found is not None:
            return found
    name = task or (recorded or {}).get("task") or _model_tasks(model)[0]
    return get_task(name, scale=scale, sigma=sigma, quality=quality, calib_sigma=parse_range(calib_sigma))


def task_scale(task: Any, scale: Optional[int]) -> Optional[int]:
    """The model's scale for ``task``: ``scale`` for SR (may be None: the command asks), 1 for restoration."""
    if task.name == "sr":
        return scale
    if scale not in (None, 1):
        raise SrqError(f"the {task.name} task runs models at scale 1; drop --scale {scale}")
    return 1


def task_arch(model: str, task: Any, arch: list[str]) -> list[str]:
    """``arch`` (``-a key=value`` items) plus the keywords the task sets on a zoo model that takes them (FFDNet's
    ``sigma``), unless given with ``-a``."""
    from .models.registry import _REGISTRY, arch_defaults

    info = _REGISTRY.get(model.lower())
    if info is None:
        return arch
    given = {item.partition("=")[0].strip() for item in arch}
    extra = task.model_keywords(arch_defaults(info))
    return arch + [f"{k}={json.dumps(v)}" for k, v in extra.items() if k not in given]


def default_datasets(task: Any, sr_sets: str) -> str:
    """The test sets a command scores when ``--datasets`` is not given."""
    return {"denoise": "Urban100", "jpeg": "Classic5"}.get(task.name, sr_sets)


def task_calibration(task: Any, calib: str, n: int, patch: int, data_root: Optional[Path]) -> tuple[Any, dict]:
    """Calibration inputs of a restoration task: clean crops of ``hr:FOLDER[,FOLDER]`` (``auto``:
    train/BSD200,train/T91) degraded by the task; and what the run folder records of them."""
    from .data.calibration import HR_PREFIX
    from .tasks import DEFAULT_CLEAN_SOURCES, task_calibration_set

    if calib == "auto":
        sources = list(DEFAULT_CLEAN_SOURCES)
    elif calib.startswith(HR_PREFIX):
        sources = [s.strip() for s in calib[len(HR_PREFIX):].split(",") if s.strip()]
    else:
        raise SrqError(f"the {task.name} task calibrates on clean images degraded on the fly: --calib takes "
                       f"hr:FOLDER[,FOLDER] (default hr:{','.join(DEFAULT_CLEAN_SOURCES)}), not {calib!r}")
    data = task_calibration_set(task, sources, patch=patch, n=n, data_root=data_root)
    return data, {"set": f"{HR_PREFIX}{','.join(map(str, sources))}", "images": len(data), "patch": patch,
                  "degraded_by": task.to_dict()}
