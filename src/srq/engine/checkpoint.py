"""Checkpoints of a run's long stages, so that a killed run resumes to a bit-identical result.

A :class:`WorkArea` is a folder holding ``fingerprint.json`` (the run's settings) and one
``stage-NNN.safetensors`` per :func:`~srq.engine.distill.finetune` call, numbered in call order. A resumed run
is executed again from the start: a stage whose checkpoint is complete restores its results instead of
training, one that was interrupted continues at its last saved step. Checkpoints are untrusted input and never
unpickled: tensors are safetensors, everything else JSON (in the safetensors metadata).
"""

from __future__ import annotations

import contextlib
import contextvars
import json
import os
import shutil
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Callable, Iterator

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file
from torch import nn

from ..errors import SrqError
from ..fileio import follow_umask

__all__ = ["WorkArea", "Stage", "resumable", "active_work_area"]

_ACTIVE: contextvars.ContextVar[WorkArea | None] = contextvars.ContextVar("srq_work_area", default=None)


class WorkArea:
    """The folder of one run's checkpoints: ``fingerprint.json`` (the settings the run was started with) and a
    :class:`Stage` file per long stage. Checkpoints are written every ``every_steps`` steps or ``every_seconds``
    seconds of a stage, whichever comes first, and at its end."""

    def __init__(self, folder: Path, every_steps: int, every_seconds: float) -> None:
        self.folder, self.every_steps, self.every_seconds = folder, every_steps, every_seconds
        self._stages = 0

    @classmethod
    def open(cls, folder: Path, fingerprint: dict, resume: bool, every_steps: int = 25,
             every_seconds: float = 60.0) -> WorkArea:
        """A fresh work area in ``folder`` (``resume=False``: emptied, ``fingerprint`` written), or the one there
        (``resume=True``), whose fingerprint must equal ``fingerprint`` (a JSON-able dict of the run's settings)."""
        folder = Path(folder)
        path = folder / "fingerprint.json"
        fingerprint = json.loads(json.dumps(fingerprint))  # as it reads back (tuples become lists)
        if resume:
            if not path.is_file():
                raise SrqError(f"nothing to resume in {folder}: it holds no checkpoints of an earlier run; "
                               "drop --resume")
            try:
                saved = json.loads(path.read_text())
            except (OSError, ValueError) as e:
                raise SrqError(f"damaged checkpoint {path} ({e}); rerun with --overwrite") from None
            differ = _differences(saved, fingerprint)
            if differ:
                raise SrqError(f"cannot resume from {folder}: the settings differ from the interrupted run's "
                               f"({', '.join(differ[:3])}); use the same settings, or rerun with --overwrite")
            for tmp in folder.glob(".tmp-*"):  # left by a write that was killed
                tmp.unlink()
        else:
            if folder.exists():
                if any(folder.iterdir()) and not path.is_file():
                    raise SrqError(f"{folder} is not an srq work folder; refusing to empty it")
                shutil.rmtree(folder)
            folder.mkdir(parents=True)
            _write_atomically(path, lambda tmp: Path(tmp).write_text(json.dumps(fingerprint, indent=2) + "\n"))
        return cls(folder, every_steps, every_seconds)

    def stage(self, description: str, steps: int) -> Stage:
        """The next stage of the run (numbered in call order)."""
        self._stages += 1
        return Stage(self, self._stages - 1, description, steps)

    def remove(self) -> None:
        """Delete the folder (once the run's result is saved)."""
        shutil.rmtree(self.folder, ignore_errors=True)


class Stage:
    """One stage's checkpoint, ``stage-NNN.safetensors``, replaced atomically at each save. Tensors: ``model.<key>``
    (the model's full state_dict), ``rng`` (torch's global RNG state), ``extra.<key>`` (the caller's own) and,
    until the stage is complete, ``optim.<i>.<key>`` (the optimiser's per-parameter tensors). Metadata ``srq``
    (JSON): ``description``, ``steps``, ``step`` (steps done; ``steps`` once complete), ``record`` (the caller's
    JSON-able results so far) and, until complete, ``optimizer`` (param groups, non-tensor per-parameter state)
    and ``scheduler``."""

    def __init__(self, work: WorkArea, index: int, description: str, steps: int) -> None:
        self.work, self.description, self.steps = work, description, steps
        self.path = work.folder / f"stage-{index:03d}.safetensors"
        self._saved = (0, time.monotonic())  # step and time of the last save
        self.tensors: dict[str, torch.Tensor] = {}  # the caller's extra tensors, as restored

    def restore(self, model: nn.Module, opt: torch.optim.Optimizer,
                scheduler: torch.optim.lr_scheduler.LRScheduler | None) -> tuple[int, dict] | None:
        """Load the checkpoint into ``model``, ``opt``, ``scheduler`` and torch's RNG; returns (steps done, record),
        or None if the stage has none."""
        if not self.path.exists():
            return None
        try:
            with safe_open(str(self.path), framework="pt") as f:
                meta = json.loads(f.metadata()["srq"])
                tensors = {k: f.get_tensor(k) for k in f.keys()}
            step, record = meta["step"], meta["record"]
        except (SafetensorError, OSError, ValueError, KeyError, TypeError) as e:
            raise SrqError(f"damaged checkpoint {self.path} ({e}); rerun with --overwrite") from None
        if (meta.get("description"), meta.get("steps")) != (self.description, self.steps):
            raise SrqError(f"{self.path} is of stage {meta.get('description')!r} ({meta.get('steps')} steps), this "
                           f"run's is {self.description!r} ({self.steps} steps); rerun with --overwrite")
        try:
            model.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("model.")}, strict=True)
            if step < self.steps:
                _load_optimizer(opt, meta["optimizer"], tensors)
                if scheduler is not None:
                    scheduler.load_state_dict(_scheduler_state(meta["scheduler"]))
            torch.set_rng_state(tensors["rng"])
        except (RuntimeError, ValueError, KeyError, TypeError) as e:
            raise SrqError(f"damaged checkpoint {self.path} (does not fit the run: {e}); "
                           "rerun with --overwrite") from None
        self._saved = (step, time.monotonic())
        self.tensors = {k[6:]: v for k, v in tensors.items() if k.startswith("extra.")}
        return step, record

    def due(self, step: int) -> bool:
        """Whether a checkpoint is due after ``step`` steps."""
        return step - self._saved[0] >= self.work.every_steps \
            or time.monotonic() - self._saved[1] >= self.work.every_seconds

    def save(self, step: int, record: dict, model: nn.Module, opt: torch.optim.Optimizer,
             scheduler: torch.optim.lr_scheduler.LRScheduler | None,
             tensors: dict[str, torch.Tensor] | None = None) -> None:
        """Checkpoint the stage after ``step`` steps; ``record``: the caller's JSON-able results so far; ``tensors``:
        more of the caller's tensors (e.g. a best state), given back in :attr:`tensors` by :meth:`restore`."""
        extra = tensors or {}
        tensors = {f"model.{k}": v for k, v in model.state_dict().items()}
        tensors.update({f"extra.{k}": v for k, v in extra.items()})
        tensors["rng"] = torch.get_rng_state()
        meta = {"description": self.description, "steps": self.steps, "step": step, "record": record}
        if step < self.steps:  # a complete stage needs no optimiser to go on
            state = opt.state_dict()
            other: dict[str, dict] = {}  # the optimiser's non-tensor state, by parameter index
            meta["optimizer"] = {"param_groups": state["param_groups"], "other": other}
            for i, per_param in state["state"].items():
                for k, v in per_param.items():
                    if torch.is_tensor(v):
                        tensors[f"optim.{i}.{k}"] = v
                    else:
                        other.setdefault(str(i), {})[k] = v
            meta["scheduler"] = scheduler.state_dict() if scheduler is not None else None
        tensors = {k: v.detach().cpu().clone(memory_format=torch.contiguous_format) for k, v in tensors.items()}
        _write_atomically(self.path, lambda tmp: save_file(tensors, tmp, metadata={"srq": json.dumps(meta)}))
        self._saved = (step, time.monotonic())


def _scheduler_state(saved: dict) -> dict:
    """A scheduler's state_dict as JSON gave it back: MultiStepLR's ``milestones`` (a Counter of step → count)
    had its int keys turned into text, and a text key would never match the step."""
    if isinstance(saved.get("milestones"), dict):
        saved = {**saved, "milestones": Counter({int(k): v for k, v in saved["milestones"].items()})}
    return saved


def _load_optimizer(opt: torch.optim.Optimizer, saved: dict, tensors: dict[str, torch.Tensor]) -> None:
    """Rebuild ``opt``'s state_dict from a checkpoint's ``optim.<i>.<key>`` tensors and JSON, and load it."""
    state: dict[int, dict] = {int(i): dict(v) for i, v in saved["other"].items()}
    for name, t in tensors.items():
        if name.startswith("optim."):
            _, i, key = name.split(".", 2)
            state.setdefault(int(i), {})[key] = t
    groups = [{k: tuple(v) if isinstance(live.get(k), tuple) else v for k, v in group.items()}  # JSON: no tuples
              for group, live in zip(saved["param_groups"], opt.param_groups, strict=True)]
    opt.load_state_dict({"state": state, "param_groups": groups})


def _write_atomically(path: Path, write: Callable[[str], object]) -> None:
    """``write(tmp)`` a file next to ``path``, then move it over ``path``: a kill leaves the old file intact."""
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        follow_umask(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _differences(a: object, b: object, prefix: str = "") -> list[str]:
    """The dotted keys at which two JSON values differ (``prefix`` itself where they are not both dicts)."""
    if isinstance(a, dict) and isinstance(b, dict):
        name = (lambda k: f"{prefix}.{k}") if prefix else str
        return [d for k in [*a, *(k for k in b if k not in a)]
                for d in (_differences(a[k], b[k], name(k)) if k in a and k in b else [name(k)])]
    return [] if a == b else [prefix or "fingerprint"]


@contextlib.contextmanager
def resumable(work: WorkArea | None) -> Iterator[WorkArea | None]:
    """Within the context, every :func:`~srq.engine.distill.finetune` call is a checkpointed stage of ``work``
    (None: no checkpoints)."""
    token = _ACTIVE.set(work)
    try:
        yield work
    finally:
        _ACTIVE.reset(token)


def active_work_area() -> WorkArea | None:
    """The work area set by the innermost :func:`resumable`, or None."""
    return _ACTIVE.get()
