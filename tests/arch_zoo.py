"""Small synthetic SR networks with the layer patterns users bring (issue 32's architecture torture test).

Every model takes a (N, 3, h, w) image in [0, 1] (h, w multiples of 4) and returns (N, 3, s·h, s·w), has random
weights and at most ~20 k parameters. ``ARCHS`` maps a name to a builder ``() -> (model, scale)``;
``tests/test_architectures.py`` runs each through every srq method. Nothing here imports srq.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

NF = 16  # feature channels


def _upsampler(nf: int, scale: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(nf, 3 * scale * scale, 3, padding=1), nn.PixelShuffle(scale))


class SeparableStem(nn.Module):
    """Separable stem: a 1×1 conv on the RGB input, then a depthwise 3×3 (both are the network's first layer)."""

    def __init__(self, scale: int = 2) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(NF, NF, 3, padding=1), nn.ReLU(), nn.Conv2d(NF, NF, 3, padding=1))
        self.tail = _upsampler(NF, scale)  # registered before the stem on purpose: module order ≠ data flow
        self.stem_pw = nn.Conv2d(3, NF, 1)
        self.stem_dw = nn.Conv2d(NF, NF, 3, padding=1, groups=NF)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.stem_dw(self.stem_pw(x))
        return self.tail(h + self.body(h))


class RepConv(nn.Module):
    """Re-parameterisable conv: conv3×3 + conv1×1 + identity branches summed (RepVGG / ECBSR style)."""

    def __init__(self, nf: int) -> None:
        super().__init__()
        self.conv3 = nn.Conv2d(nf, nf, 3, padding=1)
        self.conv1 = nn.Conv2d(nf, nf, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv3(x) + self.conv1(x) + x


class RepNet(nn.Module):
    """Re-parameterisable conv wrappers (three RepConv blocks with PReLU)."""

    def __init__(self, scale: int = 2) -> None:
        super().__init__()
        self.head = nn.Conv2d(3, NF, 3, padding=1)
        self.body = nn.Sequential(*(nn.Sequential(RepConv(NF), nn.PReLU(NF)) for _ in range(3)))
        self.tail = _upsampler(NF, scale)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.tail(self.body(self.head(x)))


class InplaceNet(nn.Module):
    """In-place ops in forward: ``out *= attention``, ``h += x`` on tensors autograd saved (sigmoid, ReLU outputs)."""

    def __init__(self, scale: int = 2) -> None:
        super().__init__()
        self.head = nn.Conv2d(3, NF, 3, padding=1)
        self.conv = nn.Conv2d(NF, NF, 3, padding=1)
        self.att = nn.Conv2d(NF, NF, 1)
        self.tail = _upsampler(NF, scale)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.head(x)
        h = F.relu(self.conv(x))
        h += x  # modifies ReLU's output, which ReLU's backward needs
        out = torch.sigmoid(self.att(h))
        out *= h  # modifies sigmoid's output, which sigmoid's backward needs
        return self.tail(out)


class LayerNormNet(nn.Module):
    """LayerNorm over channels on channels-last (permute → LayerNorm → permute) with a GELU MLP."""

    def __init__(self, scale: int = 4) -> None:
        super().__init__()
        self.head = nn.Conv2d(3, NF, 3, padding=1)
        self.norm = nn.LayerNorm(NF)
        self.mlp = nn.Sequential(nn.Conv2d(NF, 2 * NF, 1), nn.GELU(), nn.Conv2d(2 * NF, NF, 1))
        self.tail = _upsampler(NF, scale)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.head(x)
        h = self.norm(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)
        return self.tail(x + self.mlp(h))


class PixelAttentionNet(nn.Module):
    """Pixel attention (PAN style): ``sigmoid(conv1×1(x)) * x``."""

    def __init__(self, scale: int = 2) -> None:
        super().__init__()
        self.head = nn.Conv2d(3, NF, 3, padding=1)
        self.pa = nn.Conv2d(NF, NF, 1)
        self.conv = nn.Conv2d(NF, NF, 3, padding=1)
        self.tail = _upsampler(NF, scale)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.head(x)
        h = torch.sigmoid(self.pa(x)) * x
        return self.tail(self.conv(h) + x)


class InterpSkipNet(nn.Module):
    """``F.interpolate`` skip: the bilinear upscaled input is added to the network's output."""

    def __init__(self, scale: int = 4) -> None:
        super().__init__()
        self.scale = scale
        self.head = nn.Conv2d(3, NF, 3, padding=1)
        self.conv = nn.Conv2d(NF, NF, 3, padding=1)
        self.tail = _upsampler(NF, scale)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skip = F.interpolate(x, scale_factor=self.scale, mode="bilinear", align_corners=False)
        return self.tail(F.relu(self.conv(self.head(x)))) + skip


class ChannelAttention(nn.Module):
    """Squeeze-and-excitation: adaptive average pooling → 1×1 → ReLU → 1×1 → sigmoid."""

    def __init__(self, nf: int, reduction: int = 4) -> None:
        super().__init__()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Sequential(nn.Conv2d(nf, nf // reduction, 1), nn.ReLU(), nn.Conv2d(nf // reduction, nf, 1),
                                nn.Sigmoid())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.fc(self.pool(x))


class ChannelAttentionNet(nn.Module):
    """Adaptive pooling: a channel attention (RCAN style) after a conv."""

    def __init__(self, scale: int = 2) -> None:
        super().__init__()
        self.head = nn.Conv2d(3, NF, 3, padding=1)
        self.conv = nn.Conv2d(NF, NF, 3, padding=1)
        self.ca = ChannelAttention(NF)
        self.tail = _upsampler(NF, scale)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.head(x)
        return self.tail(x + self.ca(F.relu(self.conv(x))))


class Range255Net(nn.Module):
    """[0, 255] pixel range (trained-on-255 style): ×255 and a mean shift inside, ÷255 at the end."""

    def __init__(self, scale: int = 2) -> None:
        super().__init__()
        self.register_buffer("mean", torch.tensor([0.4488, 0.4371, 0.4040]).view(1, 3, 1, 1) * 255)
        self.head = nn.Conv2d(3, NF, 3, padding=1)
        self.conv = nn.Conv2d(NF, NF, 3, padding=1)
        self.tail = _upsampler(NF, scale)
        with torch.no_grad():  # weights that keep a [0, 255] signal in range, as a model trained on it would
            for m in (self.head, self.conv, self.tail[0]):
                m.weight.mul_(0.5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x * 255 - self.mean
        h = self.head(x)
        out = self.tail(h + F.relu(self.conv(h))) + F.interpolate(x, scale_factor=self.tail[1].upscale_factor)
        return (out + self.mean) / 255


class GroupedNet(nn.Module):
    """Grouped convs (groups=4) with a channel shuffle between them."""

    def __init__(self, scale: int = 2) -> None:
        super().__init__()
        self.head = nn.Conv2d(3, NF, 3, padding=1)
        self.g1 = nn.Conv2d(NF, NF, 3, padding=1, groups=4)
        self.g2 = nn.Conv2d(NF, NF, 3, padding=1, groups=4)
        self.tail = _upsampler(NF, scale)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.head(x)
        h = F.relu(self.g1(x))
        n, c, hh, ww = h.shape
        h = h.view(n, 4, c // 4, hh, ww).transpose(1, 2).reshape(n, c, hh, ww)  # channel shuffle
        return self.tail(x + self.g2(h))


class DeconvNet(nn.Module):
    """ConvTranspose2d upsampler (FSRCNN style)."""

    def __init__(self, scale: int = 2) -> None:
        super().__init__()
        self.head = nn.Conv2d(3, NF, 3, padding=1)
        self.conv = nn.Conv2d(NF, NF, 3, padding=1)
        self.up = nn.ConvTranspose2d(NF, 3, 2 * scale, stride=scale, padding=scale // 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.up(F.relu(self.conv(F.relu(self.head(x)))))


class ResBlock(nn.Module):
    """conv3×3 → ReLU → conv3×3, plus the input."""

    def __init__(self, nf: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(nf, nf, 3, padding=1)
        self.conv2 = nn.Conv2d(nf, nf, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv2(F.relu(self.conv1(x)))


class SeqResNet(nn.Module):
    """A residual body of N repeated ResBlocks in an ``nn.Sequential`` (EDSR style), with a global skip."""

    def __init__(self, scale: int = 2, blocks: int = 3, nf: int = 12) -> None:
        super().__init__()
        self.head = nn.Conv2d(3, nf, 3, padding=1)
        self.body = nn.Sequential(*(ResBlock(nf) for _ in range(blocks)), nn.Conv2d(nf, nf, 3, padding=1))
        self.tail = _upsampler(nf, scale)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.head(x)
        return self.tail(x + self.body(x))


class BSConv(nn.Module):
    """Blueprint-separable conv: a 1×1 conv then a depthwise 3×3 (BSRN style)."""

    def __init__(self, nf: int) -> None:
        super().__init__()
        self.pw = nn.Conv2d(nf, nf, 1)
        self.dw = nn.Conv2d(nf, nf, 3, padding=1, groups=nf)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dw(self.pw(x))


class BSResBlock(nn.Module):
    """Two BSConvs with a GELU between them, plus the input."""

    def __init__(self, nf: int) -> None:
        super().__init__()
        self.c1 = BSConv(nf)
        self.c2 = BSConv(nf)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.c2(F.gelu(self.c1(x)))


class BSConvNet(nn.Module):
    """Five ResBlocks of blueprint-separable convs (the blocks ``find_blocks`` should find are the five ResBlocks)."""

    def __init__(self, scale: int = 2, blocks: int = 5) -> None:
        super().__init__()
        self.head = nn.Conv2d(3, NF, 3, padding=1)
        self.body = nn.Sequential(*(BSResBlock(NF) for _ in range(blocks)))
        self.tail = _upsampler(NF, scale)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.head(x)
        return self.tail(x + self.body(x))


class TokenMixer(nn.Module):
    """MLP-Mixer style: a Linear across the 16 tokens of each 4×4 window, then a Linear channel MLP."""

    def __init__(self, nf: int, window: int = 4) -> None:
        super().__init__()
        self.window = window
        self.norm = nn.LayerNorm(nf)
        self.tokens = nn.Linear(window * window, window * window)
        self.channels = nn.Sequential(nn.Linear(nf, 2 * nf), nn.GELU(), nn.Linear(2 * nf, nf))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, c, h, w = x.shape
        s = self.window
        t = x.view(n, c, h // s, s, w // s, s).permute(0, 2, 4, 1, 3, 5).reshape(n, h // s, w // s, c, s * s)
        t = t + self.tokens(t)  # mixes the tokens of a window
        t = t.transpose(-1, -2)  # (n, h/s, w/s, s·s, c)
        t = t + self.channels(self.norm(t))
        return t.reshape(n, h // s, w // s, s, s, c).permute(0, 5, 1, 3, 2, 4).reshape(n, c, h, w)


class TokenMixerNet(nn.Module):
    """A Linear-based token mixer on 4×4 windows (inputs must be multiples of 4)."""

    def __init__(self, scale: int = 4) -> None:
        super().__init__()
        self.head = nn.Conv2d(3, NF, 3, padding=1)
        self.mixer = TokenMixer(NF)
        self.tail = _upsampler(NF, scale)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.tail(self.mixer(self.head(x)))


class MHANet(nn.Module):
    """``nn.MultiheadAttention`` over the pixels (its projections are used by weight, not called as modules)."""

    def __init__(self, scale: int = 2) -> None:
        super().__init__()
        self.head = nn.Conv2d(3, NF, 3, padding=1)
        self.attn = nn.MultiheadAttention(NF, 2, batch_first=True)
        self.tail = _upsampler(NF, scale)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.head(x)
        n, c, hh, ww = h.shape
        t = h.flatten(2).transpose(1, 2)
        t = t + self.attn(t, t, t, need_weights=False)[0]
        return self.tail(t.transpose(1, 2).reshape(n, c, hh, ww))


ARCHS = {
    "separable_stem": lambda: (SeparableStem(2), 2),
    "reparam": lambda: (RepNet(2), 2),
    "inplace": lambda: (InplaceNet(2), 2),
    "layernorm_gelu": lambda: (LayerNormNet(4), 4),
    "pixel_attention": lambda: (PixelAttentionNet(2), 2),
    "interp_skip": lambda: (InterpSkipNet(4), 4),
    "channel_attention": lambda: (ChannelAttentionNet(2), 2),
    "range255": lambda: (Range255Net(2), 2),
    "grouped": lambda: (GroupedNet(2), 2),
    "conv_transpose": lambda: (DeconvNet(2), 2),
    "seq_resblocks": lambda: (SeqResNet(2), 2),
    "bsconv_resblocks": lambda: (BSConvNet(2), 2),
    "token_mixer": lambda: (TokenMixerNet(4), 4),
    "multihead_attention": lambda: (MHANet(2), 2),
}
"""name → builder returning ``(float model with random weights, scale)``."""

INPLACE_ARCHS = {"inplace"}  # models whose forward modifies tensors autograd needs
