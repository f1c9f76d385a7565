"""``Quantizer`` life cycle, ``prepare`` model surgery and ``QuantConfig`` on small hand-built models."""

from __future__ import annotations

import copy
import json

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from srq.errors import SrqError
from srq.quant.markers import QuantPoint
from srq.quant import (
    LayerRule,
    QuantConfig,
    QuantConv2d,
    QuantLinear,
    Quantizer,
    calibrate,
    calibrate_activations,
    fake_quant,
    float_layers,
    parse_bits,
    placement,
    prepare,
    quantizers,
)
from srq.quant.prepare import format_placement, quantizable_layers

# ---- Quantizer ----------------------------------------------------------------------------------------------


def test_quantizer_calibration_life_cycle():
    q = Quantizer(4)
    x = torch.randn(2, 3, 8, 8)
    assert not bool(q.initialized) and not q.calibrating
    with pytest.raises(RuntimeError, match="before calibration"):
        q(x)
    with pytest.raises(RuntimeError, match="without start_calibration"):
        q.finish_calibration()
    q.start_calibration()
    assert q.calibrating
    assert q(x) is x  # identity while observing
    x2 = torch.randn(2, 3, 8, 8) * 3
    assert q(x2) is x2
    q.finish_calibration()
    assert bool(q.initialized) and not q.calibrating
    lo = torch.minimum(x.min(), x2.min())
    hi = torch.maximum(x.max(), x2.max())
    torch.testing.assert_close(q.lower.data, lo)
    torch.testing.assert_close(q.upper.data, hi)
    out = q(x)
    torch.testing.assert_close(out, fake_quant(x, lo, hi, 4))
    assert len(torch.unique(q(x2))) <= 16
    # switched off: identity
    q.enabled = False
    assert q(x) is x


@pytest.mark.parametrize("bits", [0, 9, -1])
def test_quantizer_rejects_bits_outside_1_to_8(bits):
    with pytest.raises(ValueError, match="between 1 and 8"):
        Quantizer(bits)


def test_quantizer_rejects_unknown_mode():
    with pytest.raises(ValueError, match="mode"):
        Quantizer(4, mode="log")


@pytest.mark.parametrize("mode", ["uniform", "symmetric"])
def test_one_bit_is_binary(mode):
    q = Quantizer(1, mode=mode, channel_axis=0, num_channels=2)
    assert q.mode == "binary" and q.observer_name == "meanabs"
    assert not hasattr(q, "lower") and q.alpha.shape == (2,)
    w = torch.tensor([[-2.0, 1.0, 0.0, 1.0], [0.5, -0.5, 0.5, 0.5]])
    q.start_calibration()
    q(w)
    q.finish_calibration()
    # α = mean |w| per channel: (2 + 1 + 0 + 1)/4 = 1, 0.5
    torch.testing.assert_close(q.alpha.data, torch.tensor([1.0, 0.5]))
    torch.testing.assert_close(q(w), torch.tensor([[-1.0, 1.0, 1.0, 1.0], [0.5, -0.5, 0.5, 0.5]]))
    assert "mode=binary" in repr(q)


def test_set_bounds_symmetric_and_binary_use_max_abs():
    q = Quantizer(3, mode="symmetric", channel_axis=0, num_channels=3)
    q.set_bounds(torch.tensor([-2.0, -0.5, 0.1]), torch.tensor([1.0, 0.7, 0.3]))
    torch.testing.assert_close(q.alpha.data, torch.tensor([2.0, 0.7, 0.3]))
    assert bool(q.initialized)
    lo, hi = q.bounds()
    torch.testing.assert_close(lo, -hi)
    # symmetric 3 bit on channel 0: α = 2, step 2/3; zero stays zero
    w = torch.tensor([[0.0, 0.9, -3.0], [0.0, 0.2, 0.7], [0.0, -0.05, 0.3]])
    out = q(w)
    assert (out[:, 0] == 0).all()
    torch.testing.assert_close(out[0], torch.tensor([0.0, 2 / 3, -2.0]))
    b = Quantizer(1)
    b.set_bounds(torch.tensor(-0.4), torch.tensor(0.25))
    torch.testing.assert_close(b.alpha.data, torch.tensor(0.4))


def test_set_bounds_uniform_keeps_upper_above_lower_and_shapes():
    q = Quantizer(4, channel_axis=0, num_channels=2)
    q.set_bounds(torch.tensor([[0.5], [1.0]]), torch.tensor([0.5, 2.0]))  # any shape, right count
    assert q.lower.shape == (2,) and q.upper.shape == (2,)
    # a constant channel (lower == upper) quantizes to that constant, with finite gradients
    assert q.upper[0] >= q.lower[0]
    x = torch.tensor([[0.5, 0.7, 0.2], [0.0, 1.5, 3.0]], requires_grad=True)
    out = q(x)
    torch.testing.assert_close(out[0].detach(), torch.full((3,), 0.5))
    out.sum().backward()
    assert torch.isfinite(x.grad).all() and torch.isfinite(q.lower.grad).all() and torch.isfinite(q.upper.grad).all()
    # one value for all channels (per-tensor observers) fills every channel
    q.set_bounds(torch.tensor(-1.0), torch.tensor(1.0))
    torch.testing.assert_close(q.upper.data, torch.ones(2))
    with pytest.raises(RuntimeError):
        q.set_bounds(torch.zeros(3), torch.ones(3))


def test_per_channel_weight_quantizer_uses_axis_0():
    w = torch.randn(4, 3, 3, 3)
    w[1] *= 10
    q = Quantizer(3, channel_axis=0, num_channels=4)
    q.start_calibration()
    q(w)
    q.finish_calibration()
    out = q(w)
    for c in range(4):
        torch.testing.assert_close(out[c], fake_quant(w[c], w[c].min(), w[c].max(), 3))


@pytest.mark.parametrize("observer", ["minmax", "omse", "percentile"])
def test_weight_observers_work_per_channel(observer):
    kwargs = {"bits": 4, "keep_tensor": True} if observer == "omse" else {}
    q = Quantizer(4, channel_axis=0, num_channels=5, observer=observer, observer_kwargs=kwargs)
    w = torch.randn(5, 2, 3, 3)
    q.start_calibration()
    q(w)
    q.finish_calibration()
    assert q.lower.shape == (5,) and (q.upper > q.lower).all()
    assert q(w).shape == w.shape


def test_quantizer_state_dict_round_trip():
    q = Quantizer(4, channel_axis=0, num_channels=3)
    q.set_bounds(torch.tensor([-1.0, -2.0, -3.0]), torch.tensor([1.0, 2.0, 3.0]))
    q2 = Quantizer(4, channel_axis=0, num_channels=3)
    q2.load_state_dict(q.state_dict())
    assert bool(q2.initialized)
    x = torch.randn(3, 10)
    torch.testing.assert_close(q2(x), q(x))
    assert set(q.state_dict()) == {"lower", "upper", "initialized"}


def test_quantizer_bounds_are_trainable_parameters():
    q = Quantizer(4)
    q.set_bounds(torch.tensor(-1.0), torch.tensor(1.0))
    out = q(torch.linspace(-2, 2, 50))
    out.sum().backward()
    assert q.lower.grad is not None and q.upper.grad is not None


# ---- prepare ----------------------------------------------------------------------------------------------


class _Holder(nn.Module):
    """A block that marks its input as a quantization point (like an attention operand)."""

    def __init__(self) -> None:
        super().__init__()
        self.point = QuantPoint("attn_q")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.point(x)


class _Net(nn.Module):
    """Registration order (tail, mean_shift, body, head) differs from execution order
    (mean_shift, head, body.0, body.3, tail); mean_shift is a frozen 1x1 conv like CARN's. The ReLU after head
    ends the stem (without it body.0 would be a first layer too)."""

    def __init__(self) -> None:
        super().__init__()
        self.tail = nn.Linear(8, 5)
        self.mean_shift = nn.Conv2d(3, 3, 1)
        self.mean_shift.requires_grad_(False)
        self.body = nn.Sequential(nn.Conv2d(8, 8, 3, padding=1), nn.ReLU(), _Holder(), nn.Conv2d(8, 8, 3, padding=1))
        self.head = nn.Conv2d(3, 8, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.head(self.mean_shift(x)))
        x = self.body(x)
        return self.tail(x.mean(dim=(2, 3)))


def _net() -> _Net:
    torch.manual_seed(0)
    return _Net()


def _bits(model: nn.Module) -> dict[str, tuple]:
    return {e.name: (e.role, e.w_bits, e.a_bits) for e in placement(model)}


def test_prepare_default_first_last_8bit_by_execution_order():
    model = prepare(_net(), QuantConfig(w_bits=4, a_bits=4))
    assert _bits(model) == {
        "tail": ("last", 8, 8),
        "body.0": ("body", 4, 4),
        "body.2.point": ("point", None, 4),
        "body.3": ("body", 4, 4),
        "head": ("first", 8, 8),
    }
    assert isinstance(model.head, QuantConv2d) and isinstance(model.tail, QuantLinear)
    assert type(model.mean_shift) is nn.Conv2d  # frozen preprocessing stays float
    point_q = model.body[2].point
    assert isinstance(point_q, Quantizer) and point_q.srq_point_kind == "attn_q" and point_q.bits == 4
    # per output channel weight bounds, per tensor activation bounds
    assert model.body[0].weight_quantizer.channel_axis == 0
    assert model.body[0].weight_quantizer.lower.shape == (8,)
    assert model.tail.weight_quantizer.lower.shape == (5,)
    assert model.body[0].input_quantizer.channel_axis is None
    assert len(quantizers(model)) == 4 * 2 + 1
    assert model.srq_quant_config.w_bits == 4
    table = format_placement(placement(model))
    assert "body.2.point" in table and "point:attn_q" in table


def test_first_last_found_by_execution_not_registration():
    model = prepare(_net(), QuantConfig(first_last="fp"))
    roles = {e.name: e.role for e in placement(model)}
    assert roles["head"] == "first" and roles["tail"] == "last"


@pytest.mark.parametrize("policy, edge", [("fp", (None, None)), ("same", (2, 3)), ("8bit", (8, 8))])
def test_first_last_policies(policy, edge):
    bits = _bits(prepare(_net(), QuantConfig(w_bits=2, a_bits=3, first_last=policy)))
    assert bits["head"][1:] == edge and bits["tail"][1:] == edge
    assert bits["body.0"][1:] == (2, 3)


def test_fp_first_last_layers_compute_in_float():
    model = prepare(_net(), QuantConfig(first_last="fp"))
    assert model.head.weight_quantizer is None and model.head.input_quantizer is None
    torch.testing.assert_close(model.head.effective_weight(), model.head.weight)


def test_rules_apply_in_order_later_wins():
    rules = [LayerRule(r"body\..*", w_bits=2),     # body.0, body.2.point (no weight), body.3
             LayerRule(r"body\.3", a_bits=3),
             LayerRule(r"body\.0", w_bits=6),      # later: beats the first rule for body.0
             LayerRule("head", w_bits=3),          # overrides the 8-bit first layer default (weights only)
             LayerRule(r".*point", a_bits=8)]
    bits = _bits(prepare(_net(), QuantConfig(w_bits=4, a_bits=4, rules=rules)))
    assert bits["body.0"] == ("body", 6, 4)
    assert bits["body.3"] == ("body", 2, 3)
    assert bits["head"] == ("first", 3, 8)
    assert bits["tail"] == ("last", 8, 8)
    assert bits["body.2.point"] == ("point", None, 8)


def test_fp_rules():
    rules = [LayerRule(r"body\.3", fp=True), LayerRule(r"body\.2\.point", fp=True), LayerRule("tail", fp=True)]
    model = prepare(_net(), QuantConfig(rules=rules))
    bits = _bits(model)
    assert bits["body.3"] == ("body", None, None) and bits["tail"] == ("last", None, None)
    assert bits["body.2.point"] == ("point", None, None)
    assert isinstance(model.body[2].point, QuantPoint)  # left as the float marker
    # a later rule can bring one side back after fp
    bits = _bits(prepare(_net(), QuantConfig(rules=[LayerRule(r"body\.3", fp=True), LayerRule(r"body\.3", w_bits=5)])))
    assert bits["body.3"] == ("body", 5, None)


def test_rule_matching_nothing_is_one_line_error_and_model_untouched():
    model = _net()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(SrqError) as err:
        prepare(model, QuantConfig(rules=[LayerRule("body.0"), LayerRule("nosuchlayer", w_bits=2)]))
    msg = str(err.value)
    assert "\n" not in msg and "'nosuchlayer'" in msg and "matches no layer" in msg
    # nothing was replaced, so the user can fix the rule and call prepare again
    assert not any(isinstance(m, (QuantConv2d, QuantLinear, Quantizer)) for m in model.modules())
    assert model.state_dict().keys() == before.keys()
    prepare(model, QuantConfig())


def test_rule_for_frozen_layer_matches_nothing():
    with pytest.raises(SrqError, match="matches no layer"):
        prepare(_net(), QuantConfig(rules=[LayerRule("mean_shift", w_bits=2)]))


def test_quant_points_off():
    model = prepare(_net(), QuantConfig(quant_points=False))
    assert isinstance(model.body[2].point, QuantPoint)
    assert "body.2.point" in _bits(model) and _bits(model)["body.2.point"][2] is None


def test_state_dict_keeps_original_names_and_tensors():
    model = _net()
    original = model.state_dict()
    prepare(model, QuantConfig())
    new = model.state_dict()
    assert set(original) <= set(new)
    for k, v in original.items():
        assert new[k].data_ptr() == v.data_ptr()  # same tensors, not copies
    extra = set(new) - set(original)
    assert "head.weight_quantizer.lower" in extra and "body.2.point.lower" in extra
    assert all(".weight_quantizer." in k or ".input_quantizer." in k or k.startswith("body.2.point.") for k in extra)
    assert not any(k.startswith("mean_shift.") for k in extra)
    # the original float weights still load into the prepared model under their own names
    missing, unexpected = model.load_state_dict(original, strict=False)
    assert not unexpected and set(missing) == extra


def test_prepared_model_calibrates_and_runs_close_to_float_at_8_bits():
    float_model = _net()
    x = torch.rand(2, 3, 12, 12)
    with torch.no_grad():
        ref = float_model(x)
    model = prepare(_net(), QuantConfig(w_bits=8, a_bits=8))
    calibrate(model, [x], progress=False)
    assert all(bool(q.initialized) for _, q in quantizers(model))
    with torch.no_grad():
        out = model(x)
    assert out.shape == ref.shape
    assert (out - ref).abs().max() < 0.02 * ref.abs().max() + 1e-3
    low = prepare(_net(), QuantConfig(w_bits=2, a_bits=2, first_last="same"))
    calibrate(low, [x], progress=False)
    with torch.no_grad():
        assert (low(x) - ref).abs().mean() > (out - ref).abs().mean()


def test_activation_bounds_come_from_the_float_network_unless_asked_otherwise():
    torch.manual_seed(0)
    float_model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.Conv2d(8, 3, 3, padding=1))
    x = torch.rand(2, 3, 10, 10)
    with torch.no_grad():
        hidden = float_model[0](x)
    model = prepare(copy.deepcopy(float_model), QuantConfig(w_bits=2, a_bits=8, first_last="same"))
    calibrate(model, [x], progress=False)
    lo, hi = model[1].input_quantizer.bounds()
    assert torch.allclose(lo, hidden.min()) and torch.allclose(hi, hidden.max())
    assert all(m.weight_quantizer.enabled for m in model)  # restored afterwards
    calibrate_activations(model, [x], progress=False, quantized_weights=True)
    with torch.no_grad():
        hidden_q = F.conv2d(x, model[0].effective_weight(), model[0].bias, padding=1)
    lo, hi = model[1].input_quantizer.bounds()
    assert not torch.allclose(hi, hidden.max()) and torch.allclose(hi, hidden_q.max())


def test_prepare_refuses_quantized_or_empty_models():
    model = prepare(_net(), QuantConfig())
    with pytest.raises(SrqError, match="already quantized"):
        prepare(model, QuantConfig())
    with pytest.raises(SrqError, match="no Conv2d/Linear"):
        prepare(nn.Sequential(nn.ReLU()), QuantConfig())


def test_prepare_keeps_training_mode():
    model = _net().train()
    prepare(model, QuantConfig())
    assert model.training
    model = _net().eval()
    prepare(model, QuantConfig())
    assert not model.training


# ---- QuantConfig -------------------------------------------------------------------------------------------


def test_config_json_round_trip():
    cfg = QuantConfig(w_bits=3, a_bits=5, w_granularity="tensor", a_mode="symmetric", a_observer="ema_minmax",
                      first_last="fp", quant_points=False,
                      rules=[LayerRule(r"body\..*", w_bits=2), LayerRule("tail", fp=True)])
    text = cfg.to_json()
    assert json.loads(text)["rules"][0] == {"pattern": r"body\..*", "w_bits": 2, "a_bits": None, "fp": False}
    back = QuantConfig.from_json(text)
    assert back == cfg
    assert back.to_dict() == cfg.to_dict()
    assert isinstance(back.rules[0], LayerRule) and back.rules[0].matches("body.3")
    assert QuantConfig.from_dict({}) == QuantConfig()


@pytest.mark.parametrize("kwargs", [
    {"w_bits": 0}, {"w_bits": 9}, {"a_bits": 0}, {"a_bits": 9}, {"w_bits": True}, {"a_bits": 4.0},
    {"w_granularity": "group"}, {"w_mode": "log"}, {"first_last": "16bit"}, {"w_observer": "ema_minmax"},
    {"a_observer": "mse"}, {"rules": [{"pattern": "x", "w_bits": 9}]}, {"rules": [{"pattern": "x", "a_bits": 0}]},
    {"rules": [{"pattern": "(unclosed"}]}, {"rules": [{"pattern": "x", "bits": 4}]}, {"rules": [{"w_bits": 4}]},
    {"rules": ["body"]},
])
def test_config_validation_errors(kwargs):
    with pytest.raises(SrqError) as err:
        QuantConfig(**kwargs)
    assert "\n" not in str(err.value)


def test_config_unknown_key_and_bad_json():
    with pytest.raises(SrqError, match="unknown quantization config keys: wbits"):
        QuantConfig.from_dict({"wbits": 4})
    with pytest.raises(SrqError, match="not valid JSON"):
        QuantConfig.from_json("{w_bits: 4")
    with pytest.raises(SrqError, match="not a valid regex"):
        LayerRule("a[")


def test_layer_rule_full_match():
    rule = LayerRule(r"body\.1")
    assert rule.matches("body.1") and not rule.matches("body.10") and not rule.matches("x.body.1")


@pytest.mark.parametrize("spec, expected", [
    ("w4a4", (4, 4)), ("W2A8", (2, 8)), (" w8a8 ", (8, 8)), ("4/4", (4, 4)), ("1 / 3", (1, 3)), ("w1a1", (1, 1)),
])
def test_parse_bits(spec, expected):
    assert parse_bits(spec) == expected


@pytest.mark.parametrize("spec", ["w9a4", "w4a0", "w0a4", "4", "w4", "a4w4", "abc", "", "4/4/4", "w4a4x"])
def test_parse_bits_errors(spec):
    with pytest.raises(SrqError):
        parse_bits(spec)


def test_projected_bounds_keep_zero_inside_affine_ranges():
    q = Quantizer(4, mode="affine")
    q.set_bounds(torch.tensor(-1.0), torch.tensor(1.0))
    with torch.no_grad():
        q.lower.fill_(0.3)  # an optimiser step pushed the lower bound past 0
        q.upper.fill_(-0.2)
    q.project_bounds_()
    assert q.lower.item() == 0.0 and q.upper.item() > 0.0
    # at the projected bound the gradient flows again, so the bound can move back down
    x = torch.tensor([-0.5, 0.1, 0.4])
    q(x).sum().backward()
    assert q.lower.grad is not None and q.lower.grad.item() != 0.0


def test_one_bit_quantizers_are_binary_or_two_learnable_levels():
    from srq.quant import QuantConfig, Quantizer, prepare

    def modes(cfg: QuantConfig) -> set[str]:
        model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Conv2d(4, 4, 3), nn.ReLU(), nn.Conv2d(4, 3, 3))
        q = prepare(model, cfg)
        return {m.mode for m in q[2].modules() if isinstance(m, Quantizer)}

    assert modes(QuantConfig(w_bits=1, a_bits=1)) == {"binary"}
    assert modes(QuantConfig(w_bits=1, a_bits=1, one_bit="levels")) == {"uniform"}
    assert modes(QuantConfig(w_bits=2, a_bits=2, one_bit="levels")) == {"affine"}  # only 1 bit changes
    with pytest.raises(ValueError, match="one_bit"):
        Quantizer(1, one_bit="ternary")
    q = Quantizer(1, one_bit="levels")
    q.set_bounds(torch.tensor(0.2), torch.tensor(1.0))
    x = torch.tensor([-1.0, 0.5, 0.61, 3.0])
    assert torch.equal(q(x).detach(), torch.tensor([0.2, 0.2, 1.0, 1.0]))  # Eq. 1 with n = 1: levels a and b
    with pytest.raises(SrqError, match="one_bit"):
        QuantConfig(one_bit="ternary")


class _TwoBranches(nn.Module):
    """head → one of two tails picked by ``self.scale`` (like CARN's multi-scale upsampling)."""

    def __init__(self) -> None:
        super().__init__()
        self.head = nn.Conv2d(3, 4, 3, padding=1)
        self.mid = nn.Conv2d(4, 4, 3, padding=1)
        self.up2 = nn.Conv2d(4, 3, 3, padding=1)
        self.up4 = nn.Conv2d(4, 3, 3, padding=1)
        self.scale = 4

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.mid(torch.relu(self.head(x))))
        return (self.up4 if self.scale == 4 else self.up2)(x)


def test_layers_that_do_not_run_stay_float_and_calibration_works():
    model = prepare(_TwoBranches(), QuantConfig(w_bits=4, a_bits=4))
    assert _bits(model) == {"head": ("first", 8, 8), "mid": ("body", 4, 4), "up4": ("last", 8, 8)}
    assert type(model.up2) is nn.Conv2d
    calibrate(model, [torch.rand(2, 3, 8, 8)])  # the idle branch needs no data
    assert model(torch.rand(1, 3, 8, 8)).shape == (1, 3, 8, 8)


def _reasons(model: nn.Module) -> dict[str, str]:
    return {f.name: f.reason for f in float_layers(model)}


def test_float_layers_say_why_each_layer_stays_float():
    model = prepare(_net(), QuantConfig(first_last="fp", rules=[LayerRule(r"body\.3", fp=True),
                                                                LayerRule(r"body\.2\.point", fp=True)]))
    assert _reasons(model) == {"tail": "last layer, first_last='fp'",
                               "mean_shift": "frozen parameters (fixed preprocessing)",
                               "body.2.point": r"layer rule 'body\\.2\\.point' has fp=True",
                               "body.3": r"layer rule 'body\\.3' has fp=True",
                               "head": "first layer, first_last='fp'"}
    table = format_placement(placement(model), float_layers(model))
    assert table.startswith(format_placement(placement(model)))  # the placement columns as before, then why
    assert "mean_shift" in table and "frozen parameters" in table and "run in float" in table


def test_float_layers_name_idle_branches_other_types_and_points_switched_off():
    model = _TwoBranches()
    model.mid = nn.Sequential(model.mid, nn.GroupNorm(2, 4))
    model = prepare(model, QuantConfig(w_bits=4, a_bits=4))
    assert _reasons(model) == {"up2": "did not run on the example input (idle at this scale)",
                               "mid.1": "srq does not quantize this type; its parameters (weight, bias) stay float"}
    assert _reasons(prepare(_net(), QuantConfig(quant_points=False)))["body.2.point"] == \
        "operand quantizers are off (quant_points=False)"
    assert _reasons(prepare(_net(), QuantConfig())) == {"mean_shift": "frozen parameters (fixed preprocessing)"}


def test_first_last_side_that_a_rule_requantizes_keeps_its_reason_for_the_other_side():
    model = prepare(_net(), QuantConfig(first_last="fp", rules=[LayerRule("head", w_bits=3)]))
    assert _bits(model)["head"] == ("first", 3, None)
    assert _reasons(model)["head"] == "first layer, first_last='fp'"


# ---- first/last layers by data flow (srq.quant.edges) --------------------------------------------------------


class _Stem(nn.Module):
    """``stem`` (an nn.Sequential) → ReLU → body conv → ReLU → ``head`` → (+ bicubic, when ``skip``)."""

    def __init__(self, stem: nn.Module, head: nn.Module, skip: bool = False) -> None:
        super().__init__()
        self.stem, self.head, self.skip = stem, head, skip
        self.body = nn.Conv2d(8, 8, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.head(torch.relu(self.body(torch.relu(self.stem(x)))))
        return y + F.interpolate(x, scale_factor=2, mode="bicubic") if self.skip else y


def _roles(model: nn.Module, **config) -> dict[str, tuple]:
    return _bits(prepare(model, QuantConfig(w_bits=4, a_bits=4, **config)))


def test_separable_stem_is_two_first_layers_at_8_bit():
    stem = nn.Sequential(nn.Conv2d(3, 8, 1), nn.Conv2d(8, 8, 3, padding=1, groups=8))
    bits = _roles(_Stem(stem, nn.Sequential(nn.Conv2d(8, 12, 3, padding=1), nn.PixelShuffle(2)), skip=True))
    assert bits == {"stem.0": ("first", 8, 8), "stem.1": ("first", 8, 8), "body": ("body", 4, 4),
                    "head.0": ("last", 8, 8)}


def test_a_nonlinearity_ends_the_stem_and_the_head():
    stem = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1))
    head = nn.Sequential(nn.Conv2d(8, 32, 3, padding=1), nn.ReLU(), nn.PixelShuffle(2), nn.Conv2d(8, 3, 3, padding=1))
    assert _roles(_Stem(stem, head)) == {"stem.0": ("first", 8, 8), "stem.2": ("body", 4, 4),
                                         "body": ("body", 4, 4), "head.0": ("body", 4, 4),
                                         "head.3": ("last", 8, 8)}


def test_a_head_through_pixel_shuffle_is_all_last_and_a_skip_ends_the_stem():
    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.first = nn.Conv2d(3, 8, 3, padding=1)
            self.mid = nn.Conv2d(8, 8, 3, padding=1)
            self.up = nn.Conv2d(8, 32, 3, padding=1)
            self.out = nn.Conv2d(8, 3, 3, padding=1)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            f = self.first(x)
            f = self.mid(f) + f  # f read twice: mid is not fed by the stem alone
            return self.out(F.pixel_shuffle(self.up(f), 2))

    assert _roles(Net(), first_last="fp") == {"first": ("first", None, None), "mid": ("body", 4, 4),
                                              "up": ("last", None, None), "out": ("last", None, None)}


def test_every_layer_fed_the_model_input_is_first():
    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a, self.b = nn.Conv2d(3, 4, 3, padding=1), nn.Conv2d(3, 4, 1)
            self.mid, self.out = nn.Conv2d(8, 8, 3, padding=1), nn.Conv2d(8, 3, 3, padding=1)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.out(torch.relu(self.mid(torch.relu(torch.cat([self.a(x), self.b(x)], 1)))))

    assert [r for r, *_ in _roles(Net()).values()] == ["first", "first", "body", "last"]


@pytest.mark.parametrize("act", [nn.ReLU(inplace=True), nn.LeakyReLU(0.1, inplace=True)])
def test_an_in_place_activation_ends_the_stem(act):
    stem = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), act, nn.Conv2d(8, 8, 1))
    roles = _roles(_Stem(stem, nn.Conv2d(8, 3, 3, padding=1)))
    assert (roles["stem.0"][0], roles["stem.2"][0]) == ("first", "body")


def test_a_no_op_or_a_view_between_layers_keeps_the_chain():
    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a, self.b, self.c = nn.Conv2d(3, 8, 1), nn.Conv2d(8, 8, 3, padding=1), nn.Conv2d(8, 3, 1)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            y = self.a(x).float().contiguous()
            y = self.b(y.view(1, 8, -1).reshape(y.shape))  # x.shape / .view: shape-only
            return self.c(torch.relu(y))

    assert [r for r, *_ in _roles(Net()).values()] == ["first", "first", "last"]


# first / last layers of every zoo architecture (random weights, the default example input): the upsamplers of
# EDSR and RDN (conv → PixelShuffle → conv, no activation) are last layers, every other model has one of each
_ZOO_EDGES = {
    ("carn", 4): (["entry"], ["exit"]),
    ("carn_m", 2): (["entry"], ["exit"]),
    ("edsr", 2): (["head.0"], ["tail.0.0", "tail.1"]),
    ("edsr_baseline", 4): (["head.0"], ["tail.0.0", "tail.0.2", "tail.1"]),
    ("edsr_baseline", 3): (["head.0"], ["tail.0.0", "tail.1"]),
    ("fsrcnn", 4): (["net.first_part.0"], ["net.last_part"]),
    ("imdn", 4): (["fea_conv"], ["upsampler.0"]),
    ("mambair_light", 4): (["conv_first"], ["upsample.0"]),
    ("mambairv2_light", 4): (["conv_first"], ["upsample.0"]),
    ("mambair_color_dn", 1): (["conv_first"], ["conv_last"]),
    ("mambair_jpeg_car", 1): (["net.conv_first"], ["net.conv_last"]),
    ("mambairv2_color_dn", 1): (["conv_first"], ["conv_last"]),
    ("mambairv2_jpeg_car", 1): (["net.conv_first"], ["net.conv_last"]),
    ("msrresnet", 4): (["conv_first"], ["conv_last"]),
    ("pan", 4): (["conv_first"], ["conv_last"]),
    ("rdn", 2): (["net.SFENet1"], ["net.UPNet.0", "net.UPNet.2"]),
    ("rfdn", 4): (["net.fea_conv"], ["net.upsampler.0"]),
    ("rlfn", 4): (["net.conv_1"], ["net.upsampler.0"]),
    ("srq_tiny", 4): (["head"], ["tail"]),
    ("srresnet", 4): (["conv_block1.conv_block.0"], ["conv_block3.conv_block.0"]),
    ("swinir_light", 4): (["conv_first"], ["upsample.0"]),
    ("cdncnn_b", 1): (["model.0"], ["model.38"]),
    ("ffdnet_color", 1): (["model.0"], ["model.22"]),
    ("dncnn3", 1): (["net.model.0"], ["net.model.38"]),
    ("swinir_color_dn", 1): (["conv_first"], ["conv_last"]),
    ("swinir_jpeg_car", 1): (["net.conv_first"], ["net.conv_last"]),
}


@pytest.mark.parametrize("name, scale", list(_ZOO_EDGES))
def test_zoo_first_and_last_layers(name, scale):
    import srq
    from srq.quant.edges import edge_layers

    torch.manual_seed(0)
    model = srq.create_model(name, scale, None)
    order, first, last = edge_layers(model, torch.rand(1, 3, 32, 32), [n for n, _ in quantizable_layers(model)])
    assert (sorted(first), sorted(last)) == _ZOO_EDGES[name, scale]


def test_the_zoo_table_covers_every_model():
    import srq

    assert {n for n, _ in _ZOO_EDGES} | {"bicubic"} == set(srq.models.list_models())
