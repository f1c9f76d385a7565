"""GBA's sensitivity check (supplementary Fig. 2): bit-width gradients vs measured per-layer quantization error.

Usage (from the repository root; data and weights from $SRQ_DATA / $SRQ_WEIGHTS):
    python benchmarks/gba_sensitivity.py --model imdn --scale 4 --bits 4
    python benchmarks/gba_sensitivity.py --model pan --kind w --lambda-feat 10   # weights, loss with feature term
For every body activation (``--kind a``, the paper's figure) or weight (``--kind w``) quantizer k: (1) GBA's
sensitivity −g_k, the mean gradient of the loss with respect to its continuous bit offset, measured as in GBA
stage 2 (all layers quantized at the base width, DAN on, the output L1 as loss; ``--lambda-feat`` adds the
fine-tuning loss's feature term with that weight); (2) the output MSE against the FP model when *only* that
quantizer is on at the base width (everything else float), on held-out calibration patches. Under the
allocation's noise model (error ∝ 4^(−bits)) that MSE is proportional to what dropping the layer one bit
costs. Reports Spearman and Pearson correlations, also per unit of the allocation's budget (both divided by
the layer's parameters or activation elements per LR pixel: what the allocation compares), and writes
benchmarks/results/gba/sensitivity-<model>-x<scale>-<kind><bits>[-lf<λ>].json and .svg.
"""

from __future__ import annotations

import argparse
import copy
import json
import time
from dataclasses import replace
from pathlib import Path

import torch
from scipy.stats import pearsonr, spearmanr

import srq
from srq.data import calibration_set
from srq.engine.results import atomic_write_text, provenance, run_script
from srq.methods import GBA
from srq.methods.bit_slots import bit_slots, budget_sizes
from srq.quant import quantizers
from srq.quant.config import DAN_CHOICES
from srq.utils.device import device_arg
from srq.report import chart_svg

OUT = Path(__file__).resolve().parent / "results" / "gba"


@torch.no_grad()
def single_layer_errors(qmodel, fp_model, slots, inputs: torch.Tensor) -> list[float]:
    """Output MSE vs FP with only one slot's quantizer enabled, for each slot."""
    everything = [q for _, q in quantizers(qmodel)]
    inputs = inputs.to(next(fp_model.parameters()).device)
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
    p.add_argument("--dan", default="range", choices=DAN_CHOICES)
    p.add_argument("--kind", default="a", choices=["a", "w"],
                   help="activation (the paper's figure) or weight quantizers")
    p.add_argument("--lambda-feat", type=float, default=0.0,
                   help="feature-alignment weight of the gradient's loss (GBA's allocation: 0; its fine-tuning: 10)")
    p.add_argument("--replot", action="store_true", help="only redraw every saved result's SVG from its JSON")
    p.add_argument("--device", type=device_arg, default="auto", help="auto (CUDA if present), cpu, cuda or cuda:N")
    args = p.parse_args()
    if args.replot:
        replot()
        return
    t0 = time.perf_counter()
    patch = 384 // args.scale
    calib = calibration_set("DIV2K_test_LRx4", patch=patch, n=args.calib_n)
    heldout = calibration_set("DIV2K_test_LRx4", patch=patch, n=args.heldout_n, seed=1)
    fp = srq.create_model(args.model, args.scale, "official").eval().to(args.device)
    recipe = GBA(w_bits=args.bits, a_bits=args.bits, dan=args.dan)
    recipe = replace(recipe, alloc=replace(recipe.alloc, lambda_feat=args.lambda_feat))
    q = recipe.initial_bounds(fp, calib, progress=False)  # GBA stage 1
    slots = bit_slots(q, args.kind)
    grads = recipe.allocation_gradients(q, copy.deepcopy(fp), calib, slots, progress=True)
    errors = single_layer_errors(q, fp, slots, heldout)
    sizes = budget_sizes(q, slots, calib[:1])
    sens = [-g for g in grads]
    rho, rho_p = spearmanr(sens, errors)
    r, r_p = pearsonr(sens, errors)
    rho_size, rho_size_p = spearmanr([s / n for s, n in zip(sens, sizes)], [e / n for e, n in zip(errors, sizes)])
    names = [s.owner for s in slots]
    doc = {"model": args.model, "scale": args.scale, "bits": args.bits, "kind": args.kind, "dan": args.dan,
           "lambda_feat": args.lambda_feat,
           "calibration": {"images": args.calib_n, "patch": patch}, "heldout_patches": args.heldout_n,
           "spearman": rho, "spearman_p": rho_p, "pearson": r, "pearson_p": r_p,
           "spearman_per_size": rho_size, "spearman_per_size_p": rho_size_p,
           "size_unit": "activation elements per LR pixel" if args.kind == "a" else "parameters",
           "layers": [{"name": n, "sensitivity": s, "single_layer_mse": e, "size": z}
                      for n, s, e, z in zip(names, sens, errors, sizes)],
           "seconds": time.perf_counter() - t0, "provenance": provenance()}
    lf = f"-lf{args.lambda_feat:g}" if args.lambda_feat else ""
    stem = f"sensitivity-{args.model}-x{args.scale}-{args.kind}{args.bits}{lf}"  # no underscores: not a result row
    OUT.mkdir(parents=True, exist_ok=True)
    atomic_write_text(OUT / f"{stem}.json", json.dumps(doc, indent=2) + "\n")
    atomic_write_text(OUT / f"{stem}.svg", sensitivity_svg(doc))
    print(f"Spearman ρ = {rho:.3f} (p {rho_p:.2g}), Pearson r = {r:.3f}, per unit of budget ρ = {rho_size:.3f} "
          f"over {len(names)} layers ({doc['seconds']:.0f} s)")


def sensitivity_svg(doc: dict) -> str:
    """Both per-layer curves of a sensitivity result, each divided by its maximum, with Spearman's ρ in the title
    (files made before `--kind` existed measured activations)."""
    names = [r["name"] for r in doc["layers"]]
    sens = [r["sensitivity"] for r in doc["layers"]]
    errors = [r["single_layer_mse"] for r in doc["layers"]]
    top_s, top_e = max(sens) or 1.0, max(errors) or 1.0
    return chart_svg(names, {"single-layer output MSE (÷ max)": [e / top_e for e in errors],
                             "GBA sensitivity −g (÷ max)": [v / top_s for v in sens]},
                     f"{doc['model']} x{doc['scale']} {doc.get('kind', 'a').upper()}{doc['bits']}, λ_feat "
                     f"{doc['lambda_feat']:g}: Spearman ρ = {doc['spearman']:.3f}", ylabel="normalised", kind="lines")


def replot(out_dir: Path = OUT) -> None:
    """Redraw every ``sensitivity-*.svg`` from its JSON (after a change to the chart code; nothing is measured)."""
    for f in sorted(out_dir.glob("sensitivity-*.json")):
        atomic_write_text(f.with_suffix(".svg"), sensitivity_svg(json.loads(f.read_text())))


if __name__ == "__main__":
    run_script(main)
