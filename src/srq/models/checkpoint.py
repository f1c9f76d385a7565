"""Safe checkpoint reading and loading.

Checkpoints are untrusted input: ``.pth``/``.pt`` files are read with ``torch.load(weights_only=True)``
(which refuses any pickle that would run code) and ``.safetensors`` with safetensors. Wrapper dicts
(``params_ema``, ``params``, ``state_dict``, ``model``, ``net``) and DataParallel ``module.`` prefixes
are removed. Key problems are reported by name in one line.
"""

from __future__ import annotations

import os
import pickle
import zipfile
from pathlib import Path
from typing import Callable, Mapping

import torch
from torch import nn

from ..errors import SrqError

__all__ = ["read_checkpoint", "unwrap_state_dict", "check_state_dict", "load_weights"]

# Wrapper keys in the order we prefer them (BasicSR saves EMA weights under params_ema).
_WRAPPER_KEYS = ("params_ema", "params", "state_dict", "model_state_dict", "model", "net", "generator")


def read_checkpoint(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Read a checkpoint file into a flat ``{name: tensor}`` dict on the CPU, executing no code."""
    path = Path(path)
    if not path.is_file():
        raise SrqError(f"checkpoint {str(path)!r} does not exist; check the path")
    suffix = path.suffix.lower()
    if suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            obj: object = load_file(str(path), device="cpu")
        except (SafetensorError, OSError, ValueError) as err:
            raise SrqError(f"{path.name} is not a readable .safetensors file ({err}); re-download or re-convert it")
    elif suffix == ".pdparams":
        from .paddle import read_pdparams

        obj = read_pdparams(path)
    else:
        try:
            obj = torch.load(str(path), map_location="cpu", weights_only=True)
        except pickle.UnpicklingError as err:
            # torch's weights-only unpickler refuses any global or opcode it cannot prove harmless
            # (code-executing pickles, but also garbage bytes): in both cases nothing was executed.
            reason = _weights_only_reason(str(err))
            raise SrqError(f"{path.name} was refused: it is not a plain tensor checkpoint that loads without "
                           f"running code ({reason[:160]}); re-save it as a state dict of tensors or as "
                           f".safetensors, or re-download it")
        except (RuntimeError, EOFError, zipfile.BadZipFile, OSError, ValueError) as err:
            raise SrqError(f"{path.name} is not a readable PyTorch checkpoint ({str(err).splitlines()[0][:160]}); "
                           f"re-download it")
    return unwrap_state_dict(obj, source=path.name)


def _weights_only_reason(message: str) -> str:
    """The one informative line of torch's weights-only refusal message."""
    lines = [ln.strip() for ln in message.splitlines() if ln.strip()]
    for i, line in enumerate(lines):
        if line.startswith("WeightsUnpickler error:"):
            rest = line[len("WeightsUnpickler error:"):].strip()
            return rest or (lines[i + 1] if i + 1 < len(lines) else "unknown reason")
    return lines[0] if lines else "unknown reason"


def unwrap_state_dict(obj: object, source: str = "checkpoint") -> dict[str, torch.Tensor]:
    """Strip wrapper dicts and ``module.`` prefixes; keep only tensor entries."""
    if isinstance(obj, nn.Module):  # only reachable for objects built in-process, never from weights_only
        obj = obj.state_dict()
    if not isinstance(obj, Mapping):
        raise SrqError(f"{source} holds a {type(obj).__name__}, not a state dict; save model.state_dict() instead")
    for key in _WRAPPER_KEYS:
        inner = obj.get(key)
        if isinstance(inner, Mapping) and any(isinstance(v, torch.Tensor) for v in inner.values()):
            obj = inner
            break
    state = {str(k): v for k, v in obj.items() if isinstance(v, torch.Tensor)}
    if not state:
        raise SrqError(f"{source} contains no tensors; is it a model checkpoint?")
    while state and all(k.startswith("module.") for k in state):
        state = {k[len("module."):]: v for k, v in state.items()}
    return state


def _short(names: list[str], n: int = 4) -> str:
    more = f" (+{len(names) - n} more)" if len(names) > n else ""
    return ", ".join(names[:n]) + more


def check_state_dict(model: nn.Module, state: Mapping[str, torch.Tensor], model_name: str = "model",
                     source: str = "checkpoint") -> None:
    """Raise :class:`SrqError` naming missing, unexpected and mis-shaped keys, with a hint."""
    expected = model.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    mismatched = [f"{k} {tuple(state[k].shape)} vs {tuple(v.shape)}" for k, v in expected.items()
                  if k in state and tuple(state[k].shape) != tuple(v.shape)]
    if not (missing or unexpected or mismatched):
        return
    parts = []
    if mismatched:
        parts.append(f"shape mismatch: {_short(mismatched, 2)}")
    if missing:
        parts.append(f"missing: {_short(missing)}")
    if unexpected:
        parts.append(f"unexpected: {_short(unexpected)}")
    if mismatched and not missing and not unexpected:
        hint = "the checkpoint looks like the same architecture at another scale or width: check --scale"
    else:
        hint = "the checkpoint is for a different architecture: check the model name and --scale"
    raise SrqError(f"{source} does not fit {model_name} ({'; '.join(parts)}); {hint}")


def load_weights(model: nn.Module, path: str | os.PathLike, model_name: str = "model",
                 adapt: Callable[[dict], dict] | None = None) -> nn.Module:
    """Read ``path`` safely and load it strictly into ``model`` (in place); returns ``model``.

    ``adapt`` optionally renames keys of another official release to the model's own names.
    """
    state = read_checkpoint(path)
    if adapt is not None:
        state = adapt(state)
    check_state_dict(model, state, model_name=model_name, source=Path(path).name)
    expected = model.state_dict()
    state = {k: v.to(expected[k].dtype) for k, v in state.items()}
    model.load_state_dict(state, strict=True)
    return model
