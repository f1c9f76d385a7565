"""Q-MambaIR next to QuantSR and LSQ (and its ablations: the paper's Tables 5, 6, 7a, 7b), with Table 4's complexity.

Usage (from the repository root; data and weights from $SRQ_DATA / $SRQ_WEIGHTS):
    python benchmarks/qmambair_bench.py --model mambairv2_light --scale 4 --bits w4a4,w2a2 \\
        --methods qmambair,quantsr,lsq --split 200 --fp-scores saved \\
        -p train.iterations=20000 -p train.batch=8 -p train.hr_patch=64 -p train.lr=2e-4 -p train.quant_lr=2e-4 \\
        --save-dir runs/qmambair
    python benchmarks/qmambair_bench.py --model mambairv2_light --scale 2 --bits w4a4 --ablation table7a ...
The same ``-p`` applies to every row, so all methods share one training budget (LSQ's and QuantSR's own defaults
differ from Q-MambaIR's paper settings). ``--ablation`` runs the named table's rows instead of ``--methods``:
``table5`` (QuantSR baseline; DLS alone = tanh weights; RFA alone = RLQ activations; both), ``table6`` (the four
DLS initialisations), ``table7a`` (activations RLQ / LSQ+ / PAMS / DLS with RFA weights), ``table7b`` (weights STE /
tanh / NU2U / RFA with DLS activations). Everything else is ``benchmarks/qat_bench.py``'s: calibration on 100
DIV2K_test_LRx4 patches, training on T91 + BSD200 (``-p 'train_data=[...]'`` for DIV2K), ``--save-dir`` and
``--resume`` for checkpointed runs.

Each run writes benchmarks/results/qmambair/<model>_x<scale>_<tag>_<bits>.json and its training log (CSV/SVG),
then rebuilds summary.md (every row) and complexity.md (Table 4: 32-bit-equivalent parameters and operations
with their reductions, srq's count and the BOPs ÷ 64 count).
"""

from __future__ import annotations

from pathlib import Path

from srq.engine.results import atomic_write_text, run_script
from srq.quant.complexity import complexity_from_dict, format_complexity

from ptq_bench import RESULT_NAME, result_docs
from qat_bench import qat_parser, run_qat_rows

OUT = Path(__file__).resolve().parent / "results" / "qmambair"
NOTE = ("Made by `python benchmarks/qmambair_bench.py` (the exact command, git revision and machine are in each "
        "JSON file). QAT on T91 + BSD200 HR crops unless the recipe says otherwise, L1 to HR; each row's budget is "
        "in its JSON file (`recipe.train`). Q-MambaIR: DLS activations in the SSM/attention blocks, LSQ+ elsewhere, "
        "RFA weights; first/last layer 8 bit for every row.")

ABLATIONS: dict[str, list[tuple[str, list[str]]]] = {
    "table5": [("quantsr", []), ("qmambair", ["weights=tanh"]), ("qmambair", ["activations=rlq"]), ("qmambair", [])],
    "table6": [("qmambair", [f"dls_init={i}"]) for i in ("3sigma", "4sigma", "minmax", "mean_range")],
    "table7a": [("qmambair", [f"activations={a}"]) for a in ("rlq", "lsqplus", "pams", "dls")],
    "table7b": [("qmambair", [f"weights={w}"]) for w in ("ste", "tanh", "nu2u", "rfa")],
}


def complexity_table(out_dir: Path = OUT) -> None:
    """Rebuild ``out_dir/complexity.md``: one Table 4 row per result file (and its model's FP32 row)."""
    rows = ["# Model complexity (Q-MambaIR Table 4 form)", "",
            "32-bit-equivalent parameters (stored bits ÷ 32) and operations (srq: BitOPs ÷ 32²; bops64: "
            "MACs × w·a ÷ 64 for layers with both sides quantized, MACs otherwise) for one LR image of the cost's "
            "input size; only "
            "Conv2d/Linear MACs are counted (not attention matmuls or scans). Made by `benchmarks/qmambair_bench.py`.",
            ""]
    for convention in ("srq", "bops64"):
        entries, seen = [], set()
        for f, d in result_docs(out_dir):
            row = complexity_from_dict(d["cost"], f.stem, convention)
            m = RESULT_NAME.match(f.stem)
            model = m["model"] if m else f.stem
            if model not in seen:
                seen.add(model)
                entries.append(type(row)(f"{model} FP32", row.input_size, row.fp32_params, row.fp32_params,
                                         row.fp32_ops, row.fp32_ops))
            entries.append(row)
        rows += [f"## operations: {convention}", "", format_complexity(entries)]
    atomic_write_text(out_dir / "complexity.md", "\n".join(rows))


def main() -> None:
    p = qat_parser(__doc__.splitlines()[0], model="mambairv2_light", bits="w4a4", methods="qmambair,quantsr,lsq")
    p.add_argument("--ablation", choices=sorted(ABLATIONS), default=None, help="run a table's rows instead")
    args = p.parse_args()
    rows = ABLATIONS[args.ablation] if args.ablation else [(m, []) for m in args.methods.split(",")]
    run_qat_rows(p, args, rows, OUT, "Q-MambaIR, QuantSR and LSQ", NOTE, after=complexity_table)


if __name__ == "__main__":
    run_script(main)
