"""GBA against the fine-tuned baselines, side by side (issue 5's table), with bit maps and their plots.

Usage (from the repository root; data and weights from $SRQ_DATA / $SRQ_WEIGHTS):
    python benchmarks/gba_bench.py --model imdn --scale 4 --bits w4a4,w3a3 \\
        --methods minmax_ft,percentile_ft,gba,gba_star --datasets Set5,Set14,B100,Urban100
Ablations: --dan none|range|std|capped, --dan-window N (not in the paper), --candidates=-2,-1,0,1,2 (with "=": the
value starts with "-"), --calib-n 20, --alloc-lambda-feat 10, --budget bitops (each adds a tag to the file name);
--adabm-init percentile (AdaBM from percentile instead of EMA min/max activation bounds); --ptq4sr-weight-lr 0.01
(PTQ4SR whose PaC trains the weight bounds at lr 0.01 instead of the released 5e-6); --reinit-weights
(GBA*: weight bounds by OMSE again at the allocated widths). --fp-scores saved reads the FP row from results/fp.
--replot runs nothing: it redraws every bit-map SVG from its result file and rebuilds summary.md and table.md.
Each run writes benchmarks/results/gba/<model>_x<scale>_<method>[_tag]_<bits>.json (PSNR/SSIM, cost, average
bits, per-layer bit map with gradients, wall time, provenance), a per-layer bit-offset plot
<...>_bits.svg for GBA runs (the paper's Fig. 5), and rebuilds benchmarks/results/gba/summary.md and table.md
(the paper's Tables 1, 3 and 4 layout: FP, MinMax+FT, Percentile+FT, PTQ4SR, AdaBM, AdaBM*, GBA, GBA*).
Calibration: 100 DIV2K LR images, one random (384/scale)-pixel LR patch each (384×384 HR, as in the paper).
At x2 the 192-pixel patches come from the same x4 LR images (the calibration set srq ships; DIV2K's x2 LR
images would match the paper more closely): natural images at a coarser scale than the x2 model sees.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import replace
from pathlib import Path

from srq.engine.results import atomic_write_text, run_script
from srq.methods import GBA, METHODS, PTQ4SR, AdaBM
from srq.quant import parse_bits
from srq.quant.config import DAN_CHOICES
from srq.report import bit_offsets_svg, format_bit_map

from ptq_bench import (add_calib_option, add_device_option, add_fp_scores_option, add_param_option, add_split_option,
                       average_bits, calib_data, fp_reference, join_tag, matching_rows, result_key, result_tag, run,
                       summary, with_params)

OUT = Path(__file__).resolve().parent / "results" / "gba"
NOTE = ("Made by `python benchmarks/gba_bench.py` (exact command, git revision and machine in each JSON file). "
        "First/last layer 8 bit; weights per output channel; activations per tensor (GBA: after DAN); "
        "calibration: 100 DIV2K LR patches of 384/scale pixels. GBA = mixed precision on activations (4/4MP), "
        "gba_star = on weights and activations (4MP/4MP); 'avg W/A bits' are the achieved body averages "
        "(weights weighted by parameters, activations by elements).")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="imdn")
    p.add_argument("--scale", type=int, default=4)
    p.add_argument("--bits", default="w4a4")
    p.add_argument("--methods", default="ptq4sr,adabm,adabm_star,gba,gba_star",
                   help="gba, gba_star, or any PTQ method (the FT baselines are also read from results/ptq)")
    p.add_argument("--datasets", default="Set5,Set14,B100,Urban100")
    p.add_argument("--calib-n", type=int, default=100)
    p.add_argument("--patch", type=int, default=None,
                   help="LR patch size of the calibration inputs (default 384/scale, as in the paper; another size "
                        "is named in the result files' tag)")
    p.add_argument("--dan", default="range", choices=DAN_CHOICES)
    p.add_argument("--dan-window", type=int, default=0, metavar="N",
                   help="DAN range statistics over N×N LR-pixel windows instead of the whole image (tag danwN; "
                        "not in the paper)")
    p.add_argument("--candidates", default="-1,0,1",
                   help="bit offsets to choose from, comma-separated; write --candidates=-2,-1,0,1,2 (with '=', as "
                        "the value starts with '-'); tag cand<max>")
    p.add_argument("--adabm-init", default="ema_minmax", choices=AdaBM.A_INITS,
                   help="AdaBM's activation initialisation (its own: ema_minmax; others for an ablation)")
    p.add_argument("--ptq4sr-weight-lr", type=float, default=None, metavar="LR",
                   help="PTQ4SR: PaC weight-phase learning rate (cosine to 0.4·LR) instead of the released 5e-6 "
                        "(tag wlr-LR; a diagnostic: RLFN's W4 min/max weights need trained bounds)")
    p.add_argument("--ft-epochs", type=int, default=2, metavar="N",
                   help="GBA: epochs of stage-3 bound fine-tuning (paper: 2, i.e. 100 steps of batch 2 on 100 images; "
                        "tag ftN; PTQ4SR takes 500 steps)")
    p.add_argument("--outlier-factor", type=float, default=None, metavar="F",
                   help="GBA: skip allocation and fine-tuning steps whose loss is above F× the median so far "
                        "(default: GBA's, 1000; 0: no guard; tag outlierF)")
    p.add_argument("--alloc-lambda-feat", type=float, default=None, metavar="L",
                   help="GBA: feature-alignment weight of the stage-2 (allocation) loss instead of 0 (the output "
                        "L1 alone); 10 is Eq. (1)'s fine-tuning loss, srq's default before db5c371 (tag alloclfL)")
    p.add_argument("--budget", default="size", choices=GBA.BUDGETS,
                   help="GBA: what the average kept at the base is weighted by: size (the paper's: parameters / "
                        "activation elements) or bitops (MACs × the other side's bits, so BitOPs stay at uniform; "
                        "tag budget-bitops)")
    p.add_argument("--reinit-weights", action="store_true",
                   help="GBA*: OMSE weight bounds again at the allocated bit widths (tag wreinit)")
    add_fp_scores_option(p)
    add_split_option(p)
    p.add_argument("--replot", action="store_true",
                   help="only redraw the bit-map SVGs from the saved results and rebuild summary.md and table.md")
    add_device_option(p)
    add_param_option(p)
    add_calib_option(p)
    args = p.parse_args()
    if args.replot:
        replot()
        return
    candidates = tuple(int(c) for c in args.candidates.split(","))
    tag_parts = ([f"dan-{args.dan}"] if args.dan != "range" else []) + \
        ([f"danw{args.dan_window}"] if args.dan_window else []) + \
        ([f"cand{max(candidates)}"] if candidates != (-1, 0, 1) else []) + \
        ([f"calib{args.calib_n}"] if args.calib_n != 100 else [])
    datasets = args.datasets.split(",")
    calib, calibration, calib_tag = calib_data(args, args.patch or 384 // args.scale, 384 // args.scale)
    fp_scores, fp_source = fp_reference(args, datasets)
    OUT.mkdir(parents=True, exist_ok=True)
    for bits in args.bits.split(","):
        w, a = parse_bits(bits)
        for method in args.methods.split(","):
            recipe = None
            if method in ("gba", "gba_star"):
                reinit = args.reinit_weights and method == "gba_star"
                recipe = GBA(w_bits=w, a_bits=a, mp_weights=method == "gba_star", dan=args.dan,
                             dan_window=args.dan_window, candidates=candidates, reinit_weight_bounds=reinit,
                             budget=args.budget)
                recipe = replace(recipe, finetune_config=replace(recipe.finetune_config, epochs=args.ft_epochs))
                if args.alloc_lambda_feat is not None:
                    recipe = replace(recipe, alloc=replace(recipe.alloc, lambda_feat=args.alloc_lambda_feat))
                if args.outlier_factor is not None:
                    factor = args.outlier_factor or None
                    recipe = replace(recipe, alloc=replace(recipe.alloc, outlier_factor=factor),
                                     finetune_config=replace(recipe.finetune_config, outlier_factor=factor))
                tag = "_".join([method] + tag_parts + (["wreinit"] if reinit else []) +
                               ([f"budget-{args.budget}"] if args.budget != "size" else []) +
                               ([f"ft{args.ft_epochs}"] if args.ft_epochs != 2 else []) +
                               ([f"alloclf{args.alloc_lambda_feat:g}"] if args.alloc_lambda_feat is not None else []) +
                               ([f"outlier{args.outlier_factor:g}"] if args.outlier_factor is not None else []))
            elif method == "ptq4sr" and args.ptq4sr_weight_lr is not None:
                base = PTQ4SR(w_bits=w, a_bits=a)
                lr = args.ptq4sr_weight_lr
                recipe = replace(base, weight_phase=replace(base.weight_phase, lr=lr, lr_min=0.4 * lr))
                tag = f"ptq4sr_wlr-{lr:g}"
            elif method in ("adabm", "adabm_star") and args.adabm_init != "ema_minmax":
                recipe = replace(METHODS[method](w_bits=w, a_bits=a), a_init=args.adabm_init)
                tag = f"{method}_init-{args.adabm_init}"
            else:
                tag = method
            recipe, tag = with_params(recipe or METHODS[method](w_bits=w, a_bits=a), args.param,
                                      join_tag(tag, calib_tag))
            doc, q = run(args.model, args.scale, method, bits, datasets, calib, fp_scores, out_dir=OUT,
                         recipe=recipe, tag=tag, fp_source=fp_source, split=args.split,
                         device=args.device, calibration=calibration)
            if doc.get("report"):
                print(format_bit_map(doc["report"]))
                write_bits_svg(OUT / f"{args.model}_x{args.scale}_{tag}_{bits.lower()}.json", doc)
    summary(OUT, "GBA and baselines", NOTE, also=baseline_files())
    paper_table()


def write_bits_svg(result: Path, doc: dict) -> None:
    """``<result stem>_bits.svg``: the per-layer bit offsets of a mixed-precision result (the paper's Fig. 5)."""
    title = f"{doc['model']} x{doc['scale']} {result_tag(result)} {doc['bits'].upper()}: bit offset per layer"
    atomic_write_text(result.with_name(f"{result.stem}_bits.svg"), bit_offsets_svg(doc["report"], title))


def replot(out_dir: Path = OUT) -> None:
    """Redraw every bit-map SVG from its result file and rebuild summary.md and table.md (nothing is run)."""
    for f in sorted(out_dir.glob("*_x*_*.json")):
        doc = json.loads(f.read_text())
        if any(k in (doc.get("report") or {}) for k in ("w", "a")):
            write_bits_svg(f, doc)
    summary(out_dir, "GBA and baselines", NOTE, also=baseline_files(out_dir))
    paper_table(out_dir)


# The rows of the paper's Tables 1, 3 and 4, in its order, then srq's extra: (label, method tag of the result
# file, W/A label). PTQ4SR's second row trains the weight bounds at lr 0.01 (on RLFN the released schedule
# diverges, docs/methods.md); the last rows are GBA with srq's variants (not in the paper): DAN statistics over
# 24-px windows, per-sample DAN ranges capped at the calibrated per-channel extremes, a budget weighted by
# BitOPs instead of parameters / activation elements, and bit offsets sized by
# the fine-tuning loss with its feature term (λ_feat = 10 in stage 2; srq's default before 2026-11-24, those
# files renamed to the alloclf10 tag).
TABLE_ROWS = [("MinMax+FT", "minmax_ft", "{b} / {b}"), ("Percentile+FT", "percentile_ft", "{b} / {b}"),
              ("PTQ4SR", "ptq4sr", "{b} / {b}"), ("PTQ4SR, weight-bound lr 0.01", "ptq4sr_wlr-0.01", "{b} / {b}"),
              ("AdaBM", "adabm", "{b} / {b}MP"), ("AdaBM*", "adabm_star", "{b}MP / {b}MP"),
              ("GBA", "gba", "{b} / {b}MP"), ("GBA*", "gba_star", "{b}MP / {b}MP"),
              ("GBA, DAN over 24-px windows (srq)", "gba_danw24", "{b} / {b}MP"),
              ("GBA, capped DAN (srq)", "gba_dan-capped", "{b} / {b}MP"),
              ("GBA*, capped DAN (srq)", "gba_star_dan-capped", "{b}MP / {b}MP"),
              ("GBA, BitOPs budget (srq)", "gba_budget-bitops", "{b} / {b}MP"),
              ("GBA*, BitOPs budget (srq)", "gba_star_budget-bitops", "{b}MP / {b}MP"),
              ("GBA, capped DAN, BitOPs budget (srq)", "gba_dan-capped_budget-bitops", "{b} / {b}MP"),
              ("GBA*, capped DAN, BitOPs budget (srq)", "gba_star_dan-capped_budget-bitops", "{b}MP / {b}MP"),
              ("GBA, allocation loss with feature term (λ_feat 10)", "gba_alloclf10", "{b} / {b}MP"),
              ("GBA*, allocation loss with feature term (λ_feat 10)", "gba_star_alloclf10", "{b}MP / {b}MP")]

# The GBA ablations, one setting changed each (same row format; the first row is the reference).
ABLATION_ROWS = [("GBA (DAN, {−1, 0, 1}, 100 images)", "gba", "{b} / {b}MP"),
                 ("no DAN", "gba_dan-none", "{b} / {b}MP"), ("candidates {−2 … 2}", "gba_cand2", "{b} / {b}MP"),
                 ("candidates {−3 … 3}", "gba_cand3", "{b} / {b}MP"),
                 ("20 calibration images", "gba_calib20", "{b} / {b}MP")]


def paper_table(out_dir: Path = OUT) -> None:
    """Write ``table.md``: one block per (model, scale, bits) in the layout of the paper's Tables 1, 3 and 4.

    Rows: FP, then the methods of :data:`TABLE_ROWS` that have a result file (with Set5, Set14, B100, Urban100);
    columns: W/A, processing time (quantization wall time, s), PSNR / SSIM per set, achieved average W/A bits,
    size and BitOPs. The best PSNR of each set among the quantized rows is in bold. Then one block per
    (model, scale, bits) with two or more of :data:`ABLATION_ROWS`.
    """
    files = {f.stem: f for f in [*out_dir.glob("*_x*_*.json"), *baseline_files(out_dir)]}
    groups = sorted({result_key(f) for f in files.values()})
    lines = ["# GBA and baselines in the layout of the paper's Tables 1, 3 and 4", "",
             "Made by `python benchmarks/gba_bench.py` and `python benchmarks/ptq_bench.py` (the FT rows); command, "
             "git revision and machine in each JSON file. Time: quantization wall time on one CPU thread of a "
             "2-core machine that ran two such jobs at once (the paper's are GPU times). Cells: PSNR / SSIM; "
             "bold: best PSNR of the quantized rows; rev: the git revision that made the row. GBA and GBA* size their "
             "bit offsets by the output L1 alone (srq's default since db5c371); the rows 'allocation loss with "
             "feature term (λ_feat 10)' are the earlier default, kept where not yet re-run or for comparison. The "
             "issue's ablations (DAN, candidate sets, calibration size) are at the end; every other variant run is "
             "in summary.md.", ""]
    ablations = []
    for key in groups:
        prefix, bits = key.split("|")
        b = bits.lower().lstrip("w").split("a")[0]
        model, scale = prefix.rsplit("_x", 1)
        docs = _rows(files, prefix, bits, TABLE_ROWS, b)
        if any(label.startswith("GBA") for label, _, _ in docs):
            lines += _block(f"{model} x{scale} {bits.upper()}", docs)
        abl = _rows(files, prefix, bits, ABLATION_ROWS, b)
        if len(abl) > 1:
            ablations += _block(f"{model} x{scale} {bits.upper()}: GBA ablations", abl, fp=False)
    if ablations:
        lines += ["# Ablations", "", "GBA (4/4MP) with one setting changed from the paper's (DAN on, candidates "
                  "{−1, 0, 1}, 100 calibration images); made by `gba_bench.py --methods gba` with the flag of the "
                  "row (`--dan none`, `--candidates=-2,-1,0,1,2`, `--candidates=-3,-2,-1,0,1,2,3`, `--calib-n 20`). "
                  "Bold: best PSNR of the block.", ""] + ablations
    atomic_write_text(out_dir / "table.md", "\n".join(lines) + "\n")


def _rows(files: dict[str, Path], prefix: str, bits: str, table: list[tuple[str, str, str]], b: str) -> list:
    """(label, W/A label, result doc) for each row of ``table`` that has a result file for ``prefix``/``bits``."""
    rows = []
    for label, tag, wa in table:
        f = files.get(f"{prefix}_{tag}_{bits}")
        if f is not None:
            rows.append((label, wa.format(b=b), json.loads(f.read_text())))
    return rows


def _block(title: str, docs: list, fp: bool = True) -> list[str]:
    """Markdown lines of one table: an FP row (if ``fp``), then one row per doc; best quantized PSNR in bold."""
    sets = [r["dataset"] for r in docs[0][2]["fp_results"]]
    best = {s: max(next((r["psnr"] for r in d["results"] if r["dataset"] == s), float("-inf"))
                   for _, _, d in docs) for s in sets}
    lines = [f"## {title}", "",
             "| method | W / A | time s | " + " | ".join(sets) + " | avg W/A bits | size KB | BitOPs G | rev |",
             "|---|---|---|" + "---|" * len(sets) + "---|---|---|---|"]
    if fp:
        ref = {r["dataset"]: r for r in docs[0][2]["fp_results"]}
        fp_cost = docs[0][2]["cost"]
        lines.append("| FP | 32 / 32 | — | " + " | ".join(f"{ref[s]['psnr']:.2f} / {ref[s]['ssim']:.4f}" for s in sets)
                     + f" | 32/32 | {fp_cost['fp32_size_kb']:.1f} | {fp_cost['fp32_bitops'] / 1e9:.0f} | |")
    for label, wa, d in docs:
        scores = {r["dataset"]: r for r in d["results"]}
        cells = []
        for s in sets:
            if s not in scores:
                cells.append("—")
                continue
            cell = f"{scores[s]['psnr']:.2f} / {scores[s]['ssim']:.4f}"
            cells.append(f"**{cell}**" if scores[s]["psnr"] == best[s] else cell)
        lines.append(f"| {label} | {wa} | {d['quantize_seconds']:.0f} | " + " | ".join(cells) +
                     f" | {average_bits(d)} | {d['cost']['size_kb']:.1f} | {d['cost']['bitops'] / 1e9:.1f} | "
                     f"{d['provenance']['git_revision'][:7]} |")
    return lines + [""]


def baseline_files(out_dir: Path = OUT) -> list[Path]:
    """The fine-tuned PTQ baselines (``<out_dir>/../ptq``) for every model/scale/bits that GBA was run on."""
    return matching_rows(out_dir, ("ptq",), "*_ft_*.json")


if __name__ == "__main__":
    run_script(main)
