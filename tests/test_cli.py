"""The command line: real runs on tiny inputs, and one-line errors with exit code 2 for user mistakes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image


def srq(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    full_env = {**os.environ, "COLUMNS": "200", **(env or {})}
    return subprocess.run([sys.executable, "-m", "srq.cli", *args], capture_output=True, text=True,
                          env=full_env, timeout=300)


def assert_one_line_error(proc: subprocess.CompletedProcess, *fragments: str) -> None:
    assert proc.returncode == 2, proc.stderr
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:"), proc.stderr
    for frag in fragments:
        assert frag in lines[0], lines[0]
    assert "Traceback" not in proc.stderr


@pytest.fixture
def tiny_set(tmp_path: Path) -> Path:
    folder = tmp_path / "MySet"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(2):
        Image.fromarray(rng.integers(0, 256, (40, 48, 3), dtype=np.uint8)).save(folder / f"img{i}.png")
    return folder


def test_unknown_model():
    assert_one_line_error(srq("eval", "imdnn", "--scale", "4"), "unknown model 'imdnn'", "srq models")


def test_unsupported_scale():
    assert_one_line_error(srq("eval", "rfdn", "--scale", "2"), "supports scales 4", "--scale")


def test_wrong_scale_checkpoint(weights_dir, tiny_set, tmp_path):
    out = tmp_path / "res.json"
    proc = srq("eval", "imdn", "--scale", "4", "--weights", str(weights_dir / "imdn_x2.pth"),
               "--datasets", str(tiny_set), "-o", str(out))
    assert_one_line_error(proc, "imdn_x2.pth does not fit imdn x4", "shape mismatch", "--scale")
    assert not out.exists()


def test_wrong_architecture_checkpoint(weights_dir, tiny_set):
    proc = srq("eval", "rlfn", "--scale", "4", "--weights", str(weights_dir / "imdn_x4.pth"),
               "--datasets", str(tiny_set))
    assert_one_line_error(proc, "does not fit rlfn x4", "different architecture")


def test_missing_dataset_folder(tmp_path):
    proc = srq("eval", "bicubic", "--scale", "2", "--datasets", str(tmp_path / "nowhere"))
    assert_one_line_error(proc, "does not exist")
    proc = srq("eval", "bicubic", "--scale", "2", "--datasets", "Set5", env={"SRQ_DATA": str(tmp_path)})
    assert_one_line_error(proc, "Set5 not found", "SRQ_DATA", "srq download")


def test_corrupt_image_fails_cleanly_and_writes_nothing(tiny_set, tmp_path):
    (tiny_set / "img9.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    out = tmp_path / "res.json"
    assert_one_line_error(srq("eval", "bicubic", "--scale", "2", "--datasets", str(tiny_set), "-o", str(out)),
                          "cannot read image", "img9.png")
    assert not out.exists()
    target = tmp_path / "up.png"
    assert_one_line_error(srq("upscale", "bicubic", str(tiny_set / "img9.png"), str(target), "--scale", "2"),
                          "cannot read image")
    assert not target.exists() and not list(tmp_path.glob(".up.png*"))


def test_bad_results_suffix_fails_before_work(tiny_set, tmp_path):
    assert_one_line_error(srq("eval", "bicubic", "--scale", "2", "--datasets", str(tiny_set), "-o",
                              str(tmp_path / "r.txt")), ".json or .csv")


def test_eval_writes_json_and_csv(tiny_set, tmp_path):
    for suffix in (".json", ".csv"):
        out = tmp_path / f"res{suffix}"
        proc = srq("eval", "bicubic", "--scale", "2", "--datasets", str(tiny_set), "-o", str(out),
                   "--save-images", str(tmp_path / "sr"))
        assert proc.returncode == 0, proc.stderr
        assert "MySet" in proc.stdout
    doc = json.loads((tmp_path / "res.json").read_text())
    assert doc["model"] == "bicubic" and doc["results"][0]["num_images"] == 2
    assert doc["provenance"]["command"].startswith("srq eval bicubic --scale 2")
    assert "git_revision" in doc["provenance"] and doc["provenance"]["machine"]["cpu_count"]
    assert sorted(p.name for p in (tmp_path / "sr" / "MySet").iterdir()) == ["img0_x2.png", "img1_x2.png"]
    assert (tmp_path / "res.csv").read_text().splitlines()[0].startswith("model,")


def test_models_lists_zoo():
    proc = srq("models")
    assert proc.returncode == 0, proc.stderr
    for name in ("imdn", "carn_m", "fsrcnn", "edsr", "srq_tiny", "bicubic"):
        assert name in proc.stdout


@pytest.fixture
def calib_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "calib"
    folder.mkdir()
    rng = np.random.default_rng(1)
    for i in range(3):
        Image.fromarray(rng.integers(0, 256, (40, 40, 3), dtype=np.uint8)).save(folder / f"c{i}.png")
    return folder


def test_quantize_then_eval_run_folder(calib_dir, tiny_set, tmp_path):
    run = tmp_path / "run"
    proc = srq("quantize", "srq_tiny", "--scale", "4", "--bits", "w6a6", "--calib", str(calib_dir),
               "--calib-n", "3", "--patch", "24", "--show-placement", "-o", str(run))
    assert proc.returncode == 0, proc.stderr
    assert "head" in proc.stdout and "first" in proc.stdout  # the placement table
    assert {p.name for p in run.iterdir()} >= {"model.safetensors", "srq.json", "placement.txt"}
    meta = json.loads((run / "srq.json").read_text())
    assert meta["cost"]["bitops"] < meta["cost"]["fp32_bitops"]
    proc = srq("eval", str(run), "--datasets", str(tiny_set), "-o", str(tmp_path / "q.json"))
    assert proc.returncode == 0, proc.stderr
    assert json.loads((tmp_path / "q.json").read_text())["recipe"]["w_bits"] == 6


def test_quantize_gba_writes_and_prints_the_bit_map(calib_dir, tmp_path):
    run = tmp_path / "run"
    proc = srq("quantize", "srq_tiny", "--scale", "4", "--bits", "w4a4", "--method", "gba_star", "--calib",
               str(calib_dir), "--calib-n", "3", "--patch", "24", "-o", str(run))
    assert proc.returncode == 0, proc.stderr
    assert "average activations bits" in proc.stdout and "average weights bits" in proc.stdout
    assert (run / "bitmap.txt").read_text().startswith("layer")
    assert (run / "bitmap.svg").read_text().startswith("<svg")
    meta = json.loads((run / "srq.json").read_text())
    assert meta["report"]["a"]["average_bits"] <= 4 + 1e-9


def test_quantize_spr2q_with_a_reduced_budget_writes_a_plain_quantized_run(calib_dir, tmp_path):
    run = tmp_path / "run"
    proc = srq("quantize", "srq_tiny", "--scale", "4", "--bits", "w2a2", "--method", "spr2q", "-p", "iterations=3",
               "-p", "osrc_iterations=2", "-p", "batch=2", "-p", "group_size=2", "--calib", str(calib_dir),
               "--calib-n", "3", "--patch", "24", "-o", str(run))
    assert proc.returncode == 0, proc.stderr
    meta = json.loads((run / "srq.json").read_text())
    assert meta["recipe"]["iterations"] == 3 and meta["recipe"]["group_size"] == 2
    assert all(len(g) == 2 for g in meta["report"]["routing"].values())
    table = (run / "routing.txt").read_text()
    assert table.startswith("layer") and "g2" in table and "stage seconds" in table and "head" in proc.stdout


@pytest.mark.parametrize("args, fragment", [
    (["--bits", "w9a4"], "from 1 to 8"),
    (["--bits", "w0a0"], "from 1 to 8"),
    (["--bits", "four"], "w4a4"),
    (["--method", "magic"], "unknown method"),
    (["--first-last", "16bit"], "first_last must be one of"),
    (["--method", "spr2q", "-p", "iters=5"], "key one of rank, group_size"),
    (["--method", "spr2q", "-p", "iterations=1.5"], "does not fit"),
    (["--method", "spr2q", "-p", "rank=-1"], "rank must be"),
])
def test_quantize_bad_options_fail_early(calib_dir, tmp_path, args, fragment):
    proc = srq("quantize", "srq_tiny", "--scale", "4", "--calib", str(calib_dir), *args, "-o", str(tmp_path / "r"))
    assert_one_line_error(proc, fragment)
    assert not (tmp_path / "r").exists()


def test_quantize_rule_matching_nothing_and_empty_calibration(calib_dir, tmp_path):
    rules = tmp_path / "rules.json"
    rules.write_text(json.dumps([{"pattern": "no_such_layer.*", "w_bits": 8}]))
    assert_one_line_error(srq("quantize", "srq_tiny", "--scale", "4", "--calib", str(calib_dir), "--config",
                              str(rules), "--patch", "24", "-o", str(tmp_path / "r")), "matches no layer")
    empty = tmp_path / "empty"
    empty.mkdir()
    assert_one_line_error(srq("quantize", "srq_tiny", "--scale", "4", "--calib", str(empty), "-o",
                              str(tmp_path / "r")), "has no images")
    assert not (tmp_path / "r").exists()
