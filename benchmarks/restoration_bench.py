"""Denoising and JPEG artifact removal: FP reproduction and quantized rows (srq.tasks).

Usage (from the repository root; data and weights from $SRQ_DATA / $SRQ_WEIGHTS):
    python benchmarks/restoration_bench.py fp --model dncnn3 --task jpeg --params 10,20,30,40 --datasets Classic5
    python benchmarks/restoration_bench.py fp --model cdncnn_b --task denoise --params 15,25,50 --datasets Urban100
    python benchmarks/restoration_bench.py ptq --model dncnn3 --task jpeg --params 10,30 --datasets Classic5 \
        --methods percentile,omse --bits w8a8,w4a4,w2a2
    python benchmarks/restoration_bench.py qat --model dncnn3 --task jpeg --params 10 --datasets Classic5 \
        --methods lsq --bits w4a4 -p train.iterations=1500 -p train.batch=16 -p train.hr_patch=64 \
        --save-dir runs/restoration --resume
``--params``: σ values (denoise) or JPEG qualities (jpeg). ``--images N`` scores the first N images of each set
(file order; 0: all) — a CPU budget, named in the file and the summary. PTQ calibrates on ``--calib-n`` clean
``--patch`` crops of train/BSD200 + train/T91 degraded by the task (``--calib-sigma 0,55`` for a blind denoiser); QAT
initialises its quantizers the same way and trains on clean ``train.hr_patch`` crops of T91 + BSD200 degraded by
the task on the fly (validation by the task's protocol on ``train.val_set``). With ``--save-dir`` each run folder
is saved there and QAT checkpoints its training (``--checkpoint-every`` steps and every minute); after a kill the
same command with ``--resume`` continues to the same weights.
Each row writes benchmarks/results/restoration/<model>_<task>_<method|fp>[_<-p tag>][_<bits>][_n<images>].json
with per-set PSNR/SSIM (per image too), the task, protocol, cost, times and provenance (QAT: the training log as
``.training.csv`` / ``.svg`` beside it); summary.md is rebuilt from all.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path

import torch

import srq
from srq import pipeline
from srq.engine.evaluate import DatasetScore, _Subset, evaluate_dataset
from srq.engine.inference import memory_format
from srq.engine.results import atomic_write_text, provenance, run_script
from srq.methods.registry import get_method
from srq.quant import model_cost, parse_bits
from srq.tasks import Task, TaskBenchmark, get_task, task_calibration_set

from ptq_bench import checkpointed, recorded_quantize_seconds, with_params
from qat_bench import split_training_log

HERE = Path(__file__).resolve().parent
OUT = HERE / "results" / "restoration"


def build(model: str, task: Task) -> torch.nn.Module:
    """The zoo model with its official weights and the task's keywords (FFDNet's σ)."""
    from srq.models.registry import arch_defaults, get_model_info

    return srq.create_model(model, 1, "official", **task.model_keywords(arch_defaults(get_model_info(model))))


def score(model: torch.nn.Module, task: Task, datasets: list[str], images: int) -> list[DatasetScore]:
    """Scores on the first ``images`` images of each set (0: all), channels-last as :func:`srq.evaluate`."""
    out = []
    model.eval()
    with memory_format(model, torch.channels_last):
        for name in datasets:
            data = TaskBenchmark(name, task)
            n = len(data) if images == 0 else min(images, len(data))
            out.append(evaluate_dataset(model, _Subset(data, list(range(n))), task=task, progress=True))
    return out


def write_row(path: Path, doc: dict) -> None:
    atomic_write_text(path, json.dumps(doc, indent=2) + "\n")
    rows = [f"{s['dataset']} {s['psnr']:.3f}/{s['ssim']:.4f} ({s['num_images']} images)" for s in doc["results"]]
    print(f"{path.name}: {'; '.join(rows)}", flush=True)


def name_of(model: str, task: Task, what: str, images: int) -> str:
    return f"{model}_{task.label()}_{what}" + (f"_n{images}" if images else "") + ".json"


def fp(args: argparse.Namespace) -> None:
    for value in args.params:
        task = make_task(args, value)
        net = build(args.model, task)
        scores = score(net, task, args.datasets, args.images)
        write_row(OUT / name_of(args.model, task, "fp", args.images), {
            "model": args.model, "method": "fp", "bits": "fp32", "task": task.to_dict(), "protocol": task.protocol(),
            "images_per_set": args.images or "all", "results": [s.to_dict() for s in scores],
            "provenance": provenance()})


def quantized(args: argparse.Namespace) -> None:
    """PTQ (``ptq``) or QAT (``qat``) rows: each method at each bits, calibrated on the task's degraded crops; QAT
    trains on clean crops of the same folders degraded by the task (``train.hr_patch`` px)."""
    for value in args.params:
        task = make_task(args, value)
        net = build(args.model, task)
        calib = task_calibration_set(task, patch=args.patch, n=args.calib_n, seed=0)
        calibration = {"set": "clean crops of train/BSD200, train/T91 degraded by the task", "images": len(calib),
                       "patch": args.patch}
        for method in args.methods:
            for bits in args.bits:
                w, a = parse_bits(bits)
                recipe, tag = with_params(get_method(method).create(w_bits=w, a_bits=a), args.param, method)
                trains = hasattr(recipe, "train_data")
                if trains != (args.mode == "qat"):
                    raise SystemExit(f"error: {method} is {'a QAT' if trains else 'a PTQ'} method; run it in the "
                                     f"{'qat' if trains else 'ptq'} mode")
                if trains:  # train on clean crops degraded by the task, validate by its protocol
                    recipe = dataclasses.replace(recipe, task=task.to_dict())
                stem = name_of(args.model, task, f"{tag}_{bits}", args.images)[:-len(".json")]
                folder = args.save_dir / stem if args.save_dir is not None else None
                print(f"{args.model} {task.label()} {tag} {bits}: quantizing", flush=True)
                if args.resume and folder is not None and (folder / "srq.json").is_file():
                    q = srq.load(folder)
                    seconds = recorded_quantize_seconds(folder, q)
                else:
                    checkpoints = None
                    if folder is not None and trains:
                        fingerprint = {"model": args.model, "task": task.to_dict(), "recipe": recipe.to_dict(),
                                       "threads": torch.get_num_threads(),
                                       "calibration": pipeline.tensor_sha256(calib)}
                        checkpoints = checkpointed(folder, fingerprint, args.resume, args.checkpoint_every)
                    run = pipeline.run(net, recipe, calib, name=args.model, scale=1, output=folder,
                                       calibration=calibration, checkpoints=checkpoints, progress=True)
                    q, seconds = run.model, run.quantize_seconds
                scores = score(q, task, args.datasets, args.images)
                doc = {"model": args.model, "method": tag, "bits": bits, "recipe": recipe.to_dict(),
                       "recipe_hash": pipeline.recipe_hash(recipe), "task": task.to_dict(),
                       "protocol": task.protocol(),
                       "calibration": {**calibration, "sha256": pipeline.tensor_sha256(calib)},
                       "quantize_seconds": seconds, "cost": model_cost(q, scale=1).to_dict(),
                       "images_per_set": args.images or "all", "results": [s.to_dict() for s in scores],
                       **({"report": srq.api.current_report(q)} if trains else {}), "provenance": provenance()}
                split_training_log(doc, stem, OUT)
                write_row(OUT / f"{stem}.json", doc)
                summary()


def make_task(args: argparse.Namespace, value: float) -> Task:
    if args.task == "denoise":
        return get_task("denoise", sigma=value, calib_sigma=args.calib_sigma)
    return get_task("jpeg", quality=int(value))


def _short_rev(rev: str) -> str:
    return rev[:7] + ("-dirty" if rev.endswith("-dirty") else "")


def summary() -> None:
    """benchmarks/results/restoration/summary.md: one row per result file."""
    lines = ["# Restoration (denoising, JPEG) — made by benchmarks/restoration_bench.py", "",
             "| model | task | method | bits | set | images | PSNR | SSIM | git |",
             "|---|---|---|---|---|---|---|---|---|"]
    for path in sorted(OUT.glob("*.json")):
        d = json.loads(path.read_text())
        if "results" not in d:  # another benchmark's file in this folder (restoration_breakdown.py)
            continue
        t = d["task"]
        label = f"σ {t['sigma']:g}" if t["task"] == "denoise" else f"q {t['quality']}"
        for s in d["results"]:
            lines.append(f"| {d['model']} | {t['task']} {label} | {d['method']} | {d['bits']} | {s['dataset']} | "
                         f"{s['num_images']} | {s['psnr']:.3f} | {s['ssim']:.4f} | "
                         f"{_short_rev(d['provenance']['git_revision'])} |")
    atomic_write_text(OUT / "summary.md", "\n".join(lines) + "\n")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("mode", choices=("fp", "ptq", "qat"))
    p.add_argument("--model", required=True)
    p.add_argument("--task", choices=("denoise", "jpeg"), required=True)
    p.add_argument("--params", required=True, help="σ values or JPEG qualities, comma-separated")
    p.add_argument("--datasets", required=True)
    p.add_argument("--images", type=int, default=0, help="first N images of each set (0: all)")
    p.add_argument("--methods", default="percentile")
    p.add_argument("--bits", default="w8a8,w4a4,w2a2")
    p.add_argument("--param", "-p", action="append", default=[], help="recipe hyper-parameter key=value")
    p.add_argument("--calib-n", type=int, default=100)
    p.add_argument("--patch", type=int, default=96)
    p.add_argument("--calib-sigma", default=None, help="σ range low,high of the calibration patches (blind)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--save-dir", type=Path, default=None, help="write each quantized run folder there (QAT: with "
                                                                "checkpoints)")
    p.add_argument("--resume", action="store_true", help="continue interrupted runs in --save-dir")
    p.add_argument("--checkpoint-every", type=int, default=50, metavar="STEPS")
    args = p.parse_args()
    if args.resume and args.save_dir is None:
        p.error("--resume needs --save-dir (the folder with the interrupted runs)")
    torch.set_num_threads(args.threads)
    args.params = [float(v) for v in args.params.split(",")]
    args.datasets = [v for v in args.datasets.split(",") if v]
    args.methods = [v for v in args.methods.split(",") if v]
    args.bits = [v for v in args.bits.split(",") if v]
    args.calib_sigma = tuple(float(v) for v in args.calib_sigma.split(",")) if args.calib_sigma else None
    OUT.mkdir(parents=True, exist_ok=True)
    (fp if args.mode == "fp" else quantized)(args)
    summary()


if __name__ == "__main__":
    run_script(main)
