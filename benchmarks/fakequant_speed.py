"""Fake-quantized evaluation time ÷ FP evaluation time on the same images, measured in one run.

Usage (from the repository root; data and weights from $SRQ_DATA / $SRQ_WEIGHTS; run on a quiet machine):
    python benchmarks/fakequant_speed.py --model imdn --scale 4 --bits w4a4 --datasets Set5,Set14 --repeats 3
The FP and the MinMax-calibrated fake-quantized model are evaluated alternately ``repeats`` times (so drift
in machine load hits both); the ratio of the medians is reported (goal ≤ 1.5×) and written to
benchmarks/results/ptq/speed-<model>-x<scale>-<bits>.json. ``--threads N`` fixes torch's CPU threads (e.g. 1
when other work shares the machine; recorded in the provenance as ``torch_threads``).
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

import torch

import srq
from srq.data import calibration_set
from srq.engine.evaluate import evaluate
from srq.engine.results import atomic_write_text, provenance, run_script
from srq.methods import MinMax
from srq.quant import parse_bits
from srq.utils.device import device_arg

OUT = Path(__file__).resolve().parent / "results" / "ptq"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="imdn")
    p.add_argument("--scale", type=int, default=4)
    p.add_argument("--bits", default="w4a4")
    p.add_argument("--datasets", default="Set5,Set14")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--device", type=device_arg, default="auto", help="auto (CUDA if present), cpu, cuda or cuda:N")
    args = p.parse_args()
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    w, a = parse_bits(args.bits)
    datasets = args.datasets.split(",")
    fp = srq.create_model(args.model, args.scale, "official").to(args.device)
    q = srq.quantize(fp, MinMax(w_bits=w, a_bits=a), calibration_set("DIV2K_test_LRx4", patch=96, n=16),
                     progress=False)
    evaluate(fp, datasets[:1], args.scale, progress=False)  # warm-up
    times: dict[str, list[float]] = {"fp": [], "fake_quant": []}
    for _ in range(args.repeats):
        for label, model in (("fp", fp), ("fake_quant", q)):
            times[label].append(sum(s.seconds for s in evaluate(model, datasets, args.scale, progress=False)))
    ratio = statistics.median(times["fake_quant"]) / statistics.median(times["fp"])
    doc = {"model": args.model, "scale": args.scale, "bits": args.bits, "datasets": datasets, "seconds": times,
           "ratio_of_medians": ratio, "provenance": provenance()}
    OUT.mkdir(parents=True, exist_ok=True)
    atomic_write_text(OUT / f"speed-{args.model}-x{args.scale}-{args.bits}.json", json.dumps(doc, indent=2) + "\n")
    print(f"fake-quant ÷ FP eval time: {ratio:.2f}× (medians of {args.repeats}: "
          f"{statistics.median(times['fake_quant']):.1f} s vs {statistics.median(times['fp']):.1f} s)")


if __name__ == "__main__":
    run_script(main)
