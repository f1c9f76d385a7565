"""Latency, peak memory and file size of one model as deployed in several ways, measured interleaved.

Variants (each built for every thread count):

* ``torch_fp32`` — the float model (the run folder's unquantized weights) in PyTorch eager, the reference;
* ``torch_fakequant`` — srq's fake-quant model in PyTorch eager;
* ``onnxruntime_fp32``, ``openvino_fp32``, ``openvino_bf16`` — the float model exported to ONNX;
* ``onnxruntime_int``, ``openvino_int`` — the exported integer (QDQ) model;
* ``openvino_int_bf16`` — the integer model with its float operations (activations, additions, attention) in
  bfloat16 (OpenVINO's ``INFERENCE_PRECISION_HINT``; ``srq eval FILE --runtime openvino --precision bf16``
  measures its PSNR).

Latency: after ``warmup`` runs of each, ``runs`` rounds in which every variant runs once on the same input
(so drift in machine load hits all alike); median and min in seconds, and the ratio of medians to
``torch_fp32`` and to ``openvino_fp32``. Peak memory: each variant once more in a fresh process (spawned), as
its peak resident set size and its increase over the process after imports (MiB). Sizes: the files in bytes.
"""

from __future__ import annotations

import multiprocessing as mp
import resource
import statistics
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn

from ..errors import SrqError
from .float_twin import float_twin
from .onnx_qdq import export_onnx

__all__ = ["VARIANTS", "BenchResult", "bench", "format_bench"]

# runtime variant → (runtime, exported file, precision of its float operations)
_RUNTIME_VARIANTS = {"onnxruntime_fp32": ("onnxruntime", "fp32", "fp32"),
                     "openvino_fp32": ("openvino", "fp32", "fp32"),
                     "openvino_bf16": ("openvino", "fp32", "bf16"),
                     "onnxruntime_int": ("onnxruntime", "int", "fp32"),
                     "openvino_int": ("openvino", "int", "fp32"),
                     "openvino_int_bf16": ("openvino", "int", "bf16")}
VARIANTS = ("torch_fp32", "torch_fakequant", *_RUNTIME_VARIANTS)


@dataclass
class BenchResult:
    """What :func:`bench` measured; ``to_dict`` is the JSON saved by ``srq bench``."""

    input_shape: list[int]
    runs: int
    warmup: int
    latency: dict[str, dict[str, dict[str, Any]]] = field(default_factory=dict)  # threads → variant → stats
    memory_mib: dict[str, dict[str, float]] = field(default_factory=dict)  # variant → peak, increase
    file_bytes: dict[str, int] = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {"input_shape": self.input_shape, "runs": self.runs, "warmup": self.warmup,
                "latency_s": self.latency, "peak_memory_mib": self.memory_mib, "file_bytes": self.file_bytes}


def _variant(name: str, files: dict[str, Path], models: dict[str, nn.Module], threads: int,
             shape: tuple[int, ...]) -> Callable[[torch.Tensor], Any]:
    """A callable running variant ``name`` with ``threads`` threads."""
    from .runtime import RuntimeModel

    if name.startswith("torch_"):
        model = models["fp32" if name == "torch_fp32" else "fakequant"]

        def run(x: torch.Tensor) -> Any:
            torch.set_num_threads(threads)
            with torch.inference_mode():
                return model(x)
        return run
    runtime, file, precision = _RUNTIME_VARIANTS[name]
    return RuntimeModel(files[file], runtime, threads, precision, static_shape=shape if runtime == "openvino" else None)


def _status_mib(field: str) -> float | None:
    """``VmRSS`` / ``VmHWM`` of this process in MiB (Linux), None elsewhere."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def _reset_peak() -> bool:
    """Reset the resident-set high-water mark (Linux ≥ 4.0: ``5`` into ``/proc/self/clear_refs``)."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def _memory_child(name: str, files: dict[str, Path], models: dict[str, nn.Module], shape: tuple[int, ...],
                  queue: Any) -> None:
    """In a fresh process: peak RSS (MiB) while building and running variant ``name`` once, and its increase over
    the process after imports (the torch models arrive with the process's arguments, before the baseline). The
    peak is taken from the moment after imports where Linux allows resetting it, else over the whole process."""
    torch.set_num_threads(1)
    from . import runtime  # noqa: F401 - imported before the baseline is taken

    try:
        import onnxruntime  # noqa: F401
        import openvino  # noqa: F401
    except ImportError:
        pass
    x = torch.rand(shape)
    reset = _reset_peak()
    base = _status_mib("VmRSS") if reset else None
    if base is None:
        base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    run = _variant(name, files, models, 1, shape)
    run(x)
    peak = _status_mib("VmHWM") if reset else None
    if peak is None:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    queue.put({"peak": round(peak, 1), "increase": round(peak - base, 1)})


def bench(qmodel: nn.Module, input_size: tuple[int, int], *, threads: tuple[int, ...] = (1, 2), runs: int = 5,
          warmup: int = 1, variants: tuple[str, ...] = VARIANTS, memory: bool = True,
          export_kwargs: dict | None = None, progress: Callable[[str], None] | None = None) -> BenchResult:
    """Measure quantized ``qmodel`` (and its float twin) on a (1, 3, h, w) input of ``input_size`` (LR pixels).

    Variants whose runtime is not installed raise :class:`SrqError` (ask only for those you have).
    """
    unknown = [v for v in variants if v not in VARIANTS]
    if unknown:
        raise SrqError(f"unknown bench variant {unknown[0]!r}; choose from {', '.join(VARIANTS)}")
    say = progress or (lambda _: None)
    shape = (1, 3, *input_size)
    x = torch.rand(shape, generator=torch.Generator().manual_seed(0))
    result = BenchResult(list(shape), runs, warmup)
    models = {"fp32": float_twin(qmodel).cpu(), "fakequant": qmodel.cpu().eval()}
    torch_threads = torch.get_num_threads()
    try:
        _measure(result, models, x, shape, threads, runs, warmup, variants, memory, export_kwargs, say)
    finally:
        torch.set_num_threads(torch_threads)
    return result


def _measure(result: BenchResult, models: dict[str, nn.Module], x: torch.Tensor, shape: tuple[int, ...],
             threads: tuple[int, ...], runs: int, warmup: int, variants: tuple[str, ...], memory: bool,
             export_kwargs: dict | None, say: Callable[[str], None]) -> None:
    """The body of :func:`bench`: fills ``result``."""
    qmodel = models["fakequant"]
    with tempfile.TemporaryDirectory(prefix="srq-bench-") as tmp:
        files = {"fp32": Path(tmp) / "fp32.onnx", "int": Path(tmp) / "int.onnx"}
        export_onnx(models["fp32"], files["fp32"])
        export_onnx(qmodel, files["int"], **(export_kwargs or {}))
        result.file_bytes = {"onnx_fp32": files["fp32"].stat().st_size, "onnx_int": files["int"].stat().st_size}
        for n in threads:
            say(f"{n} thread(s): building {len(variants)} variants")
            runners = {v: _variant(v, files, models, n, shape) for v in variants}
            times: dict[str, list[float]] = {v: [] for v in variants}
            for _ in range(warmup):
                for run in runners.values():
                    run(x)
            for r in range(runs):
                for v, run in runners.items():
                    start = time.perf_counter()
                    run(x)
                    times[v].append(time.perf_counter() - start)
                say(f"{n} thread(s): round {r + 1}/{runs}")
            result.latency[str(n)] = _stats(times)
            del runners
        if memory:
            ctx = mp.get_context("spawn")
            for v in variants:
                say(f"peak memory: {v}")
                queue = ctx.Queue()
                needs = {k: m for k, m in models.items() if v.startswith("torch_")}
                proc = ctx.Process(target=_memory_child, args=(v, files, needs, shape, queue))
                proc.start()
                proc.join()
                result.memory_mib[v] = queue.get() if proc.exitcode == 0 else {"peak": float("nan"),
                                                                               "increase": float("nan")}


def _stats(times: dict[str, list[float]]) -> dict[str, dict[str, Any]]:
    med = {v: statistics.median(t) for v, t in times.items()}
    out: dict[str, dict[str, Any]] = {}
    for v, t in times.items():
        out[v] = {"median": med[v], "min": min(t), "times": t}
        for ref in ("torch_fp32", "openvino_fp32"):
            if ref in med:
                out[v][f"speedup_vs_{ref}"] = med[ref] / med[v]
    return out


def format_bench(result: BenchResult) -> str:
    """A plain-text table: one row per thread count and variant."""
    rows = [f"input {'x'.join(map(str, result.input_shape))}, {result.runs} interleaved runs after "
            f"{result.warmup} warm-up",
            f"{'threads':>7}  {'variant':<18} {'median s':>9} {'min s':>8} {'× torch fp32':>13} {'× ov fp32':>10}"
            f" {'peak MiB':>9}"]
    for n, stats in result.latency.items():
        for v, s in stats.items():
            mem = result.memory_mib.get(v, {}).get("peak")
            rows.append(f"{n:>7}  {v:<18} {s['median']:9.3f} {s['min']:8.3f} "
                        f"{s.get('speedup_vs_torch_fp32', float('nan')):13.2f} "
                        f"{s.get('speedup_vs_openvino_fp32', float('nan')):10.2f} "
                        f"{'' if mem is None else f'{mem:9.0f}'}")
    rows.append("files: " + ", ".join(f"{k} {b / 1024:.0f} KiB" for k, b in result.file_bytes.items()))
    return "\n".join(rows)
