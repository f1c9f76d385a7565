"""The benchmarks' saved-FP-reference check: FP rows are only reused when inferred like the quantized model."""

import json
import sys
from pathlib import Path

import pytest
import torch

import srq

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import ptq_bench  # noqa: E402


def _row(dataset: str, inference: str | None) -> dict:
    row = {"dataset": dataset, "scale": 4, "seconds": 1.0,
           "images": [{"name": "a", "psnr": 30.0, "ssim": 0.9, "seconds": 1.0}]}
    return row if inference is None else {**row, "inference": inference}


@pytest.fixture
def saved(tmp_path, monkeypatch):
    (tmp_path / "results" / "fp").mkdir(parents=True)
    doc = {"results": [_row("Set5", None), _row("Urban100", "split 200")]}  # no key: whole image
    (tmp_path / "results" / "fp" / "m_x4.json").write_text(json.dumps(doc))
    monkeypatch.setattr(ptq_bench, "HERE", tmp_path)
    return tmp_path


def test_saved_fp_scores_match_the_inference(saved):
    scores, source = ptq_bench.saved_fp_scores("m", 4, ["Set5"])
    assert [s.dataset for s in scores] == ["Set5"] and scores[0].psnr == pytest.approx(30.0)
    assert source.endswith("results/fp/m_x4.json")
    assert ptq_bench.saved_fp_scores("m", 4, ["Urban100"], split=200)[0][0].dataset == "Urban100"


@pytest.mark.parametrize("datasets, split, bad",
                         [(["Set5", "Urban100"], 200, "Set5"), (["Urban100"], None, "Urban100")])
def test_saved_fp_scores_refuse_another_inference(saved, datasets, split, bad):
    with pytest.raises(SystemExit, match=f"FP scores of {bad} in m_x4.json were not inferred by"):
        ptq_bench.saved_fp_scores("m", 4, datasets, split)


def test_saved_fp_scores_missing_file(saved):
    with pytest.raises(SystemExit, match=r"fp_eval.py n:4 --split 200 --datasets Set5"):
        ptq_bench.saved_fp_scores("n", 4, ["Set5"], split=200)


def _result(run: str, datasets: list[str], inference: str = "split 200") -> dict:
    rows = [{"dataset": d, "psnr": 30.0, "ssim": 0.9} for d in datasets]
    return {"results": rows, "fp_results": rows, "eval_seconds": {d: 1.0 for d in datasets},
            "fp_eval_seconds": {d: 2.0 for d in datasets}, "inference": inference,
            "provenance": {"git_revision": "old"}, "resumed_from": {"run": run}}


@pytest.mark.parametrize("earlier_run, inference, kept", [
    ("/runs/a", "split 200", ["Set5", "Set14"]),  # same saved run, same inference: keep the sets not re-evaluated
    ("/runs/b", "split 200", []),  # another quantization: keep nothing
    ("/runs/a", "whole image", []),  # inferred another way: keep nothing
])
def test_resumed_run_keeps_earlier_rows(tmp_path, earlier_run, inference, kept):
    path = tmp_path / "r.json"
    path.write_text(json.dumps(_result(earlier_run, ["Set5", "Set14", "Urban100"], inference)))
    doc = _result("/runs/a", ["Urban100"])
    doc["results"][0]["psnr"] = 25.0
    ptq_bench.keep_earlier_rows(doc, path)
    assert [r["dataset"] for r in doc["results"]] == [*kept, "Urban100"]
    assert [r["dataset"] for r in doc["fp_results"]] == [*kept, "Urban100"]
    assert doc["results"][-1]["psnr"] == 25.0  # the new row wins
    assert sorted(doc["eval_seconds"]) == sorted([*kept, "Urban100"])
    assert ("earlier_rows" in doc) == bool(kept)


def test_saved_run_keeps_scores_and_resumes(data_root, tmp_path, monkeypatch):
    """A benchmark run saved with --save-dir keeps per-image scores; resuming reuses the run and its scores."""
    import srq

    monkeypatch.setenv("SRQ_DATA", str(data_root))  # CI may find the data next to the repository, not in $SRQ_DATA
    tiny = srq.create_model("srq_tiny", 4)
    monkeypatch.setattr(ptq_bench.srq, "create_model", lambda *a: tiny)
    calib = torch.rand(2, 3, 24, 24)
    fp = [ptq_bench.DatasetScore("Set5", 4)]
    doc, _ = ptq_bench.run("tiny", 4, "minmax", "w8a8", ["Set5"], calib, fp, out_dir=tmp_path, save_dir=tmp_path)
    log = tmp_path / "tiny_x4_minmax_w8a8" / "scores" / "Set5_x4.jsonl"
    assert len(log.read_text().splitlines()) == 6
    again, _ = ptq_bench.run("tiny", 4, "minmax", "w8a8", ["Set5"], calib, fp, out_dir=tmp_path, save_dir=tmp_path,
                             resume=True)
    scores = [(r["psnr"], r["ssim"], r["num_images"]) for r in doc["results"]]
    assert [(r["psnr"], r["ssim"], r["num_images"]) for r in again["results"]] == scores
    assert again["resumed_from"]["run"].endswith("tiny_x4_minmax_w8a8")
    assert len(log.read_text().splitlines()) == 6  # nothing was run again


def _gba_doc(method: str, bits: str, psnr: float) -> dict:
    sets = ["Set5", "Urban100"]
    return {"model": "m", "scale": 4, "method": method, "bits": bits, "quantize_seconds": 12.0,
            "results": [{"dataset": s, "psnr": psnr, "ssim": 0.8} for s in sets],
            "fp_results": [{"dataset": s, "psnr": 32.0, "ssim": 0.9} for s in sets],
            "cost": {"size_kb": 10.0, "bitops": 2e9, "fp32_size_kb": 80.0, "fp32_bitops": 64e9},
            "provenance": {"git_revision": f"{method}-0123456789"}}


def test_gba_paper_table_orders_rows_like_the_paper(tmp_path):
    """table.md: FP first, then the paper's method order (FT baselines from ../ptq), best PSNR in bold."""
    import gba_bench

    (tmp_path / "gba").mkdir()
    (tmp_path / "ptq").mkdir()
    for method, psnr in (("gba_star", 29.0), ("gba", 30.0), ("adabm", 28.0)):
        (tmp_path / "gba" / f"m_x4_{method}_w4a4.json").write_text(json.dumps(_gba_doc(method, "w4a4", psnr)))
    (tmp_path / "ptq" / "m_x4_minmax_ft_w4a4.json").write_text(json.dumps(_gba_doc("minmax_ft", "w4a4", 27.0)))
    (tmp_path / "ptq" / "m_x4_minmax_ft_w3a3.json").write_text(json.dumps(_gba_doc("minmax_ft", "w3a3", 20.0)))
    gba_bench.paper_table(tmp_path / "gba")
    lines = (tmp_path / "gba" / "table.md").read_text().splitlines()
    rows = [line.split(" | ")[0].lstrip("| ") for line in lines if line.startswith("| ") and "---" not in line]
    assert rows == ["method", "FP", "MinMax+FT", "AdaBM", "GBA", "GBA*"]  # no W3A3 block: GBA was not run there
    gba = next(line for line in lines if line.startswith("| GBA |"))
    assert "| 4 / 4MP | 12 | **30.00 / 0.8000** | **30.00 / 0.8000** |" in gba
    assert gba.endswith("| 10.0 | 2.0 | gba-012 |")  # size KB, BitOPs G, the revision that made the row
    assert "| 4MP / 4MP |" in next(line for line in lines if line.startswith("| GBA* |"))


def test_gba_paper_table_adds_ablation_blocks(tmp_path):
    """The issue's ablations (no DAN, wider candidates, fewer images) get their own block after the main tables."""
    import gba_bench

    (tmp_path / "gba").mkdir()
    for method, psnr in (("gba", 30.0), ("gba_dan-none", 28.0), ("gba_calib20", 29.5), ("gba_star", 30.5)):
        (tmp_path / "gba" / f"m_x4_{method}_w4a4.json").write_text(json.dumps(_gba_doc(method, "w4a4", psnr)))
    gba_bench.paper_table(tmp_path / "gba")
    text = (tmp_path / "gba" / "table.md").read_text()
    main, ablations = text.split("# Ablations")
    assert "no DAN" not in main and "| GBA* |" in main
    rows = [line.split(" | ")[0].lstrip("| ") for line in ablations.splitlines()
            if line.startswith("| ") and "---" not in line]
    assert rows == ["method", "GBA (DAN, {−1, 0, 1}, 100 images)", "no DAN", "20 calibration images"]  # no FP row
    assert "| **30.00 / 0.8000** |" in ablations  # bold: the best of the ablation block, not of the main table


@pytest.mark.parametrize("stem, key", [("imdn_x4_gba_w4a4", "imdn_x4|w4a4"),
                                       ("carn_m_x4_ptq4sr_wlr-0.01_w3a3", "carn_m_x4|w3a3"),
                                       ("mambairv2_light_x2_spr2q_w2a2", "mambairv2_light_x2|w2a2")])
def test_result_key_allows_underscores_in_model_names(stem, key):
    assert ptq_bench.result_key(Path(f"{stem}.json")) == key


@pytest.mark.parametrize("stem, tag", [("imdn_x4_gba_w4a4", "gba"),
                                       ("carn_m_x4_gba_star_alloclf10_w3a3", "gba_star_alloclf10"),
                                       ("mambairv2_light_x2_spr2q-n2_w2a2", "spr2q-n2")])
def test_result_tag_keeps_the_options_of_the_run(stem, tag):
    assert ptq_bench.result_tag(Path(f"{stem}.json")) == tag


def test_summary_labels_rows_by_file_tag(tmp_path):
    """summary.md names a row by its file's tag: a file renamed to a variant tag is not shown as the default."""
    doc = {**_gba_doc("gba", "w4a4", 30.0), "model": "m", "scale": 4, "fp_source": "saved",
           "eval_seconds": {}, "fp_eval_seconds": {}}
    (tmp_path / "m_x4_gba_alloclf10_w4a4.json").write_text(json.dumps(doc))
    ptq_bench.summary(tmp_path, "t", "n")
    assert "| m x4 | gba_alloclf10 | w4a4 |" in (tmp_path / "summary.md").read_text()


def test_runaway_summary_counts_non_finite_and_far_patches():
    import math

    import gba_runaway

    errors = [1.0] * 95 + [5e3, 2e10, math.inf, math.inf, 20.0]
    row = gba_runaway.summarise(errors)
    assert row["median_mse"] == 1.0 and row["non_finite"] == 2
    assert row["above_10x_median"] == 5 and row["above_1000x_median"] == 4
    assert row["largest_finite_ratios"][:3] == [2e10, 5e3, 20.0]
    assert row["share_of_stage3_batches_meeting_one"] == round(1 - 0.96 ** 2, 3)
    json.dumps(row, allow_nan=False)
    mostly_inf = gba_runaway.summarise([1.0, 2.0] + [math.inf] * 3)
    assert mostly_inf["median_mse"] is None and mostly_inf["above_1000x_median"] == 3


def test_pinned_revision_outlives_later_commits(monkeypatch):
    """A long run names the revision it started at, even when HEAD moves before it writes its results."""
    from srq.engine import results

    revisions = iter(["a" * 40, "b" * 40])
    monkeypatch.setattr(results, "_git_revision", lambda: next(revisions))
    monkeypatch.setattr(results, "_PINNED_REVISION", None)
    assert results.pin_git_revision() == "a" * 40
    assert results.provenance(["x"])["git_revision"] == "a" * 40  # not "b…": HEAD is not read again


def test_script_user_error_is_one_line_and_exit_2(capsys):
    from srq.errors import SrqError, exit_on_user_error

    def main():
        raise SrqError("calibration set 'X' not found: point SRQ_DATA at your data")

    with pytest.raises(SystemExit) as e:
        exit_on_user_error(main)
    assert e.value.code == 2
    assert capsys.readouterr().err == "error: calibration set 'X' not found: point SRQ_DATA at your data\n"


def test_scripts_refuse_a_dirty_tree_unless_allowed(monkeypatch, capsys):
    """Committed results name a clean revision: a script started on uncommitted changes stops before any work."""
    from srq.engine import results

    ran = []
    monkeypatch.setattr(results, "_git_revision", lambda: "c" * 40 + "-dirty")
    monkeypatch.delenv("SRQ_ALLOW_DIRTY", raising=False)
    with pytest.raises(SystemExit) as exit_info:
        results.run_script(lambda: ran.append(1))
    assert exit_info.value.code == 2 and not ran and "uncommitted changes" in capsys.readouterr().err
    monkeypatch.setenv("SRQ_ALLOW_DIRTY", "1")
    results.run_script(lambda: ran.append(1))
    assert ran == [1] and results.provenance(["x"])["git_revision"].endswith("-dirty")


def test_calibration_source_and_patch_size_are_named_in_the_tag(monkeypatch):
    """A row calibrated on other inputs never overwrites the committed row of the default inputs."""
    import argparse

    monkeypatch.setattr(ptq_bench, "calibration_set", lambda *a, patch, n, scale: torch.zeros(n, 3, patch, patch))
    args = argparse.Namespace(calib=ptq_bench.DEFAULT_CALIB, calib_n=4, scale=2)
    assert ptq_bench.calib_data(args, 192, 192)[2] == ""
    assert ptq_bench.calib_data(args, 160, 192)[2] == "patch160"
    args.calib = "hr:train/BSD200,train/T91"
    calib, record, tag = ptq_bench.calib_data(args, 160, 192)
    assert tag == "calib-hr_patch160" and calib.shape == (4, 3, 160, 160)
    assert record == {"set": args.calib, "images": 4, "patch": 160, "lr_made_at_scale": 2}


def test_a_result_name_taken_by_another_recipe_gets_the_recipe_hash(tmp_path):
    """Names are built from the options given: after a default changes, the same options are another recipe, and
    its row must neither overwrite the old file nor resume the old run folder."""
    results, runs = tmp_path / "results", tmp_path / "runs"
    results.mkdir()
    assert ptq_bench.distinct_tag("imdn_x4", "lsq", "w4a4", "aaaa1111", [results, runs]) == "lsq"  # nothing there
    (results / "imdn_x4_lsq_w4a4.json").write_text(json.dumps({"recipe_hash": "aaaa1111"}))
    assert ptq_bench.distinct_tag("imdn_x4", "lsq", "w4a4", "aaaa1111", [results, runs]) == "lsq"  # same recipe
    assert ptq_bench.distinct_tag("imdn_x4", "lsq", "w4a4", "bbbb2222", [results, runs]) == "lsq-bbbb2222"
    recipe = {"method": "pams", "train": {"lr": 0.0005, "milestones": [0.5, 0.75]}}
    work = runs / "imdn_x4_pams_w2a2" / ptq_bench.WORK_AREA
    work.mkdir(parents=True)
    (work / "fingerprint.json").write_text(json.dumps({"model": "imdn", "recipe": recipe}))  # an unfinished run
    same = srq.pipeline.recipe_hash(recipe)
    real = srq.methods.PAMS(w_bits=2, a_bits=2)  # a recipe read back from JSON hashes as the recipe itself
    assert srq.pipeline.recipe_hash(json.loads(json.dumps(real.to_dict()))) == srq.pipeline.recipe_hash(real)
    assert ptq_bench.distinct_tag("imdn_x4", "pams", "w2a2", same, [results, runs]) == "pams"
    assert ptq_bench.distinct_tag("imdn_x4", "pams", "w2a2", "cccc3333", [results, runs]) == "pams-cccc3333"
    assert ptq_bench.result_key(Path("imdn_x4_lsq-bbbb2222_w4a4.json")) == "imdn_x4|w4a4"
