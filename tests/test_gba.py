"""GBA (bit allocation under a budget, continuous bit offsets, DAN, the recipe end to end) and PTQ4SR."""

from __future__ import annotations

import itertools
import json
import math
import random
import re
from dataclasses import replace

import pytest
import torch
import torch.nn.functional as F

import srq
from srq.engine.distill import FinetuneConfig
from srq.errors import SrqError
from srq.methods import GBA, MinMax, Percentile
from srq.methods.base import apply_params
from srq.methods.bit_slots import activation_elements, bit_slots, budget_sizes
from srq.quant import Quantizer, calibrate_activations, calibrate_weights
from srq.quant.bit_allocation import allocate_bits
from srq.report import format_bit_map

# ---- allocate_bits ------------------------------------------------------------------------------------------


def test_allocation_hand_cases():
    # equal weights: the two most negative gradients get +1, paid for by the two least sensitive layers
    assert allocate_bits([-1, -0.1, -0.01, 0.0], [1, 1, 1, 1], 4).offsets == [1, 1, -1, -1]
    # layer 0 costs three units: +1 there is worth three −1 elsewhere (0.541 gain vs 0.238 loss)
    a = allocate_bits([-1, -0.1, -0.01, 0.0], [3, 1, 1, 1], 4)
    assert a.offsets == [1, -1, -1, -1] and a.average_bits == 4.0
    c = 1 / math.log(4)
    assert a.predicted_change == pytest.approx(c * (-0.75 + 0.1 * 3 + 0.01 * 3))
    # equal sensitivities: nothing to gain from moving bits
    assert allocate_bits([-1, -1, -1, -1], [1, 1, 1, 1], 4).offsets == [0, 0, 0, 0]
    # a wider candidate set spends more where the gradient is larger
    assert allocate_bits([-1, -0.5, -0.01, -0.001], [1, 1, 1, 1], 4, (-3, -2, -1, 0, 1, 2, 3)).offsets == [2, 1, -1, -2]
    # bits stay within 2 … 8
    assert allocate_bits([-1, 0.0], [1, 1], 2).bits == [2, 2]


def test_allocation_is_optimal_on_small_random_problems():
    rng = random.Random(0)
    options = (-1, 0, 1)
    for _ in range(30):
        g = [-rng.random() ** 2 for _ in range(5)]
        w = [rng.randint(1, 9) for _ in range(5)]
        got = allocate_bits(g, w, 4, options)
        assert sum(wi * o for wi, o in zip(w, got.offsets)) <= 0
        feasible = [o for o in itertools.product(options, repeat=5) if sum(wi * oi for wi, oi in zip(w, o)) <= 0]
        best = min(sum(-gi / math.log(4) * (4.0 ** -oi - 1) for gi, oi in zip(g, o)) for o in feasible)
        assert got.predicted_change == pytest.approx(best, abs=1e-12)


def test_allocation_keeps_the_weighted_average_with_large_uneven_weights():
    rng = random.Random(1)
    g = [-rng.random() ** 3 for _ in range(60)]
    w = [rng.randint(100, 50000) for _ in range(60)]
    a = allocate_bits(g, w, 3, (-2, -1, 0, 1, 2))
    assert a.average_bits <= 3 + 1e-9 and a.average_bits > 2.95
    assert set(a.bits) <= {2, 3, 4, 5}


def test_allocation_rejects_bad_input():
    with pytest.raises(ValueError, match="contain 0"):
        allocate_bits([-1.0], [1], 4, (-1, 1))
    with pytest.raises(ValueError, match="same length"):
        allocate_bits([-1.0], [1, 2], 4)


# ---- continuous bit offsets and DAN ----------------------------------------------------------------------


def test_bit_offset_gradient_is_negative_and_set_bits_removes_it():
    torch.manual_seed(0)
    q = Quantizer(3, mode="affine")
    q.set_bounds(torch.tensor(-1.0), torch.tensor(1.0))
    s = q.enable_bit_offset()
    x = torch.randn(4096).clamp(-1, 1)
    ((q(x) - x) ** 2).mean().backward()
    assert s.grad is not None and s.grad.item() < 0  # more bits, less error
    q.set_bits(4)
    assert q.bit_offset is None and q.bits == 4 and "bit_offset" not in dict(q.named_parameters())
    with pytest.raises(ValueError, match="uniform/affine"):
        Quantizer(3, mode="symmetric").enable_bit_offset()


def test_projection_keeps_a_bit_offset_in_1_to_8_bits_with_finite_gradients():
    """One large allocation step must not push 2^(bits + s) past float range (RLFN/PAN: 99 % of steps lost)."""
    q = Quantizer(4, mode="affine")
    q.set_bounds(torch.tensor(-1.0), torch.tensor(1.0))
    s = q.enable_bit_offset()
    for value, expected in ((150.0, 4.0), (-9.0, -3.0), (0.4, 0.4)):
        with torch.no_grad():
            s.fill_(value)
        q.project_bounds_()
        assert s.item() == pytest.approx(expected)
    s.grad = None
    x = torch.randn(256).clamp(-1, 1)
    ((q(x) - x) ** 2).mean().backward()
    assert torch.isfinite(s.grad)


def test_a_bit_offset_range_keeps_s_within_the_candidate_span():
    q = Quantizer(4, mode="affine")
    q.set_bounds(torch.tensor(-1.0), torch.tensor(1.0))
    s = q.enable_bit_offset(-1, 1)
    for value, expected in ((150.0, 1.0), (-9.0, -1.0), (0.4, 0.4)):
        with torch.no_grad():
            s.fill_(value)
        q.project_bounds_()
        assert s.item() == pytest.approx(expected)
    q.set_bits(7)
    s = q.enable_bit_offset(-3, 3)  # clipped to widths 1 … 8
    with torch.no_grad():
        s.fill_(3.0)
    q.project_bounds_()
    assert s.item() == 1.0
    with pytest.raises(ValueError, match="contain 0"):
        q.enable_bit_offset(1, 2)


def test_dan_range_equals_per_sample_per_channel_minmax_quantization():
    x = torch.tensor([[[[0.0, 1.0], [2.0, 3.0]], [[-10.0, 0.0], [10.0, 20.0]]]])  # (1, 2, 2, 2)
    q = Quantizer(2, mode="affine", dan="range")
    q.set_bounds(torch.tensor(0.0), torch.tensor(1.0))
    y = q(x)
    # channel 0: range [0, 3], 3 steps of 1 → exact; channel 1: range [−10, 20], steps of 10 → exact
    assert torch.allclose(y, x)
    x2 = torch.tensor([[[[0.0, 0.4], [1.6, 3.0]]]])
    assert torch.allclose(q(x2), torch.tensor([[[[0.0, 0.0], [2.0, 3.0]]]]))


def test_dan_keeps_zero_exact_on_an_affine_grid():
    """The offset (the channel minimum −0.4) is rounded to a grid step (1), so the zeros stay zeros."""
    x = torch.tensor([-0.4, 0.0, 0.0, 2.6]).view(1, 1, 2, 2)
    q = Quantizer(2, mode="affine", dan="range")
    q.set_bounds(torch.tensor(0.0), torch.tensor(1.0))
    # without the rounding the levels are −0.4, 0.6, 1.6, 2.6 and both zeros would become −0.4
    assert torch.equal(q(x), torch.tensor([0.0, 0.0, 0.0, 3.0]).view(1, 1, 2, 2))
    x.requires_grad_(True)
    q(x).sum().backward()  # the rounding passes no gradient; the offset's path to the minimum is kept
    assert torch.isfinite(x.grad).all() and q.lower.grad is not None


def test_windowed_dan_equals_whole_sample_dan_on_each_window():
    """dan_window k: every k × k window (the last ones partial) is normalised by its own min and max."""
    torch.manual_seed(0)
    x = torch.randn(2, 3, 7, 5) * torch.tensor([1.0, 10.0, 100.0]).view(1, 3, 1, 1)
    windowed = Quantizer(3, mode="affine", dan="range", dan_window=3)
    whole = Quantizer(3, mode="affine", dan="range")
    for q in (windowed, whole):
        q.set_bounds(torch.tensor(0.1), torch.tensor(0.9))
    y = windowed(x)
    for i in range(0, 7, 3):
        for j in range(0, 5, 3):
            assert torch.allclose(y[..., i:i + 3, j:j + 3], whole(x[..., i:i + 3, j:j + 3]), atol=1e-5)
    big = Quantizer(3, mode="affine", dan="range", dan_window=8)  # window larger than the input: whole sample
    big.set_bounds(torch.tensor(0.1), torch.tensor(0.9))
    assert torch.allclose(big(x), whole(x), atol=1e-5)
    pooled = Quantizer(2, mode="affine", dan="range", dan_window=3)  # one value per channel: over the channels
    pooled.set_bounds(torch.tensor(0.0), torch.tensor(1.0))
    v = torch.tensor([0.0, 0.4, 2.0, 3.0]).view(1, 4, 1, 1)
    assert torch.allclose(pooled(v), torch.tensor([0.0, 0.0, 2.0, 3.0]).view(1, 4, 1, 1))
    with pytest.raises(ValueError, match="dan_window"):
        Quantizer(3, dan="std", dan_window=4)
    with pytest.raises(srq.SrqError, match="a_dan_window"):
        srq.quant.QuantConfig(a_dan="none", a_dan_window=4)


def test_dan_std_and_pooled_inputs_and_observation():
    q = Quantizer(8, mode="affine", dan="std", observer="minmax")
    q.start_calibration()
    x = torch.randn(2, 3, 5, 5) * torch.tensor([1.0, 10.0, 100.0]).view(1, 3, 1, 1) + 7
    assert torch.equal(q(x), x)  # observing leaves the tensor alone
    q.finish_calibration()
    lo, hi = q.bounds()
    assert -4 < lo.item() < 0 < hi.item() < 4  # bounds of the standardised values
    assert (q(x) - x).abs().max() < 0.05 * x.abs().max()
    pooled = Quantizer(2, mode="affine", dan="range")
    pooled.set_bounds(torch.tensor(0.0), torch.tensor(1.0))
    v = torch.tensor([0.0, 1.0, 2.0, 3.0]).view(1, 4, 1, 1)
    assert torch.allclose(pooled(v), v)  # normalised over the channels, not to a constant



def test_capped_dan_records_channel_extremes_and_saturates_beyond_them():
    """Calibration widens per-channel caps to what the input reached; later per-sample ranges are clamped
    into them, so a value beyond a cap saturates instead of coarsening the whole channel's grid."""
    q = Quantizer(2, mode="affine", dan="capped", dan_channels=2, observer="minmax")
    q.start_calibration()
    q(torch.tensor([[[[0.0, 1.0], [2.0, 3.0]], [[0.0, 0.0], [1.0, 3.0]]]]))
    q(torch.tensor([[[[0.0, 0.0], [0.0, 1.0]], [[-3.0, 0.0], [0.0, 6.0]]]]))
    q.finish_calibration()
    assert q.dan_low.tolist() == [0.0, -3.0] and q.dan_high.tolist() == [3.0, 6.0]
    q.set_bounds(torch.tensor(0.0), torch.tensor(1.0))
    x = torch.tensor([[[[0.0, 1.0], [2.0, 300.0]], [[-3.0, 0.0], [3.0, 6.0]]]])
    # channel 0: range clamped to [0, 3] (steps of 1), 300 saturates at 3; "range" would use steps of 100
    assert torch.allclose(q(x), torch.tensor([[[[0.0, 1.0], [2.0, 3.0]], [[-3.0, 0.0], [3.0, 6.0]]]]))
    plain = Quantizer(2, mode="affine", dan="range")
    plain.set_bounds(torch.tensor(0.0), torch.tensor(1.0))
    assert plain(x)[0, 0].flatten().tolist() == [0.0, 0.0, 0.0, 300.0]
    below = torch.full((1, 2, 2, 2), -5.0)  # wholly below channel 0's cap: saturates at the cap
    assert torch.allclose(q(below)[0, 0], torch.zeros(2, 2))
    with pytest.raises(ValueError, match="dan_channels"):
        Quantizer(2, dan="capped")
    with pytest.raises(ValueError, match="2 channels"):
        q.start_calibration()
        q(torch.zeros(1, 3, 2, 2))


def test_gba_with_capped_dan_calibrates_caps_that_survive_save_and_load(tmp_path, calib):
    fp = srq.create_model("srq_tiny", 4, "official")
    q = srq.quantize(fp, _quick(dan="capped"), calib, progress=False)
    capped = [m for _, m in srq.quant.quantizers(q) if m.dan == "capped"]
    assert capped and all(torch.isfinite(m.dan_low).all() and (m.dan_low <= m.dan_high).all() for m in capped)
    srq.save(q, tmp_path / "run")
    q2 = srq.load(tmp_path / "run")
    x = torch.rand(1, 3, 19, 21)
    with torch.no_grad():
        assert torch.equal(q(x), q2(x))


# ---- the recipe ----------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def calib() -> torch.Tensor:
    from srq.data.samples import sample_images

    crops = [torch.from_numpy(img[:48, :48].copy()).permute(2, 0, 1).float() / 255
             for _, img in sample_images("train")[:4]]
    return torch.stack(crops)


def _quick(**kw) -> GBA:
    kw.setdefault("finetune_config", FinetuneConfig(epochs=2))
    kw.setdefault("alloc", FinetuneConfig(lr=0.1, epochs=1))
    return GBA(w_bits=3, a_bits=3, init_batch=4, **kw)


def test_gba_allocates_within_budget_and_beats_minmax(calib):
    fp = srq.create_model("srq_tiny", 4, "official")
    q = srq.quantize(fp, _quick(mp_weights=True), calib, progress=False)
    report = q.srq_report
    for kind, base in (("a", 3), ("w", 3)):
        assert base - 1 <= report[kind]["average_bits"] <= base + 1e-9
        bits = {row["bits"] for row in report[kind]["layers"]}
        assert bits <= {2, 3, 4}
        assert report[kind]["steps"] == report[kind]["steps_taken"] == 2  # 4 patches, batch 2, 1 epoch
    assert report["finetune"]["steps"] == 4 and report["finetune"]["loss_median"] > 0
    placed = {e.name: e for e in srq.quant.placement(q)}
    for row in report["a"]["layers"]:
        assert placed[row["name"]].a_bits == row["bits"]
    for row in report["w"]["layers"]:
        assert placed[row["name"]].w_bits == row["bits"]
    assert placed[next(n for n, e in placed.items() if e.role == "first")].a_bits == 8
    plain = srq.quantize(fp, MinMax(w_bits=3, a_bits=3), calib, progress=False)
    with torch.no_grad():
        target = fp(calib)
        assert (q(calib) - target).abs().mean() < (plain(calib) - target).abs().mean()


def test_gba_trains_bit_offsets_within_the_candidate_span(calib, monkeypatch):
    """A huge SGD step would send s to the ends of 1 … 8 bits (RLFN's diverged allocation); the span stops it."""
    fp = srq.create_model("srq_tiny", 4, "official")
    recipe = _quick(candidates=(-2, -1, 0, 1, 2), alloc=FinetuneConfig(lr=1e6, epochs=1, optimizer="sgd"))
    q = recipe.prepare(fp, calib[:1])
    calibrate_weights(q)
    calibrate_activations(q, [calib], progress=False)
    slots = bit_slots(q, "a")
    seen = []
    original = Quantizer.project_bounds_

    def spy(self):
        original(self)
        if self.bit_offset is not None:
            seen.append(self.bit_offset.item())

    monkeypatch.setattr(Quantizer, "project_bounds_", spy)
    grads = recipe.allocation_gradients(q, fp, calib, slots, progress=False)
    assert seen and min(seen) >= -2 and max(seen) <= 2 and {-2.0, 2.0} & set(seen)
    assert all(math.isfinite(g) for g in grads) and all(s.quantizer.bit_offset is None for s in slots)


def test_default_allocation_gradient_is_that_of_the_output_l1_alone(calib):
    """Stage 2's g_k (one step over the whole batch) = ∂ L1(q(x), fp(x)) / ∂s_k at s = 0, no feature term."""
    fp = srq.create_model("srq_tiny", 4, "official")
    recipe = GBA(w_bits=3, a_bits=3, init_batch=4)
    assert recipe.alloc.lambda_feat == 0 and recipe.finetune_config.lambda_feat == 10  # Eq. (3) vs Eq. (1)
    one_step = replace(recipe.alloc, epochs=1, batch=len(calib))
    q = recipe.initial_bounds(fp, calib, progress=False)
    slots = bit_slots(q, "a")
    grads = replace(recipe, alloc=one_step).allocation_gradients(q, fp, calib, slots, progress=False)
    with_feat = replace(recipe, alloc=replace(one_step, lambda_feat=10.0))
    grads_feat = with_feat.allocation_gradients(q, fp, calib, slots, progress=False)
    offsets = [s.quantizer.enable_bit_offset(-1, 1) for s in slots]
    with torch.no_grad():
        target = fp(calib)
    F.l1_loss(q(calib), target).backward()
    by_hand = [float(o.grad) for o in offsets]
    for s in slots:
        s.quantizer.set_bits(s.quantizer.bits)
    assert grads == pytest.approx(by_hand, rel=1e-4, abs=1e-9)
    assert grads_feat != pytest.approx(by_hand, rel=1e-2, abs=1e-9)


def test_gba_bit_map_survives_save_and_load(tmp_path, calib):
    fp = srq.create_model("srq_tiny", 4, "official")
    q = srq.quantize(fp, _quick(), calib, progress=False)
    srq.save(q, tmp_path / "run")
    meta = json.loads((tmp_path / "run" / "srq.json").read_text())
    assert meta["report"]["a"]["layers"] and meta["quant_config"]["a_dan"] == "range"
    q2 = srq.load(tmp_path / "run")
    assert [e.to_dict() for e in srq.quant.placement(q2)] == meta["placement"]
    x = torch.rand(1, 3, 19, 21)
    with torch.no_grad():
        assert torch.equal(q(x), q2(x))


def test_activation_elements_count_per_lr_pixel():
    fp = srq.create_model("srq_tiny", 4, "official")
    q = GBA(w_bits=4, a_bits=4).prepare(fp)
    slots = bit_slots(q, "a")
    sizes = activation_elements(q, slots, torch.rand(1, 3, 8, 8))
    layers = dict(q.named_modules())
    assert sizes == [float(layers[s.owner].in_channels) for s in slots]  # same-size convs: C per pixel


def test_budget_sizes_are_parameters_for_weights_and_elements_for_activations():
    fp = srq.create_model("srq_tiny", 4, "official")
    q = GBA(w_bits=4, a_bits=4).prepare(fp)
    layers = dict(q.named_modules())
    x = torch.rand(1, 3, 8, 8)
    w_slots, a_slots = bit_slots(q, "w"), bit_slots(q, "a")
    assert budget_sizes(q, w_slots, x) == [float(layers[s.owner].weight.numel()) for s in w_slots]
    assert budget_sizes(q, a_slots, x) == activation_elements(q, a_slots, x)
    assert budget_sizes(q, [], x) == []


def test_bitops_budget_sizes_are_macs_per_pixel_times_the_other_sides_bits():
    fp = srq.create_model("srq_tiny", 4, "official")
    rules = [srq.quant.LayerRule(r"body\.0\.conv1", w_bits=6), srq.quant.LayerRule(r"body\.1\.conv2", a_bits=2)]
    q = GBA(w_bits=3, a_bits=4, rules=rules).prepare(fp)
    x = torch.rand(1, 3, 8, 8)
    w_slots, a_slots = bit_slots(q, "w"), bit_slots(q, "a")
    macs = 32 * 32 * 9  # every body conv: 32 → 32 channels, 3×3, per LR pixel
    w_bits = {s.owner: s.quantizer.bits for s in w_slots}
    a_bits = {s.owner: s.quantizer.bits for s in a_slots}
    assert w_bits["body.0.conv1"] == 6 and a_bits["body.1.conv2"] == 2
    assert budget_sizes(q, a_slots, x, by="bitops") == [macs * w_bits[s.owner] for s in a_slots]
    assert budget_sizes(q, w_slots, x, by="bitops") == [macs * a_bits[s.owner] for s in w_slots]
    with pytest.raises(ValueError, match="bitops"):
        budget_sizes(q, a_slots, x, by="flops")


def test_gba_star_with_a_bitops_budget_keeps_bitops_at_those_of_uniform_bits(calib):
    fp = srq.create_model("srq_tiny", 4, "official")
    q = srq.quantize(fp, _quick(mp_weights=True, budget="bitops"), calib, progress=False)
    report = q.srq_report
    for kind in ("a", "w"):
        assert report[kind]["budget"] == "bitops" and report[kind]["bitops_average_bits"] <= 3 + 1e-9
        assert all(row["bitops_weight"] > 0 for row in report[kind]["layers"])
    # the weight slots were weighted by their inputs' allocated bits
    a_bits = {row["name"]: row["bits"] for row in report["a"]["layers"]}
    assert [row["bitops_weight"] for row in report["w"]["layers"]] == [32 * 32 * 9 * a_bits[row["name"]]
                                                                       for row in report["w"]["layers"]]
    assert "weighted by MACs × the other side's bits (the budget)" in format_bit_map(report)
    uniform = srq.quantize(fp, MinMax(w_bits=3, a_bits=3), calib, progress=False)
    assert srq.quant.model_cost(q, scale=4).bitops <= srq.quant.model_cost(uniform, scale=4).bitops
    with pytest.raises(SrqError, match="budget must be one of size, bitops"):
        apply_params(GBA(), ["budget=flops"])


def test_ptq4sr_pixel_aware_calibration_improves_on_dbdc_alone(calib):
    from srq.methods import PTQ4SR

    fp = srq.create_model("srq_tiny", 4, "official")
    none = FinetuneConfig(steps=0)
    dbdc_only = srq.quantize(fp, PTQ4SR(w_bits=3, a_bits=3, act_phase=none, weight_phase=none), calib, progress=False)
    pac = FinetuneConfig(lr=5e-3, lr_min=2e-3, steps=40, lambda_feat=5.0, feature_loss="energy")
    tuned = srq.quantize(fp, PTQ4SR(w_bits=3, a_bits=3, act_phase=pac, weight_phase=FinetuneConfig(lr=5e-6, steps=2)),
                         calib, progress=False)
    assert {type(q.observer) for _, q in srq.quant.quantizers(tuned)} == {type(None)}
    with torch.no_grad():
        target = fp(calib)
        assert (tuned(calib) - target).abs().mean() < (dbdc_only(calib) - target).abs().mean()


def test_dan_on_token_models_normalises_linear_inputs_over_tokens():
    from srq.quant import QuantConfig, calibrate, prepare

    torch.manual_seed(0)
    model = srq.create_model("swinir_light", 4)
    x = torch.rand(1, 3, 16, 16)
    with torch.no_grad():
        ref = model(x)
    q = prepare(model, QuantConfig(w_bits=8, a_bits=8, a_dan="range"), x)
    calibrate(q, [x], progress=False)
    axes = {n: m.dan_axis for n, m in srq.quant.quantizers(q) if m.dan}
    assert axes["conv_first.input_quantizer"] == 1
    assert axes["layers.0.residual_group.blocks.0.attn.qkv.input_quantizer"] == -1
    with torch.no_grad():
        assert (q(x) - ref).abs().max() < 0.05 * ref.abs().max()


def test_gba_star_can_reinitialise_weight_bounds_at_the_allocated_bits(calib):
    from srq.quant import calibrate_weights
    from srq.quant.calibrate import split_quantizers

    fp = srq.create_model("srq_tiny", 4, "official")
    frozen = FinetuneConfig(steps=0)
    kept = srq.quantize(fp, _quick(mp_weights=True, finetune_config=frozen), calib, progress=False)
    moved = [row["name"] for row in kept.srq_report["w"]["layers"] if row["offset"]]
    assert moved  # the allocation changed some weight bit widths
    redone = srq.quantize(fp, _quick(mp_weights=True, finetune_config=frozen, reinit_weight_bounds=True), calib,
                          progress=False)
    assert redone.srq_report["w"]["layers"] == kept.srq_report["w"]["layers"]

    def bounds(model):
        return [[p.detach().clone() for p in q.parameters()] for q in split_quantizers(model)[0]]

    before = bounds(redone)
    calibrate_weights(redone)  # OMSE at the current (allocated) bits: nothing left to change
    assert all(torch.equal(a, b) for x, y in zip(before, bounds(redone)) for a, b in zip(x, y))
    layers = dict(kept.named_modules())
    changed = [not all(torch.equal(a, b) for a, b in zip(layers[n].weight_quantizer.parameters(),
                                                         dict(redone.named_modules())[n].weight_quantizer.parameters()))
               for n in moved]
    assert any(changed)  # base-width OMSE bounds differ from those at the allocated width


def test_params_set_nested_config_fields_with_dotted_keys():
    """``-p alloc.lambda_feat=10`` (the allocation loss with its feature term) reaches GBA's nested config."""
    recipe = apply_params(GBA(), ["alloc.lambda_feat=10", "finetune_config.epochs=3", "dan=capped"])
    assert (recipe.alloc.lambda_feat, recipe.finetune_config.epochs, recipe.dan) == (10.0, 3, "capped")
    assert recipe.alloc.lr == GBA().alloc.lr and GBA().alloc.lambda_feat == 0  # the rest untouched, no aliasing
    for bad, fragment in (["alloc.nope=1", "alloc.lambda_feat"], ["alloc.epochs=1.5", "does not fit"],
                          ["alloc.optimizer=rmsprop", "optimizer must be"]):
        with pytest.raises(SrqError, match=fragment):
            apply_params(GBA(), [bad])


def test_params_are_typed_by_their_annotation_not_their_default():
    """``steps: int | None = None`` takes an int (it was coerced to float from its None default)."""
    recipe = apply_params(Percentile(fine_tune=True), ["finetune_config.steps=10", "finetune_config.lr_min=null"])
    assert recipe.finetune_config.steps == 10 and isinstance(recipe.finetune_config.steps, int)
    assert apply_params(Percentile(fine_tune=True), ["finetune_config.lr=1"]).finetune_config.lr == 1.0
    assert apply_params(GBA(), ["candidates=[-2, 0, 2]"]).candidates == (-2, 0, 2)
    for bad, fragment in (["finetune_config.steps=1.5", "int | None"], ["candidates=[1, 0.5]", "tuple"],
                          ["finetune_config.steps=-1", "at least 0"], ["finetune_config.batch=-2", "at least 1"],
                          ["finetune_config.lr=0", "lr must be above 0"], ["mp_weights=1", "bool"]):
        with pytest.raises(SrqError, match=re.escape(fragment)):
            apply_params(GBA() if "candidates" in bad or "mp_" in bad else Percentile(fine_tune=True), [bad])
