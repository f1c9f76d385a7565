"""Never worse, never silent: a training stage that does not lower its objective keeps its start and says so,
and a quantized model that no longer follows its FP model is flagged with its worst layers."""

from __future__ import annotations

import warnings

import pytest
import torch

import srq
from srq.engine.blocks import find_blocks
from srq.engine.collapse import collapse_check, collapse_warning
from srq.engine.distill import FinetuneConfig, calibration_objective, finetune
from srq.quant import quantizers


@pytest.fixture(scope="module")
def tiny():
    fp = srq.create_model("srq_tiny", 4, "official")
    calib = torch.rand(4, 3, 12, 12, generator=torch.Generator().manual_seed(0))
    return fp, calib


def _quantized(tiny, bits=4):
    fp, calib = tiny
    return srq.quantize(fp, srq.methods.MinMax(w_bits=bits, a_bits=bits), calib, progress=False)


def test_finetune_that_makes_things_worse_keeps_the_start_and_warns(tiny):
    fp, calib = tiny
    q = _quantized(tiny)
    params = [p for _, m in quantizers(q) for p in m.parameters()]
    start = [p.detach().clone() for p in params]
    config = FinetuneConfig(lr=50.0, optimizer="sgd", steps=3, batch=2)  # a learning rate that wrecks the bounds
    stats: dict = {}
    with pytest.warns(UserWarning, match=r"fine-tuning made the model worse on its calibration objective "
                                         r"\([\d.e-]+ → .+\); kept the state before fine-tuning"):
        finetune(q, fp, calib, params, config, progress=False, stats=stats)
    assert stats["kept"] == "start"
    assert stats["objective_after"] is None or stats["objective_after"] > stats["objective_before"]
    assert all(torch.equal(p, s) for p, s in zip(params, start))
    again = calibration_objective(q, fp, calib, find_blocks(fp), config)
    assert again == pytest.approx(stats["objective_before"], rel=1e-5)


def test_finetune_that_helps_keeps_the_trained_state_quietly(tiny):
    fp, calib = tiny
    q = _quantized(tiny, bits=3)
    params = [p for _, m in quantizers(q) for p in m.parameters()]
    stats: dict = {}
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        finetune(q, fp, calib, params, FinetuneConfig(lr=1e-3, steps=4, batch=2, lambda_feat=0.0),
                 progress=False, stats=stats)
    assert stats["kept"] == "trained" and stats["objective_after"] <= stats["objective_before"]


def test_collapse_check_passes_a_working_model(tiny):
    fp, calib = tiny
    result = collapse_check(_quantized(tiny, bits=8), fp, calib)
    assert not result["collapsed"] and result["psnr_vs_fp_db"] > 30 and "worst_layers" not in result
    assert collapse_warning(result) is None


def test_collapse_check_flags_a_collapse_and_names_the_worst_layer(tiny):
    fp, calib = tiny
    q = _quantized(tiny, bits=8)
    wq = q.get_submodule("head").weight_quantizer
    with torch.no_grad():
        wq.set_bounds(torch.full((1,), -1e-4), torch.full((1,), 1e-4))  # every weight clipped to ±1e-4: broken
    before = [m.enabled for _, m in quantizers(q)]
    result = collapse_check(q, fp, calib)
    assert result["collapsed"] and result["psnr_vs_fp_db"] < 20
    assert result["worst_layers"][0]["layer"] == "head"
    assert [m.enabled for _, m in quantizers(q)] == before
    assert "has collapsed" in collapse_warning(result) and "head" in collapse_warning(result)


def test_pipeline_records_the_collapse_check_and_the_blocks(tiny):
    fp, calib = tiny
    made = srq.pipeline.run(fp, srq.methods.Percentile(w_bits=8, a_bits=8), calib, name="srq_tiny", scale=4,
                            progress=False)
    assert made.record["collapse_check"]["collapsed"] is False
    assert "blocks" not in made.record  # no feature loss: nothing to record
    tuned = srq.pipeline.run(fp, srq.methods.Percentile(w_bits=8, a_bits=8, fine_tune=True,
                                                        finetune_config=FinetuneConfig(steps=1)),
                             calib, name="srq_tiny", scale=4, progress=False)
    assert tuned.record["blocks"] == [f"body.{i}" for i in range(4)]
    plain = srq.pipeline.run(fp, srq.methods.GBA(blocks=r"body\.[23]", init_epochs=1, alloc=FinetuneConfig(
        steps=1, lambda_feat=0.0), finetune_config=FinetuneConfig(steps=1)), calib, name="srq_tiny", scale=4,
        progress=False)
    assert plain.record["blocks"] == ["body.2", "body.3"]
