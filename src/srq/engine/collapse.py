"""A quick collapse check after quantization: does the quantized model still follow the FP model?

PSNR of the quantized model's output against the FP model's output (both clamped to [0, 1], RGB, no border
crop) on a few calibration inputs. Below :data:`COLLAPSE_DB` (24 dB) the model has collapsed. Measured on the
first 4 DIV2K_test_LRx4 patches (96 px), next to each row's Set5 loss against FP: IMDN x4 MinMax W4A4 19.9 dB
(Set5 −11.4 dB), RLFN x4 MinMax W4A4 15.2 (−15.6), RLFN x4 Percentile W4A4 20.0 (−11.4) are flagged; IMDN x4
Percentile W4A4 26.1 (−6.5), OMSE W2A2 29.9 / 30.3 (IMDN / RLFN, −4.2 / −4.5), OMSE W4A4 32.8 / 30.7 and
MinMax W8A8 43 are not.
Then each quantized layer is tried alone (only its quantizers on) and the layers whose quantizers alone lose the
most are named, as in ``benchmarks/ptq_breakdown.py`` (which splits weights from activations for the whole model).
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from ..quant import quantizers
from .inference import model_device

__all__ = ["COLLAPSE_DB", "collapse_check", "collapse_warning", "psnr_vs_fp"]

COLLAPSE_DB = 24.0


@torch.no_grad()
def psnr_vs_fp(qmodel: nn.Module, fp_model: nn.Module, inputs: list[torch.Tensor]) -> float:
    """PSNR (dB) of ``qmodel``'s outputs against ``fp_model``'s on ``inputs`` (batches (n, C, h, w) in [0, 1]),
    outputs clamped to [0, 1]; the mean squared error is pooled over all inputs; inf if equal, 0 if not finite."""
    device = model_device(qmodel)
    total, count = 0.0, 0
    for x in inputs:
        x = x.to(device)
        err = (qmodel(x).float().clamp(0, 1) - fp_model(x).float().clamp(0, 1)).pow(2)
        total += float(err.sum())
        count += err.numel()
    mse = total / max(count, 1)
    if not math.isfinite(mse):
        return 0.0
    return math.inf if mse == 0 else -10 * math.log10(mse)


def collapse_check(qmodel: nn.Module, fp_model: nn.Module, calib: torch.Tensor | list[torch.Tensor],
                   threshold_db: float = COLLAPSE_DB, samples: int = 4, worst: int = 3) -> dict[str, Any]:
    """PSNR of ``qmodel`` vs ``fp_model`` on the first ``samples`` calibration inputs, and whether it collapsed.

    Returns ``psnr_vs_fp_db`` (None if infinite), ``threshold_db``, ``collapsed`` and, when collapsed,
    ``worst_layers``: up to ``worst`` ``{"layer", "psnr_vs_fp_db"}`` with only that layer's quantizers on, lowest
    first. The quantizers' on/off state is restored.
    """
    inputs = [calib[:samples]] if isinstance(calib, torch.Tensor) else [x[:1] if x.dim() == 4 else x[None]
                                                                          for x in calib[:samples]]
    fp_model.eval()
    qmodel.eval()
    psnr = psnr_vs_fp(qmodel, fp_model, inputs)
    result: dict[str, Any] = {"psnr_vs_fp_db": round(psnr, 2) if math.isfinite(psnr) else None,
                              "threshold_db": threshold_db, "collapsed": psnr < threshold_db}
    if psnr < threshold_db:
        result["worst_layers"] = _worst_layers(qmodel, fp_model, inputs, worst)
    return result


def collapse_warning(result: dict[str, Any], what: str = "the quantized model") -> str | None:
    """The one-line warning for a :func:`collapse_check` result (None: no collapse)."""
    if not result.get("collapsed"):
        return None
    layers = ", ".join(f"{w['layer']} ({w['psnr_vs_fp_db']} dB alone)" for w in result.get("worst_layers", []))
    return (f"{what} has collapsed: its output is {result['psnr_vs_fp_db']} dB PSNR from the FP model's on the "
            f"calibration inputs (below {result['threshold_db']:g} dB); worst layers: {layers or '-'}; try more bits "
            f"or keep those layers at 8 bit (rules)")


def _worst_layers(qmodel: nn.Module, fp_model: nn.Module, inputs: list[torch.Tensor], worst: int) -> list[dict]:
    """Each quantized layer alone (its quantizers on, all others off): the ``worst`` lowest PSNRs vs FP."""
    qs = quantizers(qmodel)
    state = [q.enabled for _, q in qs]
    layers: dict[str, list[int]] = {}
    for i, (name, _) in enumerate(qs):
        owner, _, last = name.rpartition(".")
        layers.setdefault(owner if owner and last.endswith("quantizer") else name, []).append(i)
    rows = []
    try:
        for layer, idx in layers.items():
            for i, (_, q) in enumerate(qs):
                q.enabled = state[i] and i in idx
            if any(qs[i][1].enabled for i in idx):
                value = psnr_vs_fp(qmodel, fp_model, inputs)
                rows.append({"layer": layer, "psnr_vs_fp_db": round(value, 2) if math.isfinite(value) else None})
    finally:
        for (_, q), on in zip(qs, state):
            q.enabled = on
    rows.sort(key=lambda r: math.inf if r["psnr_vs_fp_db"] is None else r["psnr_vs_fp_db"])
    return rows[:worst]
