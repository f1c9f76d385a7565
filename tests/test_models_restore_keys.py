"""SwinIR-M colour denoising / grey JPEG: key compatibility with the official checkpoints (not obtainable here).

The expected keys and shapes are written out from JingyunLiang/SwinIR ``models/network_swinir.py`` (class SwinIR,
``upsampler=''``, ``resi_connection='1conv'``, ``patch_norm=True``) with the configurations of
``main_test_swinir.py`` (color_dn: in_chans 3, img_size 128, window 8; jpeg_car: in_chans 1, img_size 126,
window 7); an official-style checkpoint (with its ``relative_position_index`` and ``attn_mask`` buffers) is built
from them, saved and loaded strictly.
"""

from __future__ import annotations

import pytest
import torch

import srq
from srq.models.window_attention import shifted_window_mask

Shapes = dict[str, tuple[int, ...]]


def _rel_index(ws: int) -> torch.Tensor:
    """The official ``relative_position_index`` of a ws×ws window (network_swinir.py WindowAttention)."""
    coords = torch.stack(torch.meshgrid(torch.arange(ws), torch.arange(ws), indexing="ij")).flatten(1)
    rel = (coords[:, :, None] - coords[:, None, :]).permute(1, 2, 0) + (ws - 1)
    return rel[:, :, 0] * (2 * ws - 1) + rel[:, :, 1]


def official_keys(in_chans: int, img_size: int, ws: int, dim: int = 180, depth: int = 6, groups: int = 6,
                  heads: int = 6) -> Shapes:
    keys: Shapes = {"conv_first.weight": (dim, in_chans, 3, 3), "conv_first.bias": (dim,),
                    "patch_embed.norm.weight": (dim,), "patch_embed.norm.bias": (dim,)}
    for i in range(groups):
        for j in range(depth):
            p = f"layers.{i}.residual_group.blocks.{j}."
            keys.update({p + "norm1.weight": (dim,), p + "norm1.bias": (dim,),
                         p + "attn.relative_position_bias_table": ((2 * ws - 1) ** 2, heads),
                         p + "attn.relative_position_index": (ws * ws, ws * ws),
                         p + "attn.qkv.weight": (3 * dim, dim), p + "attn.qkv.bias": (3 * dim,),
                         p + "attn.proj.weight": (dim, dim), p + "attn.proj.bias": (dim,),
                         p + "norm2.weight": (dim,), p + "norm2.bias": (dim,),
                         p + "mlp.fc1.weight": (2 * dim, dim), p + "mlp.fc1.bias": (2 * dim,),
                         p + "mlp.fc2.weight": (dim, 2 * dim), p + "mlp.fc2.bias": (dim,)})
            if j % 2:
                keys[p + "attn_mask"] = ((img_size // ws) ** 2, ws * ws, ws * ws)
        keys.update({f"layers.{i}.conv.weight": (dim, dim, 3, 3), f"layers.{i}.conv.bias": (dim,)})
    keys.update({"norm.weight": (dim,), "norm.bias": (dim,), "conv_after_body.weight": (dim, dim, 3, 3),
                 "conv_after_body.bias": (dim,), "conv_last.weight": (in_chans, dim, 3, 3),
                 "conv_last.bias": (in_chans,)})
    return keys


CASES = {"swinir_color_dn": (3, 128, 8), "swinir_jpeg_car": (1, 126, 7)}


@pytest.mark.parametrize("name", sorted(CASES))
def test_state_dict_matches_official_and_loads(name, tmp_path):
    in_chans, img_size, ws = CASES[name]
    expected = official_keys(in_chans, img_size, ws)
    net = srq.create_model(name, 1, None, wrap=False)
    ours = {k: tuple(v.shape) for k, v in net.state_dict().items()}
    derived = {k for k in expected if k.endswith(("relative_position_index", "attn_mask"))}
    assert ours == {k: v for k, v in expected.items() if k not in derived}
    torch.manual_seed(0)
    state = {k: torch.randn(v) * 0.02 for k, v in expected.items() if k not in derived}
    for k in derived:
        state[k] = _rel_index(ws) if k.endswith("index") else shifted_window_mask(img_size, img_size, ws, ws // 2)
    path = tmp_path / f"{name}.pth"
    torch.save({"params": state}, path)
    model = srq.create_model(name, 1, path)  # strict, derived buffers checked and dropped
    x = torch.rand(1, 3, 20, 23)
    with torch.no_grad():
        assert model(x).shape == x.shape
    assert srq.models.get_model_info(name).tasks == (("denoise",) if in_chans == 3 else ("jpeg",))
