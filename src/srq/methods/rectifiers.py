"""Low-rank weight rectifiers (SPR²Q): learnable increments added to a layer's weight before quantization.

A :class:`RectifierGroup` holds ``N`` rectifiers ``ΔW_i = B_i A_i`` (rank ``r``) for one layer and mixes
them with weights ``g`` (SPR²Q Eq. 10): ``ΔW = Σ_i g_i ΔW_i``. It is attached as the layer's
``weight_delta`` (see :class:`srq.quant.layers.QuantLayerMixin`), so the layer computes
``Q_w(W + ΔW)``. Routing modes:

* ``"dynamic"`` — ``g = softmax(gate(c))``, a linear gate on the layer input's channel means ``c``
  (pooled over the batch and all positions; detached), set by a forward pre-hook before each call;
* ``"static"`` — ``g = softmax(θ)``, one learnable logit vector per layer (offline static routing, Eq. 12).

With ``N = 1`` there is no gate (``g = 1``): a single rectifier, SPR²Q's PQFR (Eq. 2–3).

**Factorisation of convolutions:** a weight of shape ``(d0, d1, …)`` is treated as the matrix
``d0 × (d1·…)``: ``out × (in/groups · kh · kw)`` for convolutions, ``out × in`` for linear layers and
``in × (out/groups · kh · kw)`` for transposed convolutions. ``A_i`` is ``r × (d1·…)`` (Kaiming-uniform
init, as LoRA), ``B_i`` is ``d0 × r`` (zeros), so every increment starts at 0 and the model starts as the
plain quantized one.
"""

from __future__ import annotations

import math
from typing import cast

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.hooks import RemovableHandle

from ..quant.layers import QUANT_LAYER_TYPES, QuantConv2d, QuantConvTranspose2d, QuantLinear

__all__ = ["RectifierGroup", "attach_rectifiers", "rectifier_groups", "fuse_rectifiers", "mean_routing_weights"]


class RectifierGroup(nn.Module):
    """``N`` rank-``r`` increments for one weight of shape ``weight_shape``, mixed by routing weights.

    Args:
        weight_shape: the layer's weight shape ``(d0, d1, …)``.
        in_channels: channels of the layer input (what the dynamic gate sees).
        rank: r ≥ 1.
        group_size: N ≥ 1 rectifiers.
        channel_axis: channel axis of the layer input (1 for NCHW, -1 for token inputs).
    """

    def __init__(self, weight_shape: tuple[int, ...], in_channels: int, rank: int = 8, group_size: int = 4,
                 channel_axis: int = 1) -> None:
        super().__init__()
        if rank < 1 or group_size < 1:
            raise ValueError(f"rank and group_size must be ≥ 1, got {rank} and {group_size}")
        self.weight_shape = tuple(weight_shape)
        rows, cols = weight_shape[0], math.prod(weight_shape[1:])
        self.A = nn.Parameter(torch.empty(group_size, rank, cols))
        for a in self.A.data:
            nn.init.kaiming_uniform_(a, a=math.sqrt(5))
        self.B = nn.Parameter(torch.zeros(group_size, rows, rank))
        self.gate = nn.Linear(in_channels, group_size) if group_size > 1 else None
        if self.gate is not None:
            nn.init.zeros_(self.gate.weight)
            nn.init.zeros_(self.gate.bias)  # uniform routing to start
        self.static_logits: nn.Parameter | None = None
        self.mode = "dynamic"
        self.channel_axis = channel_axis
        self._context: torch.Tensor | None = None

    @property
    def group_size(self) -> int:
        return self.A.shape[0]

    def set_context(self, x: torch.Tensor) -> None:
        """Remember the channel means of the layer input ``x`` (any shape with channels on ``channel_axis``)."""
        if self.gate is not None and self.mode == "dynamic":
            axis = self.channel_axis % x.dim()
            self._context = x.detach().mean(dim=[d for d in range(x.dim()) if d != axis])

    def make_static(self, weights: torch.Tensor) -> nn.Parameter:
        """Switch to static routing starting from ``weights`` ((N,), positive, summing to 1); returns θ."""
        logits = torch.log(weights.detach().clamp_min(1e-8)).to(self.A)
        self.static_logits = nn.Parameter(logits - logits.mean())
        self.mode = "static"
        self._context = None
        return self.static_logits

    def routing_weights(self) -> torch.Tensor:
        """Current ``g`` ((N,), sums to 1)."""
        if self.group_size == 1:
            return torch.ones(1, dtype=self.A.dtype, device=self.A.device)
        if self.mode == "static":
            assert self.static_logits is not None  # set by make_static
            return torch.softmax(self.static_logits, dim=0)
        if self._context is None:
            raise RuntimeError("dynamic routing needs the layer input: the rectifier's pre-hook was not called")
        assert self.gate is not None  # there is one when group_size > 1
        return torch.softmax(self.gate(self._context.to(self.A)), dim=0)

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        """The increment ``Σ g_i B_i A_i`` reshaped like ``weight``."""
        g = self.routing_weights()
        n, rows, rank = self.B.shape
        b = (self.B * g.view(n, 1, 1)).permute(1, 0, 2).reshape(rows, n * rank)  # [g_1 B_1 … g_N B_N]
        return (b @ self.A.reshape(n * rank, -1)).reshape(weight.shape)

    def extra_repr(self) -> str:
        return f"N={self.group_size}, rank={self.A.shape[1]}, weight={self.weight_shape}, routing={self.mode}"


def _pre_hook(layer: QuantConv2d | QuantLinear | QuantConvTranspose2d, args: tuple) -> None:
    cast(RectifierGroup, layer.weight_delta).set_context(args[0])  # registered with the group (attach_rectifiers)


def attach_rectifiers(qmodel: nn.Module, rank: int = 8, group_size: int = 4) -> list[str]:
    """Give every layer with a weight quantizer a :class:`RectifierGroup`; returns the layer names."""
    names = []
    for name, m in qmodel.named_modules():
        if isinstance(m, QUANT_LAYER_TYPES) and m.weight_quantizer is not None:
            if m.weight_delta is not None:
                raise ValueError(f"layer {name} already has a weight increment attached")
            linear = isinstance(m, nn.Linear)
            in_ch = m.in_features if isinstance(m, nn.Linear) else m.in_channels
            m.weight_delta = RectifierGroup(tuple(m.weight.shape), in_ch, rank, group_size,
                                            channel_axis=-1 if linear else 1).to(m.weight)
            # a plain attribute (setattr: nn.Module's __setattr__ is typed for tensors and modules)
            setattr(m, "srq_rectifier_hook", m.register_forward_pre_hook(_pre_hook))
            names.append(name)
    return names


def rectifier_groups(qmodel: nn.Module) -> dict[str, RectifierGroup]:
    """``{layer name: RectifierGroup}`` of a model with rectifiers attached."""
    return {name: m.weight_delta for name, m in qmodel.named_modules()
            if isinstance(m, QUANT_LAYER_TYPES) and isinstance(m.weight_delta, RectifierGroup)}


@torch.no_grad()
def fuse_rectifiers(qmodel: nn.Module) -> int:
    """Fold every (static) rectifier group into its layer's weight, ``W ← W + Σ ĝ_i ΔW_i``, and remove the
    groups, gates and hooks: the model then has the plain quantized structure, and the same outputs (the
    weight is the exact tensor the quantizer saw). Returns the number of layers fused."""
    fused = 0
    for name, m in qmodel.named_modules():
        if isinstance(m, QUANT_LAYER_TYPES) and isinstance(m.weight_delta, RectifierGroup):
            group = m.weight_delta
            if group.group_size > 1 and group.mode != "static":
                raise RuntimeError(f"layer {name}: fix the routing (static) before fusing")
            m.weight.copy_(m.float_weight())
            m.weight_delta = None
            hook: RemovableHandle = getattr(m, "srq_rectifier_hook")
            hook.remove()
            del m.srq_rectifier_hook
            fused += 1
    return fused


def mean_routing_weights(qmodel: nn.Module, batches: list[torch.Tensor]) -> dict[str, torch.Tensor]:
    """The dynamic routing weights of every group averaged over ``batches`` (each (n, 3, h, w))."""
    groups = rectifier_groups(qmodel)
    sums = {n: torch.zeros(g.group_size, device=g.A.device) for n, g in groups.items()}

    def record(name: str, group: RectifierGroup) -> None:  # a hook returning None keeps the output
        sums[name].add_(group.routing_weights().detach())

    handles = [g.register_forward_hook(lambda m, i, o, n=n: record(n, m)) for n, g in groups.items()]
    try:
        with torch.no_grad():
            for x in batches:
                qmodel(x.to(next(qmodel.parameters()).device))
    finally:
        for h in handles:
            h.remove()
    return {n: F.normalize(s, p=1, dim=0) for n, s in sums.items()}
