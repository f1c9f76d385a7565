"""Selective-scan and MambaIRv2-light CPU benchmark.

Measures, in one process:
  1. the pure-PyTorch selective scan (MambaIRv2-light's operand shapes: d 48, n 8, one B/C group) —
     time, throughput and peak memory vs. sequence length and chunk size, the effect of the block
     size on memory for a long sequence, and a naive sequential loop for reference;
  2. MambaIRv2-light x4 and IMDN x4 on the Set5 LR images (MATLAB bicubic of the mod-cropped HR):
     time per image, peak memory, and the ratio MambaIRv2 / IMDN.

Peak memory is the largest increase, during the calls, of the bytes allocated by the process (glibc
``mallinfo2``: heap in use + mmapped blocks, sampled every ~0.5 ms) over the value before them — the
working memory of the scan / forward pass, independent of what the allocator keeps cached.

Usage (from the repository root; data and weights from $SRQ_DATA / $SRQ_WEIGHTS):
    python benchmarks/scan_bench.py                   # default torch threads
    python benchmarks/scan_bench.py --threads 1       # recommended on a shared / loaded machine
Writes benchmarks/results/fp/scan_bench.json (with provenance). Runs in about 1-2 minutes.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import statistics
import threading
import time
from pathlib import Path
from typing import Callable

import torch
from torch.nn import functional as F

import srq
from srq.data import SRBenchmark
from srq.engine.results import atomic_write_text, provenance, run_script
from srq.models.selective_scan import selective_scan_chunked

OUT = Path(__file__).resolve().parent / "results" / "fp" / "scan_bench.json"


class _MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in
                ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks",
                 "keepcost")]


def _live_bytes_probe() -> tuple[Callable[[], int], str]:
    """Bytes currently allocated: glibc ``mallinfo2`` (heap in use + mmapped) if available, else RSS."""
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.mallinfo2.restype = _MallInfo2

        def live() -> int:
            info = libc.mallinfo2()
            return info.uordblks + info.hblkhd

        live()
        return live, "bytes in use by malloc (glibc mallinfo2: heap in use + mmapped), sampled every ~0.5 ms"
    except (OSError, AttributeError):
        page = os.sysconf("SC_PAGE_SIZE")

        def rss() -> int:
            with open("/proc/self/statm") as f:
                return int(f.read().split()[1]) * page

        return rss, "resident set size (underestimates once freed memory is kept by the allocator)"


LIVE_BYTES, MEMORY_METHOD = _live_bytes_probe()


def measure(fn: Callable[[], object], repeats: int = 3, warmup: bool = True) -> tuple[float, float]:
    """Median seconds over ``repeats`` timed calls, then the peak memory increase (MiB) of one more call.

    Memory is sampled in a helper thread only during that extra call, so it cannot disturb the timing.
    """
    if warmup:
        fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    peak, base = 0, LIVE_BYTES()
    stop = threading.Event()

    def sample() -> None:
        nonlocal peak
        while not stop.is_set():
            peak = max(peak, LIVE_BYTES() - base)
            time.sleep(0.0005)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        fn()
    finally:
        stop.set()
        sampler.join()
    return statistics.median(times), max(peak, 0) / 2 ** 20


def scan_inputs(length: int, b: int = 1, d: int = 48, n: int = 8, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    u = torch.randn(b, d, length, generator=g)
    delta = torch.randn(b, d, length, generator=g) - 2
    A = -torch.exp(torch.randn(d, n, generator=g))
    B = torch.randn(b, n, length, generator=g)
    C = torch.randn(b, n, length, generator=g)
    return u, delta, A, B, C


def naive_scan(u, delta, A, B, C):
    """Sequential reference: one Python step per position."""
    h = u.new_zeros(u.shape[0], u.shape[1], A.shape[1])
    delta = F.softplus(delta)
    ys = []
    for t in range(u.shape[-1]):
        h = torch.exp(delta[:, :, t, None] * A) * h + (delta[:, :, t] * u[:, :, t])[..., None] * B[:, None, :, t]
        ys.append((h * C[:, None, :, t]).sum(-1))
    return torch.stack(ys, -1)


def bench_scan(lengths: list[int], chunks: list[int | None]) -> dict:
    rows = []
    with torch.no_grad():
        for length in lengths:
            args = scan_inputs(length)
            for chunk in chunks:
                sec, mib = measure(lambda: selective_scan_chunked(*args, delta_softplus=True, chunk_size=chunk))
                rows.append({"length": length, "chunk_size": chunk or "auto", "seconds": sec, "peak_mib": mib,
                             "ns_per_state_update": sec / (length * 48 * 8) * 1e9})
                print(f"scan L={length:6d} chunk={str(chunk or 'auto'):>4}: {sec * 1e3:8.1f} ms  "
                      f"{rows[-1]['ns_per_state_update']:.2f} ns/(d·n·step)  peak +{mib:.0f} MiB", flush=True)
        blocks = []
        args = scan_inputs(max(lengths))
        for block_elems in (1 << 19, 1 << 21, 1 << 23):
            sec, mib = measure(lambda: selective_scan_chunked(*args, delta_softplus=True, block_elems=block_elems))
            blocks.append({"length": max(lengths), "block_elems": block_elems, "seconds": sec, "peak_mib": mib})
            print(f"scan L={max(lengths)} block_elems=2^{block_elems.bit_length() - 1}: {sec * 1e3:.1f} ms  "
                  f"peak +{mib:.0f} MiB", flush=True)
        args = scan_inputs(4096)
        sec_naive, _ = measure(lambda: naive_scan(*args), repeats=1, warmup=False)
        sec_chunk, _ = measure(lambda: selective_scan_chunked(*args, delta_softplus=True))
        print(f"naive sequential loop L=4096: {sec_naive * 1e3:.0f} ms ({sec_naive / sec_chunk:.1f}x the chunked scan)")
    return {"shapes": "b 1, d 48, n 8, B/C (b, n, L) — MambaIRv2-light's ASSM scan", "sweep": rows,
            "block_size": blocks, "naive_loop_L4096_seconds": sec_naive, "chunked_L4096_seconds": sec_chunk}


def bench_models(data_root: str | None, weights_root: str | None) -> dict:
    lr_images = [(name, torch.from_numpy(lr).permute(2, 0, 1)[None].float() / 255)
                 for name, lr, _ in SRBenchmark("Set5", 4, data_root=data_root)]
    result = {}
    for model in ("mambairv2_light", "imdn"):
        net = srq.create_model(model, 4, "official", weights_root=weights_root)
        per_image = []
        with torch.no_grad():
            net(torch.rand(1, 3, 32, 32))
            for name, x in lr_images:
                sec, mib = measure(lambda: net(x), repeats=1, warmup=False)
                per_image.append({"image": name, "lr_size": list(x.shape[-2:]), "seconds": sec, "peak_mib": mib})
                print(f"{model} x4 {name} {tuple(x.shape[-2:])}: {sec:.2f} s  peak +{mib:.0f} MiB", flush=True)
        result[model] = {"per_image": per_image, "total_seconds": sum(r["seconds"] for r in per_image),
                         "max_peak_mib": max(r["peak_mib"] for r in per_image)}
    ratio = result["mambairv2_light"]["total_seconds"] / result["imdn"]["total_seconds"]
    result["time_ratio_mambairv2_to_imdn"] = ratio
    print(f"MambaIRv2-light / IMDN time on Set5 x4: {ratio:.1f}x")
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    ap.add_argument("--data-root", default=None, help="benchmark data root [env SRQ_DATA]")
    ap.add_argument("--weights-root", default=None, help="official weights folder [env SRQ_WEIGHTS]")
    ap.add_argument("--quick", action="store_true", help="shorter sweep (lengths up to 16384)")
    ap.add_argument("-o", "--output", type=Path, default=OUT)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    lengths = [1024, 4096, 16384] if args.quick else [1024, 4096, 16384, 65536]
    t0 = time.perf_counter()
    doc = {"benchmark": "selective scan (pure PyTorch, chunked) and MambaIRv2-light x4 vs IMDN x4 on Set5, CPU",
           "peak_memory": f"largest increase over the pre-call value of the {MEMORY_METHOD}",
           "scan": bench_scan(lengths, [16, 32, 64, 128, 256, None]),
           "models_set5_x4": bench_models(args.data_root, args.weights_root),
           "wall_seconds": None, "provenance": provenance()}
    doc["wall_seconds"] = time.perf_counter() - t0
    atomic_write_text(args.output, json.dumps(doc, indent=1) + "\n")
    print(f"wrote {args.output} ({doc['wall_seconds']:.0f} s)")


if __name__ == "__main__":
    run_script(main)
