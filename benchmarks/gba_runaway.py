"""Runaway check: per-patch output error of a model at GBA's stage-1 bounds (DAN, every layer at the base width).

Usage (from the repository root; data and weights from $SRQ_DATA / $SRQ_WEIGHTS):
    python benchmarks/gba_runaway.py --models imdn,rlfn,pan,carn_m --scale 4 --bits 4
Under DAN no activation is clipped to a static range, so on some inputs a quantized trunk whose gain is above
1 can run away (PAN x4: loss 10²⁸ on single allocation batches). This quantizes each model as GBA's stage 1
does (OMSE weights, EMA MinMax activations over the calibration set) and measures, for every calibration
patch alone, the output MSE against the FP model: how many patches are infinite or far above the median, and
so how many of stage 2's (batch 16) and stage 3's (batch 2) steps would meet one. Forward passes only (about a
minute per model on one CPU thread). Writes benchmarks/results/gba/runaway-x<scale>-w<bits>a<bits>[-dan-<mode>].json.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import statistics
import time
from pathlib import Path

import torch

import srq
from srq.data import calibration_set
from srq.engine.results import atomic_write_text, provenance, run_script
from srq.methods import GBA
from srq.quant.config import DAN_CHOICES
from srq.utils.device import device_arg

OUT = Path(__file__).resolve().parent / "results" / "gba"
RATIOS = (10, 1000)  # ratio thresholds to the median that the summary counts


def patch_errors(model_name: str, scale: int, bits: int, calib: torch.Tensor, dan: str = "range",
                 device: torch.device | str = "cpu") -> list[float]:
    """Output MSE vs FP of each calibration patch alone, at GBA's stage-1 bounds."""
    fp = srq.create_model(model_name, scale, "official").eval().to(device)
    q = GBA(w_bits=bits, a_bits=bits, dan=dan).initial_bounds(copy.deepcopy(fp), calib, progress=False).eval()
    with torch.no_grad():
        return [float(torch.mean((q(x) - fp(x)) ** 2)) for x in calib.to(device).split(1)]


def chance_of_meeting(share: float, batch: int) -> float:
    """Probability that a batch of ``batch`` patches drawn without bias holds at least one runaway."""
    return 1.0 - (1.0 - share) ** batch


def summarise(errors: list[float]) -> dict:
    """Counts of non-finite patches and of patches above each of ``RATIOS`` × the median."""
    finite = [e for e in errors if math.isfinite(e)]
    median = statistics.median(errors)
    # a non-finite error counts as above every threshold, also when it makes the median itself infinite
    above = {f"above_{r}x_median": sum(not (math.isfinite(e) and e <= r * median) for e in errors) for r in RATIOS}
    runaway_share = above[f"above_{RATIOS[-1]}x_median"] / len(errors)
    return {"patches": len(errors), "median_mse": median if math.isfinite(median) else None,
            "non_finite": len(errors) - len(finite), **above,
            "largest_finite_ratios": [float(f"{e / median:.3g}") for e in sorted(finite, reverse=True)[:12]],
            "share_of_stage2_batches_meeting_one": round(chance_of_meeting(runaway_share, 16), 3),
            "share_of_stage3_batches_meeting_one": round(chance_of_meeting(runaway_share, 2), 3)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", default="imdn,rlfn,pan")
    p.add_argument("--scale", type=int, default=4)
    p.add_argument("--bits", type=int, default=4)
    p.add_argument("--calib-n", type=int, default=100)
    p.add_argument("--dan", default="range", choices=DAN_CHOICES)
    p.add_argument("--device", type=device_arg, default="auto", help="auto (CUDA if present), cpu, cuda or cuda:N")
    args = p.parse_args()
    patch = 384 // args.scale
    calib = calibration_set("DIV2K_test_LRx4", patch=patch, n=args.calib_n)
    rows = []
    for name in args.models.split(","):
        t0 = time.perf_counter()
        row = {"model": name, **summarise(patch_errors(name, args.scale, args.bits, calib, args.dan, args.device)),
               "seconds": round(time.perf_counter() - t0, 1)}
        rows.append(row)
        print(f"{name}: {row['non_finite']} non-finite, {row[f'above_{RATIOS[-1]}x_median']} above "
              f"{RATIOS[-1]}× the median of {row['patches']} patches; largest finite ratios "
              f"{row['largest_finite_ratios'][:4]}", flush=True)
    doc = {"scale": args.scale, "bits": args.bits, "dan": args.dan,
           "calibration": {"set": "DIV2K_test_LRx4", "images": args.calib_n, "patch": patch},
           "models": rows, "provenance": provenance()}
    OUT.mkdir(parents=True, exist_ok=True)
    dan = "" if args.dan == "range" else f"-dan-{args.dan}"
    path = OUT / f"runaway-x{args.scale}-w{args.bits}a{args.bits}{dan}.json"  # no underscores: not a result row
    atomic_write_text(path, json.dumps(doc, indent=2, allow_nan=False) + "\n")
    print(f"wrote {path}")


if __name__ == "__main__":
    run_script(main)
