"""QAT baselines (LSQ, LSQ+, PAMS, DoReFa) on real checkpoints, next to the PTQ rows of the same model and bits.

Usage (from the repository root; data and weights from $SRQ_DATA / $SRQ_WEIGHTS):
    python benchmarks/qat_bench.py --model imdn --scale 4 --bits w4a4,w2a2 --methods lsq,lsq_plus,pams \\
        -p train.iterations=1000 -p train.batch=8 -p train.hr_patch=128 --save-dir runs/qat
Training data: T91 + BSD200 under the data root (``-p 'train_data=["/path/to/DIV2K_train_HR"]'`` for others);
quantizers initialised on 100 DIV2K_test_LRx4 patches (96 px). Recipe hyper-parameters as in `srq quantize`:
-p key=value (``train.*`` for the loop: iterations, batch, hr_patch, lr, quant_lr, schedule, lambda_gt,
lambda_out, lambda_feat, validate_every, ...); each -p is named in the result file's tag, and so is a --rules file
of per-layer overrides (e.g. benchmarks/configs/rlfn_esa_8bit.json). With --save-dir each run
checkpoints its training in its run folder (--checkpoint-every steps and every minute); after a kill, the same
command with --resume continues it to the same weights as an uninterrupted run.

Each run writes benchmarks/results/qat/<model>_x<scale>_<method>[_tag]_<bits>.json (PSNR/SSIM, cost, training
summary: steps, wall time, best validation step; provenance), the training log beside it as
<stem>.training.csv and .svg (loss, learning rate, validation PSNR and step time per step), and rebuilds
benchmarks/results/qat/summary.md with the PTQ, GBA and SPR²Q rows of the same model, scale and bits.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Callable

import torch

from srq.data import calibration_set
from srq.engine.results import atomic_write_text, run_script
from srq.methods import METHODS
from srq.quant import LayerRule, parse_bits
from srq.report import training_csv, training_svg

from ptq_bench import (add_device_option, add_fp_scores_option, add_param_option, fp_reference, matching_rows, run,
                       summary, with_params)

OUT = Path(__file__).resolve().parent / "results" / "qat"
NOTE = ("Made by `python benchmarks/qat_bench.py` (the exact command, git revision and machine are in each JSON "
        "file). Quantization-aware training of weights and quantizer parameters on T91 + BSD200 HR crops (LR by "
        "MATLAB bicubic), L1 to HR unless the tag says otherwise; the CPU budget (iterations × batch × HR patch, "
        "wall time) of each row is in its JSON file (`recipe.train`, `quantize_seconds`). First/last layer 8 bit, "
        "as the PTQ rows listed with them.")


def split_training_log(doc: dict, stem: str, out_dir: Path) -> None:
    """Move the per-step training log out of the result file into ``<stem>.training.csv`` / ``.svg`` beside it."""
    training = (doc.get("report") or {}).get("training")
    if not training or "log" not in training:
        return
    log = training.pop("log")
    atomic_write_text(out_dir / f"{stem}.training.csv", training_csv(log))
    atomic_write_text(out_dir / f"{stem}.training.svg", training_svg(log, f"{stem.replace('_', ' ')}: training"))
    training["log_file"] = f"{stem}.training.csv"
    tail = log[-max(1, len(log) // 20):]
    training["final_loss_mean_last_5pct"] = sum(r["loss"] for r in tail) / len(tail)


def other_rows(out_dir: Path = OUT) -> list[Path]:
    """PTQ, GBA and SPR²Q result files of every (model, scale, bits) that a QAT row exists for."""
    return matching_rows(out_dir, ("ptq", "gba", "spr2q"))


Rows = list[tuple[str, list[str]]]  # (method, its own -p settings) per result row


def qat_parser(description: str, *, model: str, bits: str, methods: str) -> argparse.ArgumentParser:
    """The options every QAT benchmark takes (model, bits, methods, sets, budget via -p, checkpoints, resume)."""
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--model", default=model)
    p.add_argument("--scale", type=int, default=4)
    p.add_argument("--bits", default=bits)
    p.add_argument("--methods", default=methods)
    p.add_argument("--datasets", default="Set5,Set14,B100,Urban100")
    p.add_argument("--split", type=int, default=None, help="evaluate LR images in parts of about N px (MambaIR: 200)")
    p.add_argument("--calib-n", type=int, default=100)
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    p.add_argument("--save-dir", type=Path, default=None, help="write each run folder there (with checkpoints)")
    p.add_argument("--resume", action="store_true", help="continue interrupted runs in --save-dir")
    p.add_argument("--checkpoint-every", type=int, default=50, metavar="STEPS")
    p.add_argument("--rules", type=Path, default=None, metavar="JSON",
                   help="per-layer overrides, a list of {pattern, w_bits, a_bits, fp} as `srq quantize --config` "
                        "reads (benchmarks/configs/); the tag gets _rules-<file stem>")
    add_fp_scores_option(p)
    add_device_option(p)
    add_param_option(p)
    return p


def run_qat_rows(p: argparse.ArgumentParser, args: argparse.Namespace, rows: Rows, out_dir: Path, title: str,
                 note: str, *, also: Callable[[], list[Path]] | None = None,
                 after: Callable[[Path], None] | None = None) -> None:
    """Train, evaluate and write each of ``rows`` at each of ``args.bits`` into ``out_dir`` (result JSON, training
    CSV/SVG), rebuilding its ``summary.md`` (with the files ``also()`` lists) and calling ``after(out_dir)``."""
    if args.resume and args.save_dir is None:
        p.error("--resume needs --save-dir (the folder with the interrupted runs)")
    if args.threads:
        torch.set_num_threads(args.threads)
    datasets = args.datasets.split(",")
    rules = tuple(LayerRule(**r) for r in json.loads(args.rules.read_text())) if args.rules else ()
    calib = calibration_set("DIV2K_test_LRx4", patch=96, n=args.calib_n)
    fp_scores, fp_source = fp_reference(args, datasets)
    out_dir.mkdir(parents=True, exist_ok=True)
    for bits in args.bits.split(","):
        w, a = parse_bits(bits)
        for method, variant in rows:
            recipe, tag = with_params(METHODS[method](w_bits=w, a_bits=a, rules=rules), [*variant, *args.param],
                                      method)
            if args.rules:
                tag += f"_rules-{args.rules.stem}"
            if args.split:
                tag += f"_split{args.split}"
            doc, _ = run(args.model, args.scale, method, bits, datasets, calib, fp_scores, out_dir=out_dir,
                         recipe=recipe, tag=tag, fp_source=fp_source, device=args.device, save_dir=args.save_dir,
                         resume=args.resume, checkpoint_every=args.checkpoint_every, split=args.split)
            stem = f"{args.model}_x{args.scale}_{doc['method']}_{bits.lower()}"
            split_training_log(doc, stem, out_dir)
            atomic_write_text(out_dir / f"{stem}.json", json.dumps(doc, indent=2) + "\n")
            summary(out_dir, title, note, also=also() if also else ())
            if after is not None:
                after(out_dir)


def main() -> None:
    p = qat_parser(__doc__.splitlines()[0], model="imdn", bits="w4a4", methods="lsq")
    args = p.parse_args()
    run_qat_rows(p, args, [(m, []) for m in args.methods.split(",")], OUT, "QAT baselines", NOTE, also=other_rows)


if __name__ == "__main__":
    run_script(main)
