"""FP evaluation of the model zoo on the four benchmark sets, next to the published numbers.

Usage (from the repository root; data and weights from $SRQ_DATA / $SRQ_WEIGHTS):
    python benchmarks/fp_eval.py                      # every model/scale with official weights
    python benchmarks/fp_eval.py imdn:4 pan:2         # a subset
    python benchmarks/fp_eval.py mambairv2_light:2 --datasets Set14,B100   # some sets, merged into the file
    python benchmarks/fp_eval.py mambairv2_light:2 --split 200   # MambaIRv2's official partitioned test
Writes benchmarks/results/fp/<model>_x<scale>.json (per image, provenance) and rebuilds
benchmarks/results/fp/summary.md with measured vs. published PSNR/SSIM. With --datasets, the sets run
replace those in an existing file and the other sets are kept; every result row then names the run
(``provenance``) that measured it.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import srq
from srq.engine.evaluate import DatasetScore, evaluate
from srq.engine.results import atomic_write_text, provenance, run_script, write_results
from srq.fileio import file_sha256
from srq.models.registry import get_model_info, resolve_weights
from srq.utils.device import device_arg

from ptq_bench import inference_label, recorded_inference

HERE = Path(__file__).resolve().parent
OUT = HERE / "results" / "fp"
SETS = ["Set5", "Set14", "B100", "Urban100"]
RUNS = [("imdn", 2), ("imdn", 3), ("imdn", 4), ("rfdn", 4), ("rlfn", 2), ("rlfn", 4), ("pan", 2), ("pan", 3),
        ("pan", 4), ("carn_m", 2), ("carn_m", 3), ("carn_m", 4), ("fsrcnn", 2), ("fsrcnn", 3), ("fsrcnn", 4)]


def run(name: str, scale: int, sets: list[str] = SETS, split: int | None = None, device="cpu") -> Path:
    info = get_model_info(name)
    path = resolve_weights(info, scale, "official")
    model = srq.create_model(name, scale, path).to(device)
    scores = evaluate(model, sets, scale, split=split)
    meta = {"model": name, "scale": scale, "weights": path.name, "weights_sha256": file_sha256(path),
            "protocol": "HR mod-crop, MATLAB bicubic LR, uint8 SR, Y (BT.601, unrounded), crop = scale, SSIM 11x11 "
                        "Gaussian sigma 1.5 float64", "inference": inference_label(split),
            "provenance": provenance()}
    out = OUT / f"{name}_x{scale}.json"
    if sets == SETS or not out.is_file():
        write_results(out, scores, meta)
    else:
        atomic_write_text(out, json.dumps(merged(json.loads(out.read_text()), scores, meta), indent=2) + "\n")
    print(f"{name} x{scale}: " + "  ".join(f"{s.dataset} {s.psnr:.3f}/{s.ssim:.4f}" for s in scores), flush=True)
    return out


def merged(old: dict, scores: list[DatasetScore], meta: dict) -> dict:
    """``old`` results document with the sets in ``scores`` replaced; each row keeps the provenance of its run."""
    if old.get("weights_sha256") != meta["weights_sha256"]:
        raise SystemExit(f"error: results/fp/{meta['model']}_x{meta['scale']}.json was made with other weights; "
                         "re-run all sets (omit --datasets)")
    rows = {r["dataset"]: {**r, "provenance": r.get("provenance", old["provenance"]),
                           "inference": recorded_inference(r, old)} for r in old["results"]}
    rows.update({s.dataset: {**s.to_dict(), "provenance": meta["provenance"], "inference": meta["inference"]}
                 for s in scores})
    order = [d for d in SETS if d in rows] + [d for d in rows if d not in SETS]
    return {**meta, "results": [rows[d] for d in order]}


def summary() -> None:
    published = json.loads((HERE / "published_fp.json").read_text())
    lines = ["# FP evaluation vs. published numbers", "",
             "Measured with `python benchmarks/fp_eval.py` (per-run JSON files beside this one hold per-image "
             "scores, git revision, machine and command). Published values and their sources: "
             "`benchmarks/published_fp.json`. Cells: measured PSNR / SSIM (Δ PSNR vs. published, Δ SSIM).", "",
             "| model | scale | " + " | ".join(SETS) + " | time (s) |", "|---|---|" + "---|" * (len(SETS) + 1)]
    for f in sorted(OUT.glob("*_x*.json")):
        doc = json.loads(f.read_text())
        pub = published.get(doc["model"], {}).get(str(doc["scale"]), {})
        by_set = {r["dataset"]: r for r in doc["results"]}
        cells, secs = [], sum(r["seconds"] for r in doc["results"])
        for name in SETS:
            r = by_set.get(name)
            if r is None:
                cells.append("—")
                continue
            cell = f"{r['psnr']:.3f} / {r['ssim']:.4f}"
            inference = recorded_inference(r, doc)
            if inference != inference_label(None):
                cell += f" [{inference}]"
            if name in pub:
                p, s = pub[name]
                cell += f" ({r['psnr'] - p:+.3f}, {r['ssim'] - s:+.4f})"
            cells.append(cell)
        lines.append(f"| {doc['model']} | {doc['scale']} | " + " | ".join(cells) + f" | {secs:.0f} |")
    atomic_write_text(OUT / "summary.md", "\n".join(lines) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="*", help="model:scale pairs (default: every model/scale with weights)")
    parser.add_argument("--datasets", default=",".join(SETS), help="sets to run, merged into an existing file")
    parser.add_argument("--split", type=int, default=None,
                        help="partitioned inference as in the official MambaIR/MambaIRv2 tests (e.g. 200 LR px)")
    parser.add_argument("--device", type=device_arg, default="auto", help="auto (CUDA if present), cpu, cuda or cuda:N")
    args = parser.parse_args()
    OUT.mkdir(parents=True, exist_ok=True)
    wanted = [(a.split(":")[0], int(a.split(":")[1])) for a in args.runs] or RUNS
    for name, scale in wanted:
        run(name, scale, args.datasets.split(","), args.split, args.device)
    summary()


if __name__ == "__main__":
    run_script(main)
