"""Reading PaddlePaddle ``.pdparams`` files without PaddlePaddle and without executing pickled code.

A ``.pdparams`` file is a pickle of ``{name: numpy.ndarray}`` plus a ``StructuredToParameterName@@``
entry. :class:`NumpyOnlyUnpickler` resolves only the globals numpy needs to rebuild arrays; any other
global (``os.system``, ``builtins.eval``, ...) is refused before it can be called. Paddle ``Linear``
weights are stored [in, out] — the architecture's ``adapt_state_dict`` transposes them, since only it
knows which entries are ``Linear`` weights.
"""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import numpy as np
import torch

from ..errors import SrqError

__all__ = ["NumpyOnlyUnpickler", "read_pdparams"]

_ALLOWED = {
    ("numpy._core.multiarray", "_reconstruct"), ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "scalar"), ("numpy.core.multiarray", "scalar"),
    ("numpy", "ndarray"), ("numpy", "dtype"),
}


class NumpyOnlyUnpickler(pickle.Unpickler):
    """An unpickler whose only reachable globals rebuild numpy arrays and dtypes."""

    def find_class(self, module: str, name: str):  # noqa: D401 - pickle API
        if (module, name) in _ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"global '{module}.{name}' is not allowed")

    def persistent_load(self, pid):
        raise pickle.UnpicklingError("persistent ids are not allowed")


def read_pdparams(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Read a ``.pdparams`` file into ``{name: tensor}`` (names and layouts as Paddle saved them)."""
    path = Path(path)
    try:
        with open(path, "rb") as f:
            obj = NumpyOnlyUnpickler(f).load()
    except pickle.UnpicklingError as e:
        raise SrqError(f"{path.name} was refused: its pickle asks for code execution ({e}); "
                       f"only numpy arrays are accepted in .pdparams files — get the file from a trusted source")
    except (EOFError, ValueError, TypeError, AttributeError, IndexError, OSError) as e:
        raise SrqError(f"{path.name} is not a readable .pdparams file ({type(e).__name__}: {e}); re-download it")
    if not isinstance(obj, dict):
        raise SrqError(f"{path.name} holds a {type(obj).__name__}, not a dict of arrays")
    state = {}
    for key, value in obj.items():
        if key == "StructuredToParameterName@@":
            continue
        if isinstance(value, np.ndarray):
            state[str(key)] = torch.from_numpy(np.array(value, copy=True))
    return state
