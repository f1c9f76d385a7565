"""Where an exported model spends its time in OpenVINO: per-operation timings from the runtime's own counters.

OpenVINO reports, for every node of the compiled graph, its type after its graph transformations (``Convolution``,
``FakeQuantize``, ``VariadicSplit``, ...), the kernel that ran it (``brgconv_avx512_I8`` is an int8 convolution;
``ref_f32`` a slow reference kernel) and its time. :func:`openvino_profile` groups them by (type, kernel); the
shares show what a faster placement has to remove (float element-wise work between integer convolutions,
zero-point corrections, reference kernels).
"""

from __future__ import annotations

import os
import statistics
from collections import defaultdict
from dataclasses import asdict, dataclass, field

import numpy as np

from ..errors import SrqError

__all__ = ["OpTime", "Profile", "openvino_profile", "format_profile"]


@dataclass
class OpTime:
    """The nodes of one (type, kernel): how many, and their summed time in ms (median over the runs)."""

    node_type: str
    exec_type: str
    nodes: int
    ms: float
    share: float  # of the summed time of every node, 0 … 1


@dataclass
class Profile:
    """``ops`` by time, largest first; ``total_ms``: the sum over nodes (median over runs); ``top_nodes``: the
    slowest single nodes as ``(name, type, kernel, ms)``."""

    input_shape: list[int]
    threads: int
    runs: int
    total_ms: float
    ops: list[OpTime] = field(default_factory=list)
    top_nodes: list[tuple[str, str, str, float]] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {"input_shape": self.input_shape, "threads": self.threads, "runs": self.runs,
                "total_ms": self.total_ms, "ops": [asdict(o) for o in self.ops],
                "top_nodes": [list(n) for n in self.top_nodes]}


def openvino_profile(path: str | os.PathLike, shape: tuple[int, ...], threads: int = 1, runs: int = 3,
                     top: int = 10) -> Profile:
    """Profile the ONNX file ``path`` in OpenVINO (CPU, fp32 inference precision, ``threads`` threads) on a random
    input of ``shape`` ((1, C, H, W)): one warm-up run, then ``runs`` profiled runs."""
    try:
        import openvino as ov
    except ImportError:
        raise SrqError("profiling needs openvino: pip install \"srq[deploy]\"") from None
    if runs < 1:
        raise SrqError(f"runs must be at least 1, got {runs}")
    core = ov.Core()
    model = core.read_model(str(path))
    model.reshape({model.inputs[0]: ov.PartialShape(list(shape))})
    config = {"INFERENCE_NUM_THREADS": threads, "PERF_COUNT": True, "INFERENCE_PRECISION_HINT": "f32",
              "PERFORMANCE_HINT": "LATENCY"}
    request = core.compile_model(model, "CPU", config).create_infer_request()
    x = np.random.default_rng(0).random(shape, dtype=np.float32)
    request.infer({0: x})
    per_node: dict[tuple[str, str, str], list[float]] = defaultdict(list)
    for _ in range(runs):
        request.infer({0: x})
        for p in request.profiling_info:
            per_node[(p.node_name, p.node_type, p.exec_type)].append(p.real_time.total_seconds() * 1e3)
    node_ms = {key: statistics.median(times) for key, times in per_node.items()}
    total = sum(node_ms.values())
    groups: dict[tuple[str, str], list[float]] = defaultdict(list)
    for (_, node_type, exec_type), ms in node_ms.items():
        groups[(node_type, exec_type)].append(ms)
    ops = [OpTime(t, e, len(v), sum(v), sum(v) / total if total else 0.0) for (t, e), v in groups.items()]
    ops.sort(key=lambda o: -o.ms)
    slowest = sorted(node_ms.items(), key=lambda kv: -kv[1])[:top]
    return Profile(list(shape), threads, runs, total, ops, [(n, t, e, ms) for (n, t, e), ms in slowest])


def format_profile(profile: Profile, rows: int = 15) -> str:
    """A plain-text table of the largest (type, kernel) groups."""
    lines = [f"OpenVINO profile, input {'x'.join(map(str, profile.input_shape))}, {profile.threads} thread(s), "
             f"median of {profile.runs} runs: {profile.total_ms:.1f} ms in all nodes",
             f"{'ms':>9} {'share':>6} {'nodes':>5}  type / kernel"]
    for o in profile.ops[:rows]:
        lines.append(f"{o.ms:9.1f} {100 * o.share:5.1f}% {o.nodes:5d}  {o.node_type} / {o.exec_type}")
    return "\n".join(lines)
