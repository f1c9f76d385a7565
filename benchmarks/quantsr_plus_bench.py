"""QuantSR+ and its ablation (QuantSR → +RBD → +QSA → +SFD) next to QuantSR, with the complexity of every row.

Usage (from the repository root; data and weights from $SRQ_DATA / $SRQ_WEIGHTS):
    python benchmarks/quantsr_plus_bench.py --model imdn --scale 4 --bits w2a2 --ablation \\
        -p train.iterations=20000 -p train.batch=8 -p train.hr_patch=96 --save-dir runs/quantsr_plus
    python benchmarks/quantsr_plus_bench.py --model swinir_light --bits w2a2 --methods quantsr,quantsr_plus ...
    python benchmarks/quantsr_plus_bench.py --model imdn --bits w2a2 --qsa-sweep 0.85,0.7,0.55 -p ...
The same ``-p`` applies to every row (one training budget). ``--qsa-sweep`` runs one ``quantsr_plus`` row per QSA
budget (a fraction of the start's BitOPs) and draws PSNR against BitOPs for every full QuantSR+ row of the same
model, bits and training budget (``qsa-sweep-*.svg``/``.md``: storage and operations saved against FP32, in srq's
BitOPs and in the ``bops64`` count QuantSR-style tables use). ``--ablation`` runs the rows

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


def _is_full_quantsr_plus(recipe: dict) -> bool:
    """Every QuantSR+ part on (RBD weights and activations, shortcut scales, SFD); any QSA budget."""
    return recipe.get("method") == "quantsr_plus" and all(
        recipe.get(k) for k in ("rbd", "rbd_activations", "shortcut_scale", "sfd"))


def qsa_sweep(out_dir: Path = OUT) -> None:
    """Rebuild ``out_dir/qsa-sweep-<model>_<bits>.md`` and one PSNR-vs-BitOPs SVG per set of :data:`SWEEP_SETS`
    from the full QuantSR+ rows with the same training budget (``recipe.train``), one point per QSA budget."""
    groups: dict[tuple, list[dict]] = defaultdict(list)
    for f, d in result_docs(out_dir):
        m = RESULT_NAME.match(f.stem)
        if m and _is_full_quantsr_plus(d.get("recipe", {})):
            groups[(m["model"], m["bits"], json.dumps(d["recipe"].get("train"), sort_keys=True))].append(d)
    by_name: dict[str, list[tuple[dict, list[dict]]]] = defaultdict(list)
    for (model, bits, train), docs in groups.items():
        if len(docs) >= 2:  # a sweep has at least two budgets
            by_name[f"{model}_{bits}"].append((json.loads(train), sorted(docs, key=lambda d: -d["cost"]["bitops"])))
    for name, sweeps in by_name.items():
        lines = [f"# QSA budget sweep: {name}", "",
                 "One QuantSR+ row per QSA budget (fraction of the start's BitOPs), same training budget; storage and "
                 "operations saved against FP32: srq's BitOPs (÷ 32² for FP32) and the bops64 count (MACs × w·a ÷ 64 "
                 "where both sides are quantized). Made by `benchmarks/quantsr_plus_bench.py --qsa-sweep`.", ""]
        for k, (train, docs) in enumerate(sweeps):
            lines += [f"Training: `{json.dumps(train, sort_keys=True)}`", "",
                      "| QSA budget | blocks removed | size KB | storage saved | BitOPs G | ops saved (srq) | "
                      "ops saved (bops64) | " + " | ".join(f"{s} PSNR" for s in SWEEP_SETS) + " |",
                      "|---:|---|---:|---:|---:|---:|---:|" + "---:|" * len(SWEEP_SETS)]
            for d in docs:
                cost, qsa = d["cost"], d["report"].get("qsa") or {}
                bops64 = complexity_from_dict(cost, convention="bops64")
                psnr = {r["dataset"]: r["psnr"] for r in d["results"]}
                removed = ", ".join(r["block"] for r in qsa.get("removed", [])) or "—"
                lines.append(f"| {d['recipe']['qsa_budget']:g} | {removed} | {cost['size_kb']:.1f} | "
                             f"{100 * (1 - cost['size_kb'] / cost['fp32_size_kb']):.1f}% | "
                             f"{cost['bitops'] / 1e9:.1f} | "
                             f"{100 * (1 - cost['bitops'] / cost['fp32_bitops']):.1f}% | "
                             f"{100 * bops64.ops_reduction:.1f}% | "
                             + " | ".join(f"{psnr[s]:.2f}" if s in psnr else "—" for s in SWEEP_SETS) + " |")
            lines.append("")
            for dataset in SWEEP_SETS:
                points = [(f"budget {d['recipe']['qsa_budget']:g}", d["cost"]["bitops"] / 1e9,
                           next(r["psnr"] for r in d["results"] if r["dataset"] == dataset))
                          for d in docs if any(r["dataset"] == dataset for r in d["results"])]
                svg = tradeoff_svg(points, pareto_front([(c, q) for _, c, q in points]),
                                   f"QuantSR+ {name}: {dataset} PSNR vs BitOPs", "BitOPs (G)", log_x=False)
                suffix = f"-{k + 1}" if len(sweeps) > 1 else ""
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
