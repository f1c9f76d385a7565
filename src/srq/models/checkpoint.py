"""Safe checkpoint reading and loading.

Checkpoints are untrusted input: ``.pth``/``.pt`` files are read with ``torch.load(weights_only=True)``
(which refuses any pickle that would run code), ``.safetensors`` with safetensors and MatConvNet ``.mat``
(MATLAB v7.3) with h5py (:mod:`srq.models.matconvnet`). Wrapper dicts
(``params_ema``, ``params``, ``state_dict``, ``model``, ``net``) and DataParallel ``module.`` prefixes
are removed. Key problems are reported by name in one line.
"""

from __future__ import annotations

import math
import os
import pickle
import re
import zipfile
from collections import Counter
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
    elif suffix == ".mat":
        from .matconvnet import read_matconvnet

        obj = read_matconvnet(path)
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
                     source: str = "checkpoint", arch_params: Mapping[str, object] | None = None) -> None:
    """Raise :class:`SrqError` naming missing, unexpected and mis-shaped keys, with a hint.

    ``arch_params``: the model's architecture parameters and their values (``{"feature_channels": 52, ...}``);
    when the checkpoint is another width or depth of the architecture, the hint names the keyword to pass.
    """
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
    hint = _fit_hint(expected, state, missing, unexpected, model_name, arch_params or {})
    raise SrqError(f"{source} does not fit {model_name} ({'; '.join(parts)}); {hint}")


def _fit_hint(expected: Mapping[str, torch.Tensor], state: Mapping[str, torch.Tensor], missing: list[str],
              unexpected: list[str], model_name: str, arch_params: Mapping[str, object]) -> str:
    """What the difference between ``state`` and the model's ``expected`` state dict suggests, in a few words."""
    ints = {k: v for k, v in arch_params.items() if type(v) is int}
    if not missing and not unexpected:
        pairs: Counter[tuple[int, int]] = Counter()  # (model's size, checkpoint's size) of each differing dimension
        for k, v in expected.items():
            if tuple(state[k].shape) != tuple(v.shape) and state[k].dim() == v.dim():
                pairs.update((a, b) for a, b in zip(v.shape, state[k].shape) if a != b)
        if pairs and all(_scale_pair(a, b) for a, b in pairs):
            return "the checkpoint looks like the same architecture at another scale: check --scale"
        for (ours, theirs), _ in pairs.most_common():
            if hint := _keyword_hint("channels", ours, theirs, ints, model_name):
                return hint
        return ("the checkpoint is a different width (or scale) of this architecture: build it with the "
                "checkpoint's channels, or check --scale")
    if _same_layers_up_to_numbering(expected, state):
        ours_n, theirs_n = _numbered_count(expected), _numbered_count(state)
        if ours_n != theirs_n and (hint := _keyword_hint("blocks", ours_n, theirs_n, ints, model_name)):
            return hint
        return ("the checkpoint is a different depth (number of blocks) of this architecture: "
                "build it with the checkpoint's depth")
    return "the checkpoint is for a different architecture: check the model name and --scale"


def _keyword_hint(what: str, ours: int, theirs: int, ints: Mapping[str, int], model_name: str) -> str | None:
    """"the checkpoint has 48 channels where rlfn x4 has 52 (feature_channels): pass feature_channels=48 ...", naming
    the integer architecture keywords whose value is ``ours``; None if none is."""
    named = [k for k, v in ints.items() if v == ours]
    if not named:
        return None
    fix = " or ".join(f"{k}={theirs}" for k in named)
    return (f"the checkpoint has {theirs} {what} where {model_name} has {ours} ({' or '.join(named)}): pass {fix} "
            f"(-a {named[0]}={theirs} on the command line)")


def _scale_pair(ours: int, theirs: int) -> bool:
    """Whether two sizes differ as an upsampler's output channels for two scales do (c·s² vs c·t², c 1 or 3)."""
    for c in (1, 3):
        if ours % c == 0 and theirs % c == 0:
            s, t = math.isqrt(ours // c), math.isqrt(theirs // c)
            if s * s * c == ours and t * t * c == theirs and 2 <= min(s, t) and max(s, t) <= 8:
                return True
    return False


def _layer_pattern(key: str) -> str:
    return re.sub(r"\d+", "#", key)


def _same_layers_up_to_numbering(expected: Mapping[str, torch.Tensor], state: Mapping[str, torch.Tensor]) -> bool:
    """Both state dicts have the same layers once block numbers are ignored (one is deeper than the other)."""
    return {_layer_pattern(k) for k in expected} == {_layer_pattern(k) for k in state}


def _numbered_count(state: Mapping[str, torch.Tensor]) -> int:
    """The most blocks any numbered layer family (``block_#.``, ``body.#.``) has in ``state``."""
    families: dict[str, set[str]] = {}
    for key in state:
        for m in re.finditer(r"\d+", key):
            families.setdefault(key[:m.start()] + "#", set()).add(m.group())
            break  # the outermost number names the block
    return max((len(v) for v in families.values()), default=0)


def load_weights(model: nn.Module, path: str | os.PathLike, model_name: str = "model",
                 adapt: Callable[[dict], dict] | None = None,
                 arch_params: Mapping[str, object] | None = None) -> nn.Module:
    """Read ``path`` safely and load it strictly into ``model`` (in place); returns ``model``.

    ``adapt`` optionally renames keys of another official release to the model's own names. ``arch_params``
    (the model's width/depth keywords and values) lets a checkpoint of another width name the keyword to pass.
    """
    state = read_checkpoint(path)
    if adapt is not None:
        state = adapt(state)
    check_state_dict(model, state, model_name=model_name, source=Path(path).name, arch_params=arch_params)
    expected = model.state_dict()
    state = {k: v.to(expected[k].dtype) for k, v in state.items()}
    model.load_state_dict(state, strict=True)
    return model
