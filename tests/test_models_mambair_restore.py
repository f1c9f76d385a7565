"""MambaIR / MambaIRv2 colour denoising and grey JPEG: key compatibility with the official checkpoints.

The official files are not obtainable here. The expected keys and shapes are written out by hand from
csguoh/MambaIR ``basicsr/archs/mambair_arch.py`` (class MambaIR with ``upsampler=''``: plain CAB, ``conv_last``)
and ``basicsr/archs/mambairv2_arch.py`` (class MambaIRv2 with ``upsampler=''``: ConvFFN, ``conv_last``, the saved
``relative_position_index_SA`` buffer), with the configurations of ``options/test/mambair/test_MambaIR_{ColorDN_level25,
CAR_q10}.yml`` and ``options/test/mambairv2/test_MambaIRv2_{ColorDN_level15,CAR_q10}.yml``. Official-format files
(``params`` wrapper) are saved and loaded strictly through :func:`srq.create_model`.
"""

from __future__ import annotations

import pytest
import torch
from torch.nn import functional as F

import srq
from key_lists import Shapes, conv, linear, ln
from srq.errors import SrqError
from srq.models.mambair_restore import ConvFFN, PlainCAB



pytestmark = pytest.mark.usefixtures("single_thread")


def mambair_restore_keys(in_chans: int) -> Shapes:
    """MambaIR, embed_dim 180, depths [6]*6, d_state 16, mlp_ratio 1.2 → SS2D d_inner 216, dt_rank ceil(180/16) = 12,
    K = 4 scan directions; CAB (not light SR): Conv3x3 180→60, GELU, Conv3x3 60→180, ChannelAttention(squeeze 30:
    180→6→180); ``mean`` is a plain attribute (not saved)."""
    keys = conv("conv_first", 180, in_chans, 3) | ln("patch_embed.norm", 180)
    for i in range(6):
        for j in range(6):
            p = f"layers.{i}.residual_group.blocks.{j}"
            keys |= ln(f"{p}.ln_1", 180) | {f"{p}.skip_scale": (180,), f"{p}.skip_scale2": (180,)}
            a = f"{p}.self_attention"
            keys |= {f"{a}.x_proj_weight": (4, 12 + 2 * 16, 216), f"{a}.dt_projs_weight": (4, 216, 12),
                     f"{a}.dt_projs_bias": (4, 216), f"{a}.A_logs": (4 * 216, 16), f"{a}.Ds": (4 * 216,)}
            keys |= linear(f"{a}.in_proj", 432, 180, bias=False) | conv(f"{a}.conv2d", 216, 1, 3)
            keys |= ln(f"{a}.out_norm", 216) | linear(f"{a}.out_proj", 180, 216, bias=False)
            c = f"{p}.conv_blk.cab"
            keys |= conv(f"{c}.0", 60, 180, 3) | conv(f"{c}.2", 180, 60, 3)
            keys |= conv(f"{c}.3.attention.1", 6, 180, 1) | conv(f"{c}.3.attention.3", 180, 6, 1)
            keys |= ln(f"{p}.ln_2", 180)
        keys |= conv(f"layers.{i}.conv", 180, 180, 3)
    return keys | ln("norm", 180) | conv("conv_after_body", 180, 180, 3) | conv("conv_last", in_chans, 180, 3)


def mambairv2_restore_keys(in_chans: int) -> Shapes:
    """MambaIRv2, embed_dim 174, d_state 16, depths [6]*6, num_heads [6]*6, window 16, inner_rank 64, num_tokens 128,
    mlp_ratio 2 (hidden 348; Selective_Scan(d_model=348, expand=1): dt_rank ceil(348/16) = 22, K = 1),
    convffn_kernel_size 5; route 174→58→128; the ``relative_position_index_SA`` buffer (256, 256) is saved."""
    keys = conv("conv_first", 174, in_chans, 3) | ln("patch_embed.norm", 174)
    keys["relative_position_index_SA"] = (256, 256)
    for i in range(6):
        for j in range(6):
            p = f"layers.{i}.residual_group.layers.{j}"
            for n in range(1, 5):
                keys |= ln(f"{p}.norm{n}", 174)
            keys |= {f"{p}.scale1": (174,), f"{p}.scale2": (174,), f"{p}.embeddingA.weight": (64, 16)}
            keys |= linear(f"{p}.wqkv", 522, 174)
            keys |= {f"{p}.win_mhsa.relative_position_bias_table": (31 * 31, 6)}
            keys |= linear(f"{p}.win_mhsa.proj", 174, 174)
            a = f"{p}.assm"
            s = f"{a}.selectiveScan"
            keys |= {f"{s}.x_proj_weight": (1, 22 + 2 * 16, 348), f"{s}.dt_projs_weight": (1, 348, 22),
                     f"{s}.dt_projs_bias": (1, 348), f"{s}.A_logs": (348, 16), f"{s}.Ds": (348,)}
            keys |= ln(f"{a}.out_norm", 348) | linear(f"{a}.out_proj", 174, 348)
            keys |= conv(f"{a}.in_proj.0", 348, 174, 1) | conv(f"{a}.CPE.0", 348, 1, 3)
            keys |= {f"{a}.embeddingB.weight": (128, 64)}
            keys |= linear(f"{a}.route.0", 58, 174) | linear(f"{a}.route.2", 128, 58)
            for f in ("convffn1", "convffn2"):
                keys |= linear(f"{p}.{f}.fc1", 348, 174) | conv(f"{p}.{f}.dwconv.depthwise_conv.0", 348, 1, 5)
                keys |= linear(f"{p}.{f}.fc2", 174, 348)
        keys |= conv(f"layers.{i}.conv", 174, 174, 3)
    return keys | ln("norm", 174) | conv("conv_after_body", 174, 174, 3) | conv("conv_last", in_chans, 174, 3)


def reference_rpi(ws: int) -> torch.Tensor:
    """Relative-position index (dy + ws-1)·(2ws-1) + (dx + ws-1) of every pair of tokens in a ws×ws window."""
    y, x = torch.arange(ws * ws) // ws, torch.arange(ws * ws) % ws
    return (y[:, None] - y[None, :] + ws - 1) * (2 * ws - 1) + (x[:, None] - x[None, :] + ws - 1)


CASES = {  # name: (official key list, channels, task)
    "mambair_color_dn": (lambda: mambair_restore_keys(3), 3, "denoise"),
    "mambair_jpeg_car": (lambda: mambair_restore_keys(1), 1, "jpeg"),
    "mambairv2_color_dn": (lambda: mambairv2_restore_keys(3), 3, "denoise"),
    "mambairv2_jpeg_car": (lambda: mambairv2_restore_keys(1), 1, "jpeg"),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_state_dict_matches_official_and_loads_strictly(name: str, tmp_path):
    keys, chans, task = CASES[name]
    official = keys()
    torch.manual_seed(0)
    net = srq.create_model(name, 1, None, wrap=False)
    ours = {k: tuple(v.shape) for k, v in net.state_dict().items()}
    derived = {"relative_position_index_SA"}
    assert ours == {k: v for k, v in official.items() if k not in derived}
    state = dict(net.state_dict())
    if "relative_position_index_SA" in official:
        state["relative_position_index_SA"] = reference_rpi(16)
    assert {k: tuple(v.shape) for k, v in state.items()} == official
    torch.save({"params": state}, tmp_path / "official.pth")
    loaded = srq.create_model(name, 1, tmp_path / "official.pth")  # strict; the index is checked, then dropped
    assert all(torch.equal(a, b) for a, b in zip(loaded.state_dict().values(), net.state_dict().values()))
    info = srq.models.get_model_info(name)
    assert info.tasks == (task,) and info.color == ("rgb" if chans == 3 else "grey") and info.scales == (1,)
    with torch.no_grad():
        x = torch.rand(1, chans, 16, 16, generator=torch.Generator().manual_seed(1))
        assert net(x).shape == x.shape
        rgb = torch.rand(1, 3, 13, 19, generator=torch.Generator().manual_seed(2))  # odd sizes, RGB in and out
        y = loaded(rgb)
    assert y.shape == rgb.shape and torch.isfinite(y).all()


SMALL = {  # the real structure at a small width and depth (for the numerical checks)
    "mambair_color_dn": dict(embed_dim=30, depths=(1, 1)),
    "mambair_jpeg_car": dict(embed_dim=30, depths=(1, 1)),
    "mambairv2_color_dn": dict(embed_dim=24, depths=(2,), num_heads=(2,), inner_rank=8, num_tokens=16),
    "mambairv2_jpeg_car": dict(embed_dim=24, depths=(2,), num_heads=(2,), inner_rank=8, num_tokens=16),
}


@pytest.mark.parametrize("name", sorted(SMALL))
def test_global_residual_and_mean(name: str):
    """out = x + conv_last(...) around the mean: with conv_last = 0 the network returns its input (odd sizes)."""
    torch.manual_seed(0)
    net = srq.create_model(name, 1, None, wrap=False, **SMALL[name]).eval()
    chans = CASES[name][1]
    assert torch.equal(net.mean, torch.tensor([0.4488, 0.4371, 0.4040]).view(1, 3, 1, 1) if chans == 3
                       else torch.zeros(1, 1, 1, 1))
    x = torch.rand(2, chans, 11, 21, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        y = net(x)
        assert y.shape == x.shape and not torch.allclose(y, x, atol=1e-3)
        net.conv_last.weight.zero_()
        net.conv_last.bias.zero_()
        assert torch.allclose(net(x), x, atol=1e-6)


def test_plain_cab_and_convffn_follow_the_official_forward():
    torch.manual_seed(0)
    cab = PlainCAB(30)
    x = torch.randn(2, 30, 7, 9)
    c0, c2, ca = cab.cab[0], cab.cab[2], cab.cab[3].attention
    y = c2(F.gelu(c0(x)))
    w = torch.sigmoid(ca[3](torch.relu(ca[1](y.mean((2, 3), keepdim=True)))))
    assert torch.allclose(cab(x), y * w, atol=1e-6)

    ffn = ConvFFN(12, 24, 5)
    t = torch.randn(2, 7 * 9, 12)
    h = F.gelu(ffn.fc1(t))
    hmap = h.transpose(1, 2).reshape(2, 24, 7, 9)
    d = F.gelu(F.conv2d(hmap, ffn.dwconv.depthwise_conv[0].weight, ffn.dwconv.depthwise_conv[0].bias, padding=2,
                        groups=24))
    expected = ffn.fc2(h + d.flatten(2).transpose(1, 2))
    assert torch.allclose(ffn(t, (7, 9)), expected, atol=1e-6)


def test_adapters_paddle_layout_and_wrong_index():
    for name in ("mambair_color_dn", "mambairv2_jpeg_car"):
        torch.manual_seed(0)
        net = srq.create_model(name, 1, None, wrap=False)
        linear = {f"{n}.weight" for n, m in net.named_modules() if isinstance(m, torch.nn.Linear)}
        paddle = {k: (v.t() if k in linear else v) for k, v in net.state_dict().items()}
        adapted = srq.models.get_model_info(name).adapt_state_dict(paddle)
        assert all(torch.equal(adapted[k], v) for k, v in net.state_dict().items())
    bad = dict(net.state_dict(), relative_position_index_SA=reference_rpi(16).flip(0))
    with pytest.raises(SrqError, match="relative-position index"):
        srq.models.get_model_info("mambairv2_jpeg_car").adapt_state_dict(bad)
