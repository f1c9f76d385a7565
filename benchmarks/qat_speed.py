"""QAT step time and peak memory: float32 eager against the speed options, same run, same machine.

Usage (from the repository root; weights from $SRQ_WEIGHTS):
    python benchmarks/qat_speed.py                     # IMDN x4 (batch 16, HR 192), MambaIRv2-light x2 (8, 64)
    python benchmarks/qat_speed.py --cases imdn:4:16:192 --variants fp32,bf16 --steps 5
    python benchmarks/qat_speed.py --cases imdn:4:16:192:quantsr_plus --variants bf16,bf16-fused
A case is ``model:scale:batch:hr_patch[:method]`` (method: LSQ unless named; its W4A4 quantizers, no training loop
of its own: QuantSR+'s slimming and distillation are not in the step).
Each (case, variant) runs in its own process (so peak RSS is that variant's): a W4A4 model calibrated on
4 DIV2K LR patches, ``--warmup`` untimed training steps (Adam, L1 to a random HR batch), then ``--steps`` timed
ones; the median step time, the process's peak RSS and the loss of every step are recorded. A variant is a
precision, ``fp32`` (float32 eager) or ``bf16`` (bfloat16 autocast of the forward passes, as
``train.precision=bf16``), with options ``-cl`` (channels-last) and ``-fused`` (the per-tensor LSQ/LSQ+/PAMS
activation quantizers in one autograd node, ``srq.quant.functional.fake_quant_step``, and QuantSR's RLQ / QuantSR+'s
RBD ones in another, ``srq.quant.grids.soft_step``: srq's default; without it the composed expressions) and
``-reuse`` (freed heap blocks kept for the next step, :func:`srq.utils.memory.reuse_freed_memory`, as srq's training
loops do). ``fp32`` is the baseline ("before"); srq's training runs as ``bf16-fused-reuse`` with
``train.precision=bf16`` (``bf16-cl-fused-reuse`` with ``train.memory_format=channels_last``).
Interleaved runs (``--rounds``) spread the machine's noise over variants.
Writes benchmarks/results/qat/speed.json (the cases measured replace their earlier rows; other cases are kept), or
the file ``--out`` names (e.g. ``--out speed-avx2.json`` for a machine of another kind).
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

OUT = Path(__file__).resolve().parent / "results" / "qat"
VARIANTS = ("fp32", "fp32-fused", "bf16", "bf16-fused", "bf16-cl-fused", "bf16-cl-fused-reuse")


def one(case: str, variant: str, warmup: int, steps: int) -> dict:
    """Time ``steps`` QAT steps of ``case`` (model:scale:batch:hr_patch[:method]) under ``variant`` in this
    process."""
    import srq
    import srq.quant.grids.base as grids
    from srq.data import calibration_set
    from srq.methods import get_method
    from srq.utils.memory import reuse_freed_memory

    options = variant.split("-")
    grids.FUSED = "fused" in options
    if "reuse" in options:
        reuse_freed_memory()
    model, scale, batch, hr, *method = case.split(":")
    scale, batch, hr = int(scale), int(batch), int(hr)
    torch.manual_seed(0)
    fp = srq.create_model(model, scale, "official")
    calib = calibration_set("DIV2K_test_LRx4", patch=hr // scale, n=4)
    q = get_method(method[0] if method else "lsq").create(w_bits=4, a_bits=4).prepare(fp, calib[:1])
    srq.quant.calibrate(q, [calib], progress=False)
    fmt = torch.channels_last if "cl" in options else torch.contiguous_format
    q = q.to(memory_format=fmt)  # type: ignore[call-overload]
    opt = torch.optim.Adam(q.parameters(), 1e-5)
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(batch, 3, hr // scale, hr // scale, generator=gen).contiguous(memory_format=fmt)
    y = torch.rand(batch, 3, hr, hr, generator=gen)
    times, losses = [], []
    for i in range(warmup + steps):
        t0 = time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=options[0] == "bf16"):
            out = q(x).float()
        loss = torch.nn.functional.l1_loss(out, y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(loss.item())
        if i >= warmup:
            times.append(time.perf_counter() - t0)
    return {"case": case, "variant": variant, "step_ms": [1000 * t for t in times],
            "median_ms": 1000 * statistics.median(times), "first_loss": losses[0], "losses": losses,
            "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "threads": torch.get_num_threads()}


def main() -> None:
    from srq.engine.results import atomic_write_text, provenance

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--cases", default="imdn:4:16:192,mambairv2_light:2:8:64")
    p.add_argument("--variants", default=",".join(VARIANTS))
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--steps", type=int, default=4)
    p.add_argument("--rounds", type=int, default=1, help="interleaved repetitions of every variant")
    p.add_argument("--out", default="speed.json", help="result file name under benchmarks/results/qat/")
    p.add_argument("--one", nargs=2, metavar=("CASE", "VARIANT"), help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.one:
        print(json.dumps(one(*args.one, args.warmup, args.steps)))
        return
    rows = []
    variants = args.variants.split(",")
    for case in args.cases.split(","):
        for _ in range(args.rounds):
            for variant in variants:
                done = subprocess.run([sys.executable, __file__, "--one", case, variant, "--warmup",
                                       str(args.warmup), "--steps", str(args.steps)],
                                      capture_output=True, text=True)
                if done.returncode != 0:
                    sys.stderr.write(done.stderr[-4000:])
                    raise SystemExit(f"{case} {variant} failed (its error output is above)")
                rows.append(json.loads(done.stdout.strip().splitlines()[-1]))
                print(f"{case} {variant}: {rows[-1]['median_ms']:.0f} ms/step, peak {rows[-1]['peak_rss_mib']:.0f} "
                      f"MiB, losses {' '.join(f'{v:.5f}' for v in rows[-1]['losses'])}", flush=True)
    summary = {}
    baseline = "fp32" if "fp32" in variants else variants[0]  # speed-ups are against this variant
    for case in args.cases.split(","):
        base = statistics.median(r["median_ms"] for r in rows if r["case"] == case and r["variant"] == baseline)
        summary[case] = {v: {"median_ms": statistics.median(r["median_ms"] for r in rows
                                                            if r["case"] == case and r["variant"] == v),
                             "peak_rss_mib": max(r["peak_rss_mib"] for r in rows
                                                 if r["case"] == case and r["variant"] == v)}
                         for v in variants}
        for v in summary[case].values():
            v[f"speedup_vs_{baseline}"] = base / v["median_ms"]
    OUT.mkdir(parents=True, exist_ok=True)
    doc = merged(OUT / args.out, summary, rows, provenance())
    atomic_write_text(OUT / args.out, json.dumps(doc, indent=2) + "\n")
    print(json.dumps(summary, indent=2))


def merged(path: Path, summary: dict, rows: list[dict], made: dict) -> dict:
    """The speed file with this run's cases replaced and the other cases kept, each with the provenance of the
    run that measured it (``provenance_by_case``)."""
    old = json.loads(path.read_text()) if path.is_file() else {}
    by_case = old.get("provenance_by_case") or {case: old["provenance"] for case in old.get("summary", {})}
    return {"summary": {**old.get("summary", {}), **summary},
            "rows": [r for r in old.get("rows", []) if r["case"] not in summary] + rows,
            "provenance_by_case": {**by_case, **{case: made for case in summary}}}


if __name__ == "__main__":
    if "--one" in sys.argv:
        main()
    else:
        from srq.engine.results import run_script

        run_script(main)
