"""QuantSR+ and its ablation (QuantSR → +RBD → +QSA → +SFD) next to QuantSR, with the complexity of every row.

Usage (from the repository root; data and weights from $SRQ_DATA / $SRQ_WEIGHTS):
    python benchmarks/quantsr_plus_bench.py --model imdn --scale 4 --bits w2a2 --ablation \\
        -p train.iterations=20000 -p train.batch=8 -p train.hr_patch=96 --save-dir runs/quantsr_plus
    python benchmarks/quantsr_plus_bench.py --model swinir_light --bits w2a2 --methods quantsr,quantsr_plus ...
    python benchmarks/quantsr_plus_bench.py --model imdn --bits w2a2 --qsa-sweep 0.85,0.7,0.55 -p ...
The same ``-p`` applies to every row (one training budget). ``--qsa-sweep`` runs one ``quantsr_plus`` row per QSA
budget (a fraction of the start's BitOPs) and draws PSNR against BitOPs for the QuantSR+ rows of one model and
bits whose recipes (training budget included) differ only in ``qsa_budget`` — with ``-p sfd=false`` too, and budget 0
as the unslimmed point (``qsa-sweep-*.svg``/``.md``: storage and operations saved against the released FP32 network,
in srq's BitOPs and in the ``bops64`` count QuantSR-style tables use). ``--ablation`` runs the rows

* ``quantsr``: QuantSR's quantizers (RLQ activations, tanh-rounded LSQ weights), the network unchanged;
* ``quantsr_plus`` with ``rbd=false qsa_budget=0 sfd=false``: QuantSR with its learnable shortcut scales;
* ``+RBD`` (``qsa_budget=0 sfd=false``), ``+QSA`` (``sfd=false``), ``+SFD`` (``quantsr_plus``, every part on)

instead of ``--methods``. Everything else is ``benchmarks/qat_bench.py``'s: calibration on 100 DIV2K_test_LRx4
patches, training on T91 + BSD200, ``--save-dir`` and ``--resume`` for checkpointed runs.

Each run writes benchmarks/results/quantsr_plus/<model>_x<scale>_<tag>_<bits>.json and its training log, then
rebuilds summary.md (every row, with size and BitOPs: QSA rows are cheaper) and complexity.md.
"""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path

from srq.engine.results import atomic_write_text, run_script
import srq
from srq.methods import QuantSRPlus
from srq.quant.cost import model_cost
from srq.quant.complexity import complexity_from_dict
from srq.report.plots import tradeoff_svg
from srq.report.runs import pareto_front

from ptq_bench import RESULT_NAME, result_docs
from qat_bench import qat_parser, run_qat_rows
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


SWEEP_SETS = ("Set5", "Urban100")


def _sweep_variant(recipe: dict) -> str | None:
    """The recipe without its QSA budget (JSON), for QuantSR+ rows with shortcut scales (which QSA ranks blocks
    by); rows with the same variant and different budgets form one sweep. None for other rows."""
    if recipe.get("method") != "quantsr_plus" or not recipe.get("shortcut_scale"):
        return None
    return json.dumps({k: v for k, v in recipe.items() if k != "qsa_budget"}, sort_keys=True)


def _variant_label(variant: dict) -> str:
    """The fields of a sweep's recipe that differ from QuantSR+'s defaults (its bits and training budget aside)."""
    defaults = QuantSRPlus().to_dict()
    diff = [f"{k}={json.dumps(v)}" for k, v in sorted(variant.items())
            if k not in ("train", "w_bits", "a_bits") and defaults.get(k) != v]
    return ", ".join(diff) or "QuantSR+ defaults"


def _fp32_reference(model: str, scale: int, input_size: list[int]) -> tuple[float, float]:
    """``(size KB, BitOPs)`` of the released (unslimmed) FP32 network: what the paper's reductions are against."""
    fp = model_cost(srq.create_model(model, scale), tuple(input_size), scale)  # type: ignore[arg-type]  # random init
    return fp.fp32_size_kb, fp.fp32_bitops


def qsa_sweep(out_dir: Path = OUT) -> None:
    """Rebuild ``out_dir/qsa-sweep-<model>_<bits>.md`` and PSNR-vs-BitOPs SVGs from QuantSR+ rows whose recipes differ
    only in ``qsa_budget`` (training budget included; budget 0 is the unslimmed network), one point per budget."""
    groups: dict[tuple, list[dict]] = defaultdict(list)
    for f, d in result_docs(out_dir):
        m = RESULT_NAME.match(f.stem)
        variant = _sweep_variant(d.get("recipe", {}))
        if m and variant is not None:
            groups[(m["model"], m["bits"], variant)].append(d)
    by_name: dict[str, list[tuple[dict, list[dict]]]] = defaultdict(list)
    for (model, bits, variant), docs in sorted(groups.items()):
        if len(docs) >= 2:  # a sweep has at least two budgets
            by_name[f"{model}_{bits}"].append((json.loads(variant), sorted(docs, key=lambda d: -d["cost"]["bitops"])))
    for name, sweeps in by_name.items():
        lines = [f"# QSA budget sweep: {name}", "",
                 "One QuantSR+ row per QSA budget (fraction of the start's BitOPs; 0: no slimming), the rest of the "
                 "recipe and the training budget the same; storage and operations saved against the released FP32 "
                 "network (before slimming): srq's BitOPs "
                 "(÷ 32² for FP32) and the bops64 count (MACs × w·a ÷ 64 where both sides are quantized). Made by "
                 "`benchmarks/quantsr_plus_bench.py --qsa-sweep`.", ""]
        for k, (variant, docs) in enumerate(sweeps):
            suffix = f"-{k + 1}" if len(sweeps) > 1 else ""
            lines += [f"## Sweep{suffix or ''}: {_variant_label(variant)}", "",
                      f"Training: `{json.dumps(variant.get('train'), sort_keys=True)}`", "",
                      "| QSA budget | blocks removed | size KB | storage saved | BitOPs G | ops saved (srq) | "
                      "ops saved (bops64) | " + " | ".join(f"{s} PSNR" for s in SWEEP_SETS) + " |",
                      "|---:|---|---:|---:|---:|---:|---:|" + "---:|" * len(SWEEP_SETS)]
            model, scale = docs[0]["model"], int(docs[0]["scale"])
            fp_kb, fp_bitops = _fp32_reference(model, scale, docs[0]["cost"]["input_size"])
            for d in docs:
                cost, qsa = d["cost"], d["report"].get("qsa") or {}
                bops64 = complexity_from_dict(cost, convention="bops64")
                psnr = {r["dataset"]: r["psnr"] for r in d["results"]}
                removed = ", ".join(r["block"] for r in qsa.get("removed", [])) or "—"
                lines.append(f"| {d['recipe']['qsa_budget']:g} | {removed} | {cost['size_kb']:.1f} | "
                             f"{100 * (1 - cost['size_kb'] / fp_kb):.1f}% | "
                             f"{cost['bitops'] / 1e9:.1f} | "
                             f"{100 * (1 - cost['bitops'] / fp_bitops):.1f}% | "
                             f"{100 * (1 - bops64.ops / (fp_bitops / 32**2)):.1f}% | "  # FP32 MACs
                             + " | ".join(f"{psnr[s]:.2f}" if s in psnr else "—" for s in SWEEP_SETS) + " |")
            lines.append("")
            for dataset in SWEEP_SETS:
                points = [(f"budget {d['recipe']['qsa_budget']:g}" if d["recipe"]["qsa_budget"] else "no QSA",
                           d["cost"]["bitops"] / 1e9, next(r["psnr"] for r in d["results"] if r["dataset"] == dataset))
                          for d in docs if any(r["dataset"] == dataset for r in d["results"])]
                svg = tradeoff_svg(points, pareto_front([(c, q) for _, c, q in points]),
                                   f"QuantSR+ {name}: {dataset} PSNR vs BitOPs", "BitOPs (G)", log_x=False)
                atomic_write_text(out_dir / f"qsa-sweep-{name}{suffix}-{dataset}.svg", svg)
        atomic_write_text(out_dir / f"qsa-sweep-{name}.md", "\n".join(lines))


def after_rows(out_dir: Path) -> None:
    complexity_table(out_dir)
    qsa_sweep(out_dir)


def main() -> None:
    p = qat_parser(__doc__.splitlines()[0], model="imdn", bits="w2a2", methods="quantsr,quantsr_plus")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--ablation", action="store_true", help="run the ablation rows instead of --methods")
    mode.add_argument("--qsa-sweep", metavar="BUDGETS",
                      help="one quantsr_plus row per QSA budget (comma-separated fractions in (0, 1), e.g. "
                           "0.85,0.7,0.55) instead of --methods, then the PSNR-vs-BitOPs plot")
    args = p.parse_args()
    if args.qsa_sweep:
        try:
            budgets = [float(b) for b in args.qsa_sweep.split(",")]
        except ValueError:
            p.error(f"--qsa-sweep takes comma-separated fractions, got {args.qsa_sweep!r}")
        if not all(0 < b < 1 for b in budgets):
            p.error(f"--qsa-sweep budgets are fractions in (0, 1), got {args.qsa_sweep!r}")
        rows = [("quantsr_plus", [f"qsa_budget={b:g}"]) for b in budgets]
    else:
        rows = ABLATION if args.ablation else [(m, []) for m in args.methods.split(",")]
    run_qat_rows(p, args, rows, OUT, "QuantSR+ and its ablation", NOTE, after=after_rows)


if __name__ == "__main__":
    run_script(main)
