"""The collapse check's threshold against real rows: PSNR of the quantized output vs the FP output on the first 4
calibration patches (what ``srq.pipeline.run`` checks), next to the committed Set5 PSNR of the same row.

Usage (from the repository root; data and weights from $SRQ_DATA / $SRQ_WEIGHTS):
    python benchmarks/collapse_threshold.py
writes benchmarks/results/collapse/threshold.json (and prints the table). Calibration-only methods, so it takes
minutes; the Set5 PSNRs are read from benchmarks/results/ptq and fp (no evaluation here).
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import srq
from srq.data import calibration_set
from srq.engine.collapse import COLLAPSE_DB, collapse_check
from srq.engine.results import atomic_write_text, provenance, run_script
from srq.methods import METHODS
from srq.quant import parse_bits

HERE = Path(__file__).resolve().parent
OUT = HERE / "results" / "collapse"
ROWS = [(model, method, bits) for model in ("imdn", "rlfn")
        for method, bits in (("minmax", "w8a8"), ("minmax", "w4a4"), ("percentile", "w4a4"), ("omse", "w4a4"),
                             ("omse", "w2a2"))]


def _set5(path: Path) -> float | None:
    if not path.is_file():
        return None
    return next(r["psnr"] for r in json.loads(path.read_text())["results"] if r["dataset"] == "Set5")


def main() -> None:
    calib = calibration_set("DIV2K_test_LRx4", patch=96, n=100)
    rows = []
    for model, method, bits in ROWS:
        fp = srq.create_model(model, 4, "official")
        w, a = parse_bits(bits)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            q = srq.quantize(fp, METHODS[method](w_bits=w, a_bits=a), calib, progress=False)
        check = collapse_check(q, fp, calib)
        set5 = _set5(HERE / "results" / "ptq" / f"{model}_x4_{method}_{bits}.json")
        fp_set5 = _set5(HERE / "results" / "fp" / f"{model}_x4.json")
        delta = None if set5 is None or fp_set5 is None else set5 - fp_set5
        rows.append({"model": model, "method": method, "bits": bits, **check, "set5_psnr": set5,
                     "set5_delta_to_fp": delta})
        said = "-" if delta is None else f"{delta:+.2f}"
        print(f"{model} x4 {method} {bits}: {check['psnr_vs_fp_db']} dB vs FP on calibration, "
              f"{'collapsed' if check['collapsed'] else 'ok'}; Set5 Δ to FP {said}")
    OUT.mkdir(parents=True, exist_ok=True)
    atomic_write_text(OUT / "threshold.json", json.dumps({"threshold_db": COLLAPSE_DB, "calibration":
                                                          {"set": "DIV2K_test_LRx4", "patch": 96, "samples": 4},
                                                          "rows": rows, "provenance": provenance()}, indent=1) + "\n")


if __name__ == "__main__":
    run_script(main)
