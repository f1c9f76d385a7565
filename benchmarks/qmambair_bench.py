"""Q-MambaIR next to QuantSR and LSQ (and its ablations: the paper's Tables 5, 6, 7a, 7b), with Table 4's complexity.

Usage (from the repository root; data and weights from $SRQ_DATA / $SRQ_WEIGHTS):
    python benchmarks/qmambair_bench.py --model mambairv2_light --scale 4 --bits w4a4,w2a2 \\
        --methods qmambair,quantsr,lsq --split 200 --fp-scores saved \\
        -p train.iterations=20000 -p train.batch=8 -p train.hr_patch=64 -p train.lr=2e-4 -p train.quant_lr=2e-4 \\
        --save-dir runs/qmambair
    python benchmarks/qmambair_bench.py --model mambairv2_light --scale 2 --bits w4a4 --ablation table7a ...
The same ``-p`` applies to every row, so all methods share one training budget (LSQ's and QuantSR's own defaults
differ from Q-MambaIR's paper settings). ``--ablation`` runs the named table's rows instead of ``--methods``:
``table5`` (QuantSR baseline; DLS alone = tanh weights; RFA alone = RLQ activations; both), ``table6`` (the four
DLS initialisations), ``table7a`` (activations RLQ / LSQ+ / PAMS / DLS with RFA weights), ``table7b`` (weights STE /
tanh / NU2U / RFA with DLS activations). Everything else is ``benchmarks/qat_bench.py``'s: calibration on 100
DIV2K_test_LRx4 patches, training on T91 + BSD200 (``-p 'train_data=[...]'`` for DIV2K), ``--save-dir`` and
``--resume`` for checkpointed runs.

Each run writes benchmarks/results/qmambair/<model>_x<scale>_<tag>_<bits>.json and its training log (CSV/SVG),
then rebuilds summary.md (every row) and complexity.md (Table 4: 32-bit-equivalent parameters and operations
with their reductions, srq's count and the BOPs ÷ 64 count).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from srq.data import calibration_set
from srq.engine.results import atomic_write_text, run_script
from srq.methods import METHODS
from srq.quant import parse_bits
from srq.quant.complexity import complexity_from_dict, format_complexity

from ptq_bench import (RESULT_NAME, add_device_option, add_fp_scores_option, add_param_option, fp_reference, run,
                       summary, with_params)
from qat_bench import split_training_log

OUT = Path(__file__).resolve().parent / "results" / "qmambair"
NOTE = ("Made by `python benchmarks/qmambair_bench.py` (the exact command, git revision and machine are in each "
        "JSON file). QAT on T91 + BSD200 HR crops unless the recipe says otherwise, L1 to HR; each row's budget is "
        "in its JSON file (`recipe.train`). Q-MambaIR: DLS activations in the SSM/attention blocks, LSQ+ elsewhere, "
        "RFA weights; first/last layer 8 bit for every row.")

ABLATIONS: dict[str, list[tuple[str, list[str]]]] = {
    "table5": [("quantsr", []), ("qmambair", ["weights=tanh"]), ("qmambair", ["activations=rlq"]), ("qmambair", [])],
    "table6": [("qmambair", [f"dls_init={i}"]) for i in ("3sigma", "4sigma", "minmax", "mean_range")],
    "table7a": [("qmambair", [f"activations={a}"]) for a in ("rlq", "lsqplus", "pams", "dls")],
    "table7b": [("qmambair", [f"weights={w}"]) for w in ("ste", "tanh", "nu2u", "rfa")],
}


def complexity_table(out_dir: Path = OUT) -> None:
    """Rebuild ``out_dir/complexity.md``: one Table 4 row per result file (and its model's FP32 row)."""
    rows = ["# Model complexity (Q-MambaIR Table 4 form)", "",
            "32-bit-equivalent parameters (stored bits ÷ 32) and operations (srq: BitOPs ÷ 32²; bops64: "
            "MACs × w·a ÷ 64 for layers with both sides quantized, MACs otherwise) for one LR image of the cost's "
            "input size; only "
            "Conv2d/Linear MACs are counted (not attention matmuls or scans). Made by `benchmarks/qmambair_bench.py`.",
            ""]
    for convention in ("srq", "bops64"):
        entries, seen = [], set()
        for f in sorted(out_dir.glob("*_x*_*.json")):
            d = json.loads(f.read_text())
            row = complexity_from_dict(d["cost"], f.stem, convention)
            m = RESULT_NAME.match(f.stem)
            model = m["model"] if m else f.stem
            if model not in seen:
                seen.add(model)
                entries.append(type(row)(f"{model} FP32", row.input_size, row.fp32_params, row.fp32_params,
                                         row.fp32_ops, row.fp32_ops))
            entries.append(row)
        rows += [f"## operations: {convention}", "", format_complexity(entries)]
    atomic_write_text(out_dir / "complexity.md", "\n".join(rows))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="mambairv2_light")
    p.add_argument("--scale", type=int, default=4)
    p.add_argument("--bits", default="w4a4")
    p.add_argument("--methods", default="qmambair,quantsr,lsq")
    p.add_argument("--ablation", choices=sorted(ABLATIONS), default=None, help="run a table's rows instead")
    p.add_argument("--datasets", default="Set5,Set14,B100,Urban100")
    p.add_argument("--split", type=int, default=None, help="evaluate LR images in parts of about N px (MambaIR: 200)")
    p.add_argument("--calib-n", type=int, default=100)
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    p.add_argument("--save-dir", type=Path, default=None, help="write each run folder there (with checkpoints)")
    p.add_argument("--resume", action="store_true", help="continue interrupted runs in --save-dir")
    p.add_argument("--checkpoint-every", type=int, default=50, metavar="STEPS")
    add_fp_scores_option(p)
    add_device_option(p)
    add_param_option(p)
    args = p.parse_args()
    if args.resume and args.save_dir is None:
        p.error("--resume needs --save-dir (the folder with the interrupted runs)")
    if args.threads:
        torch.set_num_threads(args.threads)
    rows = ABLATIONS[args.ablation] if args.ablation else [(m, []) for m in args.methods.split(",")]
    datasets = args.datasets.split(",")
    calib = calibration_set("DIV2K_test_LRx4", patch=96, n=args.calib_n)
    fp_scores, fp_source = fp_reference(args, datasets)
    OUT.mkdir(parents=True, exist_ok=True)
    for bits in args.bits.split(","):
        w, a = parse_bits(bits)
        for method, variant in rows:
            recipe, tag = with_params(METHODS[method](w_bits=w, a_bits=a), [*variant, *args.param], method)
            if args.split:
                tag += f"_split{args.split}"
            doc, _ = run(args.model, args.scale, method, bits, datasets, calib, fp_scores, out_dir=OUT, recipe=recipe,
                         tag=tag, fp_source=fp_source, device=args.device, save_dir=args.save_dir,
                         resume=args.resume, checkpoint_every=args.checkpoint_every, split=args.split)
            stem = f"{args.model}_x{args.scale}_{tag}_{bits.lower()}"
            split_training_log(doc, stem, OUT)
            atomic_write_text(OUT / f"{stem}.json", json.dumps(doc, indent=2) + "\n")
            summary(OUT, "Q-MambaIR, QuantSR and LSQ", NOTE)
            complexity_table(OUT)


if __name__ == "__main__":
    run_script(main)
