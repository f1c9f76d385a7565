"""An ONNX file run by ONNX Runtime or OpenVINO, wrapped as an ``nn.Module`` so srq's evaluation, upscaling and
benchmarks call it like any model: (N, 3, H, W) float32 in [0, 1] → (N, 3, s·H, s·W), on the CPU.

The runtimes come with ``pip install "srq[deploy]"``; a missing one is a one-line :class:`SrqError`.
"""

from __future__ import annotations

import os
import platform
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..errors import SrqError
from ..utils.device import cpu_has_vnni
from .onnx_qdq import INT16_RISK_KEY

__all__ = ["RUNTIMES", "PRECISIONS", "RuntimeModel", "onnx_metadata"]

RUNTIMES = ("onnxruntime", "openvino")
PRECISIONS = ("fp32", "bf16")  # OpenVINO's inference precision hint for float layers (ORT: fp32 only)


def onnx_metadata(path: str | os.PathLike) -> dict[str, str]:
    """The ``metadata_props`` srq wrote into an exported file (``scale``, ``run``, ...); {} for other files."""
    try:
        import onnx
    except ImportError:
        raise SrqError("reading an ONNX file needs the onnx package: pip install \"srq[deploy]\"")
    try:
        proto = onnx.load(str(path), load_external_data=False)
    except Exception as e:
        raise SrqError(f"{path} is not a readable ONNX file ({str(e).splitlines()[0][:200]})")
    return {p.key: p.value for p in proto.metadata_props}


def _x86() -> bool:
    return platform.machine().lower() in ("x86_64", "amd64", "i686", "x86")


def _overflow_risk(path: Path) -> list[str] | None:
    """The layers srq's export found at risk of int16 overflow on CPUs without VNNI (metadata
    :data:`~srq.export.onnx_qdq.INT16_RISK_KEY`); None for a file that does not say (not exported by this srq)."""
    try:
        import onnx

        props = {p.key: p.value for p in onnx.load(str(path), load_external_data=False).metadata_props}
    except Exception:
        return None
    value = props.get(INT16_RISK_KEY)
    return None if value is None else [n for n in value.split(",") if n]


def _warn_without_vnni(path: Path) -> None:
    """On an x86 CPU without VNNI, one warning if the file has integer layers whose int16 pair sums can overflow."""
    if not _x86() or cpu_has_vnni():
        return
    risky = _overflow_risk(path)  # parse the file only on such CPUs
    if risky:
        warnings.warn(f"{path.name}: this CPU has no int8 dot-product instruction (VNNI), and {len(risky)} integer "
                      f"layer(s) of this file multiply 8-bit inputs by 8-bit weights, whose int16 pair sums overflow "
                      f"here: outputs can be far from srq's (IMDN x4 W8A8: −6 dB); quantize with reduce_range=true "
                      f"for such CPUs (docs/deploy.md)", stacklevel=3)


class RuntimeModel(nn.Module):
    """``path`` (an ONNX file) run by ``runtime`` with ``threads`` intra-op threads (None: the runtime's default).

    ``precision`` ``"bf16"`` asks OpenVINO to run float layers in bfloat16 (its default on CPUs with bf16
    units; srq asks for fp32 unless told, so an exported model is evaluated as written). ``static_shape``
    (N, C, H, W) compiles OpenVINO for that one input shape (faster; other shapes are then an error); by
    default the shape is dynamic.
    """

    def __init__(self, path: str | os.PathLike, runtime: str = "onnxruntime", threads: int | None = None,
                 precision: str = "fp32", static_shape: tuple[int, ...] | None = None) -> None:
        super().__init__()
        if runtime not in RUNTIMES:
            raise SrqError(f"--runtime must be torch, {' or '.join(RUNTIMES)}; got {runtime!r}")
        if precision not in PRECISIONS:
            raise SrqError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
        if runtime == "onnxruntime" and precision != "fp32":
            raise SrqError("onnxruntime runs the file in its own precision; bf16 is an OpenVINO setting")
        self.path, self.runtime, self.threads, self.precision = Path(path), runtime, threads, precision
        if not self.path.is_file():
            raise SrqError(f"ONNX file {path} does not exist")
        self._run = self._open_ort() if runtime == "onnxruntime" else self._open_openvino(static_shape)
        _warn_without_vnni(self.path)

    def _open_ort(self):
        try:
            import onnxruntime as ort
        except ImportError:
            raise SrqError("--runtime onnxruntime needs onnxruntime: pip install \"srq[deploy]\"")
        opts = ort.SessionOptions()
        if self.threads:
            opts.intra_op_num_threads = self.threads
            opts.inter_op_num_threads = 1
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        try:
            session = ort.InferenceSession(str(self.path), opts, providers=["CPUExecutionProvider"])
        except Exception as e:
            raise SrqError(f"onnxruntime cannot load {self.path}: {str(e).splitlines()[0][:300]}")
        name = session.get_inputs()[0].name

        def run(x: np.ndarray) -> np.ndarray:
            return session.run(None, {name: x})[0]
        return run

    def _open_openvino(self, static_shape: tuple[int, ...] | None):
        try:
            import openvino as ov
        except ImportError:
            raise SrqError("--runtime openvino needs openvino: pip install \"srq[deploy]\"")
        core = ov.Core()
        try:
            model = core.read_model(str(self.path))
            if static_shape is not None:
                model.reshape(list(static_shape))
            config = {"INFERENCE_PRECISION_HINT": "f32" if self.precision == "fp32" else "bf16",
                      "PERFORMANCE_HINT": "LATENCY", "NUM_STREAMS": "1"}
            if self.threads:
                config["INFERENCE_NUM_THREADS"] = str(self.threads)
            compiled = core.compile_model(model, "CPU", config)
        except Exception as e:
            raise SrqError(f"openvino cannot load {self.path}: {str(e).strip().splitlines()[0][:300]}")
        request = compiled.create_infer_request()

        def run(x: np.ndarray) -> np.ndarray:
            return np.array(request.infer({0: x})[0], copy=True)
        return run

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self._run(np.ascontiguousarray(x.detach().cpu().float().numpy()))
        return torch.from_numpy(y).to(x.device)

    def extra_repr(self) -> str:
        return f"{self.path.name}, runtime={self.runtime}, threads={self.threads}, precision={self.precision}"
