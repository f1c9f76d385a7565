"""Reading MatConvNet ``simplenn`` networks saved by MATLAB as v7.3 ``.mat`` files (HDF5), safely.

Only HDF5 datasets are read (with h5py): no pickle, no MATLAB, no code. The file must hold ``net.layers``, a cell
array of structs with a ``type`` of ``conv``, ``relu`` or ``bnorm`` (anything else is refused in one line).

Layout: MATLAB stores a conv filter bank as [kh, kw, in, out] in column-major order; HDF5 shows the axes reversed,
(out, in, kw, kh), and MATLAB drops trailing singleton axes (a 1-output conv is [kh, kw, in], seen as
(in, kw, kh)). The reader pads the missing leading axes with 1 and transposes to torch's (out, in, kh, kw).
Biases are [out, 1] (seen as (1, out)). A ``bnorm`` layer (gain, bias, moments = [mean, std] per channel,
MatConvNet's test-time ``y = g (x - mean) / std + b``) is folded into the conv before it.

The result is a torch state dict named as ``nn.Sequential`` of the layers: the k-th remaining layer (conv or relu,
after folding) is ``model.{k}``, e.g. ``model.0.weight``, ``model.2.weight``, ... for conv–relu chains (DnCNN).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import SrqError

__all__ = ["read_matconvnet", "is_hdf5"]

_KNOWN = ("conv", "relu", "bnorm")


def is_hdf5(path: str | os.PathLike) -> bool:
    """Whether ``path`` starts like an HDF5 file (a MATLAB v7.3 .mat has a 512-byte header before it)."""
    with open(path, "rb") as f:
        head = f.read(520)
    return head[:8] == b"\x89HDF\r\n\x1a\n" or head[512:520] == b"\x89HDF\r\n\x1a\n"


def _text(ds: Any) -> str:
    """A MATLAB char array (uint16 codes) as a Python string."""
    return "".join(chr(int(c)) for c in np.asarray(ds[()]).ravel())


def _conv_weight(arr: np.ndarray) -> np.ndarray:
    """HDF5 view of a MATLAB [kh, kw, in, out] array (reversed, trailing singletons dropped) → (out, in, kh, kw)."""
    arr = arr.reshape((1,) * (4 - arr.ndim) + arr.shape)
    return np.ascontiguousarray(arr.transpose(0, 1, 3, 2))


class _Bad(Exception):
    """The file's structure is not a simplenn network (message: what was found)."""


def _layers(h5: Any) -> list[dict[str, Any]]:
    import h5py

    net = h5.get("net")
    if not isinstance(net, h5py.Group) or not isinstance(net.get("layers"), h5py.Dataset):
        raise _Bad("no net.layers cell array (is it a MatConvNet simplenn network?)")
    refs = net["layers"]
    if refs.dtype.kind != "O":
        raise _Bad("net.layers is not a cell array")
    layers = []
    for j, ref in enumerate(np.asarray(refs[()]).ravel()):
        layer = h5[ref]
        if not isinstance(layer, h5py.Group) or not isinstance(layer.get("type"), h5py.Dataset):
            raise _Bad(f"layer {j + 1} has no type")
        kind = _text(layer["type"])
        if kind not in _KNOWN:
            raise _Bad(f"layer {j + 1} has type {kind!r}; srq reads {', '.join(_KNOWN)} layers only")
        entry: dict[str, Any] = {"type": kind}
        if kind in ("conv", "bnorm"):
            weights = layer.get("weights")
            if not isinstance(weights, h5py.Dataset) or weights.dtype.kind != "O":
                raise _Bad(f"{kind} layer {j + 1} has no weights cell")
            arrays = [h5[r] for r in np.asarray(weights[()]).ravel()]
            if not all(isinstance(a, h5py.Dataset) and a.dtype.kind == "f" for a in arrays):
                raise _Bad(f"{kind} layer {j + 1} has weights that are not numeric arrays")
            entry["weights"] = [np.asarray(a[()], dtype=np.float32) for a in arrays]
        if kind == "conv":
            for field in ("stride", "pad"):
                value = np.asarray(layer[field][()]).ravel() if field in layer else np.array([1.0 if field == "stride"
                                                                                              else 0.0])
                entry[field] = value
        layers.append(entry)
    return layers


def _fold(layers: list[dict[str, Any]], name: str) -> dict[str, torch.Tensor]:
    """The state dict of the conv/relu sequence, bnorm folded into the conv before it."""
    state: dict[str, torch.Tensor] = {}
    index, last_conv = 0, None
    for j, layer in enumerate(layers):
        kind = layer["type"]
        if kind == "conv":
            if len(layer["weights"]) != 2:
                raise SrqError(f"{name}: conv layer {j + 1} has {len(layer['weights'])} weight arrays, expected 2 "
                               f"(filters, biases); not a network srq can read")
            if np.any(layer["stride"] != 1):
                raise SrqError(f"{name}: conv layer {j + 1} has stride {layer['stride'].tolist()}; srq reads stride-1 "
                               f"convolutions only")
            w = _conv_weight(layer["weights"][0])
            b = layer["weights"][1].ravel()
            if b.size != w.shape[0]:
                raise SrqError(f"{name}: conv layer {j + 1} has {b.size} biases for {w.shape[0]} filters; the file "
                               f"is damaged or not a simplenn network")
            state[f"model.{index}.weight"] = torch.from_numpy(w)
            state[f"model.{index}.bias"] = torch.from_numpy(b.copy())
            last_conv, index = index, index + 1
        elif kind == "bnorm":
            if last_conv is None or len(layer["weights"]) != 3:
                raise SrqError(f"{name}: bnorm layer {j + 1} does not follow a conv with (gain, bias, moments); "
                               f"not a network srq can read")
            g, beta, moments = (np.asarray(a, dtype=np.float64) for a in layer["weights"])
            c = state[f"model.{last_conv}.weight"].shape[0]
            if moments.size != 2 * c or g.size != c or beta.size != c:
                raise SrqError(f"{name}: bnorm layer {j + 1} does not match the {c} channels of its conv")
            mean, std = moments.reshape(2, c)  # HDF5 shows MATLAB's [C, 2] as (2, C)
            factor = g.ravel() / std
            folded = state[f"model.{last_conv}.weight"].double() * torch.from_numpy(factor).view(-1, 1, 1, 1)
            bias = (state[f"model.{last_conv}.bias"].double().numpy() - mean) * factor + beta.ravel()
            state[f"model.{last_conv}.weight"] = folded.float()
            state[f"model.{last_conv}.bias"] = torch.from_numpy(bias).float()
        else:  # relu: no parameters, but it takes a place in the Sequential
            index += 1
    if not state:
        raise SrqError(f"{name} holds no conv layer; not a network srq can read")
    return state


def read_matconvnet(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Read a MatConvNet simplenn ``.mat`` (MATLAB v7.3 / HDF5) into ``{"model.{k}.weight": tensor, ...}``.

    Raises :class:`SrqError` with one line for a file that is not HDF5 (an older ``.mat``: re-save it with
    ``save(..., '-v7.3')``), is unreadable, or has an unexpected structure.
    """
    import h5py

    path = Path(path)
    if not path.is_file():
        raise SrqError(f"checkpoint {str(path)!r} does not exist; check the path")
    if not is_hdf5(path):
        raise SrqError(f"{path.name} is not a MATLAB v7.3 (HDF5) .mat file; srq reads MatConvNet networks saved "
                       f"with save(file, 'net', '-v7.3')")
    try:
        with h5py.File(path, "r") as h5:
            layers = _layers(h5)
    except _Bad as e:
        raise SrqError(f"{path.name} has an unexpected structure: {e}; srq reads MatConvNet simplenn networks "
                       f"(conv, relu, bnorm)")
    except (OSError, KeyError, ValueError, TypeError) as e:
        raise SrqError(f"{path.name} is not a readable MATLAB v7.3 file ({str(e).splitlines()[0][:120]}); "
                       f"re-download it")
    return _fold(layers, path.name)
