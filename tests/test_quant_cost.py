"""Cost accounting (``srq.quant.cost``) against numbers computed by hand for a small model."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from srq.errors import SrqError
from srq.quant import LayerRule, QuantConfig, prepare
from srq.quant.cost import default_input_size, layer_costs, model_cost


class _Small(nn.Module):
    """x2 SR toy: frozen mean shift → head 3→8 → ReLU → grouped conv → PReLU → 1x1 (no bias) → token Linear → ReLU
    → tail (the ReLUs end the first/last chains, so only head and tail are the first and last layers).

    Registration order puts ``tail`` first; execution order is sub_mean, head, body, body2, mix, tail.
    """

    def __init__(self) -> None:
        super().__init__()
        self.tail = nn.Sequential(nn.Conv2d(8, 12, 3, padding=1), nn.PixelShuffle(2))  # 8 → 3·2²
        self.sub_mean = nn.Conv2d(3, 3, 1)
        self.sub_mean.requires_grad_(False)  # frozen: stays float
        self.head = nn.Conv2d(3, 8, 3, padding=1)
        self.body = nn.Conv2d(8, 8, 3, padding=1, groups=2)
        self.act = nn.PReLU(8)
        self.body2 = nn.Conv2d(8, 8, 1, bias=False)
        self.mix = nn.Linear(8, 8)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.head(self.sub_mean(x)))
        x = self.body2(self.act(self.body(x)))
        n, c, h, w = x.shape
        x = torch.relu(self.mix(x.flatten(2).transpose(1, 2))).transpose(1, 2).reshape(n, c, h, w)
        return self.tail(x)


def _model() -> _Small:
    torch.manual_seed(0)
    return _Small()


H, W = 10, 12
P = H * W  # 120 LR pixels

# MACs = output elements × in_channels/groups × kh × kw (Linear: output elements × in_features)
MACS = {
    "sub_mean": 3 * P * 3 * 1 * 1,      # 1 080
    "head": 8 * P * 3 * 3 * 3,          # 25 920
    "body": 8 * P * (8 // 2) * 3 * 3,   # 34 560  (groups = 2)
    "body2": 8 * P * 8 * 1 * 1,         # 7 680
    "mix": (P * 8) * 8,                 # 7 680   (120 tokens × 8 outputs × 8 inputs)
    "tail.0": 12 * P * 8 * 3 * 3,       # 103 680
}
TOTAL_MACS = 1_080 + 25_920 + 34_560 + 7_680 + 7_680 + 103_680  # 180 600
# parameters: weight, bias
PARAMS = {
    "sub_mean": (3 * 3, 3),
    "head": (8 * 3 * 9, 8),         # 216, 8
    "body": (8 * 4 * 9, 8),         # 288, 8
    "body2": (8 * 8, 0),            # 64, 0
    "mix": (8 * 8, 8),              # 64, 8
    "tail.0": (12 * 8 * 9, 12),     # 864, 12
}
PRELU = 8
TOTAL_PARAMS = 12 + 224 + 296 + 64 + 72 + 876 + PRELU  # 1 552


def test_layer_costs_fp():
    costs = layer_costs(_model(), input_size=(H, W))
    assert [c.name for c in costs] == ["sub_mean", "head", "body", "body2", "mix", "tail.0"]  # execution order
    for c in costs:
        assert c.macs == MACS[c.name], c.name
        assert (c.weight_params, c.bias_params) == PARAMS[c.name]
        assert c.params == sum(PARAMS[c.name])
        assert (c.w_bits, c.a_bits) == (32, 32) and c.quantizer_params == 0 and c.calls == 1
        assert c.bitops == MACS[c.name] * 32 * 32
        assert c.storage_bits == sum(PARAMS[c.name]) * 32
    assert {c.name: c.type for c in costs}["mix"] == "linear"
    assert {c.name: c.type for c in costs}["body"] == "conv2d"


def test_model_cost_fp():
    cost = model_cost(_model(), input_size=(H, W))
    assert sum(MACS.values()) == TOTAL_MACS == 180_600
    assert cost.macs == TOTAL_MACS
    assert cost.bitops == cost.fp32_bitops == 180_600 * 1024 == 184_934_400
    assert TOTAL_PARAMS == 1_552
    assert cost.size_bits == cost.fp32_size_bits == 1_552 * 32 == 49_664
    assert cost.size_kb == pytest.approx(49_664 / 8 / 1024)
    assert cost.compression == 1.0 and cost.bitops_reduction == 1.0
    assert cost.quantized_weight_params == 0 and cost.float_params == 1_552 and cost.quantizer_params == 0


def _quantized(**kwargs) -> nn.Module:
    # head (first) and tail (last) at 8/8 by default; body, body2, mix at 4/4; sub_mean is frozen → float
    return prepare(_model(), QuantConfig(w_bits=4, a_bits=4, **kwargs), example_input=torch.zeros(1, 3, 8, 8))


def test_layer_costs_quantized_before_calibration():
    costs = {c.name: c for c in layer_costs(_quantized(), input_size=(H, W))}
    bits = {n: (c.w_bits, c.a_bits) for n, c in costs.items()}
    assert bits == {"sub_mean": (32, 32), "head": (8, 8), "body": (4, 4), "body2": (4, 4), "mix": (4, 4),
                    "tail.0": (8, 8)}
    # quantizer parameters: per-output-channel lower+upper for weights, one lower+upper for the input
    assert costs["head"].quantizer_params == 8 * 2 + 2        # 18
    assert costs["tail.0"].quantizer_params == 12 * 2 + 2     # 26
    assert costs["mix"].quantizer_params == 8 * 2 + 2         # 18
    # storage: weight × w_bits + (bias + quantizer params) × 32
    assert costs["head"].storage_bits == 216 * 8 + (8 + 18) * 32      # 1 728 + 832 = 2 560
    assert costs["body"].storage_bits == 288 * 4 + (8 + 18) * 32      # 1 152 + 832 = 1 984
    assert costs["body2"].storage_bits == 64 * 4 + (0 + 18) * 32      # 256 + 576 = 832
    assert costs["mix"].storage_bits == 64 * 4 + (8 + 18) * 32        # 256 + 832 = 1 088
    assert costs["tail.0"].storage_bits == 864 * 8 + (12 + 26) * 32   # 6 912 + 1 216 = 8 128
    assert costs["sub_mean"].storage_bits == 12 * 32                  # 384
    assert costs["body"].bitops == 34_560 * 4 * 4
    assert costs["head"].bitops == 25_920 * 8 * 8


def test_model_cost_quantized():
    model = _quantized()
    cost = model_cost(model, input_size=(H, W))
    # size: the layers' storage above plus PReLU (8 × 32)
    size = 2_560 + 1_984 + 832 + 1_088 + 8_128 + 384 + 8 * 32
    assert size == 15_232
    assert cost.size_bits == size
    assert cost.fp32_size_bits == 49_664  # quantizer parameters do not exist in the FP32 model
    assert cost.compression == pytest.approx(49_664 / 15_232)  # ≈ 3.26
    assert cost.quantized_weight_params == 216 + 288 + 64 + 64 + 864
    assert cost.quantizer_params == 18 + 18 + 18 + 18 + 26
    # at 32 bit: biases (3 + 8 + 8 + 0 + 8 + 12) + frozen 1x1 weight 9 + PReLU 8 + quantizer params 98
    assert cost.float_params == 39 + 9 + 8 + 98
    # BitOPs: float mean shift at 32×32, first/last at 8×8, body at 4×4
    bitops = (1_080 * 32 * 32 + 25_920 * 8 * 8 + (34_560 + 7_680 + 7_680) * 4 * 4 + 103_680 * 8 * 8)
    assert bitops == 1_105_920 + 1_658_880 + 798_720 + 6_635_520 == 10_199_040
    assert cost.bitops == bitops
    assert cost.fp32_bitops == 184_934_400
    assert cost.bitops_reduction == pytest.approx(184_934_400 / 10_199_040)  # ≈ 18.1
    assert cost.macs == TOTAL_MACS


def test_binary_and_fp_layers():
    rules = [LayerRule("body", w_bits=1), LayerRule("mix", fp=True)]
    cost = model_cost(_quantized(w_granularity="tensor", rules=rules), input_size=(H, W))
    layers = {c.name: c for c in cost.layers}
    # body: binary weights (one α per tensor), 4-bit input (lower + upper)
    assert (layers["body"].w_bits, layers["body"].a_bits) == (1, 4)
    assert layers["body"].quantizer_params == 1 + 2
    assert layers["body"].storage_bits == 288 * 1 + (8 + 3) * 32
    assert layers["body"].bitops == 34_560 * 1 * 4
    # mix kept in float
    assert (layers["mix"].w_bits, layers["mix"].a_bits) == (32, 32) and layers["mix"].quantizer_params == 0
    assert layers["mix"].bitops == 7_680 * 1024
    # per-tensor weight bounds: 2 for weights + 2 for the input
    assert layers["head"].quantizer_params == 4


def test_disabled_quantizer_counts_as_float():
    model = _quantized()
    model.body.weight_quantizer.enabled = False
    costs = {c.name: c for c in layer_costs(model, input_size=(H, W))}
    assert (costs["body"].w_bits, costs["body"].a_bits) == (32, 4)
    assert model.body.weight_quantizer.enabled is False  # restored


def test_default_input_size_rule():
    assert default_input_size(2) == (360, 640)
    assert default_input_size(3) == (240, 427)  # 1280/3 = 426.7, rounded up
    assert default_input_size(4) == (180, 320)
    with pytest.raises(SrqError):
        default_input_size(0)
    cost = model_cost(_model(), scale=4)
    assert cost.input_size == (180, 320) and cost.scale == 4
    pixels = 180 * 320
    assert cost.macs == TOTAL_MACS // P * pixels  # every layer's MACs scale with the LR pixel count
    # the scale can come from the model's spec
    model = _model()
    model.srq_spec = {"model": "toy", "scale": 3}
    assert model_cost(model).input_size == (240, 427)
    with pytest.raises(SrqError, match="input_size"):
        model_cost(_model())
    assert model_cost(_model(), input_size=7).input_size == (7, 7)


def test_calibration_state_and_training_mode_untouched():
    model = _quantized().train()
    model.body.eval()  # a submodule in its own mode stays so
    q = model.body.input_quantizer
    q.start_calibration()
    layer_costs(model, input_size=(4, 4))
    assert q.calibrating and q.observer.lo is None  # the zero image was not observed
    assert model.training and not model.body.training


def test_repeated_layer_and_conv_transpose():
    class Loop(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(3, 3, 3, padding=1)
            self.up = nn.ConvTranspose2d(3, 3, 4, stride=2, padding=1)  # 2x

        def forward(self, x):
            return self.up(self.conv(self.conv(x)))

    costs = {c.name: c for c in layer_costs(Loop(), input_size=(5, 6))}
    assert costs["conv"].calls == 2 and costs["conv"].macs == 2 * (3 * 30 * 3 * 9)
    # transposed conv: input elements × out_channels/groups × kh × kw
    assert costs["up"].type == "conv_transpose2d" and costs["up"].macs == (3 * 30) * 3 * 16
    assert model_cost(Loop(), input_size=(5, 6)).size_bits == (84 + 147) * 32


def test_weight_delta_params_excluded_from_size():
    model = _quantized()

    class Delta(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a = nn.Parameter(torch.zeros(2, 27))
            self.b = nn.Parameter(torch.zeros(8, 2))

        def forward(self, w):
            return (self.b @ self.a).reshape(w.shape)

    before = model_cost(model, input_size=(H, W))
    model.head.weight_delta = Delta()  # rank-2 rectifier B·A on head's (8, 3·3·3) weight
    after = model_cost(model, input_size=(H, W))
    assert after.size_bits == before.size_bits and after.fp32_size_bits == before.fp32_size_bits
    assert after.excluded_params == 2 * 27 + 8 * 2


def test_persistent_float_buffers_count_and_shared_params_once():
    class M(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(3, 3, 1)
            self.again = self.conv  # shared
            self.register_buffer("mean", torch.zeros(3))                      # stored constant: counted
            self.register_buffer("scratch", torch.zeros(100), persistent=False)  # not stored
            self.register_buffer("index", torch.zeros(5, dtype=torch.long))   # not a float value

        def forward(self, x):
            return self.conv(x - self.mean.view(1, 3, 1, 1))

    assert model_cost(M(), input_size=4).size_bits == (9 + 3 + 3) * 32


def test_to_dict_and_table():
    cost = model_cost(_quantized(), input_size=(H, W), scale=2)
    d = cost.to_dict()
    json.dumps(d)
    assert d["size_bits"] == 15_232 and d["bitops"] == 10_199_040 and d["macs"] == 180_600
    assert d["compression"] == pytest.approx(cost.compression) and len(d["layers"]) == 6
    assert d["layers"][1]["name"] == "head" and d["layers"][1]["bitops"] == 25_920 * 64
    table = cost.format_table()
    for name in ("sub_mean", "head", "body2", "mix", "tail.0"):
        assert name in table
    assert "not counted" in table and "x2" in table


def test_costs_come_from_a_shape_only_pass_with_a_fallback_for_data_dependent_models():
    from srq.quant import layer_costs

    class DataDependent(nn.Module):  # .item() has no meta kernel: the real pass is used
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(3, 4, 3, padding=1)

        def forward(self, x):
            return self.conv(x) * (1.0 if x.sum().item() >= 0 else -1.0)

    plain = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1))
    for model in (plain, DataDependent()):
        (cost,) = layer_costs(model, input_size=(10, 12))
        assert cost.macs == 10 * 12 * 4 * 3 * 9
    assert next(plain.parameters()).device.type == "cpu"  # the model itself never moves


def test_model_cost_uses_the_shape_only_pass_without_autograd():
    # a real forward with autograd kept every activation of MambaIRv2-light at 180×320 alive (22 GB)
    seen = []

    class Probe(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(3, 12, 3, padding=1)

        def forward(self, x):
            seen.append((x.device.type, torch.is_grad_enabled()))
            return nn.functional.pixel_shuffle(self.conv(x), 2)

    cost = model_cost(Probe(), input_size=8, scale=2)
    assert seen == [("meta", False)]
    assert cost.macs == 8 * 8 * 12 * 3 * 9


def test_idle_layers_are_left_out_of_the_size():
    class TwoTails(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.head = nn.Conv2d(3, 4, 1)                    # 12 + 4 params
            self.used, self.idle = nn.Conv2d(4, 3, 1), nn.Conv2d(4, 3, 3)  # 12 + 3, 108 + 3

        def forward(self, x):
            return self.used(self.head(x))

    cost = model_cost(TwoTails(), input_size=(4, 4), scale=1)
    assert cost.idle_params == 111
    assert cost.size_bits == cost.fp32_size_bits == (16 + 15) * 32
    assert [c.name for c in cost.layers] == ["head", "used"]
