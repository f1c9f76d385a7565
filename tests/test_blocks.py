"""Which modules the feature loss aligns: the automatic rule on the zoo and on user architectures, and the override."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import srq
from srq.engine import distill
from srq.engine.blocks import find_blocks, is_single_layer, resolve_blocks
from srq.errors import ConfigError, SrqError
from srq.methods.base import apply_params

# the automatic choice on every zoo model (random weights; blocks, class). carn_m, rdn and srresnet were 12
# `_BasicBlock`, 128 `RDBConv` and 35 `ConvolutionalBlock` before issue 32: conv + activation wrappers, single layers
ZOO = {
    "bicubic": (0, None), "carn": (9, "_ResidualBlock"), "carn_m": (3, "_CascadingBlock"), "edsr": (32, "ResBlock"),
    "edsr_baseline": (16, "ResBlock"), "fsrcnn": (0, None), "imdn": (6, "IMDModule"),
    "mambair_light": (24, "VSSBlock"), "mambairv2_light": (20, "AttentiveLayer"),
    "mambair_color_dn": (36, "VSSBlock"), "mambair_jpeg_car": (36, "VSSBlock"),
    "mambairv2_color_dn": (36, "AttentiveLayer"), "mambairv2_jpeg_car": (36, "AttentiveLayer"),
    "msrresnet": (16, "ResidualBlockNoBN"), "pan": (16, "SCPA"), "rdn": (16, "RDB"), "rfdn": (4, "RFDB"),
    "rlfn": (6, "RLFB"), "srq_tiny": (4, "ResBlock"), "srresnet": (16, "ResidualBlock"),
    "swinir_light": (24, "SwinTransformerBlock"),
    "cdncnn_b": (0, None), "ffdnet_color": (0, None), "dncnn3": (0, None),  # flat conv chains: pixel loss only
    "swinir_color_dn": (36, "SwinTransformerBlock"), "swinir_jpeg_car": (36, "SwinTransformerBlock"),
}


@pytest.mark.parametrize("name", sorted(ZOO))
def test_zoo_block_choices_stay(name):
    assert name in srq.models.list_models()
    scales = srq.models.get_model_info(name).scales
    model = srq.create_model(name, 4 if 4 in scales else min(scales))  # restoration models run at scale 1
    blocks = find_blocks(model)
    count, cls = ZOO[name]
    assert len(blocks) == count
    assert {type(model.get_submodule(b)).__name__ for b in blocks} == ({cls} if cls else set())


def test_every_zoo_model_is_pinned():
    assert set(srq.models.list_models()) == set(ZOO)


class BSConv(nn.Module):
    """Blueprint-separable conv: 1×1 then depthwise 3×3 (a factorised single layer)."""

    def __init__(self, c_in: int, c_out: int) -> None:
        super().__init__()
        self.pw = nn.Conv2d(c_in, c_out, 1)
        self.dw = nn.Conv2d(c_out, c_out, 3, padding=1, groups=c_out)

    def forward(self, x):
        return self.dw(self.pw(x))


class BSResBlock(nn.Module):
    def __init__(self, c: int) -> None:
        super().__init__()
        self.convs = nn.ModuleList(BSConv(c, c) for _ in range(7))
        self.act = nn.GELU()

    def forward(self, x):
        h = x
        for conv in self.convs:
            h = self.act(conv(h))
        return x + h


class BSNet(nn.Module):
    """5 residual blocks of 7 BSConvs, plus a BSConv head and tail: 37 BSConvs."""

    def __init__(self, c: int = 8) -> None:
        super().__init__()
        self.head = BSConv(3, c)
        self.body = nn.Sequential(*(BSResBlock(c) for _ in range(5)))
        self.tail = BSConv(c, 3)

    def forward(self, x):
        return self.tail(self.body(self.head(x)))


class RepConv(nn.Module):
    """Re-parameterisable conv: 3×3 + 1×1 + identity (BN) branches, summed (one 3×3 conv at deployment)."""

    def __init__(self, c: int) -> None:
        super().__init__()
        self.conv3 = nn.Conv2d(c, c, 3, padding=1)
        self.conv1 = nn.Conv2d(c, c, 1)
        self.bn = nn.BatchNorm2d(c)

    def forward(self, x):
        return self.conv3(x) + self.conv1(x) + self.bn(x)


class RepNet(nn.Module):
    def __init__(self, c: int = 8, n: int = 20) -> None:
        super().__init__()
        self.head = nn.Conv2d(3, c, 3, padding=1)
        self.body = nn.Sequential(*(m for _ in range(n) for m in (RepConv(c), nn.ReLU())))
        self.tail = nn.Conv2d(c, 3, 3, padding=1)

    def forward(self, x):
        return self.tail(self.body(self.head(x)))


def test_bsconv_network_gives_its_five_residual_blocks():
    net = BSNet().eval()
    assert sum(isinstance(m, BSConv) for m in net.modules()) == 37
    assert find_blocks(net) == [f"body.{i}" for i in range(5)]
    assert is_single_layer(net, "body.0.convs.0") and not is_single_layer(net, "body.0")


def test_reparameterisable_conv_wrappers_are_single_layers_not_blocks():
    net = RepNet().eval()
    assert is_single_layer(net, "body.0")
    assert find_blocks(net) == []


def test_an_explicit_pattern_picks_the_blocks():
    net = RepNet().eval()
    assert resolve_blocks(net, r"body\.(0|2|4)") == ["body.0", "body.2", "body.4"]
    assert resolve_blocks(BSNet(), None) == [f"body.{i}" for i in range(5)]


def test_a_pattern_that_matches_nothing_is_one_line_with_example_names():
    with pytest.raises(ConfigError, match=r"matches no module name \(it must match a whole name\).* e\.g\. body, "):
        resolve_blocks(RepNet(), r"layers\.\d+")


def test_blocks_is_a_recipe_field_set_like_any_parameter():
    for recipe in (srq.methods.GBA(), srq.methods.Percentile(fine_tune=True), srq.methods.SPR2Q(),
                   srq.methods.PTQ4SR()):
        assert apply_params(recipe, [r"blocks=body\.\d+"]).blocks == r"body\.\d+"
        assert recipe.blocks is None
    with pytest.raises(ConfigError, match="blocks must be a regular expression"):
        srq.methods.GBA(blocks="body.(")
    with pytest.raises(SrqError):
        apply_params(srq.methods.GBA(), ["blocks=("])


def test_finetune_uses_the_recipes_blocks(monkeypatch):
    fp = BSNet().eval()
    seen: list[str] = []
    original = distill.capture_outputs

    def spy(model, names):
        seen.extend(names)
        return original(model, names)

    monkeypatch.setattr(distill, "capture_outputs", spy)
    recipe = srq.methods.MinMax(w_bits=8, a_bits=8, fine_tune=True, blocks=r"body\.[01]",
                                finetune_config=distill.FinetuneConfig(steps=1, batch=2))
    srq.quantize(fp, recipe, torch.rand(2, 3, 8, 8), progress=False)
    assert set(seen) == {"body.0", "body.1"}
