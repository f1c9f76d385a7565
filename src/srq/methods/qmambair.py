"""Q-MambaIR (Chen et al., 2025): QAT with input-adaptive activation ranges (DLS) and learnable rounding thresholds
for the weights (RFA), on any backbone srq quantizes.

* Activations: DLS (``srq.quant.grids.dls``: the range of each sample predicted from its mean, std, min and max)
  on every activation quantizer of the SSM and attention blocks — the marked scan and attention operands (x, Δ, B,
  C, q, k, v, attention probabilities) and the inputs of the layers of the block that holds them (the projections
  around the scan: ``in_proj``, the depth-wise conv, ``out_proj``, the router; the attention's projections) — and
  a static learned quantizer, LSQ+ (step and offset), on the others. Which is where is printed (``placement.txt``,
  ``--show-placement``) and recorded (``srq.json``: ``quant_config.a_mode_rules`` and ``report.quantizer_grids``).
* Weights: RFA (``srq.quant.grids.rfa``), per-channel learned step, learnable thresholds between integer levels.

The fields ``activations`` / ``weights`` swap in the alternatives of the paper's Table 7 (with the other side kept),
``dls_init`` the initialisations of its Table 6, and ``dls_scope`` where DLS goes (``auto``: the SSM/attention
blocks if the model marks operands, else every activation quantizer, the paper's appendix 7.1.2 on CNNs).
"""

from __future__ import annotations

import copy
import dataclasses
import re
from dataclasses import dataclass, field
from typing import ClassVar

import torch
from torch import nn

from ..engine.qat import QATConfig
from ..errors import SrqError
from ..quant import QuantConfig, prepare
from ..quant.edges import edge_layers
from ..quant.grid_placement import grid_placement
from ..quant.markers import QuantPoint
from ..quant.prepare import quantizable_layers
from .qat import _QAT
from .registry import register_method

__all__ = ["QMambaIR", "PAPER_TRAIN", "dls_scope_modules", "dls_mode_rules", "WEIGHT_GRIDS", "ACTIVATION_GRIDS"]

# §3.1.3 and supplementary §6.1.5: Adam, lr 2e-4 (lightweight SR), halved at 10k, 15k, 17.5k and 18.75k of 20k
# iterations, batch 8, 64×64 HR patches, L1 to the ground truth; the quantizer parameters at the same rate
PAPER_TRAIN = QATConfig(iterations=20000, batch=8, hr_patch=64, lr=2e-4, quant_lr=2e-4,
                        milestones=(0.5, 0.75, 0.875, 0.9375), gamma=0.5)

WEIGHT_GRIDS = {"rfa": "rfa", "ste": "lsq", "tanh": "lsq_tanh", "nu2u": "nu2u"}  # Table 7b: backward estimators
ACTIVATION_GRIDS = {"dls": "dls", "rlq": "rlq", "lsqplus": "lsqplus", "pams": "pams"}  # Table 7a
DLS_INITS = {"3sigma": "dls", "4sigma": "dls_4sigma", "minmax": "dls_minmax", "mean_range": "dls_mean_range",
             "mse": "dls_mse"}  # the four of Table 6, and srq's MSE fit to the calibration data
DLS_SCOPES = ("auto", "ssm", "all")
STATIC_GRIDS = ("lsqplus", "lsq", "rlq", "pams")


def dls_scope_modules(model: nn.Module) -> list[str]:
    """The SSM / attention blocks of ``model``: for each marked operand (``QuantPoint``), the nearest module above it
    that holds a learned Conv2d/Linear (MambaIRv2: ``…assm`` and ``…win_mhsa``; MambaIR: ``…self_attention``, the
    SS2D). Names in module order, without repeats; empty for a model without marked operands."""
    layers = [n for n, _ in quantizable_layers(model)]
    found: list[str] = []
    for name, m in model.named_modules():
        if not isinstance(m, QuantPoint):
            continue
        holder = name.rpartition(".")[0]
        while holder and not any(n.startswith(holder + ".") for n in layers):
            holder = holder.rpartition(".")[0]
        if holder and holder not in found:
            found.append(holder)
    return found


def dls_mode_rules(model: nn.Module, scope: str, mode: str, edges: tuple[str, ...] = (),
                   static: str = "lsqplus") -> list[list[str]]:
    """``QuantConfig.a_mode_rules`` that put grid ``mode`` on the activation quantizers of ``scope``: ``"ssm"`` (every
    layer input and operand inside :func:`dls_scope_modules`, and every operand), ``"all"`` (every one but the
    ``edges``, the first and last layers, which keep ``static``) or ``"auto"`` (``"ssm"`` if the model marks
    operands, else ``"all"``)."""
    blocks = dls_scope_modules(model)
    points = [n for n, m in model.named_modules() if isinstance(m, QuantPoint)]
    if scope == "all" or (scope == "auto" and not points):
        return [[".*", mode]] + [[re.escape(n), static] for n in edges]
    if not points:
        raise SrqError("dls_scope='ssm': the model marks no scan or attention operands (QuantPoint); use "
                       "dls_scope=all or auto")
    rules = [[re.escape(b) + r"\..+", mode] for b in blocks]
    inside = tuple(b + "." for b in blocks)
    rules += [[re.escape(p), mode] for p in points if not p.startswith(inside)]  # operands outside any block
    return rules


@register_method("qmambair", description="QAT with input-adaptive activation ranges (DLS) in SSM/attention blocks "
                 "(LSQ+ elsewhere) and learnable rounding thresholds for weights (RFA)",
                 paper="Q-MambaIR (Chen et al., 2025)")
@dataclass(frozen=True)
class QMambaIR(_QAT):
    """Q-MambaIR recipe (see the module docstring). Fields beyond the QAT ones:

    ``activations``: the grid in the DLS scope (``dls``; Table 7a's ``rlq`` (QuantSR), ``lsqplus``, ``pams``).
    ``weights``: ``rfa``; Table 7b's ``ste`` (LSQ), ``tanh`` (soft STE), ``nu2u`` (N2UQ's generalized STE).
    ``dls_init``: ``3sigma`` (default), ``4sigma``, ``minmax``, ``mean_range`` (Table 6); ``mse``: the range in σ
    units fitted to the calibration data (srq's, for 2-bit CNN activations).
    ``dls_scope``: ``auto``, ``ssm``, ``all``. ``static``: the grid outside the scope (``lsqplus``).
    """

    train: QATConfig = field(default_factory=lambda: PAPER_TRAIN)
    activations: str = "dls"
    weights: str = "rfa"
    dls_init: str = "3sigma"
    dls_scope: str = "auto"
    static: str = "lsqplus"

    name: ClassVar[str] = "qmambair"
    a_observer: ClassVar[str] = "omse"  # the static LSQ+ (or RLQ) quantizers start from the MSE range, as srq's LSQ+;
    # the DLS grids and PAMS choose their own observer

    def validate(self) -> None:
        super().validate()
        for key, allowed in (("activations", ACTIVATION_GRIDS), ("weights", WEIGHT_GRIDS), ("dls_init", DLS_INITS),
                             ("dls_scope", DLS_SCOPES), ("static", STATIC_GRIDS)):
            if getattr(self, key) not in allowed:
                raise SrqError(f"{self.name}: {key} must be one of {', '.join(allowed)}, got {getattr(self, key)!r}")
        if self.w_bits < 2 and self.weights in ("rfa", "nu2u", "ste", "tanh"):
            raise SrqError(f"{self.name}: weights need at least 2 bits (w_bits={self.w_bits})")

    def scope_grid(self) -> str:
        """The grid of the activation quantizers in the DLS scope."""
        return DLS_INITS[self.dls_init] if self.activations == "dls" else ACTIVATION_GRIDS[self.activations]

    def config(self) -> QuantConfig:
        return dataclasses.replace(super().config(), w_mode=WEIGHT_GRIDS[self.weights], a_mode=self.static)

    def prepare(self, model: nn.Module, example: torch.Tensor | None = None) -> nn.Module:
        edges: tuple[str, ...] = ()
        if self.first_last != "same":  # first/last layers (8 bit or float) keep the static grid, as in the paper
            device = next(model.parameters()).device
            probe = (example if example is not None else torch.rand(1, 3, 32, 32)).to(device)
            _, first, last = edge_layers(model, probe, [n for n, _ in quantizable_layers(model)])
            edges = tuple(sorted(first | last))
        rules = dls_mode_rules(model, self.dls_scope, self.scope_grid(), edges, self.static)
        config = dataclasses.replace(self.config(), a_mode_rules=rules)
        return prepare(copy.deepcopy(model), config, example_input=example)

    def run(self, model: nn.Module, calib: torch.Tensor, progress: bool = True) -> nn.Module:
        qmodel = super().run(model, calib, progress=progress)
        report = getattr(qmodel, "srq_report")
        report["dls_blocks"] = dls_scope_modules(model) if self.dls_scope != "all" else []
        report["quantizer_grids"] = grid_placement(qmodel)
        return qmodel
