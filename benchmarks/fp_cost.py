"""FP evaluation cost on this machine: time and peak memory, each case in a fresh process.

Usage (from the repository root; data and weights from $SRQ_DATA / $SRQ_WEIGHTS):
    python benchmarks/fp_cost.py
Cases:
  * urban100_untiled: IMDN x4 on all of Urban100, whole images (goal: ≤ 60 s, ≤ 3 GB peak RSS);
  * large_tiled: IMDN x4 on one 4000×3000 LR input (a mosaic of Urban100 images), 256-px tiles with
    32 px of context (untiled this would need > 3 GB per feature map).
Writes benchmarks/results/fp/cost.json.
"""

from __future__ import annotations

import json
import resource
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
OUT = HERE / "results" / "fp" / "cost.json"


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def case_urban100_untiled() -> dict:
    import srq
    from srq.engine.evaluate import evaluate

    model = srq.create_model("imdn", 4, "official")
    base = _peak_rss_mb()
    t0 = time.perf_counter()
    (score,) = evaluate(model, ["Urban100"], 4, progress=False)
    return {"model": "imdn", "scale": 4, "dataset": "Urban100", "images": len(score.images),
            "seconds": time.perf_counter() - t0, "model_seconds": sum(i.seconds for i in score.images),
            "psnr": score.psnr, "ssim": score.ssim, "peak_rss_mb": _peak_rss_mb(), "rss_after_setup_mb": base}


def case_large_tiled(tile: int = 256, overlap: int = 32) -> dict:
    import numpy as np

    import srq
    from srq.data import SRBenchmark
    from srq.engine.inference import super_resolve

    model = srq.create_model("imdn", 4, "official")
    bench = SRBenchmark("Urban100", 1)
    lr = np.zeros((3000, 4000, 3), np.uint8)
    i = 0
    for top in range(0, 3000, 700):  # fill with real content, image after image
        for left in range(0, 4000, 700):
            hr = bench[i % len(bench)].hr[:700, :700]
            i += 1
            lr[top:top + hr.shape[0], left:left + hr.shape[1]] = hr[: 3000 - top, : 4000 - left]
    base = _peak_rss_mb()
    t0 = time.perf_counter()
    sr = super_resolve(model, lr, 4, tile=tile, overlap=overlap)
    return {"model": "imdn", "scale": 4, "input": "4000x3000", "output": f"{sr.shape[1]}x{sr.shape[0]}",
            "tile": tile, "overlap": overlap, "seconds": time.perf_counter() - t0,
            "peak_rss_mb": _peak_rss_mb(), "rss_before_inference_mb": base,
            "output_image_mb": sr.nbytes / 2**20}


CASES = {"urban100_untiled": case_urban100_untiled, "large_tiled": case_large_tiled}


def main() -> None:
    if len(sys.argv) == 3 and sys.argv[1] == "--case":
        print(json.dumps(CASES[sys.argv[2]]()))
        return
    import torch

    from srq.engine.results import atomic_write_text, provenance

    results = {}
    for name in CASES:
        proc = subprocess.run([sys.executable, __file__, "--case", name], capture_output=True, text=True, check=True)
        results[name] = json.loads(proc.stdout.strip().splitlines()[-1])
        print(name, results[name], flush=True)
    doc = {"torch_threads": torch.get_num_threads(), "results": results,
           "provenance": provenance(["python", "benchmarks/fp_cost.py"])}
    atomic_write_text(OUT, json.dumps(doc, indent=2) + "\n")


if __name__ == "__main__":
    main()
