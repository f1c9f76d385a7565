"""Cost accounting: model size and BitOPs of float and (fake-)quantized models.

What is counted, and in which units:

* **MACs** (multiply-accumulates) of the layers that run as ``nn.Conv2d`` / ``nn.Linear`` (quantized or not)
  and ``nn.ConvTranspose2d`` (never quantized; counted in float), for *one* forward pass of *one* image of
  the given LR size. Conv2d: output elements × in_channels/groups × kh × kw; Linear: output elements ×
  in_features; ConvTranspose2d: input elements × out_channels/groups × kh × kw. Bias additions are not
  counted. A layer that runs several times in one forward is counted every time it runs.
* **Not counted**: every other multiplication — attention matmuls (q·kᵀ, attn·v), the selective scan,
  ``einsum`` projections with raw parameters (e.g. Mamba's ``x_proj_weight``, even where its weight is
  quantized), element-wise ops,
  activations, normalisation, pixel shuffle, interpolation. For CNNs this is a negligible share; for
  Transformer/Mamba models the reported MACs and BitOPs are a lower bound on the real work, and their
  ratios describe the Conv/Linear part only.
* **BitOPs** = MACs × w_bits × a_bits per layer, where a float side counts as 32 bit (a float layer costs
  MACs × 32 × 32). ``w_bits``/``a_bits`` are read from the layer's own ``weight_quantizer`` /
  ``input_quantizer``; a 1-bit (binary) quantizer counts as 1; a missing or disabled quantizer is 32.
  An activation quantized elsewhere (e.g. by a ``QuantPoint`` quantizer before a float layer) is not
  seen here: that layer's a_bits stays 32.
* **Size** (bits): every parameter of the model is stored once (shared tensors once). The weight of a
  quantized layer, and a raw weight parameter quantized through a ``WeightPoint``, is stored at its w_bits;
  everything else — biases, quantizer bounds (lower/upper or α,
  i.e. scales and zero points), PReLU slopes, frozen layers such as a mean-shift conv, parameters of
  modules that are not Conv/Linear (attention tables, Mamba parameters), and persistent floating-point
  buffers of the model (constants saved in the state dict, e.g. EDSR's mean shift) — is 32 bit.
  Parameters of a ``weight_delta`` (e.g. SPR²Q rectifiers) are training-time only — they are fused into
  the weight before deployment — so they are left out and reported as ``excluded_params``.
  ``size_kb`` uses 1 KB = 1024 bytes.
* **FP32 reference**: the same model with every stored value at 32 bit and no quantizer parameters, and
  every counted MAC at 32 × 32 bit. ``compression`` = FP32 size / size, ``bitops_reduction`` = FP32
  BitOPs / BitOPs.

Layers that do not run on the example input (e.g. CARN's x2 and x3 upsampling branches in an x4 model) are
*idle*: a model deployed at that scale does not need them, so their parameters count toward neither size
nor MACs and are reported as ``idle_params``.
"""

from __future__ import annotations

import copy

import math
from dataclasses import asdict, dataclass, field

import torch
from torch import nn

from ..errors import SrqError
from .layers import QUANT_LAYER_TYPES
from .prepare import weight_points, weights_read_by_parent
from .quantizer import Quantizer

__all__ = ["LayerCost", "ModelCost", "layer_costs", "model_cost", "default_input_size", "FLOAT_BITS",
           "HD_OUTPUT"]

FLOAT_BITS = 32
HD_OUTPUT = (720, 1280)  # (height, width) of the output the default input size is chosen for


@dataclass
class LayerCost:
    """Cost of one Conv2d/Linear/ConvTranspose2d layer for one forward pass of one image.

    Attributes:
        name: module name as in ``model.named_modules()``.
        type: ``"conv2d"``, ``"linear"`` or ``"conv_transpose2d"``.
        calls: how many times the layer ran in the forward pass.
        macs: multiply-accumulates over all calls.
        weight_params, bias_params: number of elements of ``weight`` and ``bias``.
        quantizer_params: number of parameters of its weight and input quantizers (bounds / α).
        w_bits, a_bits: weight / input bits (32 where float).
    """

    name: str
    type: str
    calls: int
    macs: int
    weight_params: int
    bias_params: int
    quantizer_params: int
    w_bits: int
    a_bits: int

    @property
    def params(self) -> int:
        """Weight plus bias elements (quantizer parameters not included)."""
        return self.weight_params + self.bias_params

    @property
    def bitops(self) -> int:
        """MACs × w_bits × a_bits."""
        return self.macs * self.w_bits * self.a_bits

    @property
    def storage_bits(self) -> int:
        """Bits to store the layer: weight at w_bits, bias and quantizer parameters at 32 bit."""
        return self.weight_params * self.w_bits + (self.bias_params + self.quantizer_params) * FLOAT_BITS

    def to_dict(self) -> dict:
        return {**asdict(self), "params": self.params, "bitops": self.bitops, "storage_bits": self.storage_bits}


@dataclass
class ModelCost:
    """Totals for a model (see the module docstring for what is counted).

    Attributes:
        input_size: (h, w) of the LR input the MACs were counted on.
        scale: the SR scale, if known.
        layers: per-layer costs in execution order.
        size_bits: bits to store the model.
        fp32_size_bits: bits to store it with everything at 32 bit (no quantizer parameters).
        macs, bitops, fp32_bitops: totals over the counted layers.
        quantized_weight_params: weight elements stored below 32 bit.
        float_params: parameter (and persistent buffer) elements stored at 32 bit, quantizer bounds included.
        quantizer_params: of those, the quantizers' own parameters.
        excluded_params: training-only parameters left out of the size (``weight_delta`` modules).
        idle_params: parameters of Conv2d/Linear/ConvTranspose2d layers that did not run, left out of the size.
    """

    input_size: tuple[int, int]
    scale: int | None
    layers: list[LayerCost] = field(repr=False)
    size_bits: int
    fp32_size_bits: int
    macs: int
    bitops: int
    fp32_bitops: int
    quantized_weight_params: int
    float_params: int
    quantizer_params: int
    excluded_params: int
    idle_params: int = 0

    @property
    def size_bytes(self) -> float:
        return self.size_bits / 8

    @property
    def size_kb(self) -> float:
        """Size in KB (1 KB = 1024 bytes)."""
        return self.size_bits / 8 / 1024

    @property
    def fp32_size_kb(self) -> float:
        return self.fp32_size_bits / 8 / 1024

    @property
    def compression(self) -> float:
        """FP32 size / size."""
        return self.fp32_size_bits / self.size_bits if self.size_bits else float("nan")

    @property
    def bitops_reduction(self) -> float:
        """FP32 BitOPs / BitOPs."""
        return self.fp32_bitops / self.bitops if self.bitops else float("nan")

    def to_dict(self) -> dict:
        """JSON-ready totals, ratios and per-layer rows."""
        return {
            "input_size": list(self.input_size), "scale": self.scale,
            "size_bits": self.size_bits, "size_kb": self.size_kb,
            "fp32_size_bits": self.fp32_size_bits, "fp32_size_kb": self.fp32_size_kb,
            "compression": self.compression,
            "macs": self.macs, "bitops": self.bitops, "fp32_bitops": self.fp32_bitops,
            "bitops_reduction": self.bitops_reduction,
            "quantized_weight_params": self.quantized_weight_params, "float_params": self.float_params,
            "quantizer_params": self.quantizer_params, "excluded_params": self.excluded_params,
            "not_counted": "MACs outside Conv2d/Linear/ConvTranspose2d (attention matmuls, scans, einsum)",
            "layers": [c.to_dict() for c in self.layers],
        }

    def format_table(self) -> str:
        """A plain-text table: one row per layer, then the totals."""
        width = max([len(c.name) for c in self.layers] + [5])
        head = (f"{'layer':<{width}}  {'type':<16} {'W':>3} {'A':>3} {'MACs (M)':>11} {'params':>9} "
                f"{'BitOPs (G)':>11} {'size (KB)':>10}")
        rows = [head, "-" * len(head)]

        def bits(b: int) -> str:
            return "fp" if b >= FLOAT_BITS else str(b)

        for c in self.layers:
            rows.append(f"{c.name:<{width}}  {c.type:<16} {bits(c.w_bits):>3} {bits(c.a_bits):>3} "
                        f"{c.macs / 1e6:>11.3f} {c.params:>9d} {c.bitops / 1e9:>11.3f} "
                        f"{c.storage_bits / 8 / 1024:>10.2f}")
        h, w = self.input_size
        rows += ["-" * len(head),
                 f"input {h}x{w}" + (f" (x{self.scale})" if self.scale else "")
                 + f": {self.macs / 1e9:.3f} GMACs, {self.bitops / 1e9:.2f} GBitOPs "
                 f"(FP32 {self.fp32_bitops / 1e9:.2f}, {self.bitops_reduction:.2f}x fewer)",
                 f"size {self.size_kb:.1f} KB (FP32 {self.fp32_size_kb:.1f} KB, {self.compression:.2f}x smaller); "
                 "MACs outside Conv/Linear (attention matmuls, scans) not counted"]
        return "\n".join(rows)


def default_input_size(scale: int) -> tuple[int, int]:
    """LR (h, w) whose ×``scale`` output is 1280×720: (⌈720/scale⌉, ⌈1280/scale⌉)."""
    if not isinstance(scale, int) or isinstance(scale, bool) or scale < 1:
        raise SrqError(f"scale must be a positive integer, got {scale!r}")
    return math.ceil(HD_OUTPUT[0] / scale), math.ceil(HD_OUTPUT[1] / scale)


def _resolve_size(model: nn.Module, input_size, scale: int | None) -> tuple[tuple[int, int], int | None]:
    if scale is None:
        spec = getattr(model, "srq_spec", None)
        scale = spec.get("scale") if isinstance(spec, dict) else None
    if input_size is None:
        if scale is None:
            raise SrqError("give input_size=(h, w) or the scale (the default input is the LR size of a "
                           "1280x720 output)")
        return default_input_size(scale), scale
    if isinstance(input_size, int):
        input_size = (input_size, input_size)
    h, w = (int(v) for v in input_size)
    if h < 1 or w < 1:
        raise SrqError(f"input_size must be positive, got {input_size!r}")
    return (h, w), scale


def _bits_of(q: Quantizer | None, enabled: dict[int, bool]) -> int:
    return int(q.bits) if q is not None and enabled.get(id(q), q.enabled) else FLOAT_BITS


def _n_params(q: Quantizer | None) -> int:
    """A quantizer's parameters and the values its grid keeps as buffers (DoReFa's scale)."""
    if q is None:
        return 0
    kept = (getattr(q, name) for name in q.grid.buffers)
    return sum(p.numel() for p in q.parameters()) + sum(t.numel() for t in kept if t.is_floating_point())


def _macs(module: _Counted, inp: torch.Tensor, out: torch.Tensor) -> int:
    if isinstance(module, nn.Conv2d):
        kh, kw = module.kernel_size
        return out.numel() * (module.in_channels // module.groups) * kh * kw
    if isinstance(module, nn.ConvTranspose2d):
        kh, kw = module.kernel_size
        return inp.numel() * (module.out_channels // module.groups) * kh * kw
    return out.numel() * module.in_features  # nn.Linear


_Counted = nn.Conv2d | nn.Linear | nn.ConvTranspose2d
_COUNTED = (nn.Conv2d, nn.Linear, nn.ConvTranspose2d)


def _type_name(module: nn.Module) -> str:
    if isinstance(module, nn.Conv2d):
        return "conv2d"
    if isinstance(module, nn.ConvTranspose2d):
        return "conv_transpose2d"
    return "linear"


def _example(model: nn.Module, size: tuple[int, int]) -> torch.Tensor:
    ref = next((t for t in list(model.parameters()) + list(model.buffers()) if t.is_floating_point()), None)
    device = ref.device if ref is not None else torch.device("cpu")
    dtype = ref.dtype if ref is not None else torch.float32
    return torch.zeros(1, 3, *size, device=device, dtype=dtype)


@torch.no_grad()
def layer_costs(model: nn.Module, input_size: tuple[int, int] | int | None = None,
                scale: int | None = None) -> list[LayerCost]:
    """Per-layer costs from one forward pass on a zero image of shape (1, 3, h, w).

    Args:
        model: any ``nn.Module`` taking (N, 3, h, w) images; quantizers may be uncalibrated (they are
            bypassed for this pass, which only needs shapes) and calibration state is left untouched.
        input_size: LR (h, w) (or one int for a square). None: the LR size of a 1280×720 output at
            ``scale`` (h = ⌈720/scale⌉, w = ⌈1280/scale⌉).
        scale: SR scale; None reads ``model.srq_spec["scale"]`` when the model has one.
    Returns:
        One :class:`LayerCost` per Conv2d/Linear/ConvTranspose2d that ran, in the order it first ran.
    """
    size, _ = _resolve_size(model, input_size, scale)
    try:  # shapes only: on the meta device no memory is used (MambaIRv2 at 180×320 needs > 12 GB on the CPU)
        return _layer_costs(copy.deepcopy(model).to("meta"), size)
    except (RuntimeError, NotImplementedError, TypeError, ValueError):  # an op without a meta kernel
        return _layer_costs(model, size)


def _layer_costs(model: nn.Module, size: tuple[int, int]) -> list[LayerCost]:
    costs: dict[str, LayerCost] = {}
    handles = []
    saved = [(q, q.enabled, q.observer) for q in model.modules() if isinstance(q, Quantizer)]
    enabled = {id(q): e for q, e, _ in saved}  # as the user set them (they are bypassed below)

    def hook(name: str):
        def fn(module: _Counted, args, out) -> None:  # registered on _COUNTED modules only
            macs = _macs(module, args[0], out)
            if name in costs:
                costs[name].calls += 1
                costs[name].macs += macs
                return
            wq = module.weight_quantizer if isinstance(module, QUANT_LAYER_TYPES) else None
            aq = module.input_quantizer if isinstance(module, QUANT_LAYER_TYPES) else None
            costs[name] = LayerCost(
                name=name, type=_type_name(module), calls=1, macs=macs,
                weight_params=module.weight.numel(),
                bias_params=module.bias.numel() if module.bias is not None else 0,
                quantizer_params=_n_params(wq) + _n_params(aq),
                w_bits=_bits_of(wq, enabled), a_bits=_bits_of(aq, enabled))
        return fn

    for name, module in model.named_modules():
        if isinstance(module, _COUNTED):
            handles.append(module.register_forward_hook(hook(name)))
    # bypass quantizers (shapes only; uncalibrated ones would raise, calibrating ones would observe zeros)
    modes = [(m, m.training) for m in model.modules()]
    try:
        for q, _, _ in saved:
            q.enabled, q.observer = False, None
        model.eval()
        model(_example(model, size))
    finally:
        for m, training in modes:
            m.training = training
        for q, was_enabled, observer in saved:
            q.enabled, q.observer = was_enabled, observer
        for h in handles:
            h.remove()
    return list(costs.values())


def _storage(model: nn.Module, ran: set[str]) -> dict[str, int]:
    """Stored bits of every parameter and persistent float buffer (see the module docstring); ``ran``: names
    of the counted layers that ran (the others are idle)."""
    low_bit: dict[int, int] = {}     # id(weight) -> bits, for quantized weights
    quantizer: set[int] = set()
    excluded: set[int] = set()
    used = ran | weights_read_by_parent(model)
    idle = {id(p) for name, m in model.named_modules() if isinstance(m, _COUNTED) and name not in used
            for p in m.parameters()}
    for m in model.modules():
        if isinstance(m, QUANT_LAYER_TYPES):
            if m.weight_quantizer is not None and m.weight_quantizer.enabled:
                low_bit[id(m.weight)] = int(m.weight_quantizer.bits)
            if m.weight_delta is not None:
                excluded.update(id(p) for p in m.weight_delta.parameters())
        if isinstance(m, Quantizer):
            quantizer.update(id(p) for p in m.parameters(recurse=False))
    for _, point, param in weight_points(model):
        if point.quantizer.enabled:
            low_bit[id(param)] = int(point.quantizer.bits)
    out = {"size_bits": 0, "fp32_size_bits": 0, "quantized_weight_params": 0, "float_params": 0,
           "quantizer_params": 0, "excluded_params": 0, "idle_params": 0}
    seen: set[int] = set()
    for p in model.parameters():  # shared parameters are yielded once
        n = p.numel()
        if id(p) in idle:
            out["idle_params"] += n
            continue
        if id(p) in excluded:
            out["excluded_params"] += n
            continue
        if id(p) in low_bit:
            out["size_bits"] += n * low_bit[id(p)]
            out["quantized_weight_params"] += n
        else:
            out["size_bits"] += n * FLOAT_BITS
            out["float_params"] += n
        if id(p) in quantizer:
            out["quantizer_params"] += n
        else:
            out["fp32_size_bits"] += n * FLOAT_BITS
        seen.add(id(p))
    for m in model.modules():
        # a quantizer's buffers are flags, except the values a grid keeps untrained (DoReFa's scale)
        grid_values = set(m.grid.buffers) if isinstance(m, Quantizer) else None
        for name, b in m._buffers.items():
            if b is None or name in m._non_persistent_buffers_set or not b.is_floating_point() or id(b) in seen \
                    or (grid_values is not None and name not in grid_values):
                continue
            seen.add(id(b))
            out["size_bits"] += b.numel() * FLOAT_BITS
            out["float_params"] += b.numel()
            if grid_values is None:
                out["fp32_size_bits"] += b.numel() * FLOAT_BITS
            else:
                out["quantizer_params"] += b.numel()
    return out


def model_cost(model: nn.Module, input_size: tuple[int, int] | int | None = None,
               scale: int | None = None) -> ModelCost:
    """Size and BitOPs of ``model`` (float or quantized) for one image.

    ``input_size``/``scale`` as in :func:`layer_costs` (default: the LR size of a 1280×720 output).
    Units: bits, KB (1024 bytes), MACs and BitOPs per image. See the module docstring for what is and is
    not counted.
    """
    size, scale = _resolve_size(model, input_size, scale)
    layers = layer_costs(model, size)  # shape-only pass: meta device, no autograd
    storage = _storage(model, {c.name for c in layers})
    macs = sum(c.macs for c in layers)
    return ModelCost(input_size=size, scale=scale, layers=layers, macs=macs,
                     bitops=sum(c.bitops for c in layers), fp32_bitops=macs * FLOAT_BITS * FLOAT_BITS, **storage)
