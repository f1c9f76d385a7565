"""Is a 1-bit convolution faster than an int8 one on this CPU? OpenVINO's ``BinaryConvolution`` against its int8
and FP32 convolutions, on a chain of 3×3 convolutions shaped like a lightweight SR body.

Usage (needs ``pip install -e ".[deploy]"``):
    python benchmarks/binary_conv_bench.py --size 180x320 --channels 64 --layers 8 --runs 9 --threads 1

Three OpenVINO models of ``--layers`` convolutions (``--channels`` in and out, padding 1, ReLU after each) on one
(1, C, H, W) input, built with OpenVINO's own operations: **fp32** (Convolution), **int8** (FakeQuantize of the
input at 256 levels and of the weights at 255 per output channel, which OpenVINO's CPU plugin runs as a u8 × i8
convolution, as it does srq's QDQ exports) and **binary** (input binarised at 0 by a 2-level FakeQuantize to ±1,
±1 weights, a per-channel scale: OpenVINO's CPU plugin runs the convolution as ``BinaryConvolution`` on packed
``u1`` data). Before timing, one binary layer is checked to run as ``BinaryConvolution`` and to equal
``conv2d(sign(x), sign(w))`` with zero padding exactly (so the semantics an exporter would rely on are measured,
not assumed). The variants run interleaved,
``--runs`` times after a warm-up; medians and min in ms, ratios, and which kernels OpenVINO picked (layer type and
runtime precision from its runtime model) go to ``benchmarks/results/deploy/binary-conv-<cpu capability>.json``.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from srq.engine.results import atomic_write_text, provenance, run_script
from srq.errors import SrqError

OUT = Path(__file__).resolve().parent / "results" / "deploy"
KINDS = ("fp32", "int8", "binary")


def _binarize(ops, y, channels: int):
    """±1 by the sign of ``y`` (0 → −1): a 2-level FakeQuantize. Its input bounds straddle 0 by 10⁻⁶; with both
    at exactly 0, OpenVINO 2026.4's binary path gives wrong outputs (measured by :func:`check_binary_semantics`)."""
    bound = np.full((1, channels, 1, 1), 1e-6, np.float32)
    return ops.fake_quantize(y, ops.constant(-bound), ops.constant(bound), ops.constant(np.float32(-1)),
                             ops.constant(np.float32(1)), 2)


def _conv(ops, y, w: np.ndarray, kind: str):
    """One layer of ``kind`` on node ``y`` with float weights ``w`` (C_out, C_in, 3, 3)."""
    one = [1, 1]
    if kind == "fp32":
        return ops.convolution(y, ops.constant(w), one, one, one, one)
    if kind == "int8":
        lo, hi = ops.constant(np.float32(0)), ops.constant(np.float32(2))
        yq = ops.fake_quantize(y, lo, hi, lo, hi, 256)
        bound = np.abs(w).max(axis=(1, 2, 3), keepdims=True)
        wl, wh = ops.constant(-bound), ops.constant(bound)
        return ops.convolution(yq, ops.fake_quantize(ops.constant(w), wl, wh, wl, wh, 255), one, one, one, one)
    # OpenVINO turns a convolution of 2-level activations and ±1 weights into BinaryConvolution (ConvToBinaryConv)
    signs = np.where(w > 0, 1.0, -1.0).astype(np.float32)
    out = ops.convolution(_binarize(ops, y, w.shape[1]), ops.constant(signs), one, one, one, one)
    return ops.multiply(out, ops.constant(np.abs(w).mean(axis=(1, 2, 3)).reshape(1, -1, 1, 1)))


def build(kind: str, channels: int, size: tuple[int, int], weights: list[np.ndarray], relu: bool = True):
    import openvino as ov
    import openvino.opset1 as ops

    x = ops.parameter([1, channels, *size], np.float32, name="x")
    y = x
    for w in weights:
        y = _conv(ops, y, w, kind)
        y = ops.relu(y) if relu else y
    return ov.Model([y], [x])


def _kernels(compiled) -> list[list[str]]:
    """(layer type, runtime precision) of every operation OpenVINO's CPU plugin runs, without duplicates."""
    found = {(n.get_rt_info()["layerType"].astype(str), n.get_rt_info()["runtimePrecision"].astype(str))
             for n in compiled.get_runtime_model().get_ops()}
    return [list(k) for k in sorted(found)]


def check_binary_semantics(core, threads: int) -> None:
    """One binary layer (no scale, no ReLU) on a small input must run as ``BinaryConvolution`` and equal
    ``conv2d(sign(x), sign(w))`` with zero padding, as srq's fake-quant layer computes it, exactly."""
    import openvino as ov
    import openvino.opset1 as ops

    rng = np.random.default_rng(1)
    w = rng.standard_normal((8, 16, 3, 3)).astype(np.float32)
    x = rng.standard_normal((1, 16, 9, 11)).astype(np.float32)
    p = ops.parameter(list(x.shape), np.float32, name="x")
    signs = np.where(w > 0, 1.0, -1.0).astype(np.float32)
    node = _conv(ops, p, signs, "binary")  # ±1 weights: the per-channel scale is 1
    compiled = core.compile_model(ov.Model([node], [p]), "CPU", {"INFERENCE_NUM_THREADS": threads})
    got = compiled({0: x})[0]
    xb = torch.from_numpy(np.where(x > 0, 1.0, -1.0)).float()
    ref = torch.nn.functional.conv2d(xb, torch.from_numpy(signs), padding=1).numpy()
    err = float(np.abs(got - ref).max())
    if err > 0 or ["BinaryConvolution", "u1"] not in _kernels(compiled):
        raise SrqError(f"OpenVINO does not run a ±1 convolution as an exact BinaryConvolution here (max difference "
                       f"{err}, kernels {_kernels(compiled)}); the timing would not be of the operation an exporter "
                       f"needs")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--size", default="180x320", help="input H×W (default 180x320, a 720p x4 SR input)")
    ap.add_argument("--channels", type=int, default=64)
    ap.add_argument("--layers", type=int, default=8)
    ap.add_argument("--runs", type=int, default=9)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    try:
        import openvino as ov
    except ImportError:
        raise SrqError('OpenVINO is not installed: pip install "srq[deploy]"') from None
    try:
        h, w = (int(v) for v in args.size.lower().split("x"))
    except ValueError:
        raise SrqError(f"--size must be H×W such as 180x320, not {args.size!r}") from None
    if min(h, w, args.channels, args.layers, args.runs, args.threads) < 1:
        raise SrqError("--size, --channels, --layers, --runs and --threads must be positive")

    core = ov.Core()
    check_binary_semantics(core, args.threads)
    rng = np.random.default_rng(0)
    weights = [rng.standard_normal((args.channels, args.channels, 3, 3)).astype(np.float32) * 0.05
               for _ in range(args.layers)]
    config = {"INFERENCE_NUM_THREADS": args.threads, "INFERENCE_PRECISION_HINT": "f32"}
    compiled = {k: core.compile_model(build(k, args.channels, (h, w), weights), "CPU", config) for k in KINDS}
    requests = {k: c.create_infer_request() for k, c in compiled.items()}
    x = rng.random((1, args.channels, h, w), dtype=np.float32)
    for r in requests.values():
        r.infer({0: x})  # warm-up
    times: dict[str, list[float]] = {k: [] for k in KINDS}
    for _ in range(args.runs):  # interleaved, so load changes hit every variant alike
        for k, r in requests.items():
            t = time.perf_counter()
            r.infer({0: x})
            times[k].append((time.perf_counter() - t) * 1000)
    med = {k: float(np.median(v)) for k, v in times.items()}
    doc = {"shape": {"channels": args.channels, "size": [h, w], "layers": args.layers},
           "threads": args.threads, "runs": args.runs, "openvino": ov.__version__,
           "median_ms": med, "min_ms": {k: min(v) for k, v in times.items()},
           "ratios": {"fp32_over_int8": med["fp32"] / med["int8"], "fp32_over_binary": med["fp32"] / med["binary"],
                      "int8_over_binary": med["int8"] / med["binary"]},
           "kernels": {k: _kernels(c) for k, c in compiled.items()},
           "binary_semantics": "BinaryConvolution = conv2d(sign(x), sign(w)) with zero padding, exactly",
           "provenance": provenance()}
    cap = doc["provenance"]["machine"].get("cpu_capability", "cpu").lower()
    path = atomic_write_text(OUT / f"binary-conv-{cap}.json", json.dumps(doc, indent=2) + "\n")
    print(" ".join(f"{k} {v:.1f} ms" for k, v in med.items()),
          "| FP32 ÷ int8 {fp32_over_int8:.2f}, FP32 ÷ binary {fp32_over_binary:.2f}, "
          "int8 ÷ binary {int8_over_binary:.2f}".format(**doc["ratios"]), f"→ {path}")


if __name__ == "__main__":
    run_script(main)
