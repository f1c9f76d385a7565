"""FSRCNN (Dong et al., ECCV 2016) on the luma channel.

Key-compatible with the community reproduction https://github.com/yjn870/FSRCNN-pytorch (``models.py`` class
``FSRCNN``; weights ``weights/fsrcnn_x{2,3,4}.pth``, trained on the 91-image set): d 56, s 12, m 4,
PReLU with one slope per channel. The network maps Y (BT.601 as MATLAB ``rgb2ycbcr``, divided by 255,
i.e. [16/255, 235/255]) to Y; it is registered with ``color="y"`` and the registry wraps it to RGB.
The official ``test.py`` clamps the output to [0, 1] outside the model; forward has no clamp.

The deconvolution is ``ConvTranspose2d(k=9, stride=s, padding=4, output_padding=s-1)``, so the output
is exactly ``(H - 1)*s - 8 + 9 + s - 1 = s*H`` by ``s*W``.
"""

from __future__ import annotations

import torch
from torch import nn

from .registry import register_model

__all__ = ["FSRCNN", "fsrcnn"]


class FSRCNN(nn.Module):
    """FSRCNN: (N, C, H, W) -> (N, C, s*H, s*W), C = ``num_channels`` (1 for the official Y weights)."""

    def __init__(self, scale: int, num_channels: int = 1, d: int = 56, s: int = 12, m: int = 4) -> None:
        super().__init__()
        self.scale = scale
        self.first_part = nn.Sequential(nn.Conv2d(num_channels, d, kernel_size=5, padding=2), nn.PReLU(d))
        mid: list[nn.Module] = [nn.Conv2d(d, s, kernel_size=1), nn.PReLU(s)]
        for _ in range(m):
            mid += [nn.Conv2d(s, s, kernel_size=3, padding=1), nn.PReLU(s)]
        mid += [nn.Conv2d(s, d, kernel_size=1), nn.PReLU(d)]
        self.mid_part = nn.Sequential(*mid)
        self.last_part = nn.ConvTranspose2d(d, num_channels, kernel_size=9, stride=scale, padding=4,
                                            output_padding=scale - 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.last_part(self.mid_part(self.first_part(x)))


@register_model("fsrcnn", scales=(2, 3, 4),
                weights={2: "fsrcnn_x2_y.pth", 3: "fsrcnn_x3_y.pth", 4: "fsrcnn_x4_y.pth"}, color="y",
                description="FSRCNN (Dong et al., ECCV 2016), d 56 s 12 m 4, Y channel (yjn870 reproduction)",
                source="https://github.com/yjn870/FSRCNN-pytorch")
def fsrcnn(scale: int, *, d: int = 56, s: int = 12, m: int = 4) -> nn.Module:
    """FSRCNN (Dong et al., ECCV 2016), d 56 s 12 m 4, Y channel."""
    return FSRCNN(scale, d=d, s=s, m=m)
