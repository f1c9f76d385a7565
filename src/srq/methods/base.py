"""Recipe base class: a small dataclass of hyper-parameters with ``run(model, calib) -> quantized model``."""

from __future__ import annotations

import copy
from dataclasses import asdict, dataclass, field
from typing import ClassVar

import torch
from torch import nn

from ..quant import QuantConfig, prepare

__all__ = ["Recipe"]


@dataclass
class Recipe:
    """Common settings of every quantization method.

    Attributes:
        w_bits, a_bits: weight / activation bits of the body layers (1 … 8).
        first_last: ``"8bit"`` (default), ``"fp"`` or ``"same"`` for the first and last layers.
        rules: per-layer overrides (see :class:`srq.quant.LayerRule`), e.g. a mixed-precision map.
    """

    w_bits: int = 4
    a_bits: int = 4
    first_last: str = "8bit"
    rules: list = field(default_factory=list)

    name: ClassVar[str] = "recipe"
    w_observer: ClassVar[str] = "minmax"
    a_observer: ClassVar[str] = "minmax"

    def config(self) -> QuantConfig:
        """The quantizer placement and initialisation this method uses."""
        return QuantConfig(w_bits=self.w_bits, a_bits=self.a_bits, first_last=self.first_last,
                           w_observer=self.w_observer, a_observer=self.a_observer, rules=list(self.rules))

    def prepare(self, model: nn.Module, example: torch.Tensor | None = None) -> nn.Module:
        """A quantizer-equipped deep copy of ``model`` (the FP model is left untouched)."""
        return prepare(copy.deepcopy(model), self.config(), example_input=example)

    def run(self, model: nn.Module, calib: torch.Tensor, progress: bool = True) -> nn.Module:
        raise NotImplementedError

    @staticmethod
    def require_patches(calib: torch.Tensor | list[torch.Tensor], what: str) -> None:
        """Training stages batch the calibration inputs, so they must be one (N, 3, h, w) tensor."""
        if not isinstance(calib, torch.Tensor):
            raise ValueError(f"{what} needs calibration patches of one size (pass patch=...)")

    def to_dict(self) -> dict:
        return {"method": self.name, **asdict(self)}
