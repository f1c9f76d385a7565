"""SPR²Q and its ablations on real checkpoints, next to the PTQ and GBA baselines of the same placement.

Usage (from the repository root; data and weights from $SRQ_DATA / $SRQ_WEIGHTS):
    python benchmarks/spr2q_bench.py --model imdn --scale 4 --bits w4a4,w2a2 --variants spr2q
    python benchmarks/spr2q_bench.py --model imdn --scale 4 --bits w4a4 --datasets Set5,Urban100 \\
        --variants bounds,pqfr,rgt,n2,n8,r2,r4,r16          # Tables 2-3 of the paper
Variants: spr2q (N 4, r 8, RGT + OSRC), bounds (no rectifiers: bounds only, same schedule), pqfr (one rectifier),
rgt (N 4, mean gate output as the static routing, no OSRC), n2 / n8 (group size), r2 / r4 / r16 (rank).
The paper's budget (12,000 RGT + 500 OSRC iterations of batch 8) needs a GPU: --device cuda --iterations 12000
--osrc-iterations 500 --batch 8 --patch 64; the default here is a documented CPU budget (--iterations 500
--osrc-iterations 100 --batch 4 --patch 32, LR patches). --save-dir DIR writes each quantized model to DIR as a
run folder before evaluating it; with --resume, run folders already in DIR are evaluated instead of quantized
again (an interrupted evaluation goes on from the next image: scores are kept in the run folder's scores/),
and rows of other data sets already in the run's result file are kept (evaluate one more set with --resume
--datasets Urban100). Each run writes
benchmarks/results/spr2q/<model>_x<scale>_spr2q[-variant]_<bits>.json (PSNR/SSIM, cost, routing table,
stage wall times, provenance) and rebuilds benchmarks/results/spr2q/summary.md, which also lists the PTQ
and GBA rows of the same model, scale and bits, ablation.md (the paper's Tables 2-3 layout) and
<model>_x<scale>_<bits>-compare.svg (Δ PSNR vs FP of every row with the same data sets) and, for
MambaIRv2-light, table1.md (our rows next to the paper's Table 1).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from srq.engine.results import atomic_write_text, run_script
from srq.methods import SPR2Q
from srq.quant import parse_bits
from srq.report import chart_svg

from ptq_bench import (add_calib_option, add_device_option, add_fp_scores_option, add_param_option, add_split_option,
                       calib_data, fp_reference, join_tag, matching_rows, recorded_inference, run, summary,
                       with_params)

OUT = Path(__file__).resolve().parent / "results" / "spr2q"
VARIANTS = {
    "spr2q": {},
    "bounds": {"rank": 0},
    "pqfr": {"group_size": 1},
    "rgt": {"osrc": False},
    "n2": {"group_size": 2},
    "n8": {"group_size": 8},
    "r2": {"rank": 2},
    "r4": {"rank": 4},
    "r16": {"rank": 16},
}
NOTE = ("Made by `python benchmarks/spr2q_bench.py` (exact command, git revision and machine in each JSON file). "
        "Same placement as the PTQ/GBA rows: first/last layer 8 bit, weights per output channel, activations per "
        "tensor, affine grids; bounds initialised by OMSE. SPR²Q rows: CPU budget unless the JSON's recipe says "
        "otherwise (see `iterations`, `osrc_iterations`, `batch` and the calibration patch size). "
        "spr2q = N 4, r 8, RGT + OSRC; -bounds = no rectifiers; -pqfr = one rectifier; -rgt = no OSRC; "
        "-n<N> group size; -r<r> rank. Rows from results/ptq and results/gba are listed for comparison.")


# The paper's Table 1 (MambaIRv2-light, its budget on a GPU): FP and SPR²Q rows, (PSNR, SSIM) per set.
PAPER_TABLE1 = {
    (2, "fp"): {"Set5": (38.26, 0.9615), "Set14": (34.09, 0.9221),
                "B100": (32.36, 0.9019), "Urban100": (33.26, 0.9378)},
    (2, "w4a4"): {"Set5": (37.72, 0.9589), "Set14": (33.27, 0.9156),
                  "B100": (31.94, 0.8964), "Urban100": (31.53, 0.9223)},
    (2, "w2a2"): {"Set5": (35.97, 0.9495), "Set14": (31.98, 0.9020),
                  "B100": (30.95, 0.8827), "Urban100": (28.55, 0.8819)},
    (4, "fp"): {"Set5": (32.51, 0.8992), "Set14": (28.84, 0.7878),
                "B100": (27.75, 0.7426), "Urban100": (26.82, 0.8079)},
    (4, "w4a4"): {"Set5": (31.60, 0.8844), "Set14": (28.27, 0.7725),
                  "B100": (27.33, 0.7274), "Urban100": (25.64, 0.7713)},
    (4, "w2a2"): {"Set5": (29.37, 0.8327), "Set14": (26.73, 0.7319),
                  "B100": (26.42, 0.6949), "Urban100": (23.69, 0.6874)},
}


def paper_table(out_dir: Path = OUT) -> None:
    """Write ``table1.md``: our MambaIRv2-light SPR²Q rows (and their FP rows) next to the paper's Table 1."""
    lines = ["# MambaIRv2-light: srq's SPR²Q next to the paper's Table 1", "",
             "Ours: `python benchmarks/spr2q_bench.py --model mambairv2_light ...` (budget, command, revision and "
             "machine in each JSON file; CPU runs use a far smaller budget than the paper's 12,000 + 500 iterations "
             "of batch 8). Cells: PSNR / SSIM; Δ = ours − paper (PSNR, dB).", ""]
    for f in sorted(out_dir.glob("mambairv2_light_x*_spr2q_*.json")):
        d = json.loads(f.read_text())
        scale, bits = d["scale"], d["bits"].lower()
        r = d["recipe"]
        budget = (f"{r['iterations']} + {r['osrc_iterations']} iterations × batch {r['batch']}, LR patch "
                  f"{d['calibration']['patch']}; inference: {recorded_inference(d)}")
        sets = [x["dataset"] for x in d["results"]]
        lines += [f"## x{scale} {bits.upper()} ({budget})", "", "| row | " + " | ".join(sets) + " |",
                  "|---|" + "---|" * len(sets)]
        for label, ours, paper in (("FP", d["fp_results"], PAPER_TABLE1[(scale, "fp")]),
                                   ("SPR²Q", d["results"], PAPER_TABLE1[(scale, bits)])):
            ours = {x["dataset"]: x for x in ours}
            lines.append(f"| {label}, ours | "
                         + " | ".join(f"{ours[s]['psnr']:.2f} / {ours[s]['ssim']:.4f}" for s in sets) + " |")
            lines.append(f"| {label}, paper | "
                         + " | ".join(f"{paper[s][0]:.2f} / {paper[s][1]:.4f}" for s in sets) + " |")
            lines.append(f"| {label}, Δ | " + " | ".join(f"{ours[s]['psnr'] - paper[s][0]:+.2f}" for s in sets) + " |")
        lines.append("")
    atomic_write_text(out_dir / "table1.md", "\n".join(lines) + "\n")


def comparison_files(out_dir: Path = OUT) -> list[Path]:
    """PTQ and GBA result files of every (model, scale, bits) that SPR²Q was run on."""
    return matching_rows(out_dir, ("ptq", "gba"))


ABLATIONS = [("Table 2a: components", [("bounds only", "bounds"), ("+PQFR", "pqfr"), ("+PQFR +RGT", "rgt"),
                                          ("+PQFR +RGT +OSRC", "spr2q")]),
             ("Table 2b: rank r", [(f"r = {r}", "spr2q" if r == 8 else f"r{r}") for r in (2, 4, 8, 16)]),
             ("Table 3: group size N", [(f"N = {n}", "spr2q" if n == 4 else f"n{n}") for n in (2, 4, 8)])]


def ablation_tables(out_dir: Path = OUT) -> None:
    """Write ``ablation.md``: the paper's Tables 2-3 for every (model, scale, bits) with ablation runs."""
    docs = {f.stem: json.loads(f.read_text()) for f in out_dir.glob("*_x*_spr2q*_*.json")}
    lines = ["# SPR²Q ablations", "", "Made by `python benchmarks/spr2q_bench.py --variants ...` (see summary.md "
             "for the budget and each JSON file for the command). Cells: PSNR / SSIM.", ""]
    for stem in sorted(s for s in docs if "_spr2q-bounds_" in s):
        bits = stem.split("_")[-1]
        prefix = stem.split("_spr2q")[0]
        sets = [r["dataset"] for r in docs[stem]["results"]]
        lines += [f"## {prefix.replace('_', ' ')} {bits}", ""]
        for title, rows in ABLATIONS:
            lines += [f"**{title}**", "", "| variant | " + " | ".join(sets) + " |", "|---|" + "---|" * len(sets)]
            for label, variant in rows:
                tag = "spr2q" if variant == "spr2q" else f"spr2q-{variant}"
                doc = docs.get(f"{prefix}_{tag}_{bits}")
                scores = {r["dataset"]: r for r in doc["results"]} if doc else {}
                cells = [f"{scores[d]['psnr']:.2f} / {scores[d]['ssim']:.4f}" if d in scores else "—" for d in sets]
                lines.append(f"| {label} | " + " | ".join(cells) + " |")
            lines.append("")
    lines += ["## Budget and wall time per stage (s)", "", "| run | iterations (RGT / OSRC) × batch, LR patch | "
              "calibration | RGT | OSRC | fusion | machine (shared with other jobs) |", "|---|---|---|---|---|---|---|"]
    for stem, d in sorted(docs.items()):
        r, t = d["recipe"], d["report"]["seconds"]
        m = d["provenance"]["machine"]
        where = m["cuda"] or f"CPU, {m['torch_threads']} thread(s) of {m['cpu_count']}"
        lines.append(f"| {stem} | {r['iterations']} / {r['osrc_iterations']} × {r['batch']}, "
                     f"{d['calibration']['patch']} | {t['calibration']:.0f} | {t['rgt']:.0f} | {t['osrc']:.0f} | "
                     f"{t['fusion']:.2f} | {where} |")
    atomic_write_text(out_dir / "ablation.md", "\n".join(lines) + "\n")


def comparison_charts(out_dir: Path = OUT) -> None:
    """``<model>_x<scale>_<bits>-compare.svg``: Δ PSNR vs FP per data set for SPR²Q and every comparison row."""
    groups: dict[str, list[dict]] = {}
    for f in [*sorted(out_dir.glob("*_x*_spr2q_*.json")), *comparison_files(out_dir)]:
        d = json.loads(f.read_text())
        groups.setdefault(f"{d['model']}_x{d['scale']}_{d['bits']}", []).append(d)
    for key, docs in groups.items():
        sets = [r["dataset"] for r in docs[0]["results"]]
        docs = [d for d in docs if [r["dataset"] for r in d["results"]] == sets]  # same sets only
        fp = {r["dataset"]: r["psnr"] for r in docs[0]["fp_results"]}
        series = {s: [next(r["psnr"] for r in d["results"] if r["dataset"] == s) - fp[s] for d in docs] for s in sets}
        title = f"{key.replace('_', ' ')}: PSNR change vs FP (dB)"
        atomic_write_text(out_dir / f"{key}-compare.svg",
                          chart_svg([d["method"] for d in docs], series, title, "Δ PSNR (dB)"))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="imdn")
    p.add_argument("--scale", type=int, default=4)
    p.add_argument("--bits", default="w4a4,w2a2")
    p.add_argument("--variants", default="spr2q")
    p.add_argument("--datasets", default="Set5,Set14,B100,Urban100")
    p.add_argument("--iterations", type=int, default=500)
    p.add_argument("--osrc-iterations", type=int, default=100)
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--patch", type=int, default=32, help="LR patch size of the calibration inputs")
    p.add_argument("--calib-n", type=int, default=100)
    add_device_option(p)  # cuda for the paper's budget
    add_param_option(p)
    add_calib_option(p)
    add_fp_scores_option(p)
    add_split_option(p)
    p.add_argument("--save-dir", type=Path, default=None,
                   help="also write each quantized model there as a run folder (before it is evaluated)")
    p.add_argument("--resume", action="store_true",
                   help="evaluate the run folders already in --save-dir instead of quantizing again")
    args = p.parse_args()
    if args.resume and args.save_dir is None:
        p.error("--resume needs --save-dir (the folder with the saved runs)")
    variants = args.variants.split(",")
    unknown = set(variants) - set(VARIANTS)
    if unknown:
        p.error(f"unknown variants {sorted(unknown)}; choose from {', '.join(VARIANTS)}")
    datasets = args.datasets.split(",")
    calib, calibration, calib_tag = calib_data(args, args.patch, 32)
    fp_scores, fp_source = fp_reference(args, datasets)
    for bits in args.bits.split(","):
        w, a = parse_bits(bits)
        for v in variants:
            recipe = SPR2Q(w_bits=w, a_bits=a, iterations=args.iterations, osrc_iterations=args.osrc_iterations,
                           batch=args.batch, **VARIANTS[v])
            recipe, tag = with_params(recipe, args.param, join_tag("spr2q" if v == "spr2q" else f"spr2q-{v}",
                                                                   calib_tag))
            run(args.model, args.scale, tag, bits, datasets, calib, fp_scores, out_dir=OUT, recipe=recipe, tag=tag,
                device=args.device, fp_source=fp_source, save_dir=args.save_dir, resume=args.resume,
                split=args.split, calibration=calibration)
            summary(OUT, "SPR²Q", NOTE, also=comparison_files())
            ablation_tables()
            comparison_charts()
            paper_table()


if __name__ == "__main__":
    run_script(main)
