"""srq.pipeline.run: the one path from float model to run folder and scores (used by the CLI and the benchmarks)."""

from __future__ import annotations

import json

import pytest
import torch

import srq
from srq import pipeline
from srq.data import write_image
from srq.data.samples import sample_calibration, sample_images
from srq.methods import GBA, MinMax, Percentile


@pytest.fixture(scope="module")
def tiny():
    return srq.create_model("srq_tiny", 4, "official"), sample_calibration(4)


def test_run_saves_every_artefact_and_reloads_bit_identically(tiny, tmp_path):
    fp, calib = tiny
    made = pipeline.run(fp, MinMax(w_bits=4, a_bits=4), calib, name="srq_tiny", scale=4, output=tmp_path / "run",
                        calibration={"set": "skimage"}, progress=False)
    assert made.folder == tmp_path / "run" and made.scores == []
    assert sorted(p.name for p in made.folder.iterdir()) == ["model.safetensors", "placement.txt", "srq.json"]
    meta = json.loads((made.folder / "srq.json").read_text())
    assert meta["recipe_hash"] == pipeline.recipe_hash(MinMax(w_bits=4, a_bits=4))
    assert meta["calibration"] == {"set": "skimage", "sha256": pipeline.tensor_sha256(calib)}
    assert meta["cost"]["size_kb"] == pytest.approx(made.cost.size_kb)
    assert meta["quantize_seconds"] == made.quantize_seconds > 0
    x = torch.rand(1, 3, 24, 24)
    with torch.no_grad():
        assert torch.equal(srq.load(made.folder)(x), made.model(x))
    assert made.summary.startswith("srq_tiny x4 minmax w4a4: ")


def test_run_scores_the_model_it_made(tiny, tmp_path):
    fp, calib = tiny
    for name, img in sample_images("test")[:2]:
        write_image(tmp_path / f"{name}.png", img)
    made = pipeline.run(fp, Percentile(w_bits=8, a_bits=8), calib, name="srq_tiny", scale=4,
                        datasets=[str(tmp_path)], progress=False)
    assert made.folder is None and len(made.scores) == 1
    assert 20 < made.scores[0].psnr < 40


def test_recipe_hash_follows_every_field():
    assert pipeline.recipe_hash(MinMax(w_bits=4, a_bits=4)) == pipeline.recipe_hash(MinMax(w_bits=4, a_bits=4))
    assert pipeline.recipe_hash(MinMax(w_bits=4, a_bits=4)) != pipeline.recipe_hash(MinMax(w_bits=4, a_bits=3))
    assert pipeline.recipe_hash(MinMax()) != pipeline.recipe_hash(Percentile())
    base = GBA(w_bits=4, a_bits=4)
    changed = srq.methods.base.apply_params(base, ["alloc.lambda_feat=10"])
    assert pipeline.recipe_hash(base) != pipeline.recipe_hash(changed)
    assert len(pipeline.recipe_hash(base)) == 8


def test_feature_loss_blocks_are_recorded_and_printed_only_where_the_recipe_uses_them(tiny):
    fp, calib = tiny
    short = srq.engine.distill.FinetuneConfig(steps=1)
    tuned = pipeline.run(fp, Percentile(w_bits=4, a_bits=4, fine_tune=True, finetune_config=short), calib[:2],
                         name="srq_tiny", scale=4, progress=False)
    blocks = tuned.record["blocks"]
    assert blocks and blocks == pipeline.resolve_blocks(fp, None, calib[:1])
    assert f"feature-loss blocks ({len(blocks)}; set with -p blocks=REGEX): {', '.join(blocks)}" \
        in tuned.files["placement.txt"]
    plain = pipeline.run(fp, Percentile(w_bits=4, a_bits=4), calib[:2], name="srq_tiny", scale=4, progress=False)
    assert "blocks" not in plain.record and "feature-loss blocks" not in plain.files["placement.txt"]
