"""Model surgery: swap every learned ``nn.Conv2d``/``nn.Linear``/``nn.ConvTranspose2d`` of any ``nn.Module`` for its
quantized twin, every ``QuantPoint`` marker for an activation quantizer and every ``WeightPoint`` marker (a raw
weight parameter the model applies itself) for a weight quantizer, following a :class:`QuantConfig`.

Placement is explicit and recorded: :func:`placement` lists, for every quantizable point, its role
(first / last / body layer, a marked operand or a marked weight), its weight and activation bits, or that it
stays in float. First and last layers are found by data flow on an example input (:mod:`srq.quant.edges`: the
layers before the first nonlinearity and after the last one, e.g. both convs of a separable stem). Layers whose
parameters are all frozen (``requires_grad=False``, e.g. CARN's constant mean shift) are fixed preprocessing and stay
in float. Layers that do not run on the example input are idle (e.g. the x2/x3 upsampling branches of a
multi-scale CARN built for x4): they stay in float, as they could never be calibrated, and cost accounting
leaves them out of the model size. :func:`float_layers` lists every layer that stays in float, and why.
"""

from __future__ import annotations

import math
import re
from dataclasses import asdict, dataclass

import torch
from torch import nn

from ..errors import SrqError
from .markers import QuantPoint, WeightPoint
from .config import QuantConfig
from .edges import edge_layers
from .layers import QUANT_LAYER_TYPES, QuantConv2d, QuantConvTranspose2d, QuantLinear, WeightPointQuantizer
from .quantizer import Quantizer

__all__ = ["PlacementEntry", "FloatLayer", "prepare", "placement", "float_layers", "format_placement",
           "quantizable_layers", "execution_order", "quantizers", "weight_points", "float_weight_point"]


@dataclass
class PlacementEntry:
    """One quantization point. ``w_bits``/``a_bits`` are None where that side stays in float."""

    name: str
    kind: str  # "conv2d", "linear", "conv_transpose2d", "point:<kind>" (operand), "weight:<kind>" (raw weight) or
    # "output" (a layer's output requantizer, QuantConfig.a_output_bits)
    role: str  # "first", "last", "body", "point"
    w_bits: int | None
    a_bits: int | None

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class FloatLayer:
    """A layer (or marked operand) that computes in float, at least on one side, and why."""

    name: str
    kind: str  # the module's class name
    reason: str

    def to_dict(self) -> dict:
        return asdict(self)


def _is_learned(module: nn.Module) -> bool:
    params = list(module.parameters(recurse=False))
    return bool(params) and any(p.requires_grad for p in params)


def quantizable_layers(model: nn.Module) -> list[tuple[str, _FloatLayer]]:
    """``(name, module)`` of every learned Conv2d/Linear (quantized or not), in registration order."""
    return [(n, m) for n, m in model.named_modules() if isinstance(m, _FLOAT_TYPES) and _is_learned(m)]


def execution_order(model: nn.Module, example: torch.Tensor, names: list[str]) -> list[str]:
    """The subset of ``names`` (module names) in the order their forward runs on ``example``."""
    return edge_layers(model, example, names)[0]


def _set_module(model: nn.Module, name: str, new: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, child, new)


def _quantizer(bits: int, mode: str, observer: str, channels: int | None, weight: bool,
               axis: int = 0, dan: str | None = None, dan_axis: int = 1, dan_window: int = 0,
               dan_channels: int = 0, one_bit: str = "binary") -> Quantizer:
    kwargs = {"keep_tensor": weight} if observer == "omse" else \
        {"clip_fraction": 1e-5 if bits >= 8 else 1e-4} if observer == "dbdc" else {}  # PTQ4SR's values
    return Quantizer(bits, mode=mode, channel_axis=axis if channels is not None else None,
                     num_channels=channels or 1, observer=observer, observer_kwargs=kwargs,
                     dan=dan, dan_axis=dan_axis, dan_window=dan_window, dan_channels=dan_channels,
                     one_bit=one_bit, batch_axis=None if weight else 0)


_FloatLayer = nn.Conv2d | nn.Linear | nn.ConvTranspose2d  # the layer types srq quantizes
_QuantLayer = QuantConv2d | QuantLinear | QuantConvTranspose2d

# float type → (quantized type, placement kind, axis of the weight's output channels)
_SWAPS: dict[type[_FloatLayer], tuple[type[_QuantLayer], str, int]] = {
    nn.Conv2d: (QuantConv2d, "conv2d", 0), nn.Linear: (QuantLinear, "linear", 0),
    nn.ConvTranspose2d: (QuantConvTranspose2d, "conv_transpose2d", 1)}
_FLOAT_TYPES = (nn.Conv2d, nn.Linear, nn.ConvTranspose2d)  # the keys of _SWAPS


def _in_channels(layer: _FloatLayer) -> int:
    return layer.in_features if isinstance(layer, nn.Linear) else layer.in_channels


def _swap_for(layer: nn.Module) -> tuple[type[_QuantLayer], str, int]:
    return next(v for k, v in _SWAPS.items() if isinstance(layer, k))


def _model_device(model: nn.Module) -> torch.device:
    for t in list(model.parameters()) + list(model.buffers()):
        return t.device
    return torch.device("cpu")


def prepare(model: nn.Module, config: QuantConfig, example_input: torch.Tensor | None = None) -> nn.Module:
    """Insert quantizers into ``model`` (in place) following ``config``; returns ``model``.

    Bounds are not set yet: calibrate the model (:func:`srq.quant.calibrate`) before using it.
    ``example_input`` (default: a random (1, 3, 32, 32) image) is run once to find which layers run and which
    are first/last (:mod:`srq.quant.edges`).
    """
    if any(isinstance(m, QUANT_LAYER_TYPES) for m in model.modules()):
        raise SrqError("the model is already quantized; start from the float model")
    layers = quantizable_layers(model)
    if not layers:
        raise SrqError("the model has no Conv2d/Linear layers with learned weights to quantize")
    if example_input is None:
        example_input = torch.rand(1, 3, 32, 32)
    example_input = example_input.to(_model_device(model))
    order, first, last = edge_layers(model, example_input, [n for n, _ in layers])
    if not order:
        raise SrqError("no Conv2d/Linear layer ran on the example input; pass an example_input the model accepts")
    points = [(n, m) for n, m in model.named_modules() if isinstance(m, QuantPoint)] if config.quant_points else []

    used = [False] * len(config.rules)

    def bits_for(name: str, w: int | None, a: int | None,
                 why: str | None = None) -> tuple[int | None, int | None, str | None]:
        for i, rule in enumerate(config.rules):
            if rule.matches(name):
                used[i] = True
                if rule.fp:
                    w, a, why = None, None, f"layer rule {rule.pattern!r} has fp=True"
                else:
                    w = rule.w_bits if rule.w_bits is not None else w
                    a = rule.a_bits if rule.a_bits is not None else a
        return w, a, why

    # decide everything first, so that a bad rule leaves the model untouched
    layer_plan = []
    ran = set(order)
    for name, layer in layers:
        role = "first" if name in first else "last" if name in last else "body"
        w: int | None = config.w_bits
        a: int | None = config.a_bits
        why: str | None = None
        if role != "body" and config.first_last != "same":
            w, a = (8, 8) if config.first_last == "8bit" else (None, None)
            why = None if w else f"{role} layer, first_last='fp'"
        w, a, why = bits_for(name, w, a, why)
        if config.reduce_range and w == 8 and a == 8:
            w = 7  # int16 pair sums of uint8 × int8 products cannot overflow (QuantConfig.reduce_range)
        if name in ran:
            layer_plan.append((name, layer, role, w, a, why))
    point_plan = [(name, point, *bits_for(name, None, config.a_bits)[1:]) for name, point in points]
    weight_plan = []
    for name, marker in [(n, m) for n, m in model.named_modules() if isinstance(m, WeightPoint)]:
        w, _, why = bits_for(name, config.w_bits, None)
        weight_plan.append((name, marker, _owned_param(model, name, marker), w, why))
    modes_used = [False] * len(config.a_mode_rules)

    def a_mode_for(name: str) -> str:
        """The activation grid of the quantizer ``name`` (the last ``a_mode_rules`` pair that matches wins)."""
        mode = config.a_mode
        for i, (pattern, rule_mode) in enumerate(config.a_mode_rules):
            if re.fullmatch(pattern, name):
                modes_used[i], mode = True, rule_mode
        return mode

    a_modes = {name: a_mode_for(name) for name, *_ in layer_plan} | {name: a_mode_for(name) for name, *_ in point_plan}
    if not all(modes_used):
        pattern = config.a_mode_rules[modes_used.index(False)][0]
        raise SrqError(f"a_mode rule {pattern!r} matches no layer or operand (see `srq quantize ... --show-placement`)")
    unused = [config.rules[i].pattern for i, u in enumerate(used) if not u]
    if unused:
        example = ", ".join(n for n, _ in layers[:3])
        raise SrqError(f"layer rule {unused[0]!r} matches no layer; layer names look like {example} "
                       f"(see `srq quantize ... --show-placement`)")

    for name, layer, role, w, a, why in layer_plan:
        cls, _, axis = _swap_for(layer)
        channels = layer.out_features if isinstance(layer, nn.Linear) else layer.out_channels
        wq = None if w is None else _quantizer(w, config.w_mode, config.w_observer,
                                              channels if config.w_granularity == "channel" else None, True, axis,
                                              one_bit=config.one_bit)
        dan = None if config.a_dan == "none" else config.a_dan
        aq = None if a is None else _quantizer(a, a_modes[name], config.a_observer, None, False, dan=dan,
                                              dan_axis=-1 if isinstance(layer, nn.Linear) else 1,
                                              dan_window=config.a_dan_window, dan_channels=_in_channels(layer),
                                              one_bit=config.one_bit)
        device = layer.weight.device  # quantizers are made on the CPU: put them where the layer is
        q = cls.from_float(layer, None if wq is None else wq.to(device), None if aq is None else aq.to(device))
        if config.a_output_bits is not None and wq is not None and aq is not None:  # an integer layer
            q.output_quantizer = _quantizer(config.a_output_bits, "affine", config.a_observer, None, False).to(device)
        # plain attributes, not parameters or submodules (setattr: nn.Module's __setattr__ is typed for those)
        setattr(q, "srq_role", role)
        setattr(q, "srq_float_reason", why)
        _set_module(model, name, q)
    for name, point, a, why in point_plan:
        if a is not None:
            pq = _quantizer(a, a_modes[name], config.a_observer, None, False, one_bit=config.one_bit)
            pq = pq.to(example_input.device)  # the model's device (points hold no tensors)
            setattr(pq, "srq_point_kind", point.kind)
            _set_module(model, name, pq)
        else:
            setattr(point, "srq_float_reason", why)
    for name, marker, param, w, why in weight_plan:
        if w is None:
            setattr(marker, "srq_float_reason", why)
            continue
        channels = math.prod(param.shape[:marker.lead])
        wq = _quantizer(w, config.w_mode, config.w_observer, channels if config.w_granularity == "channel" else None,
                        True, 0, one_bit=config.one_bit).to(param.device)
        _set_module(model, name, WeightPointQuantizer(wq, marker.kind, marker.param, marker.lead))
    setattr(model, "srq_quant_config", config)
    setattr(model, "srq_example_shape", list(example_input.shape))
    return model


def _owned_param(model: nn.Module, name: str, marker: WeightPoint | WeightPointQuantizer) -> nn.Parameter:
    """The parameter a weight marker (or its quantizer) at ``name`` stands for: ``marker.param`` of its owner."""
    owner = model.get_submodule(name.rpartition(".")[0])
    param = getattr(owner, marker.param, None)
    if not isinstance(param, nn.Parameter):
        raise SrqError(f"{name} marks weight {marker.param!r}, but {type(owner).__name__} has no such parameter")
    if param.dim() <= marker.lead:
        raise SrqError(f"{name}: {marker.param} has shape {tuple(param.shape)}; lead={marker.lead} leaves no input "
                       f"axis")
    return param


def weight_points(model: nn.Module) -> list[tuple[str, WeightPointQuantizer, nn.Parameter]]:
    """``(name, quantizer, parameter)`` of every quantized raw weight (``WeightPoint``) of a prepared model."""
    return [(n, m, _owned_param(model, n, m)) for n, m in model.named_modules() if isinstance(m, WeightPointQuantizer)]


def float_weight_point(model: nn.Module, name: str, reason: str) -> None:
    """Put the marker back in place of the weight quantizer at ``name`` (that weight computes in float)."""
    point = model.get_submodule(name)
    if not isinstance(point, WeightPointQuantizer):
        raise SrqError(f"{name} is not a quantized raw weight")
    marker = WeightPoint(point.kind, point.param, point.lead)
    setattr(marker, "srq_float_reason", reason)
    _set_module(model, name, marker)


def quantizers(model: nn.Module) -> list[tuple[str, Quantizer]]:
    """Every ``(name, Quantizer)`` in the model."""
    return [(n, m) for n, m in model.named_modules() if isinstance(m, Quantizer)]


def placement(model: nn.Module) -> list[PlacementEntry]:
    """What is quantized where, read from the model's modules."""
    entries = []
    for name, m in model.named_modules():
        if isinstance(m, QUANT_LAYER_TYPES):
            entries.append(PlacementEntry(name, _swap_for(m)[1],
                                          getattr(m, "srq_role", "body"),
                                          m.weight_quantizer.bits if m.weight_quantizer is not None else None,
                                          m.input_quantizer.bits if m.input_quantizer is not None else None))
            if m.output_quantizer is not None:
                entries.append(PlacementEntry(f"{name}.output_quantizer", "output", getattr(m, "srq_role", "body"),
                                              None, m.output_quantizer.bits))
        elif isinstance(m, Quantizer) and hasattr(m, "srq_point_kind"):
            entries.append(PlacementEntry(name, f"point:{m.srq_point_kind}", "point", None, m.bits))
        elif isinstance(m, QuantPoint):
            entries.append(PlacementEntry(name, f"point:{m.kind}", "point", None, None))
        elif isinstance(m, WeightPointQuantizer):
            entries.append(PlacementEntry(name, f"weight:{m.kind}", "point", m.quantizer.bits, None))
        elif isinstance(m, WeightPoint):
            entries.append(PlacementEntry(name, f"weight:{m.kind}", "point", None, None))
    return entries


def _float_reason(module: nn.Module, prepared: bool) -> str | None:
    """Why ``module`` computes in float (on at least one side); None if it is quantized or has nothing to quantize."""
    if isinstance(module, QUANT_LAYER_TYPES):
        if module.weight_quantizer is not None and module.input_quantizer is not None:
            return None
        return getattr(module, "srq_float_reason", None) or "its quantizer was removed after prepare"
    if isinstance(module, QuantPoint):
        return getattr(module, "srq_float_reason", None) or "operand quantizers are off (quant_points=False)"
    if isinstance(module, WeightPoint):
        return getattr(module, "srq_float_reason", None) or ("model not prepared" if not prepared else
                                                             "its quantizer was removed after prepare")
    if isinstance(module, _FLOAT_TYPES):
        if not _is_learned(module):
            return "frozen parameters (fixed preprocessing)"
        return "did not run on the example input (idle at this scale)" if prepared else "model not prepared"
    marked = {m.param for m in module.children() if isinstance(m, WeightPointQuantizer)}
    own = [n for n, _ in module.named_parameters(recurse=False) if n not in marked]
    return f"srq does not quantize this type; its parameters ({', '.join(own)}) stay float" if own else None


def weights_read_by_parent(model: nn.Module) -> set[str]:
    """Names of Conv/Linear layers whose parent reads their weights without calling them, so they never "run" as
    modules although the model uses them: ``nn.MultiheadAttention``'s ``out_proj``."""
    return {f"{name}.{child}" if name else child for name, m in model.named_modules()
            if isinstance(m, nn.MultiheadAttention) for child, _ in m.named_children()}


def float_layers(model: nn.Module) -> list[FloatLayer]:
    """Every layer with parameters (and every marked operand) that computes in float, with the reason.

    Covers quantized layers kept in float (first/last policy, ``fp`` rules), unswapped Conv2d/Linear (frozen,
    or idle on the example input) and modules of other types with their own parameters (LayerNorm, BatchNorm,
    PReLU, a custom ``nn.Parameter``). Quantizers and what lives inside quantized layers are not listed.
    """
    prepared = hasattr(model, "srq_quant_config")
    found: list[FloatLayer] = []
    inside: tuple[str, ...] = ()
    read_by_parent = weights_read_by_parent(model)
    for name, m in model.named_modules():
        if inside and name.startswith(inside):
            continue
        if isinstance(m, (Quantizer, WeightPointQuantizer, *QUANT_LAYER_TYPES)):
            inside += (name + ".",)
        if name in read_by_parent:
            found.append(FloatLayer(name, type(m).__name__, "its parent (nn.MultiheadAttention) reads its weights "
                                                            "directly; srq does not quantize that type"))
        elif not isinstance(m, Quantizer) and (why := _float_reason(m, prepared)) is not None:
            found.append(FloatLayer(name, type(m).__name__, why))
    return found


def format_placement(entries: list[PlacementEntry], floats: list[FloatLayer] | None = None) -> str:
    """A plain-text table of a placement (one row per point), then (given ``floats``) what stays float and why."""
    width = max([len(e.name) for e in entries] + [len(f.name) for f in floats or []] + [5])
    rows = [f"{'layer':<{width}}  {'kind':<16} {'role':<6} {'W':>3} {'A':>3}"]
    for e in entries:
        rows.append(f"{e.name:<{width}}  {e.kind:<16} {e.role:<6} {e.w_bits or 'fp':>3} {e.a_bits or 'fp':>3}")
    if floats is not None:
        rows += ["", "in float (wholly, or on the side marked fp above):",
                 *(f"{f.name or '(model)':<{width}}  {f.kind:<16} {f.reason}" for f in floats),
                 "operations without weights (activations, pooling, interpolation, unmarked matmuls) run in float "
                 "on the quantized values they are given"]
    return "\n".join(rows)
