"""QuantSR+ and its ablation (QuantSR → +RBD → +QSA → +SFD) next to QuantSR, with the complexity of every row.

Usage (from the repository root; data and weights from $SRQ_DATA / $SRQ_WEIGHTS):
    python benchmarks/quantsr_plus_bench.py --model imdn --scale 4 --bits w2a2 --ablation \\
        -p train.iterations=20000 -p train.batch=8 -p train.hr_patch=96 --save-dir runs/quantsr_plus
    python benchmarks/quantsr_plus_bench.py --model swinir_light --bits w2a2 --methods quantsr,quantsr_plus ...
The same ``-p`` applies to every row (one training budget). ``--ablation`` runs the rows

* ``quantsr``: QuantSR's quantizers (RLQ activations, tanh-rounded LSQ weights), the network unchanged;
* ``quantsr_plus`` with ``rbd=false qsa_budget=0 sfd=false``: QuantSR with its learnable shortcut scales;
* ``+RBD`` (``qsa_budget=0 sfd=false``), ``+QSA`` (``sfd=false``), ``+SFD`` (``quantsr_plus``, every part on)

instead of ``--methods``. Everything else is ``benchmarks/qat_bench.py``'s: calibration on 100 DIV2K_test_LRx4
patches, training on T91 + BSD200, ``--save-dir`` and ``--resume`` for checkpointed runs.

Each run writes benchmarks/results/quantsr_plus/<model>_x<scale>_<tag>_<bits>.json and its training log, then
rebuilds summary.md (every row, with size and BitOPs: QSA rows are cheaper) and complexity.md.
"""

from __future__ import annotations

from pathlib import Path

from srq.engine.results import run_script

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


def main() -> None:
    p = qat_parser(__doc__.splitlines()[0], model="imdn", bits="w2a2", methods="quantsr,quantsr_plus")
    p.add_argument("--ablation", action="store_true", help="run the ablation rows instead of --methods")
    args = p.parse_args()
    rows = ABLATION if args.ablation else [(m, []) for m in args.methods.split(",")]
    run_qat_rows(p, args, rows, OUT, "QuantSR+ and its ablation", NOTE, after=complexity_table)


if __name__ == "__main__":
    run_script(main)
