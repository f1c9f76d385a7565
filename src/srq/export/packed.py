"""Packed low-bit model files: quantized weights as b-bit integers packed into bytes, everything else float32.

One ``.safetensors`` file with three tensors and a small JSON header (``__metadata__["srq"]``: the architecture
and quantization config, as in a run folder's ``srq.json``; the config's layer rules, one per layer for mixed
precision, are stored as ``rules_zlib``: their JSON, zlib-compressed, base64 — over 10× smaller, which keeps the file of
a many-layer mixed-precision model within 1 % of its cost; :func:`read_header` returns them in the config again):

* ``packed`` (uint8): every quantized weight (a quantized layer's, or a raw weight parameter marked with a
  ``WeightPoint``, in its quantizer's (channels, rest) layout) as level indices ``k = v − vmin`` (``0 … 2ᵇ − 1``; 1-bit
  binary weights: ``k = (v + 1)/2``), ``b`` bits each, little-endian bit order, layers one after another in
  state-dict order, each starting on a byte;
* ``floats`` (float32): every other parameter and floating-point buffer (biases, quantizer bounds, ...) flat,
  in state-dict order;
* ``bools`` (uint8): boolean buffers (LSQ's per-channel ``signed`` choice), one bit each, in state-dict order;
* ``flags`` (uint8): other buffers that are not floating point (QuantSR's shift axis), bytes in state-dict order;
  quantizers' ``initialized`` flags are not stored (a packed model is calibrated). (Format 1 stored booleans as
  bytes in ``flags`` and had no ``bools``.)

Loading rebuilds the model from the header and the registry (no code is executed from the file), puts the
dequantized weight ``v·s`` where the float weight was, and loads the rest; as ``v·s`` lies on its own grid, the
loaded model computes exactly what the run folder's model computes. The float weights before quantization are not
kept (the file is for deployment, not for more fine-tuning). Its size is srq's cost accounting
(:mod:`srq.quant.cost`: weights at their bits, everything else at 32 bit) plus the header, LSQ's sign bits and
under one byte per layer of padding.
"""

from __future__ import annotations

import base64
import functools
import json
import os
import zlib
from pathlib import Path
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch
from torch import nn

from ..errors import SrqError
from ..fileio import write_safetensors
from ..quant.layers import QUANT_LAYER_TYPES, WeightPointQuantizer
from ..quant.prepare import weight_points
from ..quant.quantizer import Quantizer
from ..run_folder import read_meta
from .qparams import int_grid, int_weight

__all__ = ["pack_bits", "unpack_bits", "save_packed", "load_packed", "PACKED_FORMAT"]

PACKED_FORMAT = "srq-packed-2"
_READABLE_FORMATS = ("srq-packed-1", PACKED_FORMAT)  # 1: layer rules inline in the config
_MAX_RULES_JSON = 1 << 24  # bytes; a header's rules decompress to at most this


def pack_bits(k: np.ndarray, bits: int) -> np.ndarray:
    """Integers ``k`` in ``0 … 2ᵇ − 1`` (any shape) → ``ceil(k.size·b/8)`` uint8, little-endian bit order."""
    k = np.ascontiguousarray(k, dtype=np.uint8).reshape(-1)
    planes = np.unpackbits(k[:, None], axis=1, bitorder="little")[:, :bits]
    return np.packbits(planes.reshape(-1), bitorder="little")


def unpack_bits(packed: np.ndarray, bits: int, count: int) -> np.ndarray:
    """The inverse of :func:`pack_bits`: ``count`` uint8 integers."""
    planes = np.unpackbits(np.asarray(packed, dtype=np.uint8), bitorder="little")[:count * bits]
    planes = planes.reshape(count, bits)
    full = np.zeros((count, 8), dtype=np.uint8)
    full[:, :bits] = planes
    return np.packbits(full, axis=1, bitorder="little").reshape(-1)


@dataclass
class _QuantizedWeight:
    """A stored weight and how it is quantized: ``quantized()`` is ``Q(weight)`` in the quantizer's layout
    (``layout``; the weight's own shape for a layer, (channels, rest) for a marked raw weight)."""

    name: str
    quantizer: Quantizer
    weight: torch.Tensor
    quantized: Callable[[], torch.Tensor]
    layout: tuple[int, ...]


def _quantized_weights(model: nn.Module) -> dict[str, _QuantizedWeight]:
    """State-dict key of every quantized weight → how it is quantized."""
    out = {}
    for name, m in model.named_modules():
        if isinstance(m, QUANT_LAYER_TYPES) and m.weight_quantizer is not None:
            if m.weight_delta is not None:
                raise SrqError(f"{name} still has a weight increment (weight_delta); fold it into the weight first")
            out[f"{name}.weight" if name else "weight"] = _QuantizedWeight(
                name, m.weight_quantizer, m.weight, m.effective_weight, tuple(m.weight.shape))
    for name, point, param in weight_points(model):
        owner = name.rpartition(".")[0]
        out[f"{owner}.{point.param}" if owner else point.param] = _QuantizedWeight(
            name, point.quantizer, param, functools.partial(_point_matrix, point, param),
            tuple(point.matrix(param).shape))
    return out


def _point_matrix(point: WeightPointQuantizer, param: torch.Tensor) -> torch.Tensor:
    """A marked raw weight, quantized, in its quantizer's (channels, rest) layout."""
    return point.quantizer(point.matrix(param))


def _is_flag(key: str) -> bool:
    return key.rsplit(".", 1)[-1] == "initialized"


@torch.no_grad()
def save_packed(model: nn.Module, run: str | os.PathLike | None, path: str | os.PathLike) -> Path:
    """Write quantized ``model`` (loaded from run folder ``run``, whose ``srq.json`` supplies the header) to
    ``path`` atomically; returns the path."""
    meta = read_meta(run) if run is not None else {}
    config = dict(meta.get("quant_config") or {})
    header = {"format": PACKED_FORMAT, "architecture": meta.get("architecture", getattr(model, "srq_spec", None)),
              "quant_config": config or None}
    if config.get("rules"):
        header["rules_zlib"] = _compress_rules(config.pop("rules"))
    if meta.get("structure") is not None:  # blocks wrapped or removed before quantization (QuantSR+)
        header["structure"] = meta["structure"]
    if header["quant_config"] is None:
        raise SrqError("only a quantized run folder can be packed")
    if header["architecture"] is None:
        header["user_model"] = {k: v for k, v in (meta.get("user_model") or {}).items() if k != "code"}
    weights = _quantized_weights(model)
    packed: list[np.ndarray] = []
    floats: list[torch.Tensor] = []
    flags: list[np.ndarray] = []
    bools: list[np.ndarray] = []
    for key, t in model.state_dict().items():
        if key in weights:
            qw = weights[key]
            iw = int_weight(qw.quantized().detach().float().cpu(), qw.quantizer, qw.name)
            v = iw.q.to(torch.int16) - _broadcast(iw.zero_point.to(torch.int16), iw.q.dim(), iw.axis)
            grid = int_grid(qw.quantizer, qw.name, weight=True)
            vmin = grid.vmin if grid.vmin.dim() == 0 else _broadcast(grid.vmin, v.dim(), iw.axis)
            k = (v + 1) // 2 if grid.bits == 1 else v - vmin
            packed.append(pack_bits(k.numpy().astype(np.uint8), grid.bits))
        elif t.is_floating_point():
            floats.append(t.detach().float().cpu().reshape(-1))
        elif t.dtype == torch.bool and not _is_flag(key):
            bools.append(t.detach().cpu().reshape(-1).numpy().astype(np.uint8))
        elif not _is_flag(key):
            flags.append(t.detach().cpu().reshape(-1).view(torch.uint8).numpy())  # 1-d: a 0-d int64 has no byte view
    tensors = {"packed": torch.from_numpy(np.concatenate(packed) if packed else np.zeros(0, np.uint8)),
               "floats": torch.cat(floats) if floats else torch.zeros(0),
               "flags": torch.from_numpy(np.concatenate(flags) if flags else np.zeros(0, np.uint8)),
               "bools": torch.from_numpy(pack_bits(np.concatenate(bools), 1) if bools else np.zeros(0, np.uint8))}
    return write_safetensors(path, tensors, metadata={"srq": json.dumps(header, separators=(",", ":"))})


def _broadcast(v: torch.Tensor, dim: int, axis: int) -> torch.Tensor:
    shape = [1] * dim
    shape[axis] = -1
    return v.reshape(shape)


def _compress_rules(rules: list[dict]) -> str:
    return base64.b64encode(zlib.compress(json.dumps(rules, separators=(",", ":")).encode(), 9)).decode("ascii")


def _expand_rules(text: object, path: str | os.PathLike) -> list[dict]:
    """The layer rules of a header's ``rules_zlib`` (a one-line SrqError if they are not readable)."""
    damaged = SrqError(f"{path}: the layer rules in its header are not readable; the file is damaged")
    try:
        inflate = zlib.decompressobj()
        raw = inflate.decompress(base64.b64decode(str(text), validate=True), _MAX_RULES_JSON)
        if inflate.unconsumed_tail or not inflate.eof:
            raise damaged
        rules = json.loads(raw)
    except (ValueError, zlib.error) as e:
        raise damaged from e
    if not isinstance(rules, list):
        raise damaged
    return rules


def read_header(path: str | os.PathLike) -> dict:
    """The JSON header of a packed file (its layer rules back in ``quant_config``)."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
    except Exception as e:
        raise SrqError(f"{path} is not a readable safetensors file ({str(e).splitlines()[0][:200]})")
    try:
        header = json.loads(meta.get("srq", "{}"))
    except ValueError:
        header = None
    if not isinstance(header, dict):
        raise SrqError(f"{path}: its srq header is not a JSON object; the file is damaged")
    if header.get("format") not in _READABLE_FORMATS:
        raise SrqError(f"{path} is not a packed srq model this srq reads (format {header.get('format')!r}, expected "
                       f"{' or '.join(_READABLE_FORMATS)})")
    if "rules_zlib" in header:
        if not isinstance(header.get("quant_config"), dict):
            raise SrqError(f"{path}: its srq header has layer rules but no quantization config; the file is damaged")
        header["quant_config"] = {**header["quant_config"], "rules": _expand_rules(header.pop("rules_zlib"), path)}
    return header


@torch.no_grad()
def load_packed(path: str | os.PathLike, model: nn.Module | None = None) -> nn.Module:
    """Rebuild the model of a packed file (``model``: a float instance, for an architecture of your own)."""
    import copy

    from safetensors.torch import load_file

    from ..engine.slimming import apply_structure
    from ..models import create_model
    from ..quant import QuantConfig, prepare

    header = read_header(path)
    spec = header["architecture"]
    if model is not None:
        net = copy.deepcopy(model)
        apply_structure(net, header.get("structure"))
        shape = (header.get("user_model") or {}).get("example_shape")
        prepare(net, QuantConfig.from_dict(header["quant_config"]), None if shape is None else torch.rand(shape))
    elif spec is None:
        raise SrqError(f"{path} holds a model of your own architecture; pass a float instance of it: "
                       f"srq.load(path, model=...)")
    else:
        net = create_model(spec["model"], spec["scale"], None, wrap=spec.get("wrapped", True),
                           **(spec.get("arch") or {}))
        apply_structure(net, header.get("structure"))
        prepare(net, QuantConfig.from_dict(header["quant_config"]))
    blobs = load_file(str(path))
    damaged = f"{path} does not match the model its header describes; the file is damaged"
    if not {"packed", "floats", "flags"} <= blobs.keys():
        raise SrqError(damaged)
    packed, floats, flags = blobs["packed"].numpy(), blobs["floats"], blobs["flags"].numpy()
    weights = _quantized_weights(net)
    state = net.state_dict()
    bits_of_bools = "bools" in blobs  # format 2: booleans one bit each; format 1: bytes in flags
    n_bools = sum(t.numel() for k, t in state.items() if t.dtype == torch.bool and not _is_flag(k))
    if bits_of_bools and blobs["bools"].numel() != (n_bools + 7) // 8:
        raise SrqError(damaged)
    bool_values = unpack_bits(blobs["bools"].numpy(), 1, n_bools).astype(bool) if bits_of_bools else None
    p_at = f_at = g_at = b_at = 0
    new: dict[str, torch.Tensor] = {}
    for key, t in state.items():
        if key in weights:
            bits = weights[key].quantizer.bits
            n = t.numel()
            size = (n * bits + 7) // 8
            if p_at + size > packed.size:
                raise SrqError(damaged)
            k = torch.from_numpy(unpack_bits(packed[p_at:p_at + size], bits, n).astype(np.int64))
            k = k.reshape(weights[key].layout)
            p_at += size
            new[key] = k  # dequantized below, once the quantizer's bounds are loaded
        elif t.is_floating_point():
            n = t.numel()
            if f_at + n > floats.numel():
                raise SrqError(damaged)
            new[key] = floats[f_at:f_at + n].reshape(t.shape).to(t.dtype)
            f_at += n
        elif _is_flag(key):
            new[key] = torch.ones_like(t)
        elif bool_values is not None and t.dtype == torch.bool:
            new[key] = torch.from_numpy(bool_values[b_at:b_at + t.numel()].copy()).reshape(t.shape)
            b_at += t.numel()
        else:
            n = t.numel() * t.element_size()
            if g_at + n > flags.size:
                raise SrqError(damaged)
            new[key] = torch.from_numpy(flags[g_at:g_at + n].copy()).view(t.dtype).reshape(t.shape)
            g_at += n
    if (p_at, f_at, g_at) != (packed.size, floats.numel(), flags.size):
        raise SrqError(damaged)
    levels = {key: new[key] for key in weights}
    net.load_state_dict({k: (state[k] if k in weights else v) for k, v in new.items()}, strict=True)
    for key, k in levels.items():  # bounds are loaded: now the weights as v·s
        qw = weights[key]
        grid = int_grid(qw.quantizer, qw.name, weight=True)
        axis = qw.quantizer.channel_axis or 0
        vmin = grid.vmin if grid.vmin.dim() == 0 else _broadcast(grid.vmin, k.dim(), axis)
        scale = grid.scale if grid.scale.dim() == 0 else _broadcast(grid.scale, k.dim(), axis)
        v = 2 * k - 1 if grid.bits == 1 else k + vmin
        qw.weight.copy_((v.float() * scale).reshape(qw.weight.shape).to(qw.weight.dtype))
    setattr(net, "srq_spec", spec)
    return net.eval()
