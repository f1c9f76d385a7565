"""The deployed artefact measured like srq's own model: PSNR of the exported integer ONNX on ONNX Runtime and
OpenVINO next to srq's evaluation of the run folder, packed-file sizes next to cost accounting, and latency.

Usage (from the repository root; data from $SRQ_DATA; needs ``pip install -e ".[deploy]"``):
    python benchmarks/deploy_bench.py --runs runs/imdn_x4_pft_w8a8,runs/imdn_x4_pft_w4a4 --datasets Set5 \\
        --bench-size 180x320 --threads 1
For every run folder: export to QDQ ONNX (``--bias``: int32, and float, srq's own bias, unless ``--bias`` picks
one), evaluate srq (PyTorch fake-quant) and each export on each runtime with the same protocol, pack the weights
(``srq export --format packed``) and compare the file with srq's cost accounting and the FP32 size (``--asym``:
how 8-bit weights with zero points are written, see ``srq export --help``). With
``--bench-size``, :func:`srq.export.bench.bench` times the first run folder's variants interleaved
(``--threads``, ``--bench-runs``). One JSON per run folder in benchmarks/results/deploy/ named
``<model>_x<scale>_<method>_w<W>a<A>-<recipe hash>.json``, and the bench as ``bench-...json``.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import torch

import srq
from srq.run_folder import read_meta
from srq.engine.evaluate import evaluate
from srq.engine.results import atomic_write_text, provenance, run_script
from srq.export import export_onnx
from srq.export.bench import bench, format_bench
from srq.export.packed import save_packed
from srq.export.runtime import RuntimeModel
from srq.quant.cost import model_cost

OUT = Path(__file__).resolve().parent / "results" / "deploy"


def _name(meta: dict) -> str:
    spec, recipe = meta["architecture"], meta["recipe"] or {}
    return (f"{spec['model']}_x{spec['scale']}_{recipe.get('method', 'run')}_w{recipe.get('w_bits')}"
            f"a{recipe.get('a_bits')}-{(meta.get('recipe_hash') or 'nohash')[:10]}")


def _scores(net: torch.nn.Module, sets: list[str], scale: int) -> dict[str, float]:
    return {s.dataset: round(s.psnr, 4) for s in evaluate(net, sets, scale, progress=False)}


def packed_size(run: Path, model: torch.nn.Module | None = None) -> dict:
    """The packed file of ``run`` against srq's cost accounting and the FP32 size (bytes)."""
    model = srq.load(run) if model is None else model
    with tempfile.TemporaryDirectory(prefix="srq-deploy-") as tmp:
        packed = save_packed(model, run, Path(tmp) / "packed.safetensors").stat().st_size
    cost = model_cost(model)
    recipe = read_meta(run)["recipe"] or {}
    return {"run": str(run), "bits": f"w{recipe.get('w_bits')}a{recipe.get('a_bits')}", "packed_bytes": packed,
            "cost_bytes": cost.size_bytes, "packed_over_cost": packed / cost.size_bytes - 1,
            "fp32_bytes": cost.fp32_size_bits / 8, "run_folder_model_bytes": (run / "model.safetensors").stat().st_size}


def measure_run(run: Path, sets: list[str], runtimes: list[str], biases: list[str], threads: int,
                asym: str = "split") -> dict:
    """PSNR of srq and of each export on each runtime; packed size against cost accounting."""
    meta = read_meta(run)
    scale = meta["architecture"]["scale"]
    model = srq.load(run)
    doc: dict = {"run": str(run), "model": meta["architecture"]["model"], "scale": scale, "recipe": meta["recipe"],
                 "datasets": sets, "asym": asym, "psnr": {"srq_torch": _scores(model, sets, scale)}, "exports": {}}
    print(f"{run}: srq {doc['psnr']['srq_torch']}", flush=True)
    with tempfile.TemporaryDirectory(prefix="srq-deploy-") as tmp:
        for bias in biases:
            path = export_onnx(model, Path(tmp) / f"{bias}.onnx", bias=bias, asym=asym)
            doc["exports"][bias] = {"onnx_bytes": path.stat().st_size}
            for runtime in runtimes:  # "openvino_bf16": OpenVINO with the float operations in bfloat16
                name, _, precision = runtime.partition("_")
                scores = _scores(RuntimeModel(path, name, threads, precision or "fp32"), sets, scale)
                doc["psnr"][f"{runtime}_bias_{bias}"] = scores
                delta = {k: round(scores[k] - doc["psnr"]["srq_torch"][k], 4) for k in scores}
                doc["psnr"][f"{runtime}_bias_{bias}_minus_srq"] = delta
                print(f"  {runtime} (bias {bias}): {scores}  Δ vs srq {delta}", flush=True)
    doc["size"] = packed_size(run, model)
    print(f"  packed {doc['size']['packed_bytes']} B vs cost {doc['size']['cost_bytes']:.0f} B "
          f"({100 * doc['size']['packed_over_cost']:+.2f} %), FP32 {doc['size']['fp32_bytes']:.0f} B", flush=True)
    return doc


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--runs", default="", help="comma-separated run folders to evaluate (and pack)")
    p.add_argument("--packed-only", default="", help="comma-separated run folders whose packed size alone is "
                                                      "measured (e.g. a W2A2 MinMax run: sizes do not depend on "
                                                      "the method), into packed-sizes-<model>.json")
    p.add_argument("--datasets", default="Set5")
    p.add_argument("--runtimes", default="onnxruntime,openvino",
                   help="comma-separated: onnxruntime, openvino, openvino_bf16 (float operations in bfloat16)")
    p.add_argument("--bias", default="int32,float", help="bias forms to export: int32, float or both")
    p.add_argument("--asym", default="split", help="8-bit weights with zero points: split or zero_point")
    p.add_argument("--threads", default="1", help="threads: the first for evaluation, all for the bench")
    p.add_argument("--bench-size", default=None, help="LR HxW for the latency bench (e.g. 180x320); none: no bench")
    p.add_argument("--bench-runs", type=int, default=5)
    p.add_argument("--no-memory", action="store_true", help="skip the peak-memory processes of the bench")
    args = p.parse_args()
    threads = [int(t) for t in args.threads.split(",")]
    torch.set_num_threads(threads[0])
    runs = [Path(r) for r in args.runs.split(",") if r]
    if args.packed_only:
        sizes = [packed_size(Path(r)) for r in args.packed_only.split(",")]
        for s in sizes:
            print(f"{s['run']} ({s['bits']}): packed {s['packed_bytes']} B, cost {s['cost_bytes']:.0f} B "
                  f"({100 * s['packed_over_cost']:+.2f} %), FP32 {s['fp32_bytes']:.0f} B")
        model = read_meta(Path(sizes[0]["run"]))["architecture"]
        atomic_write_text(OUT / f"packed-sizes-{model['model']}_x{model['scale']}.json",
                          json.dumps({"sizes": sizes, "provenance": provenance()}, indent=2) + "\n")
    for run in runs:
        doc = measure_run(run, args.datasets.split(","), args.runtimes.split(","), args.bias.split(","), threads[0],
                          args.asym)
        doc["provenance"] = provenance()
        atomic_write_text(OUT / f"{_name(read_meta(run))}.json", json.dumps(doc, indent=2) + "\n")
    if args.bench_size:
        h, w = (int(v) for v in args.bench_size.lower().split("x"))
        run = runs[0]
        result = bench(srq.load(run), (h, w), threads=tuple(threads), runs=args.bench_runs,
                       memory=not args.no_memory, export_kwargs={"asym": args.asym},
                       progress=lambda line: print(line, flush=True))
        print(format_bench(result))
        doc = {"run": str(run), "asym": args.asym, **result.to_dict(), "provenance": provenance()}
        atomic_write_text(OUT / f"bench-{_name(read_meta(run))}-{h}x{w}.json", json.dumps(doc, indent=2) + "\n")


if __name__ == "__main__":
    run_script(main)
