"""DoReFa-Net weights (Zhou et al., 2016): ``2·quantize_k(tanh(w)/(2·max|tanh(w)|) + ½) − 1``, times a fixed scale."""

from __future__ import annotations

import torch

from ..functional import RoundFn
from .base import GRIDS, Grid, Params

__all__ = ["DoReFaGrid"]


@GRIDS.register("dorefa")
class DoReFaGrid(Grid):
    """``2ᵏ`` levels ``(2i/(2ᵏ − 1) − 1)·scale`` (no zero level), max |tanh| per channel or per tensor. DoReFa's
    output lies in [−1, 1] (its networks rescale with batch norm); a pretrained SR network needs its weights'
    magnitude, so the result is multiplied by ``scale`` = max |w| from calibration, a buffer that is not
    trained (tanh(w)/max|tanh w| ≈ w/max|w| for small weights). The paper's 1 bit, ``sign(w)·E|w|``, is the
    ``binary`` grid that 1-bit quantizers use."""

    params = ("scale",)
    buffers = ("scale",)

    def init(self, shape: tuple[int, ...]) -> Params:
        return {"scale": torch.ones(shape)}

    def fit(self, lower: torch.Tensor, upper: torch.Tensor, bits: int | None = None) -> Params:
        return {"scale": torch.maximum(lower.abs(), upper.abs()).clamp_min(1e-8)}

    def project_(self, p: Params) -> None:
        """Nothing is trained."""

    def bounds(self, p: Params, bits: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        return -p["scale"], p["scale"]

    def quantize(self, x: torch.Tensor, p: Params, bits: int | torch.Tensor, rounding: RoundFn) -> torch.Tensor:
        n = 2 ** int(bits) - 1
        t = torch.tanh(x)
        dims = [d for d in range(x.dim()) if p["scale"].dim() == 0 or p["scale"].shape[d] == 1]  # one max per scale
        r = t / (2 * t.abs().amax(dim=dims, keepdim=True).clamp_min(1e-8)) + 0.5
        return (2 * rounding(r * n) / n - 1) * p["scale"]

    def quantize_fwd(self, x: torch.Tensor, p: Params, bits: int) -> torch.Tensor:
        with torch.no_grad():
            return self.quantize(x, p, bits, torch.round)
