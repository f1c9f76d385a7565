"""Results files with provenance: git revision, machine, command, time.

Every number srq reports can be traced to the code and the command that made it. Files are written
atomically (temp file + rename), as JSON or CSV by extension.
"""

from __future__ import annotations

import csv
import datetime as _dt
import io
import json
import os
import platform
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any, Callable, Sequence

import torch

from ..fileio import temp_beside
from ..errors import SrqError
from ..utils.device import cpuinfo_field
from .evaluate import DatasetScore

__all__ = ["provenance", "pin_git_revision", "run_script", "write_results", "atomic_write_text"]


def _git_revision() -> str:
    here = Path(__file__).resolve().parent
    try:
        rev = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, timeout=5)
        if rev.returncode != 0:
            return "unknown"
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=here,
                               capture_output=True, text=True, timeout=5).stdout.strip()
        return rev.stdout.strip() + ("-dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


_PINNED_REVISION: str | None = None


def pin_git_revision() -> str:
    """Take the git revision now and report it in every later :func:`provenance` of this process, so a long
    benchmark names the code it started with, not commits made beside it while it ran."""
    global _PINNED_REVISION
    _PINNED_REVISION = _git_revision()
    return _PINNED_REVISION


def run_script(main: Callable[[], None]) -> None:
    """Run a benchmark script's ``main``: pin the git revision first (:func:`pin_git_revision`), refuse a tree
    with uncommitted changes to tracked files (results must name the code that made them; ``SRQ_ALLOW_DIRTY=1``
    runs anyway and the results say ``-dirty``), and turn an :class:`~srq.errors.SrqError` into one line and
    exit code 2 (:func:`~srq.errors.exit_on_user_error`)."""
    from ..errors import SrqError, exit_on_user_error

    def checked_main() -> None:
        asks_help = any(a in ("-h", "--help") for a in sys.argv[1:])
        if pin_git_revision().endswith("-dirty") and os.environ.get("SRQ_ALLOW_DIRTY") != "1" and not asks_help:
            raise SrqError("the working tree has uncommitted changes to tracked files: commit them first, so the "
                           "results name the code that made them (or set SRQ_ALLOW_DIRTY=1 for a trial run)")
        main()

    exit_on_user_error(checked_main)


def provenance(command: Sequence[str] | None = None) -> dict[str, Any]:
    """Where and how a result was produced: git revision (pinned at :func:`pin_git_revision` if it was called),
    machine, library versions, command, UTC time."""
    from .._version import __version__

    argv = list(command) if command is not None else sys.argv
    if argv and Path(argv[0]).name in ("srq", "cli.py", "__main__.py"):  # console script or python -m
        argv = ["srq", *argv[1:]]
    return {
        "srq_version": __version__,
        "git_revision": _PINNED_REVISION or _git_revision(),
        "command": " ".join(shlex.quote(a) for a in argv),
        "machine": {"platform": platform.platform(), "processor": platform.processor() or platform.machine(),
                    "cpu": cpuinfo_field("model name"), "cpu_capability": torch.backends.cpu.get_cpu_capability(),
                    "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(),
                    "python": platform.python_version(), "torch": torch.__version__,
                    "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None},
        "utc_time": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
    }


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` to ``path`` via a temp file in the same folder and ``os.replace``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_beside(path)
    try:
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def write_results(path: str | os.PathLike, scores: Sequence[DatasetScore], meta: dict[str, Any]) -> Path:
    """Write evaluation results to ``.json`` (everything, per image) or ``.csv`` (one row per set).

    ``meta`` (model, scale, weights, protocol, provenance...) goes into the JSON top level and into
    every CSV row as flat columns.
    """
    path = Path(path)
    if path.suffix.lower() == ".csv":
        buf = io.StringIO()
        flat = {k: (json.dumps(v) if isinstance(v, (dict, list)) else v) for k, v in meta.items()}
        fields = [*flat, "dataset", "scale", "psnr", "ssim", "num_images", "seconds"]
        writer = csv.DictWriter(buf, fieldnames=fields)
        writer.writeheader()
        for s in scores:
            row = {k: v for k, v in s.to_dict().items() if k != "images"}
            writer.writerow({**flat, **row})
        return atomic_write_text(path, buf.getvalue())
    if path.suffix.lower() != ".json":
        raise SrqError(f"results file must end in .json or .csv, not {path.suffix!r}; rename {path.name}")
    doc = {**meta, "results": [s.to_dict() for s in scores]}
    return atomic_write_text(path, json.dumps(doc, indent=2) + "\n")
