"""kill -9 in the middle of a long stage, ``--resume``, and the same model file as an uninterrupted run.

Usage (from the repository root; weights and calibration images from $SRQ_WEIGHTS / $SRQ_DATA):
    python benchmarks/resume_check.py --model imdn --scale 4 --calib-n 40 --patch 48
For each method (percentile_ft: killed during bound fine-tuning; gba: killed during the activation bit
allocation; lsq: killed during quantization-aware training, 40 steps on T91 crops with validation every 10, with
--methods lsq) three ``srq quantize`` runs with the same settings and thread count: one uninterrupted; one killed
with SIGKILL once its stage checkpoint has passed ``--kill-after`` steps; then the same command with
``--resume``. The SHA-256 of the uninterrupted and the resumed ``model.safetensors`` must be equal. Writes
benchmarks/results/resume/resume-<model>-x<scale>[-<methods>].json (the suffix when --methods is not the default).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from safetensors import safe_open

from srq.engine.results import atomic_write_text, provenance, run_script
from srq.errors import SrqError
from srq.fileio import file_sha256

OUT = Path(__file__).resolve().parent / "results" / "resume"
STAGE = {"percentile_ft": ("fine-tuning", 0), "gba": ("bit allocation (a)", 0),  # description, stage number
         "lsq": ("lsq QAT", 0)}
# a short QAT run on T91 crops that validates (and so keeps a best state) on either side of the kill
QAT_ARGS = ["--train-data", "train/T91", "-p", "train.iterations=40", "-p", "train.batch=4", "-p",
            "train.hr_patch=96", "-p", "train.validate_every=10", "-p", "train.val_images=2"]
EXTRA_ARGS = {"lsq": QAT_ARGS}
DEFAULT_METHODS = "percentile_ft,gba"


def _srq() -> list[str]:
    return [sys.executable, "-m", "srq.cli"]


def _stage_step(work: Path, index: int) -> tuple[str, int] | None:
    """(description, steps done) of a stage checkpoint, or None while there is none."""
    path = work / f"stage-{index:03d}.safetensors"
    try:
        with safe_open(str(path), "pt") as f:
            meta = json.loads(f.metadata()["srq"])
        return meta["description"], meta["step"]
    except Exception:  # not written yet, or being replaced right now
        return None


def _quantize(args: list[str]) -> float:
    t0 = time.perf_counter()
    proc = subprocess.run(_srq() + args, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SrqError(f"srq {' '.join(args)} failed: {proc.stderr.strip().splitlines()[-1:]}")
    return time.perf_counter() - t0


def check(method: str, common: list[str], root: Path, kill_after: int) -> dict:
    description, index = STAGE[method]
    ref, run = root / f"{method}_uninterrupted", root / f"{method}_resumed"
    common = [*common, *EXTRA_ARGS.get(method, [])]
    seconds_ref = _quantize(["quantize", *common, "--method", method, "-o", str(ref)])
    t0 = time.perf_counter()
    proc = subprocess.Popen(_srq() + ["quantize", *common, "--method", method, "-o", str(run)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    killed_at = None
    while proc.poll() is None:
        state = _stage_step(run / ".srq-work", index)
        if state is not None and state[0] == description and state[1] >= kill_after:
            os.kill(proc.pid, signal.SIGKILL)
            killed_at = state
            break
        time.sleep(0.05)
    proc.wait()
    if killed_at is None:
        raise SrqError(f"{method}: the run ended before step {kill_after} of '{description}'; lower --kill-after")
    seconds_killed = time.perf_counter() - t0
    seconds_resumed = _quantize(["quantize", *common, "--method", method, "-o", str(run), "--resume"])
    sha_ref, sha_run = file_sha256(ref / "model.safetensors"), file_sha256(run / "model.safetensors")
    print(f"{method}: killed at '{killed_at[0]}' checkpoint step {killed_at[1]}; uninterrupted {sha_ref[:16]}…, "
          f"resumed {sha_run[:16]}… → {'identical' if sha_ref == sha_run else 'DIFFERENT'}")
    return {"method": method, "killed_in_stage": killed_at[0], "killed_after_checkpoint_step": killed_at[1],
            "sha256_uninterrupted": sha_ref, "sha256_resumed": sha_run, "identical": sha_ref == sha_run,
            "left_after_resume": sorted(p.name for p in run.iterdir()),
            "seconds": {"uninterrupted": seconds_ref, "until_kill": seconds_killed, "resumed": seconds_resumed}}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="imdn")
    p.add_argument("--scale", type=int, default=4)
    p.add_argument("--bits", default="w4a4")
    p.add_argument("--calib-n", type=int, default=40)
    p.add_argument("--patch", type=int, default=48)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--checkpoint-every", type=int, default=5)
    p.add_argument("--kill-after", type=int, default=12, help="kill once the stage checkpoint has this many steps")
    p.add_argument("--methods", default=DEFAULT_METHODS)
    p.add_argument("--device", default="auto", help="passed to `srq quantize --device`")
    args = p.parse_args()
    common = [args.model, "--scale", str(args.scale), "--bits", args.bits, "--calib-n", str(args.calib_n),
              "--patch", str(args.patch), "--threads", str(args.threads), "--checkpoint-every",
              str(args.checkpoint_every), "--device", args.device]
    root = Path(tempfile.mkdtemp(prefix="srq-resume-"))
    try:
        rows = [check(m, common, root, args.kill_after) for m in args.methods.split(",")]
    finally:
        shutil.rmtree(root, ignore_errors=True)
    doc = {"settings": vars(args), "runs": rows, "provenance": provenance()}
    OUT.mkdir(parents=True, exist_ok=True)
    suffix = "" if args.methods == DEFAULT_METHODS else "-" + args.methods.replace(",", "-")
    atomic_write_text(OUT / f"resume-{args.model}-x{args.scale}{suffix}.json", json.dumps(doc, indent=2) + "\n")
    if not all(r["identical"] for r in rows):
        sys.exit(1)


if __name__ == "__main__":
    run_script(main)
