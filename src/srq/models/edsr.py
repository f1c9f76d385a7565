"""EDSR (Lim et al., "Enhanced Deep Residual Networks for Single Image Super-Resolution", CVPRW 2017).

Two official PyTorch releases exist and both load:

* **EDSR-PyTorch** (https://github.com/sanghyun-son/EDSR-PyTorch, ``src/model/edsr.py``), the native
  key names here: ``sub_mean.*``, ``head.0.*``, ``body.N.body.{0,2}.*``, ``body.<n_resblocks>.*``,
  ``tail.0.{0,2}.*``, ``tail.1.*``, ``add_mean.*``. Files (https://cv.snu.ac.kr/research/EDSR/models/):
  ``edsr_baseline_x2-1bc95232.pt``, ``edsr_baseline_x3-abf2a44e.pt``, ``edsr_baseline_x4-6b446fab.pt``,
  ``edsr_x2-0edfb8a3.pt``, ``edsr_x3-ea3ef2c6.pt``, ``edsr_x4-4f62e9ef.pt``.
* **BasicSR** (https://github.com/XPixelGroup/BasicSR, ``basicsr/archs/edsr_arch.py``; converted from
  the above): ``conv_first``, ``body.N.conv{1,2}``, ``conv_after_body``, ``upsample.{0,2}``,
  ``conv_last``. Files: ``EDSR_Mx{2,3,4}_f64b16_DIV2K_official-{3ba7b086,6908f88a,0c287733}.pth``
  and ``EDSR_Lx{2,3,4}_f256b32_DIV2K_official-{be38e77d,3660f70d,76ee1c8f}.pth``. They are renamed by
  :func:`adapt_state_dict` (registered as ``adapt_state_dict`` of both models).

Mean shift. EDSR-PyTorch feeds [0, 255] pixels through ``sub_mean``, a frozen 1x1 conv with weight
``I / std`` and bias ``-255 * mean / std`` (DIV2K mean, std = 1), and ends with ``add_mean`` (bias
``+255 * mean``). BasicSR computes the same function on [0, 1] input as ``(x - mean) * 255`` and
``y / 255 + mean``. This module keeps the EDSR-PyTorch names: ``sub_mean`` / ``add_mean`` hold their
``weight`` and ``bias`` as *buffers* (constants, never trained, invisible to quantizers looking for
``nn.Conv2d``), so original files load strictly as they are, and the network scales its [0, 1] input
by 255 internally. :func:`adapt_state_dict` inserts the constants for BasicSR files (which carry none)
and refuses files whose mean-shift entries are not the [0, 255] DIV2K constants (e.g. trained with
``--rgb_range 1``), since this network would silently compute the wrong function on them.

Input / output: float (N, 3, H, W) RGB in [0, 1] -> (N, 3, s*H, s*W) RGB, nominally [0, 1]
(not clamped).
"""

from __future__ import annotations

import math
import re
from typing import Mapping

import torch
from torch import nn
from torch.nn import functional as F

from ..errors import SrqError
from .registry import register_model

__all__ = ["EDSR", "MeanShift", "ResBlock", "Upsampler", "adapt_state_dict", "edsr", "edsr_baseline",
           "DIV2K_RGB_MEAN"]

#: DIV2K RGB mean used by both releases (EDSR-PyTorch ``common.MeanShift``, BasicSR ``rgb_mean``).
DIV2K_RGB_MEAN = (0.4488, 0.4371, 0.4040)
_RGB_RANGE = 255.0


def _conv3x3(cin: int, cout: int) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, 3, padding=1)


class MeanShift(nn.Module):
    """Fixed 1x1 conv ``y = W x + b`` with ``W = I``, ``b = sign * rgb_range * mean``.

    ``weight`` (3, 3, 1, 1) and ``bias`` (3,) are buffers named like EDSR-PyTorch's ``MeanShift``
    (an ``nn.Conv2d`` subclass with frozen parameters), so its checkpoints load unchanged.
    """

    weight: torch.Tensor  # buffers (see above)
    bias: torch.Tensor

    def __init__(self, rgb_range: float, sign: int, rgb_mean: tuple[float, float, float] = DIV2K_RGB_MEAN) -> None:
        super().__init__()
        self.register_buffer("weight", torch.eye(3).view(3, 3, 1, 1))
        self.register_buffer("bias", sign * rgb_range * torch.tensor(rgb_mean))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, self.weight, self.bias)


class ResBlock(nn.Module):
    """conv-ReLU-conv with a scaled identity skip: ``x + res_scale * body(x)``; keys ``body.{0,2}``."""

    def __init__(self, n_feats: int, res_scale: float = 1.0) -> None:
        super().__init__()
        self.body = nn.Sequential(_conv3x3(n_feats, n_feats), nn.ReLU(inplace=True), _conv3x3(n_feats, n_feats))
        self.res_scale = res_scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x) * self.res_scale


class Upsampler(nn.Sequential):
    """Sub-pixel upsampling: ``log2(s)`` x [conv 4C, PixelShuffle(2)] for s = 2^n, [conv 9C, PixelShuffle(3)] for 3."""

    def __init__(self, scale: int, n_feats: int) -> None:
        layers: list[nn.Module] = []
        if scale & (scale - 1) == 0:
            for _ in range(int(math.log2(scale))):
                layers += [_conv3x3(n_feats, 4 * n_feats), nn.PixelShuffle(2)]
        elif scale == 3:
            layers += [_conv3x3(n_feats, 9 * n_feats), nn.PixelShuffle(3)]
        else:
            raise ValueError(f"EDSR supports scales 2^n and 3, not {scale}")
        super().__init__(*layers)


class EDSR(nn.Module):
    """EDSR with EDSR-PyTorch key names, taking RGB in [0, 1].

    Args:
        scale: upscaling factor (2^n or 3).
        n_resblocks: residual blocks (16 baseline, 32 large).
        n_feats: feature channels (64 baseline, 256 large).
        res_scale: residual scaling (1 baseline, 0.1 large).
        rgb_range: pixel range the weights were trained on (255 for both releases).

    Input (N, 3, H, W) in [0, 1]; output (N, 3, scale*H, scale*W), nominally [0, 1].
    """

    def __init__(self, scale: int, n_resblocks: int = 16, n_feats: int = 64, res_scale: float = 1.0,
                 rgb_range: float = _RGB_RANGE) -> None:
        super().__init__()
        self.scale = int(scale)
        self.rgb_range = float(rgb_range)
        self.sub_mean = MeanShift(rgb_range, sign=-1)
        self.add_mean = MeanShift(rgb_range, sign=+1)
        self.head = nn.Sequential(_conv3x3(3, n_feats))
        self.body = nn.Sequential(*[ResBlock(n_feats, res_scale) for _ in range(n_resblocks)],
                                  _conv3x3(n_feats, n_feats))
        self.tail = nn.Sequential(Upsampler(scale, n_feats), _conv3x3(n_feats, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.head(self.sub_mean(x * self.rgb_range))
        x = x + self.body(x)
        return self.add_mean(self.tail(x)) / self.rgb_range


# --------------------------------------------------------------------------------------------------
# BasicSR -> EDSR-PyTorch key renaming

_BASICSR_RULES: tuple[tuple[re.Pattern[str], str], ...] = (
    (re.compile(r"^conv_first\.(weight|bias)$"), r"head.0.\1"),
    (re.compile(r"^body\.(\d+)\.conv1\.(weight|bias)$"), r"body.\1.body.0.\2"),
    (re.compile(r"^body\.(\d+)\.conv2\.(weight|bias)$"), r"body.\1.body.2.\2"),
    (re.compile(r"^upsample\.(\d+)\.(weight|bias)$"), r"tail.0.\1.\2"),
    (re.compile(r"^conv_last\.(weight|bias)$"), r"tail.1.\1"),
)


def _mean_shift_state(rgb_range: float = _RGB_RANGE) -> dict[str, torch.Tensor]:
    mean = torch.tensor(DIV2K_RGB_MEAN)
    eye = torch.eye(3).view(3, 3, 1, 1)
    return {"sub_mean.weight": eye, "sub_mean.bias": -rgb_range * mean,
            "add_mean.weight": eye.clone(), "add_mean.bias": rgb_range * mean}


def _check_constants(state: Mapping[str, torch.Tensor], expected: Mapping[str, torch.Tensor], what: str) -> None:
    for key, want in expected.items():
        got = state.get(key)
        if got is None:
            continue
        if tuple(got.shape) != tuple(want.shape) or not torch.allclose(got.float().cpu(), want, rtol=1e-4, atol=1e-3):
            raise SrqError(f"{key} in the checkpoint is not the {what} srq's EDSR expects "
                           f"(got {got.flatten()[:3].tolist()}...); the weights were trained with another "
                           f"pixel range or mean (e.g. --rgb_range 1) and cannot be used as they are")


def adapt_state_dict(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename a BasicSR EDSR state dict to EDSR-PyTorch names; return native ones unchanged.

    BasicSR files carry no mean-shift entries (its ``mean`` is a plain attribute); the DIV2K constants
    are inserted as ``sub_mean``/``add_mean``. A ``mean`` tensor, if present, must be the DIV2K mean
    and is dropped. Mean-shift entries of native files are checked, not changed.
    """
    expected = _mean_shift_state()
    if "conv_first.weight" not in state:
        _check_constants(state, expected, "[0, 255] DIV2K mean shift")
        return state
    n_blocks = sum(1 for k in state if re.fullmatch(r"body\.\d+\.conv1\.weight", k))
    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        if key == "mean":
            _check_constants({"mean": value.reshape(-1)}, {"mean": torch.tensor(DIV2K_RGB_MEAN)}, "DIV2K RGB mean")
            continue
        if key.startswith("conv_after_body."):
            out[f"body.{n_blocks}.{key.split('.', 1)[1]}"] = value
            continue
        for pattern, repl in _BASICSR_RULES:
            if pattern.match(key):
                out[pattern.sub(repl, key)] = value
                break
        else:
            out[key] = value  # unknown key: left for the strict loader to report
    for key, value in expected.items():
        out.setdefault(key, value)
    return out


_SOURCE = ("https://github.com/sanghyun-son/EDSR-PyTorch (cv.snu.ac.kr/research/EDSR/models/) or "
           "https://github.com/XPixelGroup/BasicSR (docs/ModelZoo.md, EDSR official)")


@register_model("edsr_baseline", scales=(2, 3, 4), weights={},
                description="EDSR baseline (Lim et al., CVPRW 2017), 16 blocks, 64 feats",
                source=_SOURCE, adapt_state_dict=adapt_state_dict)
def edsr_baseline(scale: int, *, n_resblocks: int = 16, n_feats: int = 64, res_scale: float = 1.0) -> EDSR:
    """EDSR baseline: 16 residual blocks, 64 features, res_scale 1 (1.37M / 1.55M / 1.52M params)."""
    return EDSR(scale, n_resblocks=n_resblocks, n_feats=n_feats, res_scale=res_scale)


@register_model("edsr", scales=(2, 3, 4), weights={},
                description="EDSR (Lim et al., CVPRW 2017), 32 blocks, 256 feats, res_scale 0.1",
                source=_SOURCE, adapt_state_dict=adapt_state_dict)
def edsr(scale: int, *, n_resblocks: int = 32, n_feats: int = 256, res_scale: float = 0.1) -> EDSR:
    """EDSR (large): 32 residual blocks, 256 features, res_scale 0.1 (40.7M / 43.7M / 43.1M params)."""
    return EDSR(scale, n_resblocks=n_resblocks, n_feats=n_feats, res_scale=res_scale)
