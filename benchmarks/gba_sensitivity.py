"""GBA's sensitivity check (supplementary Fig. 2): bit-width gradients vs measured per-layer quantization error.

Usage (from the repository root; data and weights from $SRQ_DATA / $SRQ_WEIGHTS):
    python benchmarks/gba_sensitivity.py --model imdn --scale 4 --bits 4
For every body activation quantizer k: (1) GBA's sensitivity −g_k, the mean gradient of the loss with respect
to its continuous bit offset, measured as in GBA stage 2 (all layers quantized at the base width, DAN
on); (2) the output MSE against the FP model when *only* that layer's activation is quantized to the base
width (everything else float), on held-out calibration patches. Reports Spearman and Pearson correlations
and writes benchmarks/results/gba/sensitivity-<model>-x<scale>-a<bits>.json and .svg.
"""

from __future__ import annotations

import argparse
import copy
import json
import time
from pathlib import Path

import torch
from scipy.stats import pearsonr, spearmanr

import srq
from srq.data import calibration_set
from srq.engine.results import atomic_write_text, provenance
from srq.methods import GBA
from srq.methods.gba import bit_slots
from srq.methods.ptq import shuffled_batches
from srq.quant import calibrate_activations, calibrate_weights, quantizers
from srq.report import chart_svg

OUT = Path(__file__).resolve().parent / "results" / "gba"


@torch.no_grad()
def single_layer_errors(qmodel, fp_model, slots, inputs: torch.Tensor) -> list[float]:
    """Output MSE vs FP with only one slot's quantizer enabled, for each slot."""
    everything = [q for _, q in quantizers(qmodel)]
    target = fp_model(inputs)
    errors = []
    for s in slots:
        for q in everything:
            q.enabled = q is s.quantizer
        errors.append(torch.mean((qmodel(inputs) - target) ** 2).item())
    for q in everything:
        q.enabled = True
    return errors


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="imdn")
    p.add_argument("--scale", type=int, default=4)
    p.add_argument("--bits", type=int, default=4)
    p.add_argument("--calib-n", type=int, default=100)
    p.add_argument("--heldout-n", type=int, default=16)
    p.add_argument("--dan", default="range", choices=["none", "range", "std"])
    args = p.parse_args()
    t0 = time.perf_counter()
    patch = 384 // args.scale
    calib = calibration_set("DIV2K_test_LRx4", patch=patch, n=args.calib_n)
    heldout = calibration_set("DIV2K_test_LRx4", patch=patch, n=args.heldout_n, seed=1)
    fp = srq.create_model(args.model, args.scale, "official").eval()
    recipe = GBA(w_bits=args.bits, a_bits=args.bits, dan=args.dan)
    q = recipe.prepare(fp, calib[:1])
    calibrate_weights(q)
    init = shuffled_batches(calib, recipe.init_batch, recipe.init_epochs, recipe.seed)
    calibrate_activations(q, init, total=len(init), progress=False)
    slots = bit_slots(q, "a")
    grads = recipe.allocation_gradients(q, copy.deepcopy(fp), calib, slots, progress=True)
    errors = single_layer_errors(q, fp, slots, heldout)
    sens = [-g for g in grads]
    rho, rho_p = spearmanr(sens, errors)
    r, r_p = pearsonr(sens, errors)
    names = [s.owner for s in slots]
    doc = {"model": args.model, "scale": args.scale, "bits": args.bits, "dan": args.dan,
           "calibration": {"images": args.calib_n, "patch": patch}, "heldout_patches": args.heldout_n,
           "spearman": rho, "spearman_p": rho_p, "pearson": r, "pearson_p": r_p,
           "layers": [{"name": n, "sensitivity": s, "single_layer_mse": e} for n, s, e in zip(names, sens, errors)],
           "seconds": time.perf_counter() - t0, "provenance": provenance()}
    stem = f"sensitivity-{args.model}-x{args.scale}-a{args.bits}"  # no underscores: not a result row
    OUT.mkdir(parents=True, exist_ok=True)
    atomic_write_text(OUT / f"{stem}.json", json.dumps(doc, indent=2) + "\n")
    top_s, top_e = max(sens) or 1.0, max(errors) or 1.0
    atomic_write_text(OUT / f"{stem}.svg", chart_svg(
        names, {"single-layer output MSE (÷ max)": [e / top_e for e in errors],
                "GBA sensitivity −g (÷ max)": [s / top_s for s in sens]},
        f"{args.model} x{args.scale} A{args.bits}: Spearman ρ = {rho:.3f}", ylabel="normalised", kind="lines"))
    print(f"Spearman ρ = {rho:.3f} (p {rho_p:.2g}), Pearson r = {r:.3f} over {len(names)} layers "
          f"({doc['seconds']:.0f} s)")


if __name__ == "__main__":
    main()
