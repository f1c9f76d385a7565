"""The evaluation runner on real weights and images: the protocol reproduces published numbers."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import srq
from srq.data import SRBenchmark
from srq.engine.evaluate import evaluate
from srq.engine.inference import super_resolve


def test_imdn_x4_set5_reproduces_published(data_root, weights_dir):
    """IMDN x4 on Set5: published 32.21 dB / 0.8948 (Hui et al. 2019, Table 3)."""
    model = srq.create_model("imdn", 4, weights_dir / "imdn_x4.pth")
    (score,) = evaluate(model, ["Set5"], 4, data_root=data_root, progress=False)
    assert len(score.images) == 5
    assert score.psnr == pytest.approx(32.21, abs=0.015)
    assert score.ssim == pytest.approx(0.8948, abs=0.0005)


def test_tiled_matches_untiled(data_root, weights_dir):
    """Set averages agree within 0.01 dB. Not bit-exact: IMDN's channel attention pools over each tile."""
    model = srq.create_model("imdn", 4, weights_dir / "imdn_x4.pth")
    (whole,) = evaluate(model, ["Set5"], 4, data_root=data_root, progress=False)
    (tiled,) = evaluate(model, ["Set5"], 4, data_root=data_root, progress=False, tile=64, overlap=32)
    assert abs(tiled.psnr - whole.psnr) < 0.01
    assert abs(tiled.ssim - whole.ssim) < 0.0005


def test_tiling_is_exact_for_a_local_model(data_root):
    model = srq.create_model("bicubic", 2)
    _, lr, _ = SRBenchmark("Set5", 2, data_root=data_root)[0]
    assert np.array_equal(super_resolve(model, lr, 2, tile=40, overlap=4), super_resolve(model, lr, 2))


def test_scores_round_trip_through_their_dict(data_root):
    """A results file's per-set entry rebuilds the same scores (benchmarks reuse saved FP scores this way)."""
    from srq.engine.evaluate import DatasetScore

    (score,) = evaluate(srq.create_model("bicubic", 4), ["Set5"], 4, data_root=data_root, progress=False)
    again = DatasetScore.from_dict(score.to_dict())
    assert again == score and again.psnr == score.psnr and again.to_dict() == score.to_dict()


class _Recorder(torch.nn.Module):
    """Nearest-neighbour x2 upsampling that records the size of every input it sees."""

    def __init__(self) -> None:
        super().__init__()
        self.sizes: list[tuple[int, int]] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.sizes.append(tuple(x.shape[-2:]))
        return x.repeat_interleave(2, dim=-2).repeat_interleave(2, dim=-1)


def test_split_inference_cuts_parts_like_the_official_mambair_test():
    """421×233 LR, split 200: 3×2 parts after reflect padding to 423×234; cores 141×117, a tenth as context."""
    lr = np.random.default_rng(0).integers(0, 256, (421, 233, 3), dtype=np.uint8)
    model = _Recorder()
    out = super_resolve(model, lr, 2, split=200)
    assert model.sizes == [(155, 128), (155, 128), (169, 128), (169, 128), (155, 128), (155, 128)]
    assert np.array_equal(out, lr.repeat(2, axis=0).repeat(2, axis=1))  # a local model: exact
    with pytest.raises(ValueError, match="either tile or split"):
        super_resolve(model, lr, 2, tile=64, split=200)


def test_score_log_resumes_an_interrupted_evaluation(data_root, tmp_path):
    """Images already in the score log are not run again; the set's scores equal an uninterrupted run's."""
    from srq.engine.evaluate import score_log_path

    (whole,) = evaluate(_Recorder(), ["Set5"], 2, data_root=data_root, progress=False)
    log = score_log_path(tmp_path, "Set5", 2)
    model = _Recorder()
    evaluate(model, ["Set5"], 2, data_root=data_root, progress=False, score_logs=tmp_path)
    assert len(model.sizes) == 5 and len(log.read_text().splitlines()) == 6  # header + one line per image
    lines = log.read_text().splitlines()
    log.write_text("\n".join(lines[:3]) + '\n{"index": 2, "na')  # killed after two images, mid-write
    model = _Recorder()
    (resumed,) = evaluate(model, ["Set5"], 2, data_root=data_root, progress=False, score_logs=tmp_path)
    assert len(model.sizes) == 3  # images 2, 3, 4
    assert [i.name for i in resumed.images] == [i.name for i in whole.images]
    assert [(i.psnr, i.ssim) for i in resumed.images] == [(i.psnr, i.ssim) for i in whole.images]
    assert log.read_text().splitlines()[1:] == lines[1:3] + log.read_text().splitlines()[3:]  # torn line dropped


def test_score_log_of_another_inference_is_not_reused(data_root, tmp_path):
    from srq.engine.evaluate import ScoreLog, score_log_path

    evaluate(_Recorder(), ["Set5"], 2, data_root=data_root, progress=False, score_logs=tmp_path)
    log = score_log_path(tmp_path, "Set5", 2)
    header = json.loads(log.read_text().splitlines()[0])
    assert header == {"dataset": "Set5", "scale": 2, "images": 5, "tile": None, "overlap": None, "split": None,
                      "y_channel": True}
    assert len(ScoreLog(log, {**header, "split": 200}).done) == 0  # other settings: started afresh
    assert log.read_text().splitlines() == [json.dumps({**header, "split": 200})]
    assert score_log_path(tmp_path, "Set5", 2, split=200).name == "Set5_x2_split200.jsonl"
