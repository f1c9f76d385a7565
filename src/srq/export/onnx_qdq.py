"""Export a quantized srq model to a QDQ ONNX graph that carries srq's own integer grids.

How: the model is traced by torch's TorchScript ONNX exporter (``dynamo=False``) after every quantized layer and
every activation quantizer is swapped for a module whose ``torch.autograd.Function`` has a ``symbolic``: it
emits ``QuantizeLinear`` → (``Clip``) → ``DequantizeLinear`` for an activation quantizer and
``DequantizeLinear(int8/uint8 weight)`` (+ ``DequantizeLinear(int32 bias)``) → ``Conv`` / ``ConvTranspose`` /
``MatMul`` for a layer,
with the integers, scales and zero points computed by :mod:`srq.export.qparams` from the run folder's bounds.
Everything else (activations, concatenations, pixel shuffle, ...) is traced as the model computes it, in float.
Then exact graph rewrites (:mod:`srq.export.graph_rewrites`) replace a channel split of a convolution's output
by one convolution per part.
Why this way: the graph is the model's own traced graph (no pattern matching on torch internals), and the
quantization nodes are written by srq, so nothing about the grids is left to an exporter's defaults
(torch's ``fake_quantize_*`` symbolics only allow the full 8-bit ranges). The legacy exporter is deprecated
but present in torch 2.13; the dynamo exporter would need custom ops with onnxscript translations for the
same result.

What the graph computes, against srq's fake-quant model (same placement, nothing added):

* activation quantizers: ``q = saturate(round(x/s) + z)``, clipped to the grid's ``2ⁿ`` levels (uint8; a
  < 8-bit grid keeps exactly its levels), ``(q − z)·s`` — the same float32 values srq computes;
* weights: int8 integers, ``q·s`` equal to srq's quantized weight bit for bit; an 8-bit affine grid that does
  not fit int8 without a zero point is written as int8 levels plus a zero-point correction (``asym="split"``,
  :func:`split_zero_points`: equal up to float rounding) or as uint8 with per-channel zero points
  (``asym="zero_point"``: bit for bit);
* biases of layers with quantized inputs and weights: int32 at scale ``s_in·s_w`` (``bias="int32"``, as integer
  runtimes add them; off from srq's float bias by at most half that scale), or srq's float bias (``"float"``); a
  bias that does not fit int32 at its scale (an input step near 0: a path calibration never saw active) stays
  float, with a warning naming the layer;
* a layer's output quantizer (``QuantConfig.a_output_bits``): ``QuantizeLinear`` → ``DequantizeLinear`` right
  after the layer, so runtimes that fuse ``DQ → Conv → Q`` (ONNX Runtime) run an integer convolution;
* every other operation in float32, as in srq. Without output quantizers (the default placement, as in the
  papers: convolution outputs are float) such runtimes compute the convolution in float with the dequantized
  values, while OpenVINO runs the placement as it is (integer convolution, float output).

Input ``input`` (N, 3, H, W) float32 in [0, 1], output ``output`` (N, 3, s·H, s·W); N, H and W are dynamic.
"""

from __future__ import annotations

import io
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ConfigError, SrqError
from ..fileio import follow_umask, temp_beside
from ..quant.layers import QuantConv2d, QuantConvTranspose2d, QuantLinear, WeightPointQuantizer
from ..quant.quantizer import Quantizer
from .graph_rewrites import split_producer_convs
from .qparams import IntGrid, IntWeight, int_bias, int_grid, int_weight

__all__ = ["ActSpec", "ASYM_FORMS", "BIAS_FORMS", "CLIP_DOMAINS", "DEFAULT_OPSET", "INT16_RISK_KEY",
           "check_export_options", "export_onnx", "export_ready", "int16_overflow_layers", "split_zero_points",
           "write_bytes"]

DEFAULT_OPSET = 17
CLIP_DOMAINS = ("int", "float")  # where a < 8-bit activation grid is clipped: on the uint8 integers, or before Q
BIAS_FORMS = ("int32", "float")  # a quantized layer's bias: int32 at scale s_in·s_w, or srq's float bias
ASYM_FORMS = ("split", "zero_point")  # weights with per-channel zero points: see export_ready


@dataclass(frozen=True)
class ActSpec:
    """An activation quantizer as integers: scale, uint8 zero point, levels ``qmin … qmax``."""

    scale: torch.Tensor  # float32 ()
    zero_point: torch.Tensor  # uint8 ()
    qmin: int
    qmax: int
    clip: str = "int"  # "int" or "float", see CLIP_DOMAINS

    @classmethod
    def of(cls, grid: IntGrid, clip: str = "int") -> "ActSpec":
        zp, qmin, qmax = grid.as_uint8()
        return cls(grid.scale.reshape(()), zp, qmin, qmax, clip)

    def fake_quant(self, x: torch.Tensor) -> torch.Tensor:
        """What the ONNX nodes compute, in torch (for the trace and for tests)."""
        z = int(self.zero_point)
        q = torch.clamp(torch.round(x / self.scale) + z, self.qmin, self.qmax)
        return (q - z) * self.scale


def _const(g: Any, t: torch.Tensor) -> Any:
    return g.op("Constant", value_t=t)


class _QDQ(torch.autograd.Function):
    """``x → DQ(Clip(Q(x)))`` with the constants of an :class:`ActSpec`."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, spec: ActSpec) -> torch.Tensor:
        return spec.fake_quant(x)

    @staticmethod
    def symbolic(g: Any, x: Any, spec: ActSpec) -> Any:
        s, z = _const(g, spec.scale), _const(g, spec.zero_point)
        narrow = spec.qmin > 0 or spec.qmax < 255
        if narrow and spec.clip == "float":
            zp = int(spec.zero_point)
            lo = _const(g, ((spec.qmin - zp) * spec.scale).float())
            hi = _const(g, ((spec.qmax - zp) * spec.scale).float())
            x = g.op("Clip", x, lo, hi)
        q = g.op("QuantizeLinear", x, s, z)
        if narrow and spec.clip == "int":
            q = g.op("Clip", q, _const(g, torch.tensor(spec.qmin, dtype=torch.uint8)),
                     _const(g, torch.tensor(spec.qmax, dtype=torch.uint8)))
        return g.op("DequantizeLinear", q, s, z)


@dataclass(frozen=True)
class _LayerSpec:
    """A layer's constants: its weight (integers, or float) and bias (int32 with its scale, float, or None)."""

    weight: IntWeight | torch.Tensor
    bias: tuple[torch.Tensor, torch.Tensor] | torch.Tensor | None
    kind: str  # "conv", "conv_transpose" or "linear"
    conv: dict  # strides, pads, dilations, group (conv only)
    offset: torch.Tensor | None = None  # (C,) s_c·o_c of a split asymmetric weight (see split_zero_points)


def _weight_node(g: Any, w: IntWeight | torch.Tensor, transpose: bool = False) -> Any:
    if isinstance(w, torch.Tensor):
        return _const(g, (w.t() if transpose else w).contiguous())
    q, axis = (w.q.t().contiguous(), 1) if transpose else (w.q, w.axis)
    return g.op("DequantizeLinear", _const(g, q), _const(g, w.scale), _const(g, w.zero_point), axis_i=axis)


def _bias_node(g: Any, b: tuple[torch.Tensor, torch.Tensor] | torch.Tensor) -> Any:
    if isinstance(b, torch.Tensor):
        return _const(g, b)
    ints, scale = b
    return g.op("DequantizeLinear", _const(g, ints), _const(g, scale), _const(g, torch.zeros_like(ints)), axis_i=0)


class _Layer(torch.autograd.Function):
    """``Conv`` / ``MatMul`` (+ ``Add``) on dequantized constant weights."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, spec: _LayerSpec) -> torch.Tensor:
        w = spec.weight.dequantize() if isinstance(spec.weight, IntWeight) else spec.weight
        b = spec.bias if spec.bias is None or isinstance(spec.bias, torch.Tensor) else spec.bias[0] * spec.bias[1]
        if spec.kind == "linear":
            return F.linear(x, w, b)
        c = spec.conv
        if spec.kind == "conv_transpose":
            return F.conv_transpose2d(x, w, b, c["strides"], c["pads"], c["output_padding"], c["group"],
                                      c["dilations"])
        y = F.conv2d(x, w, b, c["strides"], [c["pads"][0], c["pads"][1]], c["dilations"], c["group"])
        if spec.offset is not None:
            ones = torch.ones(1, 1, *w.shape[2:])
            box = F.conv2d(x.sum(dim=1, keepdim=True), ones, None, c["strides"], [c["pads"][0], c["pads"][1]],
                           c["dilations"], 1)
            y = y + box * spec.offset.reshape(1, -1, 1, 1)
        return y

    @staticmethod
    def symbolic(g: Any, x: Any, spec: _LayerSpec) -> Any:
        if spec.kind == "linear":
            y = g.op("MatMul", x, _weight_node(g, spec.weight, transpose=True))
            return y if spec.bias is None else g.op("Add", y, _bias_node(g, spec.bias))
        inputs = [x, _weight_node(g, spec.weight)] + ([] if spec.bias is None else [_bias_node(g, spec.bias)])
        c = spec.conv
        shape = (spec.weight.q if isinstance(spec.weight, IntWeight) else spec.weight).shape
        attrs = {"strides_i": c["strides"], "pads_i": c["pads"] * 2, "dilations_i": c["dilations"],
                 "kernel_shape_i": list(shape[2:])}
        if spec.kind == "conv_transpose":
            return g.op("ConvTranspose", *inputs, group_i=c["group"], output_padding_i=c["output_padding"], **attrs)
        y = g.op("Conv", *inputs, group_i=c["group"], **attrs)
        if spec.offset is None:
            return y
        total = g.op("ReduceSum", x, _const(g, torch.tensor([1], dtype=torch.int64)), keepdims_i=1)
        box = g.op("Conv", total, _const(g, torch.ones(1, 1, *shape[2:])), group_i=1, **attrs)
        return g.op("Add", y, g.op("Mul", box, _const(g, spec.offset.reshape(1, -1, 1, 1).contiguous())))


class _ExportQuant(nn.Module):
    """An activation quantizer in the exported graph."""

    def __init__(self, spec: ActSpec) -> None:
        super().__init__()
        self.spec = spec

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _QDQ.apply(x, self.spec)


class _ExportLayer(nn.Module):
    """A quantized Conv2d / Linear in the exported graph: input QDQ (if quantized), the layer, output QDQ (if the
    layer requantizes its output)."""

    def __init__(self, act: ActSpec | None, spec: _LayerSpec, out: ActSpec | None = None) -> None:
        super().__init__()
        self.act, self.spec, self.out = act, spec, out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.act is not None:
            x = _QDQ.apply(x, self.act)
        y = _Layer.apply(x, self.spec)
        return y if self.out is None else _QDQ.apply(y, self.out)


def _conv_attrs(layer: QuantConv2d, name: str) -> dict:
    if layer.padding_mode != "zeros":
        raise SrqError(f"{name}: padding_mode={layer.padding_mode!r} is not exported yet (only zero padding)")
    if isinstance(layer.padding, str):
        if layer.padding == "valid":
            pads = [0, 0]
        elif all(k % 2 == 1 for k in layer.kernel_size) and all(d == 1 for d in layer.dilation):
            pads = [k // 2 for k in layer.kernel_size]
        else:
            raise SrqError(f"{name}: padding='same' with an even kernel or dilation is not exported yet")
    else:
        pads = list(layer.padding)
    return {"strides": list(layer.stride), "pads": pads, "dilations": list(layer.dilation), "group": layer.groups}


@torch.no_grad()
def split_zero_points(w: IntWeight, half: int = 128) -> tuple[IntWeight, torch.Tensor]:
    """An asymmetric weight (uint8 with per-channel zero points, or int8 levels off centre) as int8 levels plus a
    per-channel offset: ``v = v' + o_c`` with ``v' = v − o_c`` in −half … half − 1 (``o_c = vmin_c + half``), so that
    ``conv(x, v·s) = conv(x, v'·s) + (s_c·o_c)·box(Σ_channels x)``: an int8 convolution with zero-point-free
    weights, which integer runtimes (OpenVINO's oneDNN) run, plus the window sums of the input's channel sum (the
    zero-point correction of integer GEMM libraries; a one-channel float convolution with a kernel of ones).
    Equal to srq's convolution up to float rounding. ``half`` 64 centres a ≤ 7-bit grid within ±64, where the int16
    pair sums of CPUs without VNNI cannot overflow (:func:`int16_overflow_layers`). Returns ``(int8 weight, s·o)``."""
    shape = [1] * w.q.dim()
    shape[w.axis] = -1
    v = w.q.to(torch.int32) - w.zero_point.to(torch.int32).reshape(shape)
    vmin = v.amin(dim=[d for d in range(v.dim()) if d != w.axis])
    offset = vmin + half
    q = (v - offset.reshape(shape)).to(torch.int8)
    return IntWeight(q, w.scale, torch.zeros_like(w.scale, dtype=torch.int8), w.axis, w.bits), \
        w.scale * offset.float()


def _layer_module(layer: QuantConv2d | QuantLinear | QuantConvTranspose2d, name: str, clip: str, bias_int: bool,
                  split: bool) -> _ExportLayer:
    act_grid = None if layer.input_quantizer is None else int_grid(layer.input_quantizer, f"{name}.input_quantizer")
    w_q = layer.effective_weight().detach().float()
    weight: IntWeight | torch.Tensor = w_q.clone() if layer.weight_quantizer is None else \
        int_weight(w_q, layer.weight_quantizer, name)
    bias: tuple[torch.Tensor, torch.Tensor] | torch.Tensor | None = None
    if layer.bias is not None:
        if bias_int and act_grid is not None and isinstance(weight, IntWeight) and \
                isinstance(layer, (QuantConv2d, QuantConvTranspose2d)):
            try:
                bias = int_bias(layer.bias, act_grid.scale, weight.scale, name)
            except SrqError as e:  # e.g. a path that calibration never saw active: its input step is near 0
                warnings.warn(f"{str(e).partition('; export with')[0]}; this layer's bias stays float (the layer "
                              f"then runs as a float convolution on integer runtimes)", stacklevel=2)
                bias = layer.bias.detach().float().clone()
        else:
            bias = layer.bias.detach().float().clone()
    act = None if act_grid is None else ActSpec.of(act_grid, clip)
    if isinstance(layer, QuantConv2d):
        offset = None
        if split and isinstance(weight, IntWeight) and layer.groups == 1:
            if weight.q.dtype == torch.uint8:
                weight, offset = split_zero_points(weight)
            elif act is not None and _pair_sums_overflow(act, weight) and 2 ** weight.bits <= 128:
                weight, offset = split_zero_points(weight, half=64)  # a ≤ 7-bit grid, centred within ±64
        spec = _LayerSpec(weight, bias, "conv", _conv_attrs(layer, name), offset)
    elif isinstance(layer, QuantConvTranspose2d):
        attrs = {"strides": list(layer.stride), "pads": list(layer.padding),
                 "dilations": list(layer.dilation), "group": layer.groups,
                 "output_padding": list(layer.output_padding)}
        spec = _LayerSpec(weight, bias, "conv_transpose", attrs)
    else:
        spec = _LayerSpec(weight, bias, "linear", {})
    out = None if layer.output_quantizer is None else \
        ActSpec.of(int_grid(layer.output_quantizer, f"{name}.output_quantizer"), clip)
    return _ExportLayer(act, spec, out)


def _set_module(model: nn.Module, name: str, new: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, child, new)


def export_ready(model: nn.Module, clip: str = "int", bias: str = "int32", asym: str = "split") -> nn.Module:
    """A copy of quantized ``model`` whose quantized layers and activation quantizers emit srq's QDQ nodes when
    traced by the ONNX exporter (in torch it computes what the ONNX graph computes). ``bias``: ``"int32"`` (at
    scale ``s_in·s_w``, as integer runtimes add it) or ``"float"`` (srq's float bias, unchanged). Raises
    :class:`SrqError` for a quantizer or layer that has no integer form. ``asym``: how a weight grid that does not
    fit int8 without a zero point (an 8-bit affine grid) is written: ``"split"`` (int8 levels plus a zero-point
    correction, :func:`split_zero_points`; runs as an integer convolution) or ``"zero_point"`` (uint8 with
    per-channel zero points, exactly srq's values; OpenVINO then convolves in float)."""
    import copy

    check_export_options(bias=bias, clip=clip, asym=asym)
    model = copy.deepcopy(model).cpu().float().eval()
    swaps: list[tuple[str, nn.Module]] = []
    inside: tuple[str, ...] = ()
    for name, m in model.named_modules():
        if inside and name.startswith(inside):
            continue
        if isinstance(m, (QuantConv2d, QuantLinear, QuantConvTranspose2d)):
            swaps.append((name, _layer_module(m, name, clip, bias == "int32", asym == "split")))
            inside += (name + ".",)
        elif isinstance(m, WeightPointQuantizer):
            raise SrqError(f"{name}: the quantized raw weight {m.param!r} (applied by the model itself, e.g. in an "
                           f"einsum) has no ONNX export; srq exports Conv/Linear weights only")
        elif isinstance(m, Quantizer):
            swaps.append((name, _ExportQuant(ActSpec.of(int_grid(m, name), clip))))
            inside += (name + ".",)
    for name, new in swaps:
        _set_module(model, name, new)
    return model


INT16_MAX = 2**15 - 1
INT16_RISK_KEY = "int16_overflow_layers"  # metadata_props entry: int16_overflow_layers, comma-separated


def int16_overflow_layers(ready: nn.Module) -> list[str]:
    """The integer layers of an :func:`export_ready` model whose products can overflow int16 on x86 CPUs without
    VNNI: there (AVX2) integer runtimes multiply the stored uint8 inputs by the int8 weights and add neighbouring
    products in int16 with saturation (``VPMADDUBSW``), so a layer is at risk when 2 · (its largest stored input
    integer) · max|weight integer| > 2¹⁵ − 1 — 8-bit inputs with 8-bit weights (IMDN x4 W8A8 on an AMD EPYC Zen 3:
    −6 dB in ONNX Runtime and OpenVINO). ``QuantConfig.reduce_range`` quantizes such layers so that they are not."""
    return [name for name, m in ready.named_modules() if isinstance(m, _ExportLayer) and m.act is not None
            and isinstance(m.spec.weight, IntWeight) and _pair_sums_overflow(m.act, m.spec.weight)]


def _pair_sums_overflow(act: ActSpec, weight: IntWeight) -> bool:
    """Whether two products of a stored input integer and a stored int8 weight can pass 2¹⁵ − 1."""
    return weight.q.dtype == torch.int8 and 2 * act.qmax * int(weight.q.to(torch.int32).abs().max()) > INT16_MAX


def _constants_to_initializers(proto: Any) -> None:
    """Move the ``Constant`` nodes' tensors into graph initializers (named after their outputs), so tools and
    runtimes see the integer weights as initialisers."""
    from onnx import numpy_helper

    graph = proto.graph
    keep = []
    for node in graph.node:
        if node.op_type == "Constant" and len(node.attribute) == 1 and node.attribute[0].name == "value":
            tensor = numpy_helper.to_array(node.attribute[0].t)
            graph.initializer.append(numpy_helper.from_array(tensor, node.output[0]))
        else:
            keep.append(node)
    del graph.node[:]
    graph.node.extend(keep)


def check_export_options(*, bias: str, clip: str, asym: str, flag: str = "") -> None:
    """One :class:`~srq.errors.ConfigError` line (a ``ValueError`` too) for an unknown ``bias``, ``clip`` or ``asym``
    form; ``flag`` prefixes the option's name (``"--"`` on the command line)."""
    for name, value, choices in (("bias", bias, BIAS_FORMS), ("clip", clip, CLIP_DOMAINS), ("asym", asym, ASYM_FORMS)):
        if value not in choices:
            raise ConfigError(f"{flag}{name} must be one of {', '.join(choices)}, got {value!r}")


def export_onnx(model: nn.Module, path: str | os.PathLike, *, opset: int = DEFAULT_OPSET, clip: str = "int",
                bias: str = "int32", asym: str = "split", example: torch.Tensor | None = None,
                metadata: dict[str, str] | None = None, split_convs: bool = True) -> Path:
    """Write quantized ``model`` (or a float one: a plain float graph) as an ONNX file at ``path`` (atomically);
    returns the path.

    ``clip``, ``bias`` and ``asym``: see :func:`export_ready`. ``example``: the traced input (default a (1, 3, 32, 32)
    random image; N, H, W stay dynamic). ``metadata`` is stored in the model's ``metadata_props`` (srq records
    the scale, the model name and the source there). ``split_convs``: a channel split of a convolution's output
    becomes one convolution per part (:func:`~srq.export.graph_rewrites.split_producer_convs`; exact, and faster on
    OpenVINO).
    """
    try:
        import onnx
    except ImportError:
        raise SrqError("export needs the onnx package: pip install \"srq[deploy]\"")
    if opset < 13:
        raise SrqError(f"opset {opset} has no per-channel DequantizeLinear; use 13 or newer (default {DEFAULT_OPSET})")
    ready = export_ready(model, clip, bias, asym)
    risky = int16_overflow_layers(ready)
    if risky:
        warnings.warn(f"{len(risky)} integer layer(s) ({risky[0]}{', ...' if len(risky) > 1 else ''}) multiply 8-bit "
                      f"inputs by 8-bit weights: on x86 CPUs without VNNI (AVX2 only) integer runtimes overflow "
                      f"their int16 pair sums there and the deployed model loses accuracy (IMDN x4 W8A8: −6 dB); "
                      f"to deploy on such CPUs quantize with reduce_range=true (docs/deploy.md)", stacklevel=2)
    metadata = {**(metadata or {}), INT16_RISK_KEY: ",".join(risky)}
    x = torch.rand(1, 3, 32, 32, generator=torch.Generator().manual_seed(0)) if example is None else example
    buffer = io.BytesIO()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(ready, (x.float(),), buffer,  # type: ignore[arg-type]  # a file object works too
                              dynamo=False, opset_version=opset, input_names=["input"], output_names=["output"],
                              do_constant_folding=True, autograd_inlining=False,
                              dynamic_axes={"input": {0: "batch", 2: "height", 3: "width"},
                                            "output": {0: "batch", 2: "out_height", 3: "out_width"}})
    except SrqError:
        raise
    except Exception as e:  # the exporter raises many types for an op it cannot convert
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise SrqError(f"the model cannot be exported to ONNX: {first[:300]}")
    proto = onnx.load_from_string(buffer.getvalue())
    _constants_to_initializers(proto)
    if split_convs:
        split_producer_convs(proto)
    proto.producer_name = "srq"
    for key, value in (metadata or {}).items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, str(value)
    onnx.checker.check_model(proto)
    data = proto.SerializeToString()
    _check_dynamic_size(data, ready, x)
    return write_bytes(Path(path), data)


def _check_dynamic_size(data: bytes, ready: nn.Module, example: torch.Tensor) -> None:
    """Run the graph (with ONNX Runtime, when installed) on another input size: a model whose trace baked in the
    example's size (e.g. index tables computed in Python from the shape) is refused in one line."""
    try:
        import onnxruntime as ort
    except ImportError:
        return
    h, w = example.shape[-2:]
    other = torch.rand(1, example.shape[1], h + 3, w + 5, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected = tuple(ready(other).shape)
    try:
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = 1
        opts.log_severity_level = 4  # the failure is reported below, in one line
        session = ort.InferenceSession(data, opts, providers=["CPUExecutionProvider"])
        got = tuple(session.run(None, {"input": other.numpy()})[0].shape)
    except Exception as e:
        got = None
        why = str(e).strip().splitlines()[0].rpartition("Status Message: ")[2][:160]
    else:
        why = f"output {got} instead of {expected}"
    if got != expected:
        raise SrqError(f"the exported graph only works at the traced input size ({h}×{w}): at {h + 3}×{w + 5} "
                       f"{why}; the model computes something from the input's shape in Python (e.g. resize tables)")


def write_bytes(path: Path, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically (a temp file beside it, then rename), with the umask's permissions."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_beside(path)
    try:
        tmp.write_bytes(data)
        follow_umask(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path
