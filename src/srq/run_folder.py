"""Reading a run folder's record: ``srq.json`` (architecture, quantization config, placement, recipe, report)."""

from __future__ import annotations

import json
import os
from pathlib import Path

from .errors import SrqError

__all__ = ["read_meta"]


def read_meta(folder: str | os.PathLike) -> dict:
    """The ``srq.json`` of a saved model folder."""
    path = Path(folder) / "srq.json"
    if not path.is_file():
        raise SrqError(f"{folder} is not a saved srq model (no srq.json); pass a folder written by `srq quantize`")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise SrqError(f"{path} is not valid JSON ({e}); the run folder is damaged")
