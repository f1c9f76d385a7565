"""How GBA's bit-offset training (stage 2) changes the result: optimizer, offset span, or no allocation at all.

Usage (from the repository root; data and weights from $SRQ_DATA / $SRQ_WEIGHTS):
    python benchmarks/gba_alloc_ablation.py --model rlfn --scale 4 --bits w4a4 --datasets Set5,Set14
Stage 1 (bounds, DAN) runs once; every variant starts from a copy of it, allocates the activation bits
(GBA, 4/4MP) and fine-tunes the bounds (stage 3) exactly as :class:`srq.methods.GBA`. Variants:
``uniform`` (stage 2 skipped: every body activation at the base width), ``<optimizer>-lr<lr>-<span>`` with
span ``full`` (s may take the width anywhere in 1 … 8 bits, srq before 56f44b9) or ``cand`` (s within the
candidate span, the default since). Writes benchmarks/results/gba/alloc-ablation-<model>-x<scale>-<bits>.json
with PSNR/SSIM per variant, the offsets chosen, the gradient range and the wall time.
"""

from __future__ import annotations

import argparse
import copy
import json
import time
from dataclasses import replace
from pathlib import Path

import torch
from torch import nn

import srq
from srq.data import calibration_set
from srq.engine.distill import FinetuneConfig
from srq.engine.evaluate import evaluate
from srq.engine.results import atomic_write_text, provenance, run_script
from srq.methods import GBA
from srq.models.registry import get_model_info, resolve_weights
from srq.quant import parse_bits
from srq.utils.device import device_arg

OUT = Path(__file__).resolve().parent / "results" / "gba"
VARIANTS = ["uniform", "sgd-lr0.1-full", "sgd-lr0.1-cand", "adam-lr0.1-cand", "sgd-lr0-full"]


def run_variant(base: GBA, init: nn.Module, fp: nn.Module, calib: torch.Tensor,
                variant: str) -> tuple[nn.Module, dict]:
    """A copy of the stage-1 model through stage 2 (``variant``) and stage 3; returns it and what was chosen."""
    q = copy.deepcopy(init)
    info: dict = {"variant": variant}
    if variant != "uniform":
        optimizer, lr, span = variant.split("-")
        recipe = replace(base, alloc=FinetuneConfig(lr=float(lr[2:]), optimizer=optimizer),
                         offset_span="candidates" if span == "cand" else "full")
        row = recipe.allocate(q, fp, calib, "a", progress=False)
        offsets = [layer["offset"] for layer in row["layers"]]
        grads = [layer["gradient"] for layer in row["layers"]]
        info.update(offsets=offsets, average_bits=row["average_bits"], gradient_range=[min(grads), max(grads)],
                    layers_per_offset={str(o): offsets.count(o) for o in base.candidates})
    base.tune_bounds(q, fp, calib, progress=False)
    return q.eval(), info


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="rlfn")
    p.add_argument("--scale", type=int, default=4)
    p.add_argument("--bits", default="w4a4")
    p.add_argument("--datasets", default="Set5,Set14")
    p.add_argument("--variants", default=",".join(VARIANTS))
    p.add_argument("--device", type=device_arg, default="auto", help="auto (CUDA if present), cpu, cuda or cuda:N")
    args = p.parse_args()
    w, a = parse_bits(args.bits)
    weights = resolve_weights(get_model_info(args.model), args.scale, "official")
    model = srq.create_model(args.model, args.scale, weights)
    model = model.to(args.device)
    fp = copy.deepcopy(model).eval()
    calib = calibration_set("DIV2K_test_LRx4", patch=384 // args.scale, n=100)
    recipe = GBA(w_bits=w, a_bits=a)
    init = recipe.initial_bounds(model, calib, progress=False)
    rows = []
    out = OUT / f"alloc-ablation-{args.model}-x{args.scale}-{args.bits.lower()}.json"
    for variant in args.variants.split(","):
        start = time.perf_counter()
        q, info = run_variant(recipe, init, fp, calib, variant)
        info["quantize_seconds"] = round(time.perf_counter() - start, 1)
        info["scores"] = {s.dataset: {"psnr": s.psnr, "ssim": s.ssim}
                          for s in evaluate(q, args.datasets.split(","), args.scale, progress=False)}
        rows.append(info)
        print(json.dumps({k: v for k, v in info.items() if k != "offsets"}), flush=True)
        doc = {"model": args.model, "scale": args.scale, "bits": args.bits, "recipe": recipe.to_dict(),
               "variants": rows, "provenance": provenance()}
        atomic_write_text(out, json.dumps(doc, indent=1))


if __name__ == "__main__":
    run_script(main)
