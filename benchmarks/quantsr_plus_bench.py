"""QuantSR+ and its ablation (QuantSR → +RBD → +QSA → +SFD) next to QuantSR, with the complexity of every row.

Usage (from the repository root; data and weights from $SRQ_DATA / $SRQ_WEIGHTS):
    python benchmarks/quantsr_plus_bench.py --model imdn --scale 4 --bits w2a2 --ablation \\
        -p train.iterations=20000 -p train.batch=8 -p train.hr_patch=96 --save-dir runs/quantsr_plus
    python benchmarks/quantsr_plus_bench.py --model swinir_light --bits w2a2 --methods quantsr,quantsr_plus ...
The same ``-p`` applies to every row (one training budget). ``--ablation`` runs the rows

* ``quantsr``: QuantSR's quantizers (RLQ activations, tanh-rounded LSQ weights), the network unchanged;
* ``quantsr_plus`` with ``rbd=false qsa_budget=0 sfd=false``: QuantSR with its learnable shortcut scales;
* ``+RBD`` (``qsa_budget=0 sfd=false``), ``+QSA`` (``sfd=false``), ``+SFD`` (``quantsr_plus``, every part on)

instead of ``--methods``. Everything else is ``benchmarks/qat_bench.py``'s: calibration on 100 DIV2K_test_LRx4
patches, training on T91 + BSD200, ``--save-dir`` and ``--resume`` for checkpointed runs.

Each run writes benchmarks/results/quantsr_plus/<model>_x<scale>_<tag>_<bits>.json and its training log, then
rebuilds summary.md (every row, with size and BitOPs: QSA rows are cheaper) and complexity.md.
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

from ptq_bench import add_device_option, add_fp_scores_option, add_param_option, fp_reference, run, summary, with_params
from qat_bench import split_training_log
from qmambair_bench import complexity_table

OUT = Path(__file__).resolve().parent / "results" / "quantsr_plus"
NOTE = ("Made by `python benchmarks/quantsr_plus_bench.py` (the exact command, git revision and machine are in each "
        "JSON file). QAT on T91 + BSD200 HR crops, L1 to HR; each row's budget is in its JSON file (`recipe.train`); "
        "QSA rows removed the blocks listed in `report.qsa.removed` (their size and BitOPs are the slimmed "
        "network's). First/last layer 8 bit for every row.")

ABLATION: list[tuple[str, list[str]]] = [
    ("quantsr", []),
    ("quantsr_plus", ["rbd=false", "qsa_budget=0", "sfd=false"]),  # QuantSR + shortcut scales
    ("quantsr_plus", ["qsa_budget=0", "sfd=false"]),  # +RBD
    ("quantsr_plus", ["sfd=false"]),  # +QSA
    ("quantsr_plus", []),  # +SFD: QuantSR+
]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="imdn")
    p.add_argument("--scale", type=int, default=4)
    p.add_argument("--bits", default="w2a2")
    p.add_argument("--methods", default="quantsr,quantsr_plus")
    p.add_argument("--ablation", action="store_true", help="run the ablation rows instead of --methods")
    p.add_argument("--datasets", default="Set5,Set14,B100,Urban100")
    p.add_argument("--split", type=int, default=None, help="evaluate LR images in parts of about N px")
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
    rows = ABLATION if args.ablation else [(m, []) for m in args.methods.split(",")]
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
            summary(OUT, "QuantSR+ and its ablation", NOTE)
            complexity_table(OUT)


if __name__ == "__main__":
    run_script(main)
