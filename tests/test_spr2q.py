"""SPR²Q: rectifier math (Eq. 2–3, 7, 10), routing, fusion into a plain quantized model, the recipe end to end."""

from __future__ import annotations

import copy
import json

import pytest
import torch
from torch import nn

import srq
from srq.methods import SPR2Q, MinMax
from srq.methods.spr2q import static_routing_calibration
from srq.methods.rectifiers import (RectifierGroup, attach_rectifiers, fuse_rectifiers, mean_routing_weights,
                                    rectifier_groups)
from srq.engine.distill import FinetuneConfig, capture_outputs, distill_loss, find_blocks
from srq.quant import QuantConfig, model_cost, prepare, quantizers


def _random_group(shape=(6, 4, 3, 3), in_ch=4, rank=2, n=3) -> RectifierGroup:
    torch.manual_seed(0)
    g = RectifierGroup(shape, in_ch, rank, n)
    with torch.no_grad():
        g.B.normal_()
        if g.gate is not None:
            g.gate.weight.normal_()
    return g


def test_increment_is_the_routed_sum_of_low_rank_products():
    g = _random_group()
    x = torch.rand(2, 4, 5, 5)
    g.set_context(x)
    weights = torch.softmax(g.gate(x.mean(dim=(0, 2, 3))), dim=0)
    expected = sum(weights[i] * (g.B[i] @ g.A[i]) for i in range(3)).reshape(6, 4, 3, 3)  # over out × in·kh·kw
    assert torch.allclose(g(torch.zeros(6, 4, 3, 3)), expected, atol=1e-6)
    assert torch.allclose(g.routing_weights().sum(), torch.tensor(1.0))


def test_increment_starts_at_zero_with_uniform_routing():
    g = RectifierGroup((8, 5), 5, rank=4, group_size=4, channel_axis=-1)
    g.set_context(torch.rand(3, 7, 5))  # token input: channels last
    assert torch.equal(g(torch.zeros(8, 5)), torch.zeros(8, 5))
    assert torch.allclose(g.routing_weights(), torch.full((4,), 0.25))


def test_gate_depends_on_the_input():
    g = _random_group()
    g.set_context(torch.rand(1, 4, 5, 5))
    first = g.routing_weights().detach().clone()
    g.set_context(torch.rand(1, 4, 5, 5) * torch.tensor([3.0, 0.1, 2.0, 0.5]).view(1, 4, 1, 1))
    assert not torch.allclose(first, g.routing_weights())
    with pytest.raises(RuntimeError, match="pre-hook"):
        RectifierGroup((2, 2), 2, 1, 2).routing_weights()


def test_rectifier_gradients_match_eq7():
    g = _random_group(shape=(6, 10), in_ch=10, rank=3, n=1)
    grad_w = torch.randn(6, 10)  # ∂L/∂W' for L = <W', G>
    loss = (g(torch.zeros(6, 10)) * grad_w).sum()
    loss.backward()
    A, B = g.A[0].detach(), g.B[0].detach()
    assert torch.allclose(g.A.grad[0], B.T @ grad_w, atol=1e-5)
    assert torch.allclose(g.B.grad[0], grad_w @ A.T, atol=1e-5)


def test_static_routing_starts_from_the_given_weights():
    g = _random_group()
    theta = g.make_static(torch.tensor([0.5, 0.3, 0.2]))
    assert isinstance(theta, nn.Parameter) and g.mode == "static"
    assert torch.allclose(g.routing_weights(), torch.tensor([0.5, 0.3, 0.2]), atol=1e-6)


def _tiny_quantized(bits: int = 3) -> nn.Module:
    model = srq.create_model("srq_tiny", 4, "official")
    q = prepare(model, QuantConfig(w_bits=bits, a_bits=bits))
    for _, quant in quantizers(q):
        quant.set_bounds(torch.tensor(-1.0), torch.tensor(1.0))
    return q


def test_fusion_gives_a_plain_quantized_model_with_identical_outputs():
    plain = _tiny_quantized()
    q = _tiny_quantized()
    names = attach_rectifiers(q, rank=4, group_size=3)
    assert names and len(rectifier_groups(q)) == len(names)
    torch.manual_seed(1)
    for g in rectifier_groups(q).values():
        with torch.no_grad():
            g.B.normal_(std=0.01)
    x = torch.rand(2, 3, 12, 12)
    means = mean_routing_weights(q, [x])
    assert all(torch.allclose(m.sum(), torch.tensor(1.0)) for m in means.values())
    for n, g in rectifier_groups(q).items():
        g.make_static(means[n])
    with torch.no_grad():
        before = q(x)
    with pytest.raises(RuntimeError, match="static"):  # dynamic groups cannot be fused
        other = _tiny_quantized()
        attach_rectifiers(other, 2, 2)
        fuse_rectifiers(other)
    assert fuse_rectifiers(q) == len(names)
    assert not rectifier_groups(q) and not any(isinstance(m, RectifierGroup) for m in q.modules())
    with torch.no_grad():
        assert torch.equal(q(x), before)
        assert not torch.equal(q(x), plain(x))  # the increments changed the weights
    assert list(q.state_dict()) == list(plain.state_dict())
    assert sum(p.numel() for p in q.parameters()) == sum(p.numel() for p in plain.parameters())
    assert not q._forward_pre_hooks and all(not m._forward_pre_hooks for m in q.modules())
    assert model_cost(q, scale=4).to_dict() == model_cost(plain, scale=4).to_dict()


@pytest.fixture(scope="module")
def calib() -> torch.Tensor:
    from srq.data.samples import sample_images

    crops = [torch.from_numpy(img[:32, :32].copy()).permute(2, 0, 1).float() / 255
             for _, img in sample_images("train")[:8]]
    return torch.stack(crops)


def _l1(q, fp, x) -> float:
    with torch.no_grad():
        return float((q(x) - fp(x)).abs().mean())


def test_rectifiers_beat_bounds_only_training_and_the_result_reloads(tmp_path, calib):
    fp = srq.create_model("srq_tiny", 4, "official")
    quick = dict(w_bits=2, a_bits=2, iterations=40, osrc_iterations=10, batch=4)
    bounds = srq.quantize(fp, SPR2Q(rank=0, **quick), calib, progress=False)
    q = srq.quantize(fp, SPR2Q(rank=4, group_size=2, **quick), calib, progress=False)
    assert _l1(q, fp, calib) < _l1(bounds, fp, calib)
    report = q.srq_report
    assert set(report["seconds"]) == {"calibration", "rgt", "osrc", "fusion"}
    assert all(len(v) == 2 and abs(sum(v) - 1) < 1e-5 for v in report["routing"].values())
    assert all(r > 0 for r in report["increment_norm_ratio"].values())
    # the deployed model is a plain quantized model: same cost as MinMax at the same bits, saves and reloads
    plain = srq.quantize(fp, MinMax(w_bits=2, a_bits=2), calib, progress=False)
    assert model_cost(q, scale=4).to_dict() == model_cost(plain, scale=4).to_dict()
    srq.save(q, tmp_path / "run")
    assert json.loads((tmp_path / "run" / "srq.json").read_text())["report"]["rank"] == 4
    q2 = srq.load(tmp_path / "run")
    with torch.no_grad():
        assert torch.equal(q(calib), q2(calib))


def _objective(q, fp, x, lambda_feat: float = 10.0) -> float:
    """SPR²Q's training loss (pixel L1 + λ · block feature MSE) on the whole of ``x``."""
    blocks = find_blocks(fp)
    with torch.no_grad(), capture_outputs(q, blocks) as fq, capture_outputs(fp, blocks) as ffp:
        out_q, out_fp = q(x), fp(x)
        return float(distill_loss(out_q, out_fp, dict(fq), dict(ffp), lambda_feat))


def test_static_routing_calibration_lowers_the_loss(calib):
    # OSRC minimises the distillation loss over the routing weights from the mean gate output. Make routing
    # matter: rectifier 0 of each layer adds nothing, rectifier 1 adds noise as large as the weight, so the mean
    # routing (½, ½) is bad and OSRC must move each layer's weight towards rectifier 0.
    fp = srq.create_model("srq_tiny", 4, "official")
    q = prepare(copy.deepcopy(fp), QuantConfig(w_bits=4, a_bits=4), calib[:1])
    srq.quant.calibrate(q, [calib], total=1)
    attach_rectifiers(q, rank=2, group_size=2)
    torch.manual_seed(0)
    with torch.no_grad():
        for name, g in rectifier_groups(q).items():
            g.gate.weight.zero_()
            g.gate.bias.zero_()
            rms = q.get_submodule(name).weight.pow(2).mean().sqrt()
            g.A.normal_()
            g.B[1].normal_().mul_(rms / 2 ** 0.5)
    config = FinetuneConfig(lr=0.05, batch=4, steps=40, lambda_feat=10.0)
    assert static_routing_calibration(q, fp, calib, FinetuneConfig(batch=4, steps=0)) == []
    assert all(torch.allclose(g.routing_weights(), torch.tensor([0.5, 0.5])) for g in rectifier_groups(q).values())
    before = _objective(q, fp, calib)
    losses = static_routing_calibration(q, fp, calib, config, progress=False)
    assert len(losses) == 40
    assert _objective(q, fp, calib) < 0.8 * before
    assert all(g.routing_weights()[0] > 0.6 for g in rectifier_groups(q).values())


def test_bad_settings_fail_early():
    with pytest.raises(ValueError, match="rank"):
        SPR2Q(rank=-1)
    with pytest.raises(ValueError, match="batch"):
        SPR2Q(batch=0)
    with pytest.raises(ValueError, match="patches"):
        SPR2Q().run(srq.create_model("srq_tiny", 4, "official"), [torch.rand(1, 3, 8, 8)])
