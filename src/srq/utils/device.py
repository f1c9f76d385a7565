"""Choosing the torch device from a user's ``--device`` text: ``auto`` (CUDA when present, else CPU), ``cpu``,
``cuda`` or ``cuda:N``; whether a device computes bfloat16 natively (:func:`native_bf16`).

Models are moved with ``model.to(device)``; srq creates every quantizer, observer statistic, rectifier and bit
offset on the device of the model it is given, and moves calibration batches there one at a time.
"""

from __future__ import annotations

import argparse

import torch

__all__ = ["DEVICE_CHOICES", "resolve_device", "device_arg", "native_bf16", "cpu_has_vnni", "cpuinfo_field"]

DEVICE_CHOICES = "auto, cpu, cuda or cuda:N"


def resolve_device(spec: str | torch.device = "auto") -> torch.device:
    """The device for ``spec``; raises ``ValueError`` (one line) for an unknown or unavailable one."""
    if isinstance(spec, torch.device):
        spec = str(spec)
    text = spec.strip().lower()
    if text == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(text)
    except RuntimeError as e:
        raise ValueError(f"unknown device {spec!r} ({str(e).splitlines()[0]}); use {DEVICE_CHOICES}") from None
    if dev.type not in ("cpu", "cuda"):
        raise ValueError(f"device {spec!r} is not supported; use {DEVICE_CHOICES}")
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"device {spec!r} was asked for but no CUDA GPU is available; use cpu or auto")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ValueError(f"device {spec!r}: there are only {torch.cuda.device_count()} CUDA GPU(s) "
                             f"(cuda:0 … cuda:{torch.cuda.device_count() - 1})")
    return dev


def device_arg(spec: str) -> torch.device:
    """``argparse`` type for a ``--device`` option (``p.add_argument("--device", type=device_arg, default="auto")``)."""
    try:
        return resolve_device(spec)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def native_bf16(device: torch.device) -> bool:
    """Whether ``device`` runs bfloat16 convolutions and matrix products natively: a CUDA GPU with bf16 support,
    or a CPU whose oneDNN has bf16 kernels (AVX512-BF16 / AMX; AVX-512 BW/VL/DQ at least). On a CPU without them
    (AVX2 only, e.g. AMD Zen 3) bfloat16 autocast is emulated: an IMDN x4 training step ran 11× slower than in
    float32 (results/qat/speed-avx2.json)."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    if device.type != "cpu":
        return False
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def cpuinfo_field(name: str) -> str | None:
    """The first ``name`` line's value in Linux's ``/proc/cpuinfo`` (e.g. ``"model name"``, ``"flags"``); None
    where there is no such file or line."""
    try:
        text = open("/proc/cpuinfo", encoding="utf-8", errors="replace").read()
    except OSError:
        return None
    return next((line.split(":", 1)[1].strip() for line in text.splitlines()
                 if line.split(":", 1)[0].strip() == name and ":" in line), None)


def cpu_has_vnni() -> bool:
    """Whether the CPU has an int8 dot-product instruction (AVX512-VNNI, AVX-VNNI or AMX-INT8; Linux's
    ``/proc/cpuinfo``, False elsewhere). Without one, ONNX Runtime's uint8 × int8 convolutions (``QLinearConv``)
    sum pairs of products in int16 (``VPMADDUBSW``), which saturates: outputs then differ from srq's by a few
    levels more (docs/deploy.md)."""
    flags = (cpuinfo_field("flags") or "").split()
    return any(f in flags for f in ("avx512_vnni", "avx_vnni", "amx_int8"))
