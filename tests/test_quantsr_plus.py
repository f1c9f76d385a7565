"""QuantSR+ (srq.methods.quantsr_plus): RBD against hand-computed values and integer deployment, the shortcut-scale
wrapper as the identity at init, QSA's slimmed structure (parameters, cost, save/load), SFD's segment targets, the
phase schedule, and short end-to-end runs (srq_tiny; IMDN x4 when its weights are at hand)."""

from __future__ import annotations

import copy
import json
import math

import pytest
import torch
from torch import nn

import srq
from srq.data.samples import sample_calibration
from srq.engine.qat import QATConfig
from srq.engine.shortcut_scale import (GAMMA, add_shortcut_scale, add_shortcut_scales, is_shortcut_scaled,
                                      shortcut_gammas)
from srq.engine.slimming import RemovedBlock, apply_structure, plan_removals, remove_blocks, segment_ends
from srq.errors import SrqError
from srq.methods import QMambaIR, QuantSR, QuantSRPlus, get_method
from srq.methods.base import Recipe, apply_params
from srq.methods.quantsr_plus import phase_bounds, phase_config
from srq.paths import weights_root
from srq.quant import Quantizer, calibrate, prepare
from srq.quant.cost import model_cost
from srq.quant.grids.rbd import (BIT_MARGIN, RBDGrid, initial_thresholds, level_thresholds, rbd_bits)


# ---- RBD ----------------------------------------------------------------------------------------------------------

def test_rbd_forward_and_backward_match_hand_computed_values():
    """2 bits, step 1, thresholds t = (0.3, 1.8): boundaries T = (0.3, 1.8, 2.3) on u = w + 2; σ′(v) = 4(1 −
    tanh²(4v))/(2 tanh 2) within ½ of a boundary (1.99381 at v = ±0.05, 1.77513 at ±0.1, 0.31229 at ±0.4)."""
    x = torch.tensor([-2.5, -1.75, -0.1, 0.2, 0.35, 1.7], dtype=torch.float64, requires_grad=True)
    step = torch.tensor(1.0, dtype=torch.float64, requires_grad=True)
    t = torch.tensor([0.3, 1.8], dtype=torch.float64, requires_grad=True)
    q = RBDGrid().quantize(x, {"step": step, "thresholds": t}, 2, torch.round)
    assert q.tolist() == [-2, -2, 0, 0, 1, 1]  # u = 0 (clipped), 0.25, 1.9, 2.2, 2.35, 3 (clipped)
    q.sum().backward()
    a, b, c = 1.993808066965334, 1.7751334168549109, 0.3122879032287588
    assert torch.allclose(x.grad, torch.tensor([0, a, b + c, c + b, a, 0], dtype=torch.float64))
    d = 4 * (1 - math.tanh(4 * -0.3) ** 2) / (2 * math.tanh(2))  # σ′(0 − T₁): the clipped u = 0 still sees T₁
    assert torch.allclose(t.grad, torch.tensor([-(d + a + c + b + a), -(b + c)], dtype=torch.float64))  # T₁,T₃ | T₂
    ds = -2 + (-2 + 1.75 * a) + 0.1 * (b + c) + (0 - 0.2 * (b + c)) + (1 - 0.35 * a) + 1  # (q − h) − z·Σσ′
    assert math.isclose(step.grad.item(), ds / math.sqrt(6 * 1), rel_tol=1e-9)  # LSQ grad scale 1/√(N·Qp)


@pytest.mark.parametrize("bits", [2, 3, 4])
def test_rbd_at_init_is_round_to_nearest_and_bit_planes_equal_the_level_count(bits):
    torch.manual_seed(bits)
    half = 2 ** (bits - 1)
    x = torch.randn(4000) * half
    q = RBDGrid().quantize_fwd(x, {"step": torch.tensor(1.0), "thresholds": initial_thresholds(bits)}, bits)
    u = torch.clamp(x + half, 0, 2**bits - 1)
    assert torch.equal(q + half, torch.round(u))  # no exact ties in random data
    t = initial_thresholds(bits) + (torch.rand(bits) - 0.5) * (1 - 2 * BIT_MARGIN)  # any valid thresholds
    levels = level_thresholds(t)
    assert (levels.diff() > 0).all() and ((levels > torch.arange(2**bits - 1)) &
                                          (levels < torch.arange(1, 2**bits))).all()  # T_m in (m − 1, m)
    planes = rbd_bits(u, t)
    code = (planes * (2.0 ** torch.arange(bits)).reshape(-1, 1)).sum(0)
    assert torch.equal(code, (u.unsqueeze(-1) > levels).sum(-1).to(code))


def test_rbd_weights_deploy_as_integers_times_the_step_and_thresholds_stay_valid():
    torch.manual_seed(0)
    w = torch.randn(8, 4, 3, 3)
    q = Quantizer(3, mode="rbd", channel_axis=0, num_channels=8)
    q.start_calibration()
    q(w)
    q.finish_calibration()
    with torch.no_grad():
        q.thresholds.copy_(torch.tensor([1.2, -3.0, 9.0]))  # out of range: projection puts them back
    q.project_bounds_()
    assert torch.allclose(q.thresholds, torch.tensor([1 - BIT_MARGIN, 1 + BIT_MARGIN, 4 - BIT_MARGIN]))
    with torch.no_grad():
        wq = q(w)
        ints = wq / q.step.view(-1, 1, 1, 1)
    assert torch.allclose(ints, ints.round(), atol=1e-5) and ints.min() >= -4 and ints.max() <= 3
    qparams = pytest.importorskip("srq.export.qparams")  # the export writes them as int8 values and a step
    with torch.no_grad():
        packed = qparams.int_weight(wq, q)
    assert packed.q.dtype == torch.int8 and torch.allclose(packed.dequantize(), wq, atol=1e-6)


def test_rbd_activations_start_as_rlq_and_learn_their_thresholds():
    """``rbd_act`` at init: RLQ's values and gradients (random data has no exact ties); then its thresholds get
    gradients and, at 8 bits, memory stays that of the input (two boundaries per element)."""
    torch.manual_seed(0)
    x = torch.randn(2, 3, 6, 6, dtype=torch.float64) * 2
    qa, qb = (Quantizer(3, mode=m, batch_axis=0, dan_channels=3).double() for m in ("rlq", "rbd_act"))
    for q in (qa, qb):
        q.start_calibration()
        q(x)
        q.finish_calibration()
        with torch.no_grad():
            q.shift.copy_(torch.tensor([0.1, -0.2, 0.3]))
    xa, xb = x.clone().requires_grad_(), x.clone().requires_grad_()
    ya, yb = qa(xa), qb(xb)
    assert torch.equal(ya, yb)
    (ya * x).sum().backward()
    (yb * x).sum().backward()
    assert torch.allclose(xa.grad, xb.grad) and torch.allclose(qa.step.grad, qb.step.grad)
    assert torch.allclose(qa.shift.grad, qb.shift.grad) and (qb.thresholds.grad != 0).any()
    big = Quantizer(8, mode="rbd_act", batch_axis=0, dan_channels=3)
    big.start_calibration()
    big(x.float())
    big.finish_calibration()
    out = big(x.float().requires_grad_())
    out.sum().backward()
    assert torch.allclose(out, x.float(), atol=float(big.step.detach()) / 2 + 1e-6)


# ---- shortcut scales ----------------------------------------------------------------------------------------------

def _tiny(cls, hr_folder, iterations=3, **fields):
    return cls(train_data=(str(hr_folder),), cache_dir="", train=QATConfig(iterations=iterations, batch=2,
                                                                              hr_patch=32, val_set=""), **fields)


def test_shortcut_scale_is_the_identity_at_init_float_and_quantized():
    fp = srq.create_model("srq_tiny", 4, "official")
    calib = sample_calibration(4)[:2]
    wrapped = copy.deepcopy(fp)
    assert add_shortcut_scales(wrapped, calib[:1]) == ["body.0", "body.1", "body.2", "body.3"]
    assert shortcut_gammas(wrapped) == dict.fromkeys(["body.0", "body.1", "body.2", "body.3"], 1.0)
    with torch.no_grad():
        assert torch.equal(wrapped(calib), fp(calib))
    plain, scaled = QuantSR(w_bits=2, a_bits=2), QuantSR(w_bits=2, a_bits=2, shortcut_scale=True)
    qa, qb = plain.prepare(fp, calib[:1]), scaled.prepare(fp, calib[:1])
    for m in (qa, qb):
        calibrate(m, [calib], total=1, progress=False)
    assert is_shortcut_scaled(qb.get_submodule("body.0")) and qb.srq_structure["removed"] == []
    assert [e.name for e in srq.quant.placement(qb)] == [e.name for e in srq.quant.placement(qa)]  # names kept
    with torch.no_grad():
        assert torch.equal(qb(calib), qa(calib))


def test_quantsr_shortcut_switch_trains_gamma_and_reloads(hr_folder, tmp_path):
    fp = srq.create_model("srq_tiny", 4, "official")
    recipe = apply_params(_tiny(QuantSR, hr_folder, w_bits=2, a_bits=2), ["shortcut_scale=true"])
    q = srq.quantize(fp, recipe, sample_calibration(4)[:4], progress=False)
    assert any(g != 1.0 for g in shortcut_gammas(q).values())
    srq.save(q, tmp_path / "run")
    assert json.loads((tmp_path / "run" / "srq.json").read_text())["structure"]["shortcut_scale"] == \
        ["body.0", "body.1", "body.2", "body.3"]
    x = torch.rand(1, 3, 16, 16)
    with torch.no_grad():
        assert torch.equal(srq.load(tmp_path / "run")(x), q(x))
    assert Recipe.from_dict(recipe.to_dict()) == recipe


# ---- QSA, SFD, schedule -------------------------------------------------------------------------------------------

def test_segment_ends_follow_the_slimming():
    blocks = ["b0", "b1", "b2", "b3", "b4"]
    assert segment_ends(blocks, []) == blocks
    assert segment_ends(blocks, ["b1", "b2"]) == ["b2", "b3", "b4"]  # b0 now stands for b0..b2
    assert segment_ends(blocks, ["b0", "b4"]) == ["b1", "b2", "b4"]  # nothing before b1 starts a segment


def test_phase_schedule_continues_the_multistep_rates():
    train = QATConfig(iterations=100, lr=1.0, quant_lr=2.0, milestones=(0.5, 0.75), gamma=0.5)
    assert phase_bounds(100, 2, 0.5) == [25, 50]
    first, mid, last = phase_config(train, 0, 25), phase_config(train, 25, 50), phase_config(train, 50, 100)
    assert (first.lr, first.milestones, mid.lr, mid.milestones) == (1.0, (), 1.0, ())
    assert (last.lr, last.quant_lr, last.iterations) == (0.5, 1.0, 50)  # the step-50 milestone is behind
    assert [math.floor(m * 50) for m in last.milestones] == [25]  # step 75 of the run


def test_plan_and_bad_budgets(hr_folder):
    fp = srq.create_model("srq_tiny", 4, "official")
    blocks = ["body.0", "body.1", "body.2", "body.3"]
    assert plan_removals(fp, blocks, 0.99, "bitops", (16, 16)) == 1
    with pytest.raises(SrqError, match="cannot be met"):
        plan_removals(fp, blocks, 0.01, "bitops", (16, 16))
    for fields, says in (({"qsa_budget": 1.5}, "qsa_budget"), ({"shortcut_scale": False}, "shortcut_scale"),
                         ({"qsa_metric": "flops"}, "qsa_metric"), ({"w_bits": 1}, "at least 2 bits")):
        with pytest.raises(SrqError, match=says):
            _tiny(QuantSRPlus, hr_folder, **fields)


def test_qsa_slimmed_model_equals_one_built_without_the_blocks(hr_folder, tmp_path):
    fp = srq.create_model("srq_tiny", 4, "official")
    recipe = _tiny(QuantSRPlus, hr_folder, iterations=4, w_bits=2, a_bits=2, qsa_budget=0.9)
    q = srq.quantize(fp, recipe, sample_calibration(4)[:4], progress=False)
    qsa = q.srq_report["qsa"]
    gone = [r["block"] for r in qsa["removed"]]
    assert len(gone) == 2 and qsa["end"] <= 0.9 * qsa["start"]  # at W2A2 a ResBlock is ~6 % of the BitOPs
    assert q.srq_report["sfd"][-1]["targets"] == segment_ends(q.srq_structure["blocks"], gone)
    # the same network built by hand: blocks removed, the others wrapped, then quantized by the recipe's config
    built = copy.deepcopy(fp)
    for name in q.srq_structure["blocks"]:
        if name in gone:
            built.body[int(name.split(".")[1])] = RemovedBlock()
        else:
            add_shortcut_scale(built.get_submodule(name))
    prepare(built, recipe.config(), example_input=sample_calibration(4)[:1])
    assert str(built) == str(q)
    assert sum(p.numel() for p in built.parameters()) == sum(p.numel() for p in q.parameters())
    assert sum(p.numel() for p in q.parameters()) < sum(p.numel() for p in fp.parameters())
    cost_q, cost_b = model_cost(q, scale=4), model_cost(built, scale=4)
    assert (cost_q.bitops, cost_q.size_bits) == (cost_b.bitops, cost_b.size_bits)
    srq.save(q, tmp_path / "run")
    loaded = srq.load(tmp_path / "run")
    assert str(loaded) == str(q) and loaded.srq_structure == q.srq_structure
    assert model_cost(loaded, scale=4).bitops == cost_q.bitops
    x = torch.rand(1, 3, 16, 16)
    with torch.no_grad():
        assert torch.equal(loaded(x), q(x))
    assert Recipe.from_dict(recipe.to_dict()) == recipe
    # the packed file (RBD weights as n-bit integers) carries the structure too
    from srq.export.packed import load_packed, read_header, save_packed

    save_packed(q, tmp_path / "run", tmp_path / "run.safetensors")
    assert read_header(tmp_path / "run.safetensors")["structure"] == q.srq_structure
    unpacked = load_packed(tmp_path / "run.safetensors")
    assert str(unpacked) == str(q)
    with torch.no_grad():
        assert torch.equal(unpacked(x), q(x))


@pytest.mark.parametrize("name, block", [("srq_tiny", "body.1"), ("swinir_light", "layers.1.residual_group.blocks.2")])
def test_a_removed_block_computes_what_gamma_zero_does(name, block):
    """Removal is exact: the network without the block equals the wrapped one with γ_b = 0 (a Swin layer's extra
    argument ``x_size`` passes through both)."""
    fp = srq.create_model(name, 4, "official" if name == "srq_tiny" else None)
    x = torch.rand(1, 3, 16, 16)
    wrapped = copy.deepcopy(fp)
    assert block in add_shortcut_scales(wrapped, x)
    with torch.no_grad():
        assert torch.equal(wrapped(x), fp(x))
        getattr(wrapped.get_submodule(block), GAMMA).zero_()
        slim = copy.deepcopy(wrapped)
        remove_blocks(slim, [block])
        assert torch.equal(slim(x), wrapped(x))
    assert sum(p.numel() for p in slim.parameters()) < sum(p.numel() for p in wrapped.parameters())


def test_a_structure_for_another_model_is_one_line():
    fp = srq.create_model("srq_tiny", 4, "official")
    with pytest.raises(SrqError, match="another architecture"):
        apply_structure(fp, {"version": 1, "blocks": ["IMDB1"], "removed": ["IMDB1"], "shortcut_scale": []})
    remove_blocks(fp, ["body.0"])
    assert isinstance(fp.body[0], nn.Identity)


@pytest.mark.parametrize("fields", [{"rbd": False, "qsa_budget": 0.0, "sfd": False},  # QuantSR (+ shortcut scales)
                                    {"qsa_budget": 0.0, "sfd": False},  # +RBD
                                    {"sfd": False}])  # +QSA (the full method is the test above)
def test_ablation_rows_run_and_reload(fields, hr_folder, tmp_path):
    fp = srq.create_model("srq_tiny", 4, "official")
    recipe = _tiny(QuantSRPlus, hr_folder, w_bits=2, a_bits=2, **fields)
    q = srq.quantize(fp, recipe, sample_calibration(4)[:4], progress=False)
    assert len(q.srq_report["training"]["log"]) == 3
    assert ("qsa" in q.srq_report) == bool(recipe.qsa_budget) and "sfd" not in q.srq_report
    grids = {(g["side"], g["grid"]) for g in q.srq_report["quantizer_grids"] if g["bits"] == 2}
    assert grids == ({("weight", "rbd"), ("input", "rbd_act")} if recipe.rbd else {("weight", "lsq_tanh"),
                                                                                      ("input", "rlq")})
    srq.save(q, tmp_path / "run")
    x = torch.rand(1, 3, 16, 16)
    with torch.no_grad():
        assert torch.equal(srq.load(tmp_path / "run")(x), q(x))


def test_registered():
    assert get_method("quantsr_plus").recipe is QuantSRPlus


@pytest.mark.skipif(not (weights_root() / "imdn_x4.pth").is_file(), reason="IMDN x4 weights not at hand")
def test_shortcut_scale_is_the_identity_on_imdn():
    fp = srq.create_model("imdn", 4, "official")
    x = sample_calibration(4)[:2, :, :24, :24]
    wrapped = copy.deepcopy(fp)
    assert add_shortcut_scales(wrapped, x[:1]) == [f"IMDB{i}" for i in range(1, 7)]
    with torch.no_grad():
        assert torch.equal(wrapped(x), fp(x))


@pytest.mark.filterwarnings("ignore:.*has collapsed")  # 4 training steps
@pytest.mark.skipif(not (weights_root() / "imdn_x4.pth").is_file(), reason="IMDN x4 weights not at hand")
def test_quantsr_plus_on_imdn_through_the_pipeline(hr_folder, tmp_path):
    fp = srq.create_model("imdn", 4, "official")
    calib = sample_calibration(4)[:2]
    recipe = _tiny(QuantSRPlus, hr_folder, iterations=4, w_bits=2, a_bits=2, qsa_budget=0.85)
    run = srq.pipeline.run(fp, recipe, calib, name="imdn", scale=4, output=tmp_path / "run", progress=False)
    meta = json.loads((tmp_path / "run" / "srq.json").read_text())
    removed = meta["structure"]["removed"]
    assert len(removed) == 2 and set(removed) <= {f"IMDB{i}" for i in range(1, 7)}  # W2A2: an IMDB ~9 % of BitOPs
    assert meta["report"]["qsa"]["end"] <= 0.85 * meta["report"]["qsa"]["start"]
    loaded = srq.load(tmp_path / "run")
    assert all(isinstance(loaded.get_submodule(n), nn.Identity) for n in removed)
    xin = calib[:1, :, :24, :24]
    with torch.no_grad():
        assert torch.equal(loaded(xin), run.model(xin))
    assert sum(p.numel() for p in loaded.parameters()) < sum(p.numel() for p in fp.parameters())


def test_slimming_run_resumes_bit_identically(hr_folder, tmp_path, monkeypatch):
    """A kill in the last phase (after both removals), then a resumed run: the same blocks removed, the same weights."""
    from srq.engine.checkpoint import WorkArea, resumable

    fp = srq.create_model("srq_tiny", 4, "official")
    recipe = _tiny(QuantSRPlus, hr_folder, iterations=4, w_bits=2, a_bits=2, qsa_budget=0.9)
    calib = sample_calibration(4)[:4]
    expected = srq.quantize(fp, recipe, calib, progress=False)

    class Killed(Exception):
        pass

    real = QuantSRPlus.training_set

    def killing(self, folders, scale):
        data = real(self, folders, scale)
        batch = data.batch

        def at(step, *args):
            if step == 3:
                raise Killed
            return batch(step, *args)

        monkeypatch.setattr(data, "batch", at)
        return data

    monkeypatch.setattr(QuantSRPlus, "training_set", killing)
    with pytest.raises(Killed), resumable(WorkArea.open(tmp_path / "work", {"run": 1}, resume=False, every_steps=1)):
        srq.quantize(fp, recipe, calib, progress=False)
    monkeypatch.setattr(QuantSRPlus, "training_set", real)
    with resumable(WorkArea.open(tmp_path / "work", {"run": 1}, resume=True, every_steps=1)):
        resumed = srq.quantize(fp, recipe, calib, progress=False)
    assert resumed.srq_structure == expected.srq_structure and len(resumed.srq_structure["removed"]) == 2
    state = resumed.state_dict()
    assert state.keys() == expected.state_dict().keys()
    assert all(torch.equal(v, state[k]) for k, v in expected.state_dict().items())


def test_an_unreachable_budget_warns_and_trains_without_slimming(hr_folder):
    fp = srq.create_model("srq_tiny", 4, "official")  # at W2A2 its 4 ResBlocks hold ~23 % of the BitOPs
    recipe = _tiny(QuantSRPlus, hr_folder, w_bits=2, a_bits=2, qsa_budget=0.5)
    with pytest.warns(UserWarning, match="cannot be met.*trained without slimming"):
        q = srq.quantize(fp, recipe, sample_calibration(4)[:4], progress=False)
    assert q.srq_report["qsa"]["removed"] == [] and "cannot be met" in q.srq_report["qsa"]["skipped"]
    assert q.srq_structure["removed"] == [] and len(q.srq_report["training"]["log"]) == 3


@pytest.mark.skipif(not (weights_root() / "imdn_x4.pth").is_file(), reason="IMDN x4 weights not at hand")
@pytest.mark.parametrize("cls", [QuantSR, QuantSRPlus, QMambaIR])
def test_rlq_activations_start_from_the_mse_range(cls):
    """RLQ's step and offset (and Q-MambaIR's static LSQ+ quantizers) start, like srq's LSQ+, from the MSE-optimal
    range: on IMDN x4 W2A2 the calibrated model's output error is several times lower than from the min/max range
    (which put four levels over the outliers; QuantSR+'s feature distillation then started from a loss of ~150)."""
    import dataclasses

    assert cls().to_dict()["a_observer"] == "omse"
    fp = srq.create_model("imdn", 4, "official").eval()
    calib = sample_calibration(4, n=4, patch=32)
    x = calib[:2]

    def output_mse(observer: str) -> float:
        recipe = cls(w_bits=2, a_bits=2)
        config = dataclasses.replace(recipe.config(), a_observer=observer)
        q = calibrate(prepare(copy.deepcopy(fp), config, calib[:1]), [calib], progress=False).eval()
        with torch.no_grad():
            return float(((q(x) - fp(x)) ** 2).mean())

    assert output_mse("omse") < output_mse("minmax") / 3
