"""Calibration at the model's scale (issue 33): the committed rows calibrated on DIV2K_test_LRx4 next to the same
method and budget calibrated on LR made at the model's scale from the 291 HR training images (T91 + BSD200).

Usage (from the repository root), after the rows exist (commands in the table and in each JSON file):
    python benchmarks/calib_source.py
writes benchmarks/results/calib_source.md from the result files; it runs nothing itself.
"""

from __future__ import annotations

import json
from pathlib import Path

from srq.engine.results import atomic_write_text, run_script

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
SETS = ("Set5", "Set14", "B100", "Urban100")

# (title, [(row label, result file under benchmarks/results)]); a missing file is listed as not made
COMPARISONS = [
    ("MambaIRv2-light x2 SPR²Q W4A4 (150 + 50 iterations × batch 4, LR patch 32)", [
        ("FP", "fp/mambairv2_light_x2.json"),
        ("DIV2K_test_LRx4 (x4 LR)", "spr2q/mambairv2_light_x2_spr2q_w4a4.json"),
        ("x2 LR from T91+BSD200", "spr2q/mambairv2_light_x2_spr2q_calib-hr_w4a4.json"),
    ]),
    ("IMDN x2 GBA* W4A4", [
        ("FP", "fp/imdn_x2.json"),
        ("DIV2K_test_LRx4, LR patch 192", "gba/imdn_x2_gba_star_w4a4.json"),
        ("x2 LR from T91+BSD200, LR patch 160", "gba/imdn_x2_gba_star_calib-hr_patch160_w4a4.json"),
    ]),
    ("IMDN x2 Percentile+FT W4A4", [
        ("FP", "fp/imdn_x2.json"),
        ("DIV2K_test_LRx4, LR patch 192", "ptq/imdn_x2_percentile_ft_w4a4.json"),
        ("x2 LR from T91+BSD200, LR patch 160", "ptq/imdn_x2_percentile_ft_calib-hr_patch160_w4a4.json"),
    ]),
    ("IMDN x4 Percentile+FT W4A4: the source at the same scale", [
        ("FP", "fp/imdn_x4.json"),
        ("DIV2K_test_LRx4, LR patch 96", "ptq/imdn_x4_percentile_ft_w4a4.json"),
        ("DIV2K_test_LRx4, LR patch 80", "ptq/imdn_x4_percentile_ft_patch80_w4a4.json"),
        ("x4 LR from T91+BSD200, LR patch 80", "ptq/imdn_x4_percentile_ft_calib-hr_patch80_w4a4.json"),
    ]),
]


def _scores(doc: dict) -> dict[str, float]:
    return {r["dataset"]: r["psnr"] for r in doc["results"]}


def _row(label: str, path: Path, fp: dict[str, float] | None) -> str:
    if not path.is_file():
        return f"| {label} | " + " | ".join("not made" for _ in SETS) + " | | |"
    doc = json.loads(path.read_text())
    scores = _scores(doc)
    cells = []
    for s in SETS:
        if s not in scores:
            cells.append("–")
        elif fp is None or s not in fp or label == "FP":
            cells.append(f"{scores[s]:.2f}")
        else:
            cells.append(f"{scores[s]:.2f} ({scores[s] - fp[s]:+.2f})")
    prov = doc.get("provenance", {})
    seconds = doc.get("quantize_seconds")
    return (f"| {label} | " + " | ".join(cells) + f" | {'' if seconds is None else f'{seconds:.0f}'} | "
            f"{prov.get('git_revision', '')[:7]} |")


def main() -> None:
    lines = ["# Calibration inputs at the model's scale", "",
             "PSNR (dB, Y, border cropped by the scale) per set; in brackets the difference to FP. Quantization "
             "time: wall seconds on this 2-core CPU, 1 thread, with other jobs running (compare only within a run "
             "of the same commit and load). Every row's command, calibration record (source, images, patch, the "
             "SHA-256 of the inputs) and machine are in its JSON file; this file is made by "
             "`python benchmarks/calib_source.py`.", ""]
    for title, rows in COMPARISONS:
        fp_path = RESULTS / rows[0][1]
        fp = _scores(json.loads(fp_path.read_text())) if fp_path.is_file() else None
        lines += [f"## {title}", "", "| calibration | " + " | ".join(SETS) + " | quantize s | revision |",
                  "|---|" + "---|" * (len(SETS) + 2)]
        lines += [_row(label, RESULTS / rel, fp) for label, rel in rows]
        lines.append("")
    atomic_write_text(RESULTS / "calib_source.md", "\n".join(lines))


if __name__ == "__main__":
    run_script(main)
