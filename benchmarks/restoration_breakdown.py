"""Where a quantized restoration model loses PSNR: weights only, activations only, each quantizer alone, and with
the first and last layers in float.

Usage (from the repository root; data and weights from $SRQ_DATA / $SRQ_WEIGHTS):
    python benchmarks/restoration_breakdown.py --model cdncnn_b --task denoise --param 25 --calib-sigma 0,55 \
        --method percentile --bits w8a8 --datasets Urban100 --images 4 --crop 192
Quantizes once (``--method``, calibrated on 100 clean 96-px crops of train/BSD200 + train/T91 degraded by the task,
as benchmarks/restoration_bench.py), then scores the top-left ``--crop``×``--crop`` of the first ``--images`` test
images (the task's own inputs, cropped; a CPU budget named in the file) with only the weight quantizers on, only
the activation quantizers, all of them, and each quantizer alone; then the same method with ``first_last="fp"``.
Writes benchmarks/results/restoration/breakdown-<model>-<task>-<method>-<bits>.json.
"""

from __future__ import annotations

import argparse
import dataclasses
import json

import numpy as np
import torch

from srq import pipeline
from srq.engine.results import atomic_write_text, provenance, run_script
from srq.methods.registry import get_method
from srq.quant import parse_bits, quantizers
from srq.quant.calibrate import split_quantizers
from srq.tasks import Task, TaskBenchmark, task_calibration_set

from restoration_bench import OUT, build, make_task


def crops(task: Task, dataset: str, images: int, crop: int) -> tuple[torch.Tensor, list[np.ndarray]]:
    """Inputs (N, 3, crop, crop) float32 and targets (crop, crop, 3) uint8 of the first ``images`` test images."""
    data = TaskBenchmark(dataset, task)
    inputs, targets = [], []
    for i in range(min(images, len(data))):
        sample = data[i]
        x = sample.lr[:crop, :crop].astype(np.float32)
        inputs.append(x / 255.0 if sample.lr.dtype == np.uint8 else x)
        targets.append(sample.hr[:crop, :crop])
    return torch.from_numpy(np.stack(inputs)).permute(0, 3, 1, 2).contiguous(), targets


@torch.no_grad()
def mean_psnr(model: torch.nn.Module, task: Task, x: torch.Tensor, targets: list[np.ndarray]) -> float:
    out = model.eval()(x).clamp(0, 1).mul(255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()
    return float(np.mean([task.score(o, t)[0] for o, t in zip(out, targets)]))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", required=True)
    p.add_argument("--task", choices=("denoise", "jpeg"), required=True)
    p.add_argument("--param", type=float, required=True, help="σ (denoise) or JPEG quality")
    p.add_argument("--calib-sigma", default=None, help="σ range low,high of the calibration patches (blind)")
    p.add_argument("--method", default="percentile")
    p.add_argument("--bits", default="w8a8")
    p.add_argument("--datasets", default="Urban100")
    p.add_argument("--images", type=int, default=4)
    p.add_argument("--crop", type=int, default=192)
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    args.calib_sigma = tuple(float(v) for v in args.calib_sigma.split(",")) if args.calib_sigma else None
    task = make_task(args, args.param)
    net = build(args.model, task)
    x, targets = crops(task, args.datasets, args.images, args.crop)
    calib = task_calibration_set(task, patch=96, n=100, seed=0)
    w, a = parse_bits(args.bits)
    recipe = get_method(args.method).create(w_bits=w, a_bits=a)
    doc: dict = {"model": args.model, "task": task.to_dict(), "method": args.method, "bits": args.bits,
                 "set": args.datasets, "images": len(targets), "crop": args.crop,
                 "calibration": {"images": len(calib), "patch": 96, "sha256": pipeline.tensor_sha256(calib)},
                 "fp": mean_psnr(net, task, x, targets)}
    run = pipeline.run(net, recipe, calib, name=args.model, scale=1, progress=False)
    weights, acts = split_quantizers(run.model)
    everything = weights + acts
    for label, on in (("weights_only", weights), ("activations_only", acts), ("both", everything)):
        for q in everything:
            q.enabled = any(q is o for o in on)
        doc[label] = mean_psnr(run.model, task, x, targets)
    alone = []
    for name, q in quantizers(run.model):
        for o in everything:
            o.enabled = o is q
        alone.append({"quantizer": name, "bits": int(q.bits), "psnr": mean_psnr(run.model, task, x, targets)})
        print(f"{name}: {alone[-1]['psnr'] - doc['fp']:+.3f} dB", flush=True)
    doc["each_alone"] = alone
    fp_edges = pipeline.run(net, dataclasses.replace(recipe, first_last="fp"), calib, name=args.model, scale=1,
                            progress=False)
    doc["first_last_fp"] = mean_psnr(fp_edges.model, task, x, targets)
    doc["provenance"] = provenance()
    OUT.mkdir(parents=True, exist_ok=True)
    path = OUT / f"breakdown-{args.model}-{task.label()}-{args.method}-{args.bits}.json"
    atomic_write_text(path, json.dumps(doc, indent=2) + "\n")
    worst = ", ".join(f"{r['quantizer']} {r['psnr'] - doc['fp']:+.3f}"
                      for r in sorted(alone, key=lambda r: r["psnr"])[:3])
    print(f"{path.name}: FP {doc['fp']:.3f}, both {doc['both']:.3f}, weights only {doc['weights_only']:.3f}, "
          f"activations only {doc['activations_only']:.3f}, first/last in float {doc['first_last_fp']:.3f}; "
          f"worst alone: {worst}")


if __name__ == "__main__":
    run_script(main)
