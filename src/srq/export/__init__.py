"""Deployment: integer QDQ ONNX export with srq's own ranges, runtimes (ONNX Runtime, OpenVINO) that run it as a
model, and packed low-bit weight files. ``onnx``/``onnxruntime``/``openvino`` come with ``pip install "srq[deploy]"``
and are imported only when used."""

from .onnx_qdq import ASYM_FORMS, BIAS_FORMS, CLIP_DOMAINS, DEFAULT_OPSET, export_onnx, export_ready
from .qparams import IntGrid, IntWeight, int_bias, int_grid, int_weight

__all__ = ["ASYM_FORMS", "BIAS_FORMS", "CLIP_DOMAINS", "DEFAULT_OPSET", "IntGrid", "IntWeight", "export_onnx",
           "export_ready", "int_bias", "int_grid", "int_weight"]
