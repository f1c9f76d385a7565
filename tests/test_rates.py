"""Learning rates in pixel units (srq.engine.rates): a [0, 255] model's activation quantizers train at lr × 255."""

from __future__ import annotations

import copy

import pytest
import torch

import srq
from srq.data.samples import sample_calibration
from srq.data.training import TrainingSet
from srq.engine.distill import FinetuneConfig, finetune
from srq.engine.qat import QATConfig, train_qat
from srq.engine.rates import pixel_scaled_groups, pixel_unit_parameters
from srq.methods import LSQ, PAMS, LSQPlus, MinMax, QMambaIR
from srq.quant import calibrate, quantizers


@pytest.fixture(scope="module")
def fp():
    return srq.create_model("srq_tiny", 4, "official")


def _split(q):
    quant = [p for _, m in quantizers(q) for p in m.parameters()]
    return [p for p in q.parameters() if all(p is not t for t in quant)], quant


def test_activation_quantizers_of_a_255_model_train_at_quant_lr_times_the_range(fp):
    """Steps, offsets and clipping values of activations are in pixel units: ×255 for a [0, 255] model; weight
    quantizers, unitless parameters (DLS's coefficients) and the weights keep their rates."""
    calib = sample_calibration(4)[:2]
    wrapped = srq.models.wrap(copy.deepcopy(fp), pixel_range=255)
    for recipe in (LSQ(w_bits=4, a_bits=4), LSQPlus(w_bits=4, a_bits=4), PAMS(w_bits=4, a_bits=4), QMambaIR()):
        for model, unit in ((fp, 1.0), (wrapped, 255.0)):
            q = recipe.prepare(model, calib[:1])
            weights, quant = _split(q)
            act = pixel_unit_parameters(q)
            names = {n for _, m in quantizers(q) if m.batch_axis is not None
                     for n, p in m.named_parameters() if id(p) in act}
            assert names == {LSQ: {"step"}, LSQPlus: {"step", "offset"}, PAMS: {"alpha"},
                             QMambaIR: {"step", "offset"}}[type(recipe)]  # Q-MambaIR: its static LSQ+ ones, not DLS
            for scale in ("pixel_range", "none"):
                groups = pixel_scaled_groups(q, [{"params": weights, "lr": 1e-4}, {"params": quant, "lr": 1e-3}],
                                             1e-4, scale)
                rate = {id(p): g["lr"] for g in groups for p in g["params"]}
                assert sorted(rate) == sorted(id(p) for p in [*weights, *quant])  # each once
                assert all(rate[id(p)] == 1e-4 for p in weights)
                k = unit if scale == "pixel_range" else 1.0
                assert all(rate[id(p)] == pytest.approx(1e-3 * (k if id(p) in act else 1.0)) for p in quant)


def _moves(before, params):
    return [float((p.detach() - b).abs().max()) for p, b in zip(params, before)]


def test_one_adam_step_moves_a_255_models_activation_steps_255_times_further(fp, hr_folder):
    """From the same state and batch, Adam's first step is rate × g/(|g| + ε): activation steps move 255× as far
    with ``act_lr_scale="pixel_range"`` as with ``"none"``, the weight quantizers' steps and the weights as far."""
    calib = sample_calibration(4)[:2]
    moves = {}
    for scale in ("pixel_range", "none"):
        q = LSQ(w_bits=4, a_bits=4).prepare(srq.models.wrap(copy.deepcopy(fp), pixel_range=255), calib[:1])
        calibrate(q, [calib], progress=False)
        weights, quant = _split(q)
        in_units = pixel_unit_parameters(q)
        act = [p for p in quant if id(p) in in_units]
        rest = [p for p in q.parameters() if id(p) not in in_units]
        before = [p.detach().clone() for p in act + rest]
        train_qat(q, None, TrainingSet(hr_folder, 4, 32, seed=0),
                  QATConfig(iterations=1, batch=2, hr_patch=32, lr=1e-4, quant_lr=1e-3, keep="last",
                            act_lr_scale=scale), weights=weights, quant_params=quant, progress=False)
        moved = _moves(before, act + rest)
        moves[scale] = torch.tensor(moved[:len(act)]), torch.tensor(moved[len(act):])
    (act_scaled, rest_scaled), (act_plain, rest_plain) = moves["pixel_range"], moves["none"]
    assert (act_plain > 0).sum() >= len(act_plain) // 2
    assert torch.allclose(act_scaled, 255 * act_plain, rtol=1e-3, atol=1e-7)
    assert torch.allclose(rest_scaled, rest_plain, rtol=1e-4, atol=1e-9) and rest_plain.max() > 0


def test_bound_fine_tuning_scales_a_255_models_activation_bounds_too(fp):
    calib = sample_calibration(4)[:4]
    moves = {}
    for scale in ("pixel_range", "none"):
        q = MinMax(w_bits=4, a_bits=4).prepare(srq.models.wrap(copy.deepcopy(fp), pixel_range=255), calib[:1])
        calibrate(q, [calib], progress=False)
        act = [p for _, m in quantizers(q) if m.batch_axis is not None for p in m.parameters()]
        before = [p.detach().clone() for p in act]
        finetune(q, srq.models.wrap(copy.deepcopy(fp), pixel_range=255), calib, act,
                 FinetuneConfig(lr=0.01, steps=1, batch=2, lambda_feat=0.0, act_lr_scale=scale), progress=False,
                 guard=False)
        moves[scale] = torch.tensor(_moves(before, act))
    assert (moves["none"] > 0).any()
    assert torch.allclose(moves["pixel_range"], 255 * moves["none"], rtol=1e-2, atol=1e-6)  # bounds ~100: float32


def test_spr2q_passes_its_rate_choice_to_bound_fine_tuning():
    from srq.errors import ConfigError
    from srq.methods import SPR2Q

    assert SPR2Q()._stage_config(5).act_lr_scale == "none"  # × 255 diverged on RLFN (docs/methods.md)
    assert SPR2Q(act_lr_scale="pixel_range")._stage_config(5).act_lr_scale == "pixel_range"
    with pytest.raises(ConfigError, match="act_lr_scale"):
        SPR2Q(act_lr_scale="pixels")


def test_gba_fine_tunes_bounds_at_its_own_rate_unless_asked():
    from srq.methods import GBA
    from srq.methods.base import apply_params

    assert GBA().finetune_config.act_lr_scale == "none"  # × 255 diverged on RLFN x4 W4A4 (docs/methods.md)
    assert apply_params(GBA(), ["finetune_config.act_lr_scale=pixel_range"]).finetune_config.act_lr_scale \
        == "pixel_range"
