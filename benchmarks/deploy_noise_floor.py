"""How far float rounding alone moves a quantized model's PSNR: the yardstick for an export's gap to srq.

A deployed model computes the same integer levels as srq's fake-quant model up to float rounding (summation
order, a runtime's sigmoid, the int32 bias grid), and a one-level flip in a layer with few levels moves the next
layers. This script measures that sensitivity in PyTorch alone, per image:

* ``noise``: every activation quantizer's input multiplied by ``1 + ε·N(0, 1)``, ``ε = --ulps · 2⁻²³``, one run
  per seed (``--seeds``); the spread of these runs is the model's noise floor;
* ``ready_<bias>``: :func:`srq.export.onnx_qdq.export_ready`, the torch module that computes what the ONNX graph
  computes (int32 bias on the grid ``s_in·s_w``, or srq's float bias).

An export whose gap to srq lies within the noise floor is as close as float arithmetic allows; one well outside
it has a real difference. Usage (repository root; data from $SRQ_DATA):
    python benchmarks/deploy_noise_floor.py --run runs/pan_x4_gba_w4a4 --datasets Set5 --seeds 3 --ulps 2,16,64
One JSON in benchmarks/results/deploy/ named ``noise-floor-<model>_x<scale>_<method>_w<W>a<A>-<hash>-<ulps>ulp.json``.
Any perturbation δ of the output adds |δ|² to the error on average, so larger noise lowers PSNR on average:
compare an export's gap with the noise level that moves the model as much (``--ulps 2,16,64``).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

import srq
from srq.engine.evaluate import evaluate
from srq.engine.results import atomic_write_text, provenance, run_script
from srq.export.onnx_qdq import BIAS_FORMS, export_ready
from srq.quant import quantizers
from srq.run_folder import read_meta

from deploy_bench import OUT, _name


def _per_image(net: torch.nn.Module, sets: list[str], scale: int) -> dict[str, dict[str, float]]:
    """``{set: {image: PSNR}}`` by srq's protocol."""
    return {s.dataset: {i.name: i.psnr for i in s.images} for s in evaluate(net, sets, scale, progress=False)}


def _means(scores: dict) -> dict[str, float]:
    return {name: round(sum(images.values()) / len(images), 4) for name, images in scores.items()}


def _deltas(scores: dict, ref: dict) -> dict:
    """Per set: the mean PSNR change and the largest single-image change (dB) against ``ref``."""
    out = {}
    for name, images in scores.items():
        d = [images[k] - ref[name][k] for k in images]
        out[name] = {"mean": round(sum(d) / len(d), 4), "max_abs_image": round(max(abs(v) for v in d), 4)}
    return out


def add_input_noise(model: torch.nn.Module, ulps: float, generator: torch.Generator) -> None:
    """Multiply every activation quantizer's input by ``1 + ulps·2⁻²³·N(0, 1)`` (forward pre-hooks)."""
    eps = ulps * 2.0**-23

    def perturb(module: torch.nn.Module, args: tuple) -> tuple:
        x = args[0]
        return (x * (1 + eps * torch.randn(x.shape, generator=generator, dtype=x.dtype)), *args[1:])

    for name, q in quantizers(model):
        if not name.endswith("weight_quantizer"):
            q.register_forward_pre_hook(perturb)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--run", required=True, help="a quantized run folder")
    p.add_argument("--datasets", default="Set5")
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--ulps", default="2", help="relative noise at quantizer inputs, in float32 ulps (comma-separated: "
                                               "one file per level)")
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    run, sets = Path(args.run), args.datasets.split(",")
    meta = read_meta(run)
    scale = meta["architecture"]["scale"]
    ref = _per_image(srq.load(run), sets, scale)
    print(f"{run}: srq {_means(ref)}", flush=True)
    ready = {}
    for bias in BIAS_FORMS:
        ready[bias] = _deltas(_per_image(export_ready(srq.load(run), bias=bias), sets, scale), ref)
        print(f"  export_ready bias {bias}: {ready[bias]}", flush=True)
    for ulps in (float(u) for u in args.ulps.split(",")):
        doc: dict = {"run": str(run), "recipe": meta["recipe"], "datasets": sets, "ulps": ulps, "srq": _means(ref),
                     "noise": [], "ready": ready}
        model = srq.load(run)
        generator = torch.Generator()
        add_input_noise(model, ulps, generator)
        for seed in range(args.seeds):
            generator.manual_seed(seed)
            doc["noise"].append({"seed": seed, **_deltas(_per_image(model, sets, scale), ref)})
            print(f"  {ulps:g} ulp noise, seed {seed}: {doc['noise'][-1]}", flush=True)
        doc["provenance"] = provenance()
        atomic_write_text(OUT / f"noise-floor-{_name(meta)}-{ulps:g}ulp.json", json.dumps(doc, indent=2) + "\n")


if __name__ == "__main__":
    run_script(main)
