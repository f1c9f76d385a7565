"""Where a PTQ model loses PSNR: weights only vs activations only vs both, and with DAN on the activations.

Usage (from the repository root; data and weights from $SRQ_DATA / $SRQ_WEIGHTS):
    python benchmarks/ptq_breakdown.py --model imdn --scale 4 --bits w8a8 --datasets Set5,Set14
Calibrates once with MinMax (weights per output channel, activations per tensor, first/last 8 bit), then
evaluates with only the weight quantizers enabled, only the activation quantizers, and all of them; then the
same with per-sample, per-channel range normalization of the activations (DAN, a_dan="range").
Writes benchmarks/results/ptq/breakdown-<model>-x<scale>-<bits>.json.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import srq
from srq.data import calibration_set
from srq.engine.batches import calibration_batches
from srq.engine.evaluate import evaluate
from srq.engine.results import atomic_write_text, provenance, run_script
from srq.quant import QuantConfig, calibrate, parse_bits, prepare, quantizers
from srq.utils.device import device_arg

OUT = Path(__file__).resolve().parent / "results" / "ptq"


def scores(model, datasets, scale) -> dict:
    return {s.dataset: {"psnr": s.psnr, "ssim": s.ssim} for s in evaluate(model, datasets, scale, progress=False)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="imdn")
    p.add_argument("--scale", type=int, default=4)
    p.add_argument("--bits", default="w8a8")
    p.add_argument("--datasets", default="Set5,Set14")
    p.add_argument("--device", type=device_arg, default="auto", help="auto (CUDA if present), cpu, cuda or cuda:N")
    args = p.parse_args()
    w, a = parse_bits(args.bits)
    datasets = args.datasets.split(",")
    calib = calibration_set("DIV2K_test_LRx4", patch=96, n=100)
    fp = srq.create_model(args.model, args.scale, "official").to(args.device)
    doc = {"model": args.model, "scale": args.scale, "bits": args.bits, "fp": scores(fp, datasets, args.scale)}
    for dan in ("none", "range"):
        q = prepare(srq.create_model(args.model, args.scale, "official").to(args.device),
                    QuantConfig(w_bits=w, a_bits=a, a_dan=dan), calib[:1])
        calibrate(q, calibration_batches(calib), progress=False)
        qs = quantizers(q)
        for label, keep in (("weights_only", lambda n: n.endswith("weight_quantizer")),
                            ("activations_only", lambda n: not n.endswith("weight_quantizer")),
                            ("both", lambda n: True)):
            if dan != "none" and label == "weights_only":
                continue  # DAN acts on activations only
            for n, m in qs:
                m.enabled = keep(n)
            doc[f"{label}{'' if dan == 'none' else '_dan'}"] = scores(q, datasets, args.scale)
    doc["provenance"] = provenance()
    OUT.mkdir(parents=True, exist_ok=True)
    atomic_write_text(OUT / f"breakdown-{args.model}-x{args.scale}-{args.bits}.json", json.dumps(doc, indent=2) + "\n")
    for k, v in doc.items():
        if isinstance(v, dict) and k != "provenance":
            print(f"{k:>22}: " + "  ".join(f"{d} {r['psnr']:.3f}" for d, r in v.items()))


if __name__ == "__main__":
    run_script(main)
