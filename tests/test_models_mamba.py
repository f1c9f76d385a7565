"""MambaIRv2-light (official SPR²Q .pdparams), MambaIR-light and SwinIR-light (official key lists).

MambaIRv2-light tests use the real checkpoints from the weights root (skipped without them). MambaIR-
light and SwinIR-light weights are not available here: their official state-dict layouts are written
out below from the official architecture code (source named at each list) and compared with ours;
checkpoints in the official format (``params`` wrapper, SwinIR's stored ``attn_mask`` and
``relative_position_index`` buffers, computed independently here) are saved and loaded strictly.
"""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors import safe_open

import srq
from key_lists import Shapes, conv, linear, ln
from srq.data import read_image
from srq.data.bicubic import imresize
from srq.errors import SrqError
from srq.metrics.psnr_ssim import psnr
from srq.models.checkpoint import read_checkpoint
from srq.quant.markers import QuantPoint
from srq.models.mambairv2 import adapt_mambairv2_state_dict
from srq.models.swinir import adapt_swinir_state_dict
from srq.models.window_attention import shifted_window_mask


pytestmark = pytest.mark.usefixtures("single_thread")



# MANIFEST.md counts every entry of the .pdparams state dict: the parameters plus the (256, 256) int64
# relative_position_index_SA buffer (65,536 entries). Only x2's total (839,628) is in the manifest; x4
# differs only in the tail conv (48 instead of 12 output channels): 855,216.
V2_FILES = {2: ("mambairv2_light_x2.pdparams", 839_628), 4: ("mambairv2_light_x4.pdparams", 855_216)}


@pytest.fixture(scope="module")
def v2_models(weights_dir: Path) -> dict[int, torch.nn.Module]:
    return {s: srq.create_model("mambairv2_light", s, weights_dir / f) for s, (f, _) in V2_FILES.items()}


def _y_psnr(sr: torch.Tensor, hr: torch.Tensor, scale: int) -> float:
    to8 = lambda t: (t[0].clamp(0, 1) * 255).round().byte().permute(1, 2, 0).numpy()  # noqa: E731
    return psnr(to8(sr), to8(hr), scale)


# --------------------------------------------------------------------------------------------------
# MambaIRv2-light, official weights

@pytest.mark.parametrize("scale", [2, 4])
def test_v2_official_loads_strictly_every_entry_used(weights_dir: Path, scale: int):
    fname, total = V2_FILES[scale]
    raw = read_checkpoint(weights_dir / fname)
    assert sum(t.numel() for t in raw.values()) == total
    net = srq.create_model("mambairv2_light", scale, wrap=False)
    assert set(raw) - set(net.state_dict()) == {"relative_position_index_SA"}  # checked, then recomputed
    assert set(net.state_dict()) <= set(raw)
    n_params = sum(p.numel() for p in net.parameters())
    assert n_params + net.relative_position_index_SA.numel() == total
    loaded = srq.create_model("mambairv2_light", scale, weights_dir / fname, wrap=False).state_dict()
    # Paddle Linear weights are [in, out]: transposed on load; everything else is taken as is
    key = "layers.0.residual_group.layers.0.wqkv.weight"
    assert tuple(raw[key].shape) == (48, 144) and torch.equal(loaded[key], raw[key].t())
    key = "layers.3.residual_group.layers.4.assm.selectiveScan.x_proj_weight"
    assert torch.equal(loaded[key], raw[key])
    assert torch.equal(raw["relative_position_index_SA"], net.relative_position_index_SA)


@pytest.mark.parametrize("scale", [2, 4])
def test_v2_odd_size_output(v2_models, scale: int):
    x = torch.rand(1, 3, 23, 37, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        y = v2_models[scale](x)
    assert y.shape == (1, 3, 23 * scale, 37 * scale)
    assert torch.isfinite(y).all()


@pytest.mark.parametrize("scale", [2, 4])
def test_v2_beats_bicubic_on_set5_crop(v2_models, data_root: Path, scale: int):
    """Right ordering, activations, transposes and mean handling give a clear gain; a wrong one does not."""
    img = read_image(data_root / "benchmarks" / "Set5" / "butterfly.png")[64:160, 64:160]
    hr = torch.from_numpy(np.ascontiguousarray(img)).permute(2, 0, 1)[None].float() / 255
    lr = imresize(hr, 1 / scale).clamp(0, 1)
    with torch.no_grad():
        sr = v2_models[scale](lr)
    p_sr, p_bic = _y_psnr(sr, hr, scale), _y_psnr(imresize(lr, scale), hr, scale)
    assert p_sr > p_bic + (3.0 if scale == 2 else 1.5), (p_sr, p_bic)


def test_v2_routing_reproducible_and_quant_points_are_identities(v2_models):
    net = v2_models[4]
    x = torch.rand(1, 3, 20, 24, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        y1, y2 = net(x), net(x)
    assert torch.equal(y1, y2)  # Gumbel routing noise is seeded per forward
    kinds = {m.kind for m in net.modules() if isinstance(m, QuantPoint)}
    assert kinds == {"attn_q", "attn_k", "attn_v", "attn_prob", "scan_x", "scan_dt", "scan_delta", "scan_B", "scan_C"}
    seen = []
    hooks = [m.register_forward_hook(lambda mod, inp, out: seen.append(torch.equal(inp[0], out)))
             for m in net.modules() if isinstance(m, QuantPoint)]
    try:
        with torch.no_grad():
            y3 = net(x)  # observed points: attention probabilities are materialised (no fused kernel)
    finally:
        for h in hooks:
            h.remove()
    assert seen and all(seen)
    assert len(seen) == 20 * 9
    assert (y3 - y1).abs().max() < 1e-4


def test_v2_argmax_routing_also_works(v2_models):
    net = v2_models[4]
    net.routing = "argmax"
    try:
        x = torch.rand(1, 3, 16, 16, generator=torch.Generator().manual_seed(2))
        with torch.no_grad():
            assert torch.isfinite(net(x)).all()
    finally:
        net.routing = "gumbel"


class _System:
    """Pickles to ``os.system(command)``: a loader that executes it creates the marker file."""

    def __init__(self, command: str) -> None:
        self.command = command

    def __reduce__(self):
        return (os.system, (self.command,))


def test_v2_code_executing_pdparams_refused(tmp_path: Path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pdparams"
    with open(path, "wb") as f:
        pickle.dump({"conv_first.weight": np.zeros((48, 3, 3, 3), np.float32),
                     "conv_first.bias": _System(f"touch {marker}")}, f, protocol=2)
    with pytest.raises(SrqError, match="refused"):
        srq.create_model("mambairv2_light", 2, path)
    assert not marker.exists()


def test_v2_adapt_rejects_wrong_buffer_and_mixed_layouts(weights_dir: Path):
    raw = read_checkpoint(weights_dir / "mambairv2_light_x2.pdparams")
    bad = dict(raw, relative_position_index_SA=raw["relative_position_index_SA"].flip(0))
    with pytest.raises(SrqError, match="relative-position index"):
        adapt_mambairv2_state_dict(bad)
    key = "layers.0.residual_group.layers.0.wqkv.weight"
    with pytest.raises(SrqError, match="mixes"):
        adapt_mambairv2_state_dict(dict(raw, **{key: raw[key].t()}))
    torch_layout = adapt_mambairv2_state_dict(raw)  # PyTorch-layout files (official .pth) pass unchanged
    assert adapt_mambairv2_state_dict(torch_layout) == torch_layout


def test_convert_cli_roundtrip_identical_outputs(weights_dir: Path, tmp_path: Path):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "COLUMNS": "200"}
    src = weights_dir / "mambairv2_light_x4.pdparams"
    dst = tmp_path / "out" / "v2_x4.safetensors"
    proc = subprocess.run([sys.executable, "-m", "srq.cli", "convert", "mambairv2_light", "--scale", "4",
                           "--weights", str(src), "-o", str(dst)],
                          capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr
    assert [p.name for p in dst.parent.iterdir()] == [dst.name]  # no temp file left behind
    with safe_open(str(dst), "pt") as f:
        assert "relative_position_index_SA" not in f.keys()
        assert f.metadata()["srq_model"] == "mambairv2_light" and f.metadata()["scale"] == "4"
    a = srq.create_model("mambairv2_light", 4, src)
    b = srq.create_model("mambairv2_light", 4, dst)
    x = torch.rand(1, 3, 19, 22, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        assert torch.equal(a(x), b(x))
    bad = subprocess.run([sys.executable, "-m", "srq.cli", "convert", "mambairv2_light", "--scale", "2",
                          "--weights", str(src), "-o", str(tmp_path / "x.safetensors")],
                         capture_output=True, text=True, timeout=300, env=env)
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1 and "--scale" in bad.stderr
    assert not (tmp_path / "x.safetensors").exists()


# --------------------------------------------------------------------------------------------------
# Official key lists

def mambair_light_keys(scale: int) -> Shapes:
    """csguoh/MambaIR @ c308c30 basicsr/archs/mambair_arch.py (class MambaIR; VSSBlock, SS2D, light CAB:
    compress 2, [1x1, dw3x3, GELU, 1x1, dilated dw3x3, ChannelAttention(squeeze 30)]) with
    options/test/mambair/test_MambaIR_lightSR_x{2,3,4}.yml: embed_dim 60, depths [6]*4, d_state 10,
    mlp_ratio 1.2 (d_inner 72, dt_rank 4, K=4 directions), upsampler pixelshuffledirect, 1conv.
    ``mean`` is a plain attribute (not saved)."""
    keys = conv("conv_first", 60, 3, 3) | ln("patch_embed.norm", 60)
    for i in range(4):
        for j in range(6):
            p = f"layers.{i}.residual_group.blocks.{j}"
            keys |= {f"{p}.skip_scale": (60,), f"{p}.skip_scale2": (60,)} | ln(f"{p}.ln_1", 60)
            a = f"{p}.self_attention"
            keys |= {f"{a}.x_proj_weight": (4, 24, 72), f"{a}.dt_projs_weight": (4, 72, 4),
                     f"{a}.dt_projs_bias": (4, 72), f"{a}.A_logs": (288, 10), f"{a}.Ds": (288,)}
            keys |= linear(f"{a}.in_proj", 144, 60, bias=False) | conv(f"{a}.conv2d", 72, 1, 3)
            keys |= ln(f"{a}.out_norm", 72) | linear(f"{a}.out_proj", 60, 72, bias=False)
            c = f"{p}.conv_blk.cab"
            keys |= conv(f"{c}.0", 30, 60, 1) | conv(f"{c}.1", 30, 1, 3) | conv(f"{c}.3", 60, 30, 1)
            keys |= conv(f"{c}.4", 60, 1, 3) | conv(f"{c}.5.attention.1", 2, 60, 1)
            keys |= conv(f"{c}.5.attention.3", 60, 2, 1)
            keys |= ln(f"{p}.ln_2", 60)
        keys |= conv(f"layers.{i}.conv", 60, 60, 3)
    return keys | ln("norm", 60) | conv("conv_after_body", 60, 60, 3) | conv("upsample.0", 3 * scale ** 2, 60, 3)


def swinir_light_keys(scale: int) -> Shapes:
    """JingyunLiang/SwinIR @ 33f6166 models/network_swinir.py (SwinIR, RSTB, SwinTransformerBlock,
    WindowAttention, Mlp) as main_test_swinir.py builds it for --task lightweight_sr: img_size 64,
    window_size 8, embed_dim 60, depths [6]*4, num_heads [6]*4, mlp_ratio 2, pixelshuffledirect, 1conv.
    Buffers: every attn.relative_position_index (64, 64); attn_mask (64 windows of 64x64 tokens) in the
    shifted (odd) blocks only. Identical names in XPixelGroup/BasicSR basicsr/archs/swinir_arch.py."""
    keys = conv("conv_first", 60, 3, 3) | ln("patch_embed.norm", 60)
    for i in range(4):
        for j in range(6):
            p = f"layers.{i}.residual_group.blocks.{j}"
            if j % 2:
                keys[f"{p}.attn_mask"] = (64, 64, 64)
            keys |= ln(f"{p}.norm1", 60)
            keys |= {f"{p}.attn.relative_position_bias_table": (225, 6), f"{p}.attn.relative_position_index": (64, 64)}
            keys |= linear(f"{p}.attn.qkv", 180, 60) | linear(f"{p}.attn.proj", 60, 60) | ln(f"{p}.norm2", 60)
            keys |= linear(f"{p}.mlp.fc1", 120, 60) | linear(f"{p}.mlp.fc2", 60, 120)
        keys |= conv(f"layers.{i}.conv", 60, 60, 3)
    return keys | ln("norm", 60) | conv("conv_after_body", 60, 60, 3) | conv("upsample.0", 3 * scale ** 2, 60, 3)


def reference_rpi(ws: int) -> torch.Tensor:
    """Relative-position index by explicit loops: (dy + ws-1)·(2ws-1) + (dx + ws-1)."""
    idx = torch.empty(ws * ws, ws * ws, dtype=torch.long)
    for p in range(ws * ws):
        for q in range(ws * ws):
            dy, dx = p // ws - q // ws, p % ws - q % ws
            idx[p, q] = (dy + ws - 1) * (2 * ws - 1) + dx + ws - 1
    return idx


def reference_mask(h: int, w: int, ws: int, shift: int) -> torch.Tensor:
    """Shifted-window mask by explicit loops: label each pixel of the h×w map by its (row, column) region
    [0, h-ws) / [h-ws, h-shift) / [h-shift, h); tokens of one window with different labels get -100."""
    region = lambda v, size: 0 if v < size - ws else (1 if v < size - shift else 2)  # noqa: E731
    labels = [[3 * region(y, h) + region(x, w) for x in range(w)] for y in range(h)]
    out = torch.zeros((h // ws) * (w // ws), ws * ws, ws * ws)
    for wy in range(h // ws):
        for wx in range(w // ws):
            tokens = [labels[wy * ws + i][wx * ws + j] for i in range(ws) for j in range(ws)]
            t = torch.tensor(tokens)
            out[wy * (w // ws) + wx] = torch.where(t[:, None] != t[None, :], -100.0, 0.0)
    return out


def _official_state(net: torch.nn.Module, official: Shapes) -> dict[str, torch.Tensor]:
    """Our weights under the official names, plus SwinIR's stored buffers computed by the references."""
    state = dict(net.state_dict())
    for key, shape in official.items():
        if key.endswith("relative_position_index"):
            state[key] = reference_rpi(8)
        elif key.endswith("attn_mask"):
            state[key] = reference_mask(64, 64, 8, 4)
    return state


@pytest.mark.parametrize("scale", [2, 3, 4])
@pytest.mark.parametrize("name,keys", [("mambair_light", mambair_light_keys), ("swinir_light", swinir_light_keys)])
def test_key_lists_match_official(name: str, keys, scale: int, tmp_path: Path):
    official = keys(scale)
    net = srq.create_model(name, scale, wrap=False)
    ours = {k: tuple(v.shape) for k, v in net.state_dict().items()}
    derived = {k: v for k, v in official.items() if k.endswith(("attn_mask", "relative_position_index"))}
    assert ours == {k: v for k, v in official.items() if k not in derived}
    # an official-format checkpoint (params wrapper, stored buffers) loads strictly, values bit for bit
    torch.manual_seed(scale)
    src = srq.create_model(name, scale, wrap=False)
    state = _official_state(src, official)
    assert {k: tuple(v.shape) for k, v in state.items()} == official
    torch.save({"params": state}, tmp_path / "official.pth")
    loaded = srq.create_model(name, scale, tmp_path / "official.pth", wrap=False)
    assert all(torch.equal(a, b) for a, b in zip(loaded.state_dict().values(), src.state_dict().values()))


def test_swinir_rejects_a_wrong_stored_mask(tmp_path: Path):
    official = swinir_light_keys(2)
    state = _official_state(srq.create_model("swinir_light", 2, wrap=False), official)
    key = "layers.1.residual_group.blocks.3.attn_mask"
    state[key] = reference_mask(64, 64, 8, 2)  # a different shift
    with pytest.raises(SrqError, match="shifted-window mask"):
        adapt_swinir_state_dict(state)


@pytest.mark.parametrize("h,w", [(20, 28), (48, 64), (64, 64)])
def test_swinir_any_input_size_uses_recomputed_mask(h: int, w: int):
    net = srq.create_model("swinir_light", 2, wrap=False)
    # main_test_swinir.py padding: up to the next multiple of 8, a whole window if already a multiple
    hp, wp = (h // 8 + 1) * 8, (w // 8 + 1) * 8
    assert torch.equal(shifted_window_mask(hp, wp, 8, 4), reference_mask(hp, wp, 8, 4))
    assert torch.equal(net.layers[0].residual_group.blocks[0].attn.relative_position_index, reference_rpi(8))
    masks = []
    attn = net.layers[2].residual_group.blocks[1].attn
    hook = attn.register_forward_pre_hook(lambda mod, args: masks.append(args[1]))
    x = torch.rand(1, 3, h, w, generator=torch.Generator().manual_seed(h))
    with torch.no_grad():
        y = net(x)
    hook.remove()
    assert y.shape == (1, 3, 2 * h, 2 * w) and torch.isfinite(y).all()
    assert len(masks) == 1 and torch.equal(masks[0], reference_mask(hp, wp, 8, 4))


def test_mambair_and_swinir_forward_and_paddle_layout():
    for name in ("mambair_light", "swinir_light"):
        torch.manual_seed(0)
        net = srq.create_model(name, 3, wrap=False)
        x = torch.rand(1, 3, 11, 13, generator=torch.Generator().manual_seed(4))
        with torch.no_grad():
            y = net(x)
        assert y.shape == (1, 3, 33, 39) and torch.isfinite(y).all()
        # a Paddle export ([in, out] Linear weights) of the same weights gives the same network
        linear = {f"{n}.weight" for n, m in net.named_modules() if isinstance(m, torch.nn.Linear)}
        paddle = {k: (v.t() if k in linear else v) for k, v in net.state_dict().items()}
        info = srq.models.get_model_info(name)
        adapted = info.adapt_state_dict(paddle)
        assert all(torch.equal(adapted[k], v) for k, v in net.state_dict().items())
        kinds = {m.kind for m in net.modules() if isinstance(m, QuantPoint)}
        assert kinds == ({"scan_x", "scan_dt", "scan_delta", "scan_B", "scan_C", "scan_z"} if name == "mambair_light"
                         else {"attn_q", "attn_k", "attn_v", "attn_prob"})


@pytest.mark.parametrize("name", ["mambairv2_light", "mambair_light", "swinir_light"])
def test_gradients_reach_every_parameter(name: str):
    """Training / QAT works: the scan, fused attention and (straight-through) routing are differentiable."""
    torch.manual_seed(0)
    net = srq.create_model(name, 2, wrap=False).train()
    net(torch.rand(1, 3, 16, 20)).square().mean().backward()
    missing = [n for n, p in net.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()]
    assert not missing, missing[:5]


def test_fused_window_attention_groups_masks_exactly():
    """Windows grouped by shifted-window mask pattern give the softmax(qkᵀ + bias + mask)v of every window."""
    from srq.models.window_attention import _fused_attention, mask_patterns, shifted_window_mask

    g = torch.Generator().manual_seed(0)
    ws, heads, images = 4, 2, 2
    mask = shifted_window_mask(12, 16, ws, ws // 2)  # 3 × 4 windows
    assert len(mask_patterns(mask)) == 4  # interior, right column, bottom row, corner
    assert sorted(int(i) for w, _ in mask_patterns(mask) for i in w) == list(range(12))
    assert mask_patterns(mask) is mask_patterns(mask)  # the grouping of one mask is reused by every block
    changed = mask.clone()
    changed[0] = changed[-1]
    assert len(mask_patterns(changed)) == 4 and mask_patterns(changed) is not mask_patterns(mask)
    changed[0] = 0  # modified in place: grouped again (window 0 back in the interior group)
    assert sum(len(w) for w, _ in mask_patterns(changed)) == 12 and len(mask_patterns(changed)) == 4
    changed[0] = 1.0
    assert len(mask_patterns(changed)) == 5
    q, k, v = (torch.randn(images * 12, heads, ws * ws, 3, generator=g) for _ in range(3))
    bias = torch.randn(heads, ws * ws, ws * ws, generator=g)
    explicit = torch.softmax(q @ k.transpose(-2, -1) + bias + mask.repeat(images, 1, 1)[:, None], -1) @ v
    assert torch.allclose(_fused_attention(q, k, v, bias, mask), explicit, atol=1e-5)
