"""SRResNet (Ledig et al., "Photo-Realistic Single Image Super-Resolution Using a GAN", CVPR 2017).

Two variants are registered:

``msrresnet`` -- BasicSR's *modified* SRResNet (https://github.com/XPixelGroup/BasicSR,
    ``basicsr/archs/srresnet_arch.py``, ``MSRResNet``: num_feat 64, num_block 16): no BatchNorm,
    LeakyReLU(0.1), a bilinear upsampling of the input added to the output, [0, 1] RGB. Key names
    ``conv_first``, ``body.N.conv{1,2}``, ``upconv1``, ``upconv2`` (x4 only), ``conv_hr``, ``conv_last``.
    Weights: BasicSR's reproduced models (docs/ModelZoo.md) ``001_MSRResNet_x4_f64b16_DIV2K_1000k_B16G1_wandb``,
    ``002_MSRResNet_x2_..._001pretrain_wandb``, ``003_MSRResNet_x3_..._001pretrain_wandb``
    (``models/net_g_1000000.pth``). Files of the older mmsr / BasicSR < 1.0 code (e.g. ``MSRResNetx4.pth``,
    keys ``recon_trunk.N.*`` and ``HRconv``; open-mmlab/mmagic ``codes/models/archs/SRResNet_arch.py``)
    compute the same function and are renamed by :func:`adapt_msrresnet_state_dict`.

``srresnet`` -- the original SRResNet as released in sgrvinod/a-PyTorch-Tutorial-to-Super-Resolution
    (``models.py``, ``SRResNet``: 9x9 head/tail convs, 16 residual blocks of conv-BN-PReLU-conv-BN,
    ``log2(s)`` sub-pixel blocks with PReLU, tanh output). Key names ``conv_block1.conv_block.*``,
    ``residual_blocks.N.conv_block{1,2}.conv_block.*`` (BatchNorm buffers included),
    ``conv_block2.conv_block.*``, ``subpixel_convolutional_blocks.N.{conv,prelu}.*``,
    ``conv_block3.conv_block.0.*``. That code feeds ImageNet-normalised input and reads the output in
    [-1, 1]; both conversions are done inside :class:`SRResNet`, so it maps [0, 1] to [0, 1].
    Weights: ``checkpoint_srresnet.pth.tar`` (x4, linked from the repository README). It pickles the
    whole model object, which srq refuses to unpickle; re-save it once, in a trusted environment with
    that repository on ``sys.path``:
    ``sd = torch.load("checkpoint_srresnet.pth.tar", weights_only=False)["model"].state_dict()``, then
    ``torch.save(sd, "srresnet_x4.pth")``.
    The SRGAN generator (``checkpoint_srgan.pth.tar``, ``["generator"]``) has the same network under a
    ``net.`` prefix, which :func:`adapt_srresnet_state_dict` strips.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

from .registry import register_model

__all__ = ["MSRResNet", "SRResNet", "adapt_msrresnet_state_dict", "adapt_srresnet_state_dict",
           "msrresnet", "srresnet"]


# --------------------------------------------------------------------------------------------------
# MSRResNet (BasicSR)

class ResidualBlockNoBN(nn.Module):
    """``x + conv2(relu(conv1(x)))``, (N, C, H, W) -> (N, C, H, W)."""

    def __init__(self, num_feat: int = 64) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(num_feat, num_feat, 3, 1, 1)
        self.conv2 = nn.Conv2d(num_feat, num_feat, 3, 1, 1)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv2(self.relu(self.conv1(x)))


class MSRResNet(nn.Module):
    """Modified SRResNet (BasicSR ``MSRResNet``).

    Input (N, 3, H, W) RGB in [0, 1]; output (N, 3, scale*H, scale*W), nominally [0, 1].
    """

    def __init__(self, scale: int = 4, num_feat: int = 64, num_block: int = 16) -> None:
        super().__init__()
        if scale not in (2, 3, 4):
            raise ValueError(f"MSRResNet supports scales 2, 3 and 4, not {scale}")
        self.scale = int(scale)
        self.conv_first = nn.Conv2d(3, num_feat, 3, 1, 1)
        self.body = nn.Sequential(*[ResidualBlockNoBN(num_feat) for _ in range(num_block)])
        if scale == 4:
            self.upconv1 = nn.Conv2d(num_feat, num_feat * 4, 3, 1, 1)
            self.upconv2 = nn.Conv2d(num_feat, num_feat * 4, 3, 1, 1)
            self.pixel_shuffle = nn.PixelShuffle(2)
        else:
            self.upconv1 = nn.Conv2d(num_feat, num_feat * scale * scale, 3, 1, 1)
            self.pixel_shuffle = nn.PixelShuffle(scale)
        self.conv_hr = nn.Conv2d(num_feat, num_feat, 3, 1, 1)
        self.conv_last = nn.Conv2d(num_feat, 3, 3, 1, 1)
        self.lrelu = nn.LeakyReLU(negative_slope=0.1, inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.body(self.lrelu(self.conv_first(x)))
        out = self.lrelu(self.pixel_shuffle(self.upconv1(out)))
        if self.scale == 4:
            out = self.lrelu(self.pixel_shuffle(self.upconv2(out)))
        out = self.conv_last(self.lrelu(self.conv_hr(out)))
        return out + F.interpolate(x, scale_factor=self.scale, mode="bilinear", align_corners=False)


def adapt_msrresnet_state_dict(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename mmsr / BasicSR < 1.0 keys (``recon_trunk.``, ``HRconv.``) to BasicSR's; native dicts unchanged."""
    if not any(k.startswith(("recon_trunk.", "HRconv.")) for k in state):
        return state
    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        if key.startswith("recon_trunk."):
            key = "body." + key[len("recon_trunk."):]
        elif key.startswith("HRconv."):
            key = "conv_hr." + key[len("HRconv."):]
        out[key] = value
    return out


@register_model("msrresnet", scales=(2, 3, 4), weights={},
                description="MSRResNet (BasicSR modified SRResNet), 16 blocks, 64 feats, no BN",
                source="https://github.com/XPixelGroup/BasicSR (docs/ModelZoo.md, reproduced MSRResNet models)",
                adapt_state_dict=adapt_msrresnet_state_dict)
def msrresnet(scale: int, *, num_feat: int = 64, num_block: int = 16) -> MSRResNet:
    """BasicSR MSRResNet: num_feat 64, num_block 16."""
    return MSRResNet(scale, num_feat=num_feat, num_block=num_block)


# --------------------------------------------------------------------------------------------------
# SRResNet (Ledig et al.), sgrvinod/a-PyTorch-Tutorial-to-Super-Resolution

_IMAGENET_MEAN = (0.485, 0.456, 0.406)
_IMAGENET_STD = (0.229, 0.224, 0.225)


class ConvolutionalBlock(nn.Module):
    """conv(k, 'same') [-> BatchNorm] [-> PReLU | Tanh], as ``conv_block.{0,1,2}``."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, batch_norm: bool = False,
                 activation: str | None = None) -> None:
        super().__init__()
        layers: list[nn.Module] = [nn.Conv2d(in_channels, out_channels, kernel_size, padding=kernel_size // 2)]
        if batch_norm:
            layers.append(nn.BatchNorm2d(out_channels))
        if activation == "prelu":
            layers.append(nn.PReLU())
        elif activation == "tanh":
            layers.append(nn.Tanh())
        elif activation is not None:
            raise ValueError(f"unknown activation {activation!r}")
        self.conv_block = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv_block(x)


class SubPixelConvolutionalBlock(nn.Module):
    """conv C -> C*s^2, PixelShuffle(s), PReLU: (N, C, H, W) -> (N, C, s*H, s*W)."""

    def __init__(self, n_channels: int = 64, scaling_factor: int = 2, kernel_size: int = 3) -> None:
        super().__init__()
        self.conv = nn.Conv2d(n_channels, n_channels * scaling_factor ** 2, kernel_size, padding=kernel_size // 2)
        self.pixel_shuffle = nn.PixelShuffle(scaling_factor)
        self.prelu = nn.PReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.prelu(self.pixel_shuffle(self.conv(x)))


class ResidualBlock(nn.Module):
    """``x + [conv-BN-PReLU-conv-BN](x)``."""

    def __init__(self, n_channels: int = 64, kernel_size: int = 3) -> None:
        super().__init__()
        self.conv_block1 = ConvolutionalBlock(n_channels, n_channels, kernel_size, batch_norm=True, activation="prelu")
        self.conv_block2 = ConvolutionalBlock(n_channels, n_channels, kernel_size, batch_norm=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv_block2(self.conv_block1(x))


class SRResNet(nn.Module):
    """Original SRResNet with the tutorial's key names, taking and returning RGB in [0, 1].

    Internally the input is ImageNet-normalised and the tanh output mapped from [-1, 1] to [0, 1],
    as in the release's training (``lr_img_type='imagenet-norm'``, ``hr_img_type='[-1, 1]'``).

    Input (N, 3, H, W) in [0, 1]; output (N, 3, scale*H, scale*W) in [0, 1].
    """

    input_mean: torch.Tensor  # buffers
    input_std: torch.Tensor

    def __init__(self, scale: int = 4, n_channels: int = 64, n_blocks: int = 16, large_kernel_size: int = 9,
                 small_kernel_size: int = 3) -> None:
        super().__init__()
        if scale not in (2, 4, 8):
            raise ValueError(f"SRResNet supports scales 2, 4 and 8, not {scale}")
        self.scale = int(scale)
        self.register_buffer("input_mean", torch.tensor(_IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("input_std", torch.tensor(_IMAGENET_STD).view(1, 3, 1, 1), persistent=False)
        self.conv_block1 = ConvolutionalBlock(3, n_channels, large_kernel_size, activation="prelu")
        self.residual_blocks = nn.Sequential(*[ResidualBlock(n_channels, small_kernel_size) for _ in range(n_blocks)])
        self.conv_block2 = ConvolutionalBlock(n_channels, n_channels, small_kernel_size, batch_norm=True)
        self.subpixel_convolutional_blocks = nn.Sequential(
            *[SubPixelConvolutionalBlock(n_channels, 2, small_kernel_size) for _ in range(int(math.log2(scale)))])
        self.conv_block3 = ConvolutionalBlock(n_channels, 3, large_kernel_size, activation="tanh")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv_block1((x - self.input_mean) / self.input_std)
        x = x + self.conv_block2(self.residual_blocks(x))
        y = self.conv_block3(self.subpixel_convolutional_blocks(x))
        return (y + 1.0) / 2.0


def adapt_srresnet_state_dict(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Strip the ``net.`` prefix of the tutorial's SRGAN ``Generator``; native dicts unchanged."""
    if state and all(k.startswith("net.") for k in state):
        return {k[len("net."):]: v for k, v in state.items()}
    return state


@register_model("srresnet", scales=(2, 4, 8), weights={},
                description="SRResNet (Ledig et al., CVPR 2017), 16 blocks with BatchNorm + PReLU",
                source="https://github.com/sgrvinod/a-PyTorch-Tutorial-to-Super-Resolution "
                       "(checkpoint_srresnet.pth.tar, x4; re-save as a state dict)",
                adapt_state_dict=adapt_srresnet_state_dict)
def srresnet(scale: int, *, n_channels: int = 64, n_blocks: int = 16) -> SRResNet:
    """Original SRResNet: 64 channels, 16 residual blocks, 9x9 outer kernels."""
    return SRResNet(scale, n_channels=n_channels, n_blocks=n_blocks)
