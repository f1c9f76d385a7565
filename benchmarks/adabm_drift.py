"""What moves AdaBM's per-layer activation bit offsets in its bit-mapping epochs (the PAN x4 W3A3 drift).

Usage (from the repository root; data and weights from $SRQ_DATA / $SRQ_WEIGHTS):
    python benchmarks/adabm_drift.py --model pan --bits w3a3
    python benchmarks/adabm_drift.py --model pan --bits w3a3 --w-bitloss 0    # the same without the bit loss
Runs AdaBM exactly as ``gba_bench.py --methods adabm`` does (100 DIV2K patches of 384/scale LR pixels, seed 0,
no evaluation) and, at every step of its three bit-mapping epochs, splits the gradient on each layer's offset
parameter m_k into the bit loss's part (``w_bitloss · max(average bits − base, 0)``, by autograd on that term
alone) and the rest (the distillation loss L1 + 10 · feature MSE). Per mapping epoch it reports the share of
steps whose batch average was above the base (the bit loss is one-sided: it pushes only then), the mean of
both parts over layers and steps, how consistent the distillation part's sign is per layer
(|mean_t g| / rms_t g: 1 = same sign every step, ≈ 1/√steps for noise), and the hard offsets {−1, 0, +1} at its
start and end. Writes benchmarks/results/gba/adabm-drift-<model>-x<scale>-<bits>[-bitloss<w>].json.
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import replace
from pathlib import Path

import torch

import srq
import srq.methods.adabm as adabm_module
from srq.data import calibration_set
from srq.engine.results import atomic_write_text, provenance, run_script
from srq.methods import AdaBM
from srq.quant import parse_bits
from srq.utils.device import device_arg

OUT = Path(__file__).resolve().parent / "results" / "gba"


def hard_counts(m: torch.Tensor) -> dict[str, int]:
    hard = torch.round(torch.clamp(m, -1, 1)).tolist()
    return {str(o): hard.count(float(o)) for o in (-1, 0, 1)}


class MappingTrace:
    """Wraps :func:`srq.methods.adabm.finetune`; records the bit-mapping epochs (those with a bit loss)."""

    def __init__(self, base_bits: int) -> None:
        self.base = base_bits
        self.epochs: list[dict] = []
        self.original = adabm_module.finetune

    def __call__(self, qmodel, fp_model, inputs, params, config, extra_loss=None, **kw):
        if extra_loss is None:
            return self.original(qmodel, fp_model, inputs, params, config, **kw)
        mapper = qmodel.adabm
        epoch = {"description": kw.get("description", ""), "m_start": mapper.layer_m.tolist(),
                 "offsets_start": hard_counts(mapper.layer_m.detach()), "steps": []}
        pending: dict = {}

        def traced_loss() -> torch.Tensor:
            loss = extra_loss()
            grad = torch.zeros_like(mapper.layer_m)
            if loss.requires_grad:
                (grad,) = torch.autograd.grad(loss, mapper.layer_m, retain_graph=True, allow_unused=True)
                grad = torch.zeros_like(mapper.layer_m) if grad is None else grad
            pending.update(avg=float(mapper.last_average_bits.detach()), bit_grad=grad.detach().clone())
            return loss

        def record() -> None:
            total = mapper.layer_m.grad.detach().clone()
            epoch["steps"].append({"average_bits": pending["avg"], "bit_grad": pending["bit_grad"],
                                   "distill_grad": total - pending["bit_grad"]})

        out = self.original(qmodel, fp_model, inputs, params, config, extra_loss=traced_loss, after_backward=record,
                            **kw)
        epoch["offsets_end"] = hard_counts(mapper.layer_m.detach())
        epoch["m_end"] = mapper.layer_m.tolist()
        self.epochs.append(self.summarise(epoch))
        return out

    def summarise(self, epoch: dict) -> dict:
        steps = epoch.pop("steps")
        bit = torch.stack([s["bit_grad"] for s in steps])      # (steps, layers)
        distill = torch.stack([s["distill_grad"] for s in steps])
        consistency = distill.mean(0).abs() / distill.pow(2).mean(0).sqrt().clamp_min(1e-30)
        active = torch.tensor([s["average_bits"] > self.base for s in steps])
        epoch.update({
            "steps": len(steps),
            "share_above_base": sum(s["average_bits"] > self.base for s in steps) / max(len(steps), 1),
            "average_bits_mean": sum(s["average_bits"] for s in steps) / max(len(steps), 1),
            "bit_grad_mean": float(bit.mean()),
            "bit_grad_mean_when_above_base": float(bit[active].mean()) if active.any() else 0.0,
            "distill_grad_mean": float(distill.mean()),
            "distill_grad_rms": float(distill.pow(2).mean().sqrt()),
            "distill_sign_consistency_mean": float(consistency.mean()),
            "layers_distill_mean_positive": int((distill.mean(0) > 0).sum()),
            "layers": len(consistency)})
        return epoch


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="pan")
    p.add_argument("--scale", type=int, default=4)
    p.add_argument("--bits", default="w3a3")
    p.add_argument("--calib-n", type=int, default=100)
    p.add_argument("--w-bitloss", type=float, default=50.0, help="weight of AdaBM's bit loss (its own: 50)")
    p.add_argument("--device", type=device_arg, default="auto", help="auto (CUDA if present), cpu, cuda or cuda:N")
    args = p.parse_args()
    t0 = time.perf_counter()
    w, a = parse_bits(args.bits)
    calib = calibration_set("DIV2K_test_LRx4", patch=384 // args.scale, n=args.calib_n)
    fp = srq.create_model(args.model, args.scale, "official").eval().to(args.device)
    trace = MappingTrace(a)
    adabm_module.finetune = trace
    try:
        q = srq.quantize(fp, replace(AdaBM(w_bits=w, a_bits=a), w_bitloss=args.w_bitloss), calib, progress=False)
    finally:
        adabm_module.finetune = trace.original
    final = [row["offset"] for row in q.srq_report()["a"]["layers"]]
    doc = {"model": args.model, "scale": args.scale, "bits": args.bits, "w_bitloss": args.w_bitloss,
           "calibration": {"images": args.calib_n, "patch": 384 // args.scale},
           "mapping_epochs": trace.epochs,
           "final_offsets": {str(o): final.count(o) for o in (-1, 0, 1)},
           "final_average_layer_offset": sum(final) / max(len(final), 1),
           "seconds": time.perf_counter() - t0, "provenance": provenance()}
    tag = f"-bitloss{args.w_bitloss:g}" if args.w_bitloss != 50 else ""
    OUT.mkdir(parents=True, exist_ok=True)
    path = OUT / f"adabm-drift-{args.model}-x{args.scale}-{args.bits.lower()}{tag}.json"
    atomic_write_text(path, json.dumps(doc, indent=2) + "\n")
    for e in trace.epochs:
        print(f"{e['description']}: offsets {e['offsets_start']} → {e['offsets_end']}, above base "
              f"{e['share_above_base']:.0%} of {e['steps']} steps, bit-loss grad {e['bit_grad_mean']:.3g}, "
              f"distillation grad {e['distill_grad_mean']:.3g} (rms {e['distill_grad_rms']:.3g}, "
              f"sign consistency {e['distill_sign_consistency_mean']:.2f})")
    print(f"final offsets {doc['final_offsets']} ({doc['seconds']:.0f} s) → {path}")


if __name__ == "__main__":
    run_script(main)
