"""AdaBM (Hong & Lee, CVPR 2024): on-the-fly adaptive bit mapping — image-to-bit and layer-to-bit.

Every body activation quantizer runs at ``base + o_layer + o_image`` bits (kept within 2 … 8):

* **image-to-bit**: an input's complexity is the mean |Sobel gradient| of its grey image (×1000); below
  the learnable lower threshold it gets −1 bit, above the upper one +1, else 0 (10th / 90th percentiles of
  the calibration patches, EMA 0.9 over batches); trained through ``tanh`` with a straight-through
  estimator. At test time every image (or tile) gets its own offset.
* **layer-to-bit**: a layer's sensitivity is the mean per-sample standard deviation of its input on the
  calibration set; below the 30th percentile −1, above the 70th +1; a continuous ``m_k`` per layer is
  then trained (hard ``round(clamp(m, −1, 1))``, soft ``tanh(m)``, STE) and fixed into the layer's bits.
* **bit-aware clipping** (BaC): at the first fine-tuning batch each activation range is shrunk by the
  factor in {1, 0.99, …, 0.01} minimising the quantization MSE at the layer's bit width, blended 50/50.
* **fine-tuning**: 10 epochs of batches of 2 rotating weight bounds → activation bounds → bit mapping
  (Adam; lr 0.01, 0.01, 0.01 for layer offsets and 0.1 for thresholds; ×0.9 each time a stage comes
  round); loss L1 + 10·feature MSE (srq's common distillation loss) + 50·max(average bits − base, 0)
  in the mapping stage (AdaBM*: + 50·max(average weight bits − base, 0), averaged over parameters, so that
  both modes stay at the base budget like GBA). ``a_init`` swaps the activation initialisation (AdaBM's:
  EMA min/max) for an ablation.

Choices we made (say so when comparing): weights are per output channel with OMSE bounds and zero-point
grids like every other srq method (AdaBM's code uses one symmetric bound per tensor), so that differences
come from the activation side; Adam state is restarted each time a stage comes round. ``AdaBM*``
(``mp_weights=True``) also gives every weight a trained layer offset, initialised from the 30th / 70th
percentiles of the per-layer weight standard deviation; AdaBM's code does not have weight mapping.
Models stay image-adaptive, so they are evaluated in the process that made them (``srq.save`` refuses them).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any, ClassVar, cast

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..engine.batches import shuffled_batches
from ..engine.blocks import check_blocks_pattern
from ..engine.distill import FinetuneConfig, finetune
from ..engine.inference import model_device
from ..quant import calibrate_activations, calibrate_weights
from ..quant.calibrate import split_quantizers
from ..quant.functional import fake_quant_affine
from ..quant.layers import QuantLayerMixin
from ..typed_config import check_above, check_at_least, check_choice
from .base import Recipe
from .bit_slots import BitSlot, bit_slots, budget_sizes
from .registry import register_method

__all__ = ["AdaBM", "BitMapper", "image_complexity"]


def image_complexity(x: torch.Tensor) -> torch.Tensor:
    """(N, 3, H, W) RGB in [0, 1] → (N,): 1000 × mean |Sobel gradient| (÷8-normalised) of the grey image."""
    grey = (0.299 * x[:, 0] + 0.587 * x[:, 1] + 0.114 * x[:, 2]).unsqueeze(1)
    kx = torch.tensor([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]], device=x.device, dtype=x.dtype) / 8
    kernels = torch.stack([kx, kx.t()]).unsqueeze(1)
    grad = F.conv2d(F.pad(grey, (1, 1, 1, 1), mode="replicate"), kernels)
    return 1e3 * grad.abs().mean(dim=(1, 2, 3))


def _ste(soft: torch.Tensor, hard: torch.Tensor) -> torch.Tensor:
    return soft - soft.detach() + hard.detach()


class BitMapper(nn.Module):
    """The learnable mapping: image thresholds and per-layer offsets; sets each quantizer's extra bits.

    It is attached to the quantized model as ``model.adabm`` and runs as a forward pre-hook, so the model's
    module names (and block features for distillation) stay as they were.
    """

    _weight_sizes: torch.Tensor  # buffer: parameters of each weight slot's layer

    def __init__(self, act: list[BitSlot], weight: list[BitSlot], weight_sizes: list[float] | None = None) -> None:
        """``weight_sizes``: parameters of each weight slot's layer (weights the weight-bit average; default 1)."""
        super().__init__()
        self._act, self._weight = act, weight  # plain lists: the quantizers belong to the model
        self.img_lower = nn.Parameter(torch.tensor(0.0))
        self.img_upper = nn.Parameter(torch.tensor(1.0))
        self.layer_m = nn.Parameter(torch.zeros(len(act)))
        self.weight_m = nn.Parameter(torch.zeros(len(weight)))
        self.layer_offsets_fixed = False
        self.recording = False  # when True, every image's offset is kept for the average-bit report
        self.image_offsets_seen: list[float] = []
        self.last_average_bits: torch.Tensor | None = None  # activations, over layers (as AdaBM's loss)
        self.last_average_weight_bits: torch.Tensor | None = None  # weights, over parameters (AdaBM* only)
        sizes = [float(n) for n in weight_sizes] if weight_sizes else [1.0] * len(weight)
        self.register_buffer("_weight_sizes", torch.tensor(sizes), persistent=False)  # moves with weight_m

    def image_offsets(self, x: torch.Tensor) -> torch.Tensor:
        g = image_complexity(x)
        lo, hi = self.img_lower, self.img_upper
        hard = (g > hi).float() - (g < lo).float()
        soft = torch.tanh((g - (hi + lo) / 2) * 2 / (hi - lo).clamp_min(1e-6))
        return _ste(soft, hard)

    @staticmethod
    def layer_offsets(m: torch.Tensor) -> torch.Tensor:
        return _ste(torch.tanh(m), torch.round(torch.clamp(m, -1, 1)))

    # shadows nn.Module.apply(fn) (public API, kept as is): Module.apply on a model holding a BitMapper fails
    def apply(self, x: torch.Tensor) -> None:  # type: ignore[override]
        """Set the extra bits of every adaptive quantizer for the batch ``x``."""
        img = self.image_offsets(x)
        if self.recording:
            self.image_offsets_seen += img.detach().tolist()
        layer = torch.zeros_like(self.layer_m) if self.layer_offsets_fixed else self.layer_offsets(self.layer_m)
        total = []
        for k, slot in enumerate(self._act):
            q = slot.quantizer
            extra = torch.clamp(layer[k] + img, 2 - q.bits, 8 - q.bits)
            q.extra_bits = extra
            total.append(q.bits + extra)
        self.last_average_weight_bits = None
        if self._weight and not self.layer_offsets_fixed:
            w = self.layer_offsets(self.weight_m)
            w_total = []
            for k, slot in enumerate(self._weight):
                slot.quantizer.extra_bits = torch.clamp(w[k], 2 - slot.quantizer.bits, 8 - slot.quantizer.bits)
                w_total.append(slot.quantizer.bits + slot.quantizer.extra_bits)
            self.last_average_weight_bits = (torch.stack(w_total) * self._weight_sizes).sum() / self._weight_sizes.sum()
        self.last_average_bits = torch.stack(total).mean() if total else None

    def budget_excess(self, a_base: int, w_base: int) -> torch.Tensor:
        """max(avg activation bits − a_base, 0) + max(avg weight bits − w_base, 0) of the last batch (bits)."""
        loss = torch.zeros((), device=self.layer_m.device)
        for avg, base in ((self.last_average_bits, a_base), (self.last_average_weight_bits, w_base)):
            if avg is not None:
                loss = loss + torch.relu(avg - base)
        return loss

    def report(self, w_base: int, a_base: int) -> dict:
        """Per-layer bits and the average bits over layers and every image seen since :attr:`recording`."""
        offsets = self.image_offsets_seen or [0.0]
        a_bits = [min(8, max(2, s.quantizer.bits + o)) for s in self._act for o in offsets]
        out = {"image_thresholds": [self.img_lower.item(), self.img_upper.item()],
               "images_seen": len(self.image_offsets_seen),
               "image_offset_counts": {str(v): self.image_offsets_seen.count(v) for v in (-1.0, 0.0, 1.0)},
               "a": {"base_bits": a_base, "average_bits": float(np.mean(a_bits)) if a_bits else float(a_base),
                     "average_weighted_by": "layers × images seen (unweighted)",
                     "layers": [{"name": s.owner, "bits": s.quantizer.bits, "offset": s.quantizer.bits - a_base}
                                for s in self._act]}}
        if self._weight:
            bits = [s.quantizer.bits for s in self._weight]
            out["w"] = {"base_bits": w_base,
                        "average_bits": float(np.average(bits, weights=self._weight_sizes.cpu().numpy())),
                        "average_weighted_by": "parameters",
                        "layers": [{"name": s.owner, "bits": b, "offset": b - w_base}
                                   for s, b in zip(self._weight, bits)]}
        return out

    def clear(self) -> None:
        for slot in self._act + self._weight:
            slot.quantizer.extra_bits = None

    @torch.no_grad()
    def fix_layer_offsets(self) -> None:
        """Fold the trained layer offsets into the quantizers' integer bits (image offsets stay live)."""
        for m, slots in ((self.layer_m, self._act), (self.weight_m, self._weight)):
            hard = torch.round(torch.clamp(m, -1, 1)).tolist()
            for slot, o in zip(slots, hard):
                slot.quantizer.set_bits(min(8, max(2, slot.quantizer.bits + int(o))))
        self.layer_offsets_fixed = True
        self.clear()


def _attach(qmodel: nn.Module, mapper: BitMapper) -> None:
    qmodel.adabm = mapper
    qmodel.register_forward_pre_hook(lambda module, args: mapper.apply(args[0]))
    qmodel.register_forward_hook(lambda module, args, out: mapper.clear())
    # a plain attribute (setattr: nn.Module's __setattr__ is typed for tensors and modules)
    setattr(qmodel, "srq_savable", "AdaBM models choose bits per image; evaluate them in the process that made them")


def _percentile_offsets(values: list[float], low: float = 30, high: float = 70) -> torch.Tensor:
    lo, hi = np.percentile(values, low), np.percentile(values, high)
    return torch.tensor([-1.0 if v < lo else 1.0 if v > hi else 0.0 for v in values])


@register_method("adabm_star", preset={"mp_weights": True}, savable=False,
                 description="AdaBM with layer-adaptive weight bits too (srq's extension)",
                 paper="AdaBM (Hong & Lee, CVPR 2024), extended to weights")
@register_method("adabm", savable=False, description="image- and layer-adaptive activation bits, trained bit mapping",
                 paper="AdaBM (Hong & Lee, CVPR 2024)")
@dataclass(frozen=True)
class AdaBM(Recipe):
    """Image- and layer-adaptive activation bits (AdaBM*: layer-adaptive weight bits too)."""

    mp_weights: bool = False
    epochs: int = 10
    batch: int = 2
    calib_batch: int = 16
    lr_w: float = 0.01
    lr_a: float = 0.01
    lr_layer: float = 0.01
    lr_image: float = 0.1
    w_bitloss: float = 50.0
    lambda_feat: float = 10.0
    blocks: str | None = None  # the feature loss's blocks: a regex over module names (None: automatic)
    seed: int = 0
    a_init: str = "ema_minmax"

    name: ClassVar[str] = "adabm"
    w_observer: ClassVar[str] = "omse"
    A_INITS: ClassVar[tuple[str, ...]] = ("ema_minmax", "minmax", "percentile", "omse")

    def validate(self) -> None:
        check_choice(self, "a_init", self.A_INITS)
        check_at_least(self, 0, "epochs", "w_bitloss", "lambda_feat")
        check_blocks_pattern(self, self.blocks)
        check_at_least(self, 1, "batch", "calib_batch")
        check_above(self, 0, "lr_w", "lr_a", "lr_layer", "lr_image")

    def moves_weight_bits(self) -> bool:
        return self.mp_weights

    # a read-only override of Recipe's class default, on purpose: the observer follows the a_init field
    @property
    def a_observer(self) -> str:  # type: ignore[override]  # AdaBM's own init is EMA min/max; others: ablation
        return self.a_init

    def run(self, model: nn.Module, calib: torch.Tensor, progress: bool = True) -> nn.Module:
        self.require_patches(calib, "AdaBM")
        fp_model = copy.deepcopy(model).eval()
        qmodel = self.prepare(model, calib[:1])
        act, weight = bit_slots(qmodel, "a"), (bit_slots(qmodel, "w") if self.mp_weights else [])
        batches = shuffled_batches(calib, self.calib_batch, 1, self.seed)
        sensitivity = self._calibrate(qmodel, act, batches, progress)
        mapper = BitMapper(act, weight, budget_sizes(qmodel, weight, calib[:1])).to(model_device(qmodel))
        with torch.no_grad():
            lo, hi = self._image_thresholds(batches)
            mapper.img_lower.fill_(lo)
            mapper.img_upper.fill_(hi)
            if act:
                mapper.layer_m.copy_(_percentile_offsets(sensitivity))
            if weight:
                # weight slots belong to quantized layers (bit_slots)
                stds = [float(cast(QuantLayerMixin, qmodel.get_submodule(s.owner)).weight.std()) for s in weight]
                mapper.weight_m.copy_(_percentile_offsets(stds))
        _attach(qmodel, mapper)
        self._bit_aware_clipping(qmodel, mapper, calib[:self.batch])
        self._finetune(qmodel, fp_model, mapper, calib, progress)
        mapper.fix_layer_offsets()
        mapper.recording = True
        # averages over the images seen; a plain attribute (nn.Module's __setattr__ is typed for modules)
        setattr(qmodel, "srq_report", lambda: mapper.report(self.w_bits, self.a_bits))
        return qmodel.eval()

    # ---- stage 1: calibration ------------------------------------------------------------------------
    @staticmethod
    def _calibrate(qmodel: nn.Module, act: list[BitSlot], batches: list[torch.Tensor], progress: bool) -> list[float]:
        """Bounds (weights OMSE, activations EMA min/max) and each layer's input sensitivity."""
        calibrate_weights(qmodel)
        sums = [0.0] * len(act)
        handles = [s.quantizer.register_forward_hook(
            lambda m, i, o, k=k: sums.__setitem__(k, sums[k] + float(i[0].flatten(1).std(dim=1).mean())))
            for k, s in enumerate(act)]
        try:
            calibrate_activations(qmodel, batches, total=len(batches), progress=progress)
        finally:
            for h in handles:
                h.remove()
        return [v / len(batches) for v in sums]

    @staticmethod
    def _image_thresholds(batches: list[torch.Tensor]) -> tuple[float, float]:
        lo: float | None = None
        hi: float | None = None
        for x in batches:
            g = image_complexity(x)
            blo, bhi = float(torch.quantile(g, 0.1)), float(torch.quantile(g, 0.9))
            lo, hi = (blo, bhi) if lo is None or hi is None else (0.9 * lo + 0.1 * blo, 0.9 * hi + 0.1 * bhi)
        assert lo is not None and hi is not None  # there is at least one batch (run() requires patches)
        return lo, max(hi, lo + 1e-3)

    @staticmethod
    @torch.no_grad()
    def _bit_aware_clipping(qmodel: nn.Module, mapper: BitMapper, x: torch.Tensor) -> None:
        seen: dict[int, torch.Tensor] = {}
        handles = [s.quantizer.register_forward_hook(lambda m, i, o: seen.setdefault(id(m), i[0].detach()))
                   for s in mapper._act]
        try:
            qmodel(x.to(model_device(qmodel)))
        finally:
            for h in handles:
                h.remove()
        offsets = torch.round(torch.clamp(mapper.layer_m, -1, 1))
        for slot, o in zip(mapper._act, offsets.tolist()):
            q, inp = slot.quantizer, seen.get(id(slot.quantizer))
            if inp is None or q.dan is not None:
                continue
            bits = min(8, max(2, q.bits + int(o)))
            # the parameters of the slot's uniform/affine grid
            lo, hi = q.get_parameter("lower").detach().clone(), q.get_parameter("upper").detach().clone()
            errs = [(float((fake_quant_affine(inp, lo * r, hi * r, bits) - inp).pow(2).mean()), r)
                    for r in (1 - 0.01 * i for i in range(100))]
            r = min(errs)[1]
            q.set_bounds(0.5 * lo + 0.5 * lo * r, 0.5 * hi + 0.5 * hi * r)

    # ---- stage 2: fine-tuning -------------------------------------------------------------------------
    def _finetune(self, qmodel: nn.Module, fp_model: nn.Module, mapper: BitMapper, calib: torch.Tensor,
                  progress: bool) -> None:
        weight_q, act_q = split_quantizers(qmodel)
        stages: dict[str, list[dict[str, Any]]] = {  # torch.optim's parameter groups per stage
            "w": [{"params": [p for q in weight_q for p in q.parameters()], "lr": self.lr_w}],
            "a": [{"params": [p for q in act_q for p in q.parameters()], "lr": self.lr_a}],
            "m": [{"params": [mapper.layer_m] + ([mapper.weight_m] if mapper._weight else []), "lr": self.lr_layer},
                  {"params": [mapper.img_lower, mapper.img_upper], "lr": self.lr_image}],
        }

        def bit_loss() -> torch.Tensor:
            return self.w_bitloss * mapper.budget_excess(self.a_bits, self.w_bits)

        rounds = {"w": 0, "a": 0, "m": 0}
        for epoch in range(self.epochs):
            stage = "wam"[epoch % 3]
            groups = [dict(g, lr=g["lr"] * 0.9 ** rounds[stage]) for g in stages[stage] if g["params"]]
            rounds[stage] += 1
            if not groups:
                continue
            cfg = FinetuneConfig(epochs=1, batch=self.batch, lambda_feat=self.lambda_feat, seed=self.seed + epoch)
            finetune(qmodel, fp_model, calib, groups, cfg, progress=progress,
                     description=f"AdaBM epoch {epoch + 1}/{self.epochs} ({stage})",
                     extra_loss=bit_loss if stage == "m" else None, blocks=self.blocks)
