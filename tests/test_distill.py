"""Block discovery for feature alignment and the distillation loss."""

from __future__ import annotations

import pytest
import torch

import srq
from srq.engine.distill import capture_outputs, distill_loss, find_blocks


@pytest.mark.parametrize("name, scale, expected", [
    ("imdn", 4, [f"IMDB{i}" for i in range(1, 7)]),
    ("rfdn", 4, [f"B{i}" for i in range(1, 5)]),
    ("rlfn", 4, [f"block_{i}" for i in range(1, 7)]),
    ("pan", 4, [f"SCPA_trunk.{i}" for i in range(16)]),
    ("srq_tiny", 4, [f"body.{i}" for i in range(4)]),
])
def test_find_blocks_on_zoo_models(name, scale, expected):
    assert find_blocks(srq.create_model(name, scale, wrap=False)) == expected


def test_distill_loss_is_l1_plus_weighted_feature_mse():
    out_q, out_fp = torch.zeros(1, 3, 2, 2), torch.full((1, 3, 2, 2), 0.5)
    fq, ffp = {"b": torch.ones(1, 4)}, {"b": torch.zeros(1, 4)}
    assert distill_loss(out_q, out_fp, fq, ffp, 10.0).item() == pytest.approx(0.5 + 10 * 1.0)
    assert distill_loss(out_q, out_fp, fq, ffp, 0.0).item() == pytest.approx(0.5)


def test_capture_outputs_removes_its_hooks():
    net = srq.create_model("srq_tiny", 4, wrap=False)
    with capture_outputs(net, ["body.0"]) as store:
        net(torch.rand(1, 3, 8, 8))
        assert store["body.0"].shape == (1, 32, 8, 8)
    assert not net.body[0]._forward_hooks


def test_energy_map_and_energy_feature_loss():
    from srq.engine.distill import energy_map

    f = torch.zeros(1, 2, 1, 2)
    f[0, :, 0, 0] = torch.tensor([3.0, 1.0])  # mean of squares over channels: 5 at pixel 0, 0 at pixel 1
    assert torch.allclose(energy_map(f), torch.tensor([[1.0, 0.0]]))
    out = torch.zeros(1, 3, 2, 2)
    g = torch.zeros(1, 2, 1, 2)
    g[0, :, 0, 1] = 1.0  # all energy at pixel 1: maps [1, 0] vs [0, 1], MSE 1
    loss = distill_loss(out, out, {"a": f, "b": f}, {"a": g, "b": f}, 5.0, feature_loss="energy")
    assert loss.item() == pytest.approx(5.0 * (1.0 + 0.0) / 2)


def test_finetune_runs_a_fixed_number_of_steps_with_cosine_schedule():
    from srq.engine.distill import FinetuneConfig, finetune

    fp = srq.create_model("srq_tiny", 4, "official")
    q = srq.quantize(fp, srq.methods.MinMax(w_bits=4, a_bits=4), torch.rand(3, 3, 16, 16), progress=False)
    params = [p for _, qq in srq.quant.quantizers(q) for p in qq.parameters()]
    losses = finetune(q, fp, torch.rand(3, 3, 16, 16), params,
                      FinetuneConfig(lr=1e-3, lr_min=1e-4, steps=5, batch=2), progress=False)
    assert len(losses) == 5
    with pytest.raises(ValueError, match="feature_loss"):
        FinetuneConfig(feature_loss="l2")


def test_steps_with_non_finite_gradients_are_skipped_with_a_warning():
    from srq.engine.distill import FinetuneConfig, finetune

    class SqrtNet(torch.nn.Module):  # d sqrt(v)/dv is infinite at v = 0: a constant input gives NaN gradients
        def __init__(self) -> None:
            super().__init__()
            self.conv = torch.nn.Conv2d(3, 3, 1)

        def forward(self, x):
            y = self.conv(x)  # constant over space for a constant input: zero variance per channel
            return y + (y - y.mean((2, 3), keepdim=True)).pow(2).mean((2, 3), keepdim=True).pow(0.5)

    model = SqrtNet()
    with torch.no_grad():  # exactly representable outputs: the spatial mean is exact, the variance exactly 0
        model.conv.weight.fill_(0.25)
        model.conv.bias.zero_()
    before = model.conv.weight.detach().clone()
    inputs = torch.full((4, 3, 8, 8), 0.5)
    with pytest.warns(UserWarning, match="4 of 4 steps skipped"):
        finetune(model, SqrtNet(), inputs, list(model.conv.parameters()), FinetuneConfig(batch=2, epochs=2),
                 progress=False)
    assert torch.equal(model.conv.weight, before)


def test_imdn_contrast_has_finite_gradients_on_constant_channels():
    from srq.models.imdn import _contrast

    x = torch.zeros(1, 2, 4, 4, requires_grad=True)
    _contrast(x).sum().backward()
    assert torch.isfinite(x.grad).all()


def test_steps_with_outlier_losses_are_skipped_and_not_recorded():
    from srq.engine.distill import FinetuneConfig, finetune

    model, fp = torch.nn.Conv2d(3, 3, 1), torch.nn.Conv2d(3, 3, 1)
    before = model.weight.detach().clone()
    inputs = torch.rand(8, 3, 4, 4)
    inputs[5] *= 1e4  # one sample whose loss is ~10⁴ times the others'
    recorded, stats = [], {}
    cfg = FinetuneConfig(batch=1, epochs=1, lr=1e-3, lambda_feat=0.0, outlier_factor=10)
    with pytest.warns(UserWarning, match=r"1 of 8 steps skipped \(loss above 10× the median"):
        losses = finetune(model, fp, inputs, list(model.parameters()), cfg, progress=False, stats=stats,
                          after_backward=lambda: recorded.append(float(model.weight.grad.abs().max())))
    assert len(losses) == 8 and len(recorded) == 7
    assert stats["steps"] == 8 and stats["steps_taken"] == 7 and len(stats["largest_loss_ratios"]) == 8
    assert stats["largest_loss_ratios"][0] == pytest.approx(max(losses) / stats["loss_median"], rel=1e-2)
    assert stats["largest_loss_ratios"][0] > 1e3
    assert max(losses) > 1e3 * sorted(losses)[len(losses) // 2]
    assert max(recorded) < 1e3 * min(recorded)  # the outlier's gradient is not among them
    assert not torch.equal(model.weight, before)
    with pytest.raises(ValueError, match="outlier_factor"):
        FinetuneConfig(outlier_factor=0.5)


def test_step_stats_stay_strict_json_with_non_finite_losses():
    import json
    import math

    from srq.engine.distill import step_stats

    stats = step_stats([1.0, 2.0, 3.0, math.inf], taken=3)
    assert stats["loss_median"] == 2.5 and stats["steps"] == 4 and stats["steps_taken"] == 3
    assert stats["largest_loss_ratios"] == [None, 1.2, 0.8, 0.4]  # largest first; inf → None
    assert step_stats([math.inf] * 3, taken=0)["loss_median"] is None
    json.dumps(step_stats([math.inf, 1.0], taken=1), allow_nan=False)
    assert len(step_stats([1.0] * 40, taken=40)["largest_loss_ratios"]) == 25


class _InplaceBlock(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv1 = torch.nn.Conv2d(8, 8, 3, padding=1)
        self.conv2 = torch.nn.Conv2d(8, 8, 3, padding=1)

    def forward(self, x):
        out = torch.sigmoid(self.conv2(torch.relu(self.conv1(x))))  # sigmoid saves its output for backward
        out *= x  # ... which this modifies in place
        return out


class _InplaceNet(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.head = torch.nn.Conv2d(3, 8, 3, padding=1)
        self.body = torch.nn.Sequential(_InplaceBlock(), _InplaceBlock())
        self.tail = torch.nn.Conv2d(8, 3, 3, padding=1)

    def forward(self, x):
        return self.tail(self.body(self.head(x)))


def test_inplace_error_names_the_module_that_does_it():
    from srq.engine.distill import FinetuneConfig, finetune
    from srq.errors import SrqError

    fp = _InplaceNet().eval()
    calib = torch.rand(2, 3, 8, 8)
    q = srq.quantize(fp, srq.methods.MinMax(w_bits=8, a_bits=8), calib, progress=False)
    params = [p for _, qq in srq.quant.quantizers(q) for p in qq.parameters()]
    with pytest.raises(SrqError, match=r"^the forward of `body\.0` \(_InplaceBlock\) modifies a tensor made by "
                                       r"SigmoidBackward0 in place \(`\*=`\).*write `out = out \* x` instead of "
                                       r"`out \*= \.\.\.`$"):
        finetune(q, fp, calib, params, FinetuneConfig(steps=1, batch=2), progress=False)


def test_inplace_message_names_the_child_whose_output_is_modified():
    from srq.engine.inplace import find_inplace

    class Block(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.act = torch.nn.Sigmoid()

        def forward(self, x):
            h = self.act(x)
            h += x
            return h

    net = torch.nn.Sequential(torch.nn.Conv2d(3, 3, 1), Block())
    ops = find_inplace(net, torch.rand(1, 3, 4, 4))
    assert [(o.module, o.module_class, o.child) for o in ops] == [("1", "Block", "1.act")]


def _gain_net(gain: float, noise: float = 0.0) -> torch.nn.Module:
    """srq_tiny with the body's features scaled by ``gain`` (and the tail scaled back): the same outputs."""
    net = srq.create_model("srq_tiny", 4, "official", wrap=False)
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in net.parameters():
            p.add_(noise * torch.randn(p.shape, generator=gen))
        net.head.weight.mul_(gain)
        for m in net.modules():
            if isinstance(m, torch.nn.Conv2d) and m is not net.tail:
                m.bias.mul_(gain)  # LeakyReLU blocks are positively homogeneous: biases scale with the features
        net.tail.weight.div_(gain)
    return net.eval()


def test_normalised_feature_loss_does_not_follow_the_feature_magnitude():
    from srq.engine.distill import feature_term

    x = torch.rand(2, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    losses = {}
    for gain in (1.0, 1e6):
        fp, q = _gain_net(gain), _gain_net(gain, noise=0.01)
        names = [f"body.{i}" for i in range(4)]
        with torch.no_grad(), capture_outputs(fp, names) as ffp, capture_outputs(q, names) as fq:
            fp(x), q(x)
            losses[gain] = {k: float(feature_term(dict(fq), dict(ffp), k)) for k in ("mse", "mse_norm")}
    assert losses[1e6]["mse_norm"] == pytest.approx(losses[1.0]["mse_norm"], rel=1e-3)
    assert losses[1e6]["mse"] == pytest.approx(1e12 * losses[1.0]["mse"], rel=1e-3)
