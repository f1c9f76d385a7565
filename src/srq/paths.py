"""Where srq looks for data and weights.

* data root: ``--data-root`` option, else ``$SRQ_DATA``, else ``~/.cache/srq/data``.
  It holds ``benchmarks/<Set>/`` (HR images) and ``calibration/<name>/`` (LR images).
* weights root: ``--weights-root`` option, else ``$SRQ_WEIGHTS``, else ``~/.cache/srq/weights``.
  It holds the official checkpoint files under the names listed by ``srq models``.
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["data_root", "weights_root", "DEFAULT_DATA_ROOT", "DEFAULT_WEIGHTS_ROOT"]

DEFAULT_DATA_ROOT = Path("~/.cache/srq/data").expanduser()
DEFAULT_WEIGHTS_ROOT = Path("~/.cache/srq/weights").expanduser()


def data_root(override: str | os.PathLike | None = None) -> Path:
    """The data root: ``override`` if given, else ``$SRQ_DATA``, else the default."""
    if override:
        return Path(override).expanduser()
    env = os.environ.get("SRQ_DATA")
    return Path(env).expanduser() if env else DEFAULT_DATA_ROOT


def weights_root(override: str | os.PathLike | None = None) -> Path:
    """The weights root: ``override`` if given, else ``$SRQ_WEIGHTS``, else the default."""
    if override:
        return Path(override).expanduser()
    env = os.environ.get("SRQ_WEIGHTS")
    return Path(env).expanduser() if env else DEFAULT_WEIGHTS_ROOT
