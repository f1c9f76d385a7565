"""How far from the FP output a Q-MambaIR model is right after calibration (before any training), per DLS
initialisation: Table 6's four and srq's MSE fit (``dls_init=mse``).

Usage (from the repository root; weights from $SRQ_WEIGHTS, calibration images from $SRQ_DATA):
    python benchmarks/dls_init.py [--model imdn] [--scale 4] [--bits w2a2,w4a4] [--patches 8] [--patch 48]
Each row prepares the model with ``QMambaIR(dls_init=…)``, calibrates it on the first ``--patches`` patches of
DIV2K_test_LRx4 and reports the PSNR of its output against the FP model's on those patches (both clipped to [0, 1]).
Writes benchmarks/results/qmambair/dls-init-<model>_x<scale>.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import torch

import srq
from srq.engine.results import atomic_write_text, provenance, run_script
from srq.methods import QMambaIR
from srq.methods.qmambair import DLS_INITS
from srq.quant import calibrate, parse_bits

OUT = Path(__file__).resolve().parent / "results" / "qmambair"


def psnr_after_calibration(fp: torch.nn.Module, calib: torch.Tensor, bits: str, init: str) -> float:
    """PSNR (dB) of the calibrated, untrained Q-MambaIR model's output against ``fp``'s on ``calib``."""
    w, a = parse_bits(bits)
    q = QMambaIR(w_bits=w, a_bits=a, dls_init=init).prepare(fp, calib[:1])
    calibrate(q, [calib], progress=False)
    with torch.no_grad():
        mse = float((q(calib).clamp(0, 1) - fp(calib).clamp(0, 1)).square().mean())
    return -10 * math.log10(max(mse, 1e-12))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="imdn")
    p.add_argument("--scale", type=int, default=4)
    p.add_argument("--bits", default="w2a2,w4a4")
    p.add_argument("--inits", default=",".join(DLS_INITS))
    p.add_argument("--patches", type=int, default=8)
    p.add_argument("--patch", type=int, default=48, help="LR patch size (px)")
    p.add_argument("--threads", type=int, default=None)
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    fp = srq.create_model(args.model, args.scale, "official").eval()
    calib = srq.data.calibration_set("DIV2K_test_LRx4", patch=args.patch, n=args.patches)
    rows = []
    for bits in args.bits.split(","):
        for init in args.inits.split(","):
            start = time.perf_counter()
            rows.append({"bits": bits, "dls_init": init, "psnr_vs_fp": psnr_after_calibration(fp, calib, bits, init),
                         "seconds": time.perf_counter() - start})
            print(f"{args.model} x{args.scale} {bits} dls_init={init}: {rows[-1]['psnr_vs_fp']:.2f} dB from FP",
                  flush=True)
    stem = OUT / f"dls-init-{args.model}_x{args.scale}"
    lines = [f"# Q-MambaIR after calibration, before training: {args.model} x{args.scale}", "",
             f"PSNR of the quantized output against the FP output on {args.patches} DIV2K_test_LRx4 patches of "
             f"{args.patch} px (`python benchmarks/dls_init.py`; JSON beside this file). `mse` is srq's fitted "
             "initialisation, the others are Table 6's.", "", "| bits | dls_init | dB from FP |", "|---|---|---|"]
    lines += [f"| {r['bits']} | {r['dls_init']} | {r['psnr_vs_fp']:.2f} |" for r in rows]
    atomic_write_text(stem.with_suffix(".md"), "\n".join(lines) + "\n")
    atomic_write_text(stem.with_suffix(".json"), json.dumps(
        {"model": args.model, "scale": args.scale, "patches": args.patches, "patch": args.patch, "rows": rows,
         "provenance": provenance()}, indent=1) + "\n")


if __name__ == "__main__":
    run_script(main)
