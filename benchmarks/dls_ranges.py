"""The ranges a trained Q-MambaIR model's DLS quantizers predict, against the statistics of their inputs.

Usage (from the repository root; benchmark images from $SRQ_DATA):
    python benchmarks/dls_ranges.py RUN_FOLDER [--sets Set5,Set14] [--name imdn_x4_w4a4]
RUN_FOLDER is a run folder saved by a Q-MambaIR run (``srq quantize … --method qmambair``, or a benchmark's
``--save-dir``). Each LR image of the sets goes through the model; every DLS quantizer records, per sample of its
input, the statistics (μ, σ, min, max) and its predicted half-width α̂ = max(|w₁ᵀΦ′|, floor) and centre
β̂ = w₂ᵀΦ. The paper (§4.3, Table 6) reports that after training α̂ follows |μ| + 3σ and β̂ equals −μ in its
notation (Eq. 6 shifts by β̂: in srq's, where the range is [β̂ − α̂, β̂ + α̂], the counterpart is β̂ ≈ μ).

Writes benchmarks/results/qmambair/dls-ranges-<name>.{json,md} and two SVG scatter plots (α̂ against |μ| + 3σ,
log-log; β̂ against μ) with y = x dashed: the learned w₁, w₂ of every quantizer next to their initial values,
and per quantizer the median of α̂ / (|μ| + 3σ) and of (β̂ − μ) / α̂ over all samples.
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

import torch

import srq
from srq.data import SRBenchmark
from srq.engine.results import atomic_write_text, provenance, run_script
from srq.errors import SrqError
from srq.quant.grids.dls import DLSGrid, dls_range, dls_statistics
from srq.quant.quantizer import Quantizer
from srq.report.plots import versus_svg
from srq.run_folder import read_meta

OUT = Path(__file__).resolve().parent / "results" / "qmambair"


def dls_quantizers(model: torch.nn.Module) -> dict[str, Quantizer]:
    """The DLS quantizers of ``model`` by module name (an error if it has none)."""
    found = {n: m for n, m in model.named_modules() if isinstance(m, Quantizer) and isinstance(m.grid, DLSGrid)}
    if not found:
        raise SrqError("the model has no DLS quantizer: give the run folder of a Q-MambaIR run (activations=dls)")
    return found


def record_ranges(model: torch.nn.Module, images: list[torch.Tensor]) -> dict[str, list[dict[str, float]]]:
    """Per DLS quantizer, one record per sample of each input it sees: μ, σ, min, max, α̂, β̂."""
    quantizers = dls_quantizers(model)
    records: dict[str, list[dict[str, float]]] = {n: [] for n in quantizers}

    def hook(name: str, q: Quantizer):
        def pre(_module: torch.nn.Module, args: tuple) -> None:
            x = args[0]
            phi, _ = dls_statistics(x)
            lower, upper = dls_range(x, q.w1, q.w2)
            for s, lo, hi in zip(phi.tolist(), lower.flatten().tolist(), upper.flatten().tolist()):
                records[name].append({"mean": s[0], "std": s[1], "min": s[2], "max": s[3],
                                      "alpha": (hi - lo) / 2, "beta": (hi + lo) / 2})
        return pre

    handles = [q.register_forward_pre_hook(hook(n, q)) for n, q in quantizers.items()]
    try:
        with torch.no_grad():
            for x in images:
                model(x)
    finally:
        for h in handles:
            h.remove()
    return records


def summarise(model: torch.nn.Module, records: dict[str, list[dict[str, float]]]) -> list[dict]:
    """One row per quantizer: initial and learned w₁, w₂, and the medians that compare α̂, β̂ to the statistics."""
    rows = []
    for name, q in dls_quantizers(model).items():
        recs = records[name]
        ref = [r["alpha"] / max(abs(r["mean"]) + 3 * r["std"], 1e-12) for r in recs]
        shift = [(r["beta"] - r["mean"]) / r["alpha"] for r in recs]
        grid = q.grid
        rows.append({"quantizer": name, "grid": q.grid.name, "samples": len(recs),
                     "w1_init": list(grid.init_w1), "w1": [round(v, 4) for v in q.w1.tolist()],
                     "w2_init": list(grid.init_w2), "w2": [round(v, 4) for v in q.w2.tolist()],
                     "alpha_over_absmean_3std": statistics.median(ref) if ref else None,
                     "beta_minus_mean_over_alpha": statistics.median(shift) if shift else None})
    return rows


def _group(name: str) -> str:
    """The legend group of a quantizer: the last part of its layer's name (``c1``, ``conv_du.0``, ``x``…)."""
    parts = name.split(".")
    if parts[-1].endswith("quantizer") and len(parts) > 1:
        parts = parts[:-1]
    return ".".join(parts[-2:]) if parts[-1].isdigit() and len(parts) > 1 else parts[-1]


def _markdown(name: str, folder: Path, sets: list[str], rows: list[dict]) -> str:
    med_a = statistics.median(r["alpha_over_absmean_3std"] for r in rows)
    med_b = statistics.median(r["beta_minus_mean_over_alpha"] for r in rows)
    lines = [f"# DLS ranges after training: {name}", "",
             f"Made by `python benchmarks/dls_ranges.py {folder} --sets {','.join(sets)} --name {name}`. "
             "Φ = (μ, σ, min, max), Φ′ = (|μ|, σ, min, max); α̂ = |w₁ᵀΦ′| is the half-width and β̂ = w₂ᵀΦ the centre of "
             "the range [β̂ − α̂, β̂ + α̂] (the paper's β̂ ≈ −μ is β̂ ≈ μ here). Medians over every sample the "
             "quantizer saw.", "",
             f"Over the {len(rows)} quantizers: median α̂ / (|μ| + 3σ) = {med_a:.3f}, median (β̂ − μ) / α̂ = "
             f"{med_b:+.3f}.", "",
             "| quantizer | w₁ init → learned (on \\|μ\\|, σ, min, max) | w₂ init → learned (on μ, σ, min, max) | "
             "α̂ / (\\|μ\\|+3σ) | (β̂ − μ) / α̂ |", "|---|---|---|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['quantizer']} | {r['w1_init']} → {r['w1']} | {r['w2_init']} → {r['w2']} | "
                     f"{r['alpha_over_absmean_3std']:.3f} | {r['beta_minus_mean_over_alpha']:+.3f} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("run_folder", type=Path)
    p.add_argument("--sets", default="Set5,Set14", help="benchmark sets whose LR images go through the model")
    p.add_argument("--name", default=None, help="result name (default: the run folder's name)")
    p.add_argument("--data-root", default=None)
    args = p.parse_args()
    model = srq.load(args.run_folder).eval()
    scale = read_meta(args.run_folder)["architecture"]["scale"]
    sets = args.sets.split(",")
    images = [torch.from_numpy(lr).permute(2, 0, 1)[None].float() / 255
              for s in sets for _, lr, _ in SRBenchmark(s, scale, data_root=args.data_root)]
    print(f"{len(images)} images through {args.run_folder}", flush=True)
    records = record_ranges(model, images)
    rows = summarise(model, records)
    name = args.name or args.run_folder.name
    alpha: dict[str, list[tuple[float, float]]] = {}
    beta: dict[str, list[tuple[float, float]]] = {}
    for q, recs in records.items():
        alpha.setdefault(_group(q), []).extend((abs(r["mean"]) + 3 * r["std"], r["alpha"]) for r in recs)
        beta.setdefault(_group(q), []).extend((r["mean"], r["beta"]) for r in recs)
    stem = OUT / f"dls-ranges-{name}"
    atomic_write_text(stem.with_suffix(".md"), _markdown(name, args.run_folder, sets, rows))
    atomic_write_text(Path(f"{stem}-alpha.svg"), versus_svg(alpha, f"α̂ against |μ| + 3σ ({name})", "|μ| + 3σ",
                                                            "α̂ (half-width)", log=True))
    atomic_write_text(Path(f"{stem}-beta.svg"), versus_svg(beta, f"β̂ against μ ({name})", "μ", "β̂ (centre)"))
    atomic_write_text(stem.with_suffix(".json"), json.dumps(
        {"run_folder": str(args.run_folder), "sets": sets, "images": len(images), "quantizers": rows,
         "provenance": provenance()}, indent=1))
    print(stem.with_suffix(".md").read_text())


if __name__ == "__main__":
    run_script(main)
