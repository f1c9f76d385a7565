"""What the exporter's channel-split rewrite buys: a run folder's integer ONNX exported with and without
``split_convs`` (:func:`srq.export.graph_rewrites.split_producer_convs`), both timed on OpenVINO, interleaved.

Usage (needs ``pip install -e ".[deploy]"``):
    python benchmarks/split_rewrite_bench.py --run RUN_FOLDER --size 180x320 --runs 9 --threads 1

Before timing, both files run on a natural image and are compared with each other and with srq's output
(see ``_agreement``).
Medians and min in seconds, the ratio, node counts and OpenVINO's per-operation profile of each file go to
``benchmarks/results/deploy/split-rewrite-<model>_x<scale>_<method>_w<b>a<b>.json``.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from srq.engine.results import atomic_write_text, provenance, run_script
from srq.errors import SrqError

OUT = Path(__file__).resolve().parent / "results" / "deploy"
VARIANTS = ("split", "per_part")  # split_convs=False / True


def _agreement(model, runners: dict, size: tuple[int, int]) -> dict:
    """On a natural image (a crop of a bundled sample), each variant's output against srq's own integer-bias
    model and against the other: mean |Δ| and the share of 8-bit output pixels that differ. The rewrite is exact
    in ONNX Runtime and in OpenVINO's dynamic-shape compile (tests); compiled for one shape OpenVINO may fuse the
    float operations differently, which moves outputs by float rounding, as between any two runtimes. ``runners``
    are the timed models (compiled for ``size``), so the outputs compared are theirs. Refuses (one line) if the two
    variants differ by more than either differs from srq."""
    from srq.data.samples import sample_images
    from srq.export import export_ready

    img = next((i for _, i in sample_images("train") if i.shape[0] >= size[0] and i.shape[1] >= size[1]), None)
    if img is None:
        raise SrqError(f"no bundled sample image is {size[0]}×{size[1]} or larger; pass a smaller --size")
    x = torch.from_numpy(img[:size[0], :size[1]].copy()).permute(2, 0, 1).unsqueeze(0).float() / 255
    outs = {"srq": export_ready(model, bias="int32")(x), **{v: r(x) for v, r in runners.items()}}
    u8 = {k: (o.clamp(0, 1) * 255).round() for k, o in outs.items()}
    doc = {f"{a}_vs_{b}": {"mean_abs": float((outs[a] - outs[b]).abs().mean()),
                           "uint8_changed": float((u8[a] != u8[b]).float().mean())}
           for a, b in (("split", "srq"), ("per_part", "srq"), ("per_part", "split"))}
    if doc["per_part_vs_split"]["mean_abs"] > max(doc["split_vs_srq"]["mean_abs"], doc["per_part_vs_srq"]["mean_abs"]):
        raise SrqError(f"the rewritten graph differs from the original more than either differs from srq: {doc}")
    return doc


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--run", required=True, help="run folder (srq quantize --output)")
    parser.add_argument("--size", default="180x320", help="LR input HxW (default 180x320: 720p at x4)")
    parser.add_argument("--runs", type=int, default=9)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    try:
        import onnx
        import openvino as ov
    except ImportError:
        raise SrqError('this benchmark needs the deploy extra: pip install -e ".[deploy]"')
    import srq
    from srq.export import export_onnx
    from srq.export.profile import openvino_profile
    from srq.export.runtime import RuntimeModel
    from srq.run_folder import read_meta

    h, w = (int(v) for v in args.size.lower().split("x"))
    if min(h, w, args.runs, args.threads) < 1:
        raise SrqError("--size, --runs and --threads must be positive")
    model, meta = srq.load(args.run), read_meta(args.run)
    x = torch.rand(1, 3, h, w, generator=torch.Generator().manual_seed(0))
    with tempfile.TemporaryDirectory() as tmp:
        files = {v: export_onnx(model, Path(tmp) / f"{v}.onnx", split_convs=v == "per_part") for v in VARIANTS}
        nodes = {v: {op: sum(n.op_type == op for n in onnx.load(str(p)).graph.node) for op in ("Split", "Conv")}
                 for v, p in files.items()}
        # compiled as `srq bench` does: OpenVINO for the one input shape, latency hint, fp32 float operations
        runners = {v: RuntimeModel(p, "openvino", args.threads, static_shape=tuple(x.shape)) for v, p in files.items()}
        with torch.inference_mode():
            agreement = _agreement(model, runners, (h, w))
            times: dict[str, list[float]] = {v: [] for v in VARIANTS}
            for r in runners.values():
                r(x)  # warm-up
            for _ in range(args.runs):
                for v, r in runners.items():
                    t = time.perf_counter()
                    r(x)
                    times[v].append(time.perf_counter() - t)
        profiles = {v: openvino_profile(p, (1, 3, h, w), threads=args.threads).to_dict() for v, p in files.items()}
    med = {v: float(np.median(t)) for v, t in times.items()}
    spec, recipe = meta["architecture"], meta["recipe"] or {}
    bits = f"w{recipe.get('w_bits')}a{recipe.get('a_bits')}"
    doc = {"run": str(args.run), "model": spec["model"], "scale": spec["scale"], "recipe": recipe,
           "input_shape": [1, 3, h, w], "threads": args.threads, "runs": args.runs,
           "openvino": ov.__version__, "agreement": agreement, "nodes": nodes, "median_s": med,
           "min_s": {v: min(t) for v, t in times.items()}, "split_over_per_part": med["split"] / med["per_part"],
           "openvino_profile": profiles, "provenance": provenance()}
    name = f"split-rewrite-{spec['model']}_x{spec['scale']}_{recipe.get('method', 'run')}_{bits}.json"
    path = atomic_write_text(OUT / name, json.dumps(doc, indent=2) + "\n")
    print(f"with Split {med['split']:.3f} s, one convolution per part {med['per_part']:.3f} s "
          f"({doc['split_over_per_part']:.2f}x; Splits {nodes['split']['Split']} → {nodes['per_part']['Split']}) "
          f"→ {path}")


if __name__ == "__main__":
    run_script(main)
