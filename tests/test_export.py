"""Deployment: integer QDQ ONNX export (exact levels, outputs against srq's fake-quant model), one-line refusals,
packed low-bit files (exact round trip, size = cost accounting), runtimes and the command line.

ONNX tests skip where the ``deploy`` extra (onnx, onnxruntime, openvino) is not installed.
"""

from __future__ import annotations

import base64
import dataclasses
import importlib.util
import json
import os
import platform
import re
import subprocess
import warnings
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

import srq
from srq.errors import ConfigError, SrqError
from srq.export.packed import load_packed, pack_bits, save_packed, unpack_bits
from srq.quant import LayerRule, QuantConfig, calibrate, prepare
from srq.quant.cost import model_cost
from srq.quant.layers import QuantConv2d
from srq.run_folder import read_meta

from conftest import console_script


def _calib() -> torch.Tensor:
    from srq.data.samples import sample_images

    crops = [torch.from_numpy(img[:48, :48].copy()).permute(2, 0, 1).float() / 255
             for _, img in sample_images("train")[:4]]
    return torch.stack(crops)


def _image() -> torch.Tensor:
    """A natural (1, 3, 40, 48) image in [0, 1] (random noise would put many values on rounding ties)."""
    from srq.data.samples import sample_images

    img = sample_images("train")[0][1]
    return (torch.from_numpy(img[60:100, 60:108].copy()).permute(2, 0, 1).unsqueeze(0).float() / 255).contiguous()


def _quantized(w_bits: int, a_bits: int, **config) -> nn.Module:
    fp = srq.create_model("srq_tiny", 4, "official")
    return srq.quantize(fp, srq.methods.MinMax(w_bits=w_bits, a_bits=a_bits, **config), _calib(), progress=False)


@pytest.fixture(scope="module")
def w4a4() -> nn.Module:
    return _quantized(4, 4)


@pytest.fixture(scope="module")
def w4a4_run(tmp_path_factory, w4a4) -> str:
    folder = tmp_path_factory.mktemp("runs") / "tiny_w4a4"
    srq.save(w4a4, folder)
    return str(folder)


# ---- the integer form ------------------------------------------------------------------------------------

def test_export_ready_computes_what_srq_computes(w4a4):
    """With srq's float bias and zero points kept, the swapped model (what the ONNX nodes compute, in torch) is srq's
    model, bit for bit."""
    from srq.export import export_ready

    x = _image()
    with torch.no_grad():
        assert torch.equal(export_ready(w4a4, bias="float", asym="zero_point")(x), w4a4(x))


def test_split_zero_points_is_the_same_convolution():
    """An 8-bit affine weight (uint8, per-channel zero points) split into int8 levels and a box-sum correction
    computes the same convolution up to float rounding."""
    from srq.export import export_ready
    from srq.export.onnx_qdq import _ExportLayer

    model = _quantized(8, 8)
    split, kept = export_ready(model, bias="float"), export_ready(model, bias="float", asym="zero_point")
    layers = [n for n, m in split.named_modules() if isinstance(m, _ExportLayer) and m.spec.offset is not None]
    assert layers, "no layer needed a zero point: the test model does not exercise the split"
    x = _image()
    for name in layers:
        a, b = split.get_submodule(name), kept.get_submodule(name)
        assert a.spec.weight.q.dtype == torch.int8 and b.spec.weight.q.dtype == torch.uint8
        with torch.no_grad():
            h = torch.rand(1, a.spec.weight.q.shape[1], 12, 10)
            torch.testing.assert_close(a(h), b(h), rtol=1e-5, atol=1e-5)
    with torch.no_grad():
        assert (split(x) - model(x)).abs().mean() < 1e-3


def test_onnx_carries_exact_integer_levels(tmp_path, w4a4):
    onnx = pytest.importorskip("onnx")
    from onnx import numpy_helper

    from srq.export import export_onnx, int_grid

    path = export_onnx(w4a4, tmp_path / "m.onnx", asym="zero_point")  # the split form: test_split_zero_points_...
    proto = onnx.load(str(path))
    assert proto.opset_import[0].version >= 17
    inits = {i.name: numpy_helper.to_array(i) for i in proto.graph.initializer}
    layers = [(n, m) for n, m in w4a4.named_modules() if isinstance(m, QuantConv2d)]
    weight_dqs = [n for n in proto.graph.node if n.op_type == "DequantizeLinear" and inits.get(n.input[0]) is not None
                  and inits[n.input[0]].ndim == 4]
    assert len(weight_dqs) == len(layers)
    dequantized = []  # (DequantizeLinear's float32 result, the stored integers)
    for dq in weight_dqs:
        q, s, z = (inits[i] for i in dq.input)
        assert q.dtype in (np.int8, np.uint8) and z.dtype == q.dtype and s.dtype == np.float32
        v = q.astype(np.int32) - z.astype(np.int32).reshape(-1, 1, 1, 1)
        dequantized.append((v.astype(np.float32) * s.reshape(-1, 1, 1, 1), q))
    for name, layer in layers:
        w = layer.effective_weight().detach().numpy()
        found = [q for dq, q in dequantized if dq.shape == w.shape and np.array_equal(dq, w)]  # equal floats (±0)
        assert found, f"{name}: no initialiser dequantizes to srq's weight exactly"
        q = found[0]
        levels = 2 ** layer.weight_quantizer.bits
        assert all(len(np.unique(ch)) <= levels for ch in q)  # a 4-bit layer keeps (at most) its 16 levels
    # activations: uint8 with srq's scale and zero point; a 4-bit grid is clipped to its 16 levels
    quants = [n for n in proto.graph.node if n.op_type == "QuantizeLinear"]
    assert len(quants) == len(layers)
    clips = {n.input[0]: n for n in proto.graph.node if n.op_type == "Clip"}
    grids = [int_grid(m.input_quantizer) for _, m in layers]
    for qnode in quants:
        scale, zp = inits[qnode.input[1]], inits[qnode.input[2]]
        assert zp.dtype == np.uint8
        match = [g for g in grids if np.float32(g.scale) == scale and -int(g.vmin) == int(zp)]
        assert match, "an activation scale/zero point that srq does not have"
        if match[0].bits < 8:
            clip = clips[qnode.output[0]]
            assert (int(inits[clip.input[1]]), int(inits[clip.input[2]])) == (0, 2 ** match[0].bits - 1)


@pytest.mark.parametrize("runtime", ["onnxruntime", "openvino"])
@pytest.mark.filterwarnings("ignore:.*VNNI")  # the 8-bit first layer; the warning has its own test
def test_runtime_output_matches_srq(tmp_path, w4a4, runtime):
    """On a natural image the runtime's output equals what the graph computes in torch (with srq's float bias:
    srq's own output) to float rounding, except where a tiny difference in a float convolution's sum moves an
    activation across a rounding tie of its grid (one level): under 1 % of the uint8 output pixels change, by
    at most 8/255, and the mean difference stays under 1e-3. (An int32 bias is itself a change of the model, by
    at most half a step s_in·s_w per channel: srq's fake-quant model keeps a float bias.)"""
    pytest.importorskip(runtime)
    from srq.export import export_onnx, export_ready
    from srq.export.runtime import RuntimeModel

    x = _image()
    for bias in ("float", "int32"):
        with torch.no_grad():
            ref = export_ready(w4a4, bias=bias, asym="zero_point")(x)
            if bias == "float":
                assert torch.equal(ref, w4a4(x))
        path = export_onnx(w4a4, tmp_path / f"{bias}.onnx", bias=bias, asym="zero_point")
        got = RuntimeModel(path, runtime, threads=1)(x)
        diff = (got - ref).abs()
        assert got.shape == ref.shape
        assert diff.mean() < 1e-3 and diff.max() < 8 / 255, (bias, diff.mean(), diff.max())
        changed = ((got.clamp(0, 1) * 255).round() != (ref.clamp(0, 1) * 255).round()).float().mean()
        assert changed < 0.01, (bias, changed)


def test_int32_bias_is_within_half_a_step(w4a4):
    from srq.export import int_bias, int_grid

    for m in w4a4.modules():
        if isinstance(m, QuantConv2d):
            w_scale = int_grid(m.weight_quantizer, weight=True).scale
            ints, scale = int_bias(m.bias, int_grid(m.input_quantizer).scale, w_scale)
            assert ints.dtype == torch.int32 and torch.equal(scale, int_grid(m.input_quantizer).scale * w_scale)
            assert ((ints * scale - m.bias).abs() <= scale / 2 * (1 + 1e-5)).all()


def test_a_bias_beyond_int32_names_the_layer_and_the_way_out():
    from srq.errors import SrqError
    from srq.export import int_bias

    bias = torch.tensor([0.1, -0.4])
    with pytest.raises(SrqError, match=r"conv9: the bias of output channel 1 \(-0.4\) .* --bias float"):
        int_bias(bias, torch.tensor(1e-6), torch.tensor([1e-3, 1e-7]), "conv9")


def test_a_layer_whose_bias_does_not_fit_int32_keeps_it_float_with_a_warning(tmp_path):
    pytest.importorskip("onnxruntime")
    from srq.export import export_onnx
    from srq.export.runtime import RuntimeModel

    model = _quantized(4, 4)
    name, layer = next((n, m) for n, m in model.named_modules() if isinstance(m, QuantConv2d)
                       and m.input_quantizer is not None and m.weight_quantizer is not None and m.bias is not None
                       and m.bias.abs().max() > 1e-3)
    with torch.no_grad():  # as after calibrating on inputs that never reach this layer: a step near 0
        layer.input_quantizer.set_bounds(torch.tensor(0.0), torch.tensor(1e-9))
    with pytest.warns(UserWarning, match=rf"{re.escape(name)}: the bias of output channel .* stays float"):
        path = export_onnx(model, tmp_path / "m.onnx")
    x = _image()
    with torch.no_grad():
        expected = model(x)
    diff = (RuntimeModel(path, "onnxruntime", threads=1)(x) - expected).abs()
    # the other layers' int32 biases alone give max 0.040, mean 0.0065 on this W4A4 model; a wrapped bias would not
    assert diff.max() < 0.05 and diff.mean() < 0.01, (diff.max(), diff.mean())


def test_dynamic_height_and_width(tmp_path, w4a4):
    pytest.importorskip("onnxruntime")
    from srq.export import export_onnx
    from srq.export.runtime import RuntimeModel

    model = RuntimeModel(export_onnx(w4a4, tmp_path / "m.onnx"), "onnxruntime", threads=1)
    for h, w in ((17, 23), (40, 8)):
        assert model(torch.rand(2, 3, h, w)).shape == (2, 3, 4 * h, 4 * w)


def test_conv_transpose_and_prelu_export(tmp_path):
    """FSRCNN's body (PReLU, a quantized ConvTranspose2d with output padding) on RGB: the runtime matches srq."""
    pytest.importorskip("onnxruntime")
    from srq.export import export_onnx, export_ready
    from srq.export.runtime import RuntimeModel
    from srq.models.fsrcnn import FSRCNN

    torch.manual_seed(0)
    net = prepare(FSRCNN(4, num_channels=3).eval(), QuantConfig(w_bits=4, a_bits=8), torch.rand(1, 3, 16, 16))
    calibrate(net, [torch.rand(1, 3, 24, 24)])
    x = torch.rand(1, 3, 20, 28)
    with torch.no_grad():
        ref = net(x)
        assert torch.equal(export_ready(net, bias="float", asym="zero_point")(x), ref)
    got = RuntimeModel(export_onnx(net, tmp_path / "m.onnx", bias="float", asym="zero_point"), "onnxruntime", 1)(x)
    assert got.shape == (1, 3, 80, 112) and (got - ref).abs().max() < 1e-4


# ---- refusals in one line ---------------------------------------------------------------------------------

class _FFTNet(nn.Module):
    """A conv, then an op the ONNX exporter has no conversion for."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 3, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.fft.irfft2(torch.fft.rfft2(self.conv(x)), s=x.shape[-2:])


def test_unsupported_op_is_one_line(tmp_path):
    pytest.importorskip("onnx")
    from srq.export import export_onnx

    net = prepare(_FFTNet(), QuantConfig(w_bits=8, a_bits=8, first_last="same"))
    calibrate(net, [torch.rand(1, 3, 16, 16)])
    with pytest.raises(SrqError) as e:
        export_onnx(net, tmp_path / "m.onnx")
    assert "cannot be exported" in str(e.value) and "\n" not in str(e.value)
    assert not (tmp_path / "m.onnx").exists()


def test_quantizer_without_integer_form_is_one_line(tmp_path):
    pytest.importorskip("onnx")
    from srq.export import export_onnx

    net = prepare(srq.create_model("srq_tiny", 4, "official"), QuantConfig(a_dan="range"))
    calibrate(net, [_calib()])
    with pytest.raises(SrqError, match="normaliser") as e:
        export_onnx(net, tmp_path / "m.onnx")
    assert "\n" not in str(e.value)



def _lsqplus(a_mode: str) -> nn.Module:
    net = prepare(srq.create_model("srq_tiny", 4, "official"), QuantConfig(w_mode="lsq", a_mode=a_mode,
                                                                              a_observer="omse"))
    return calibrate(net, [_calib()], progress=False)


def test_lsqplus_with_an_integer_zero_point_exports_exactly(tmp_path):
    """LSQ+ trained with ``zero_point=integer`` (the ``lsqplus_int`` grid) is an integer QDQ graph computing srq's
    values bit for bit; the paper's LSQ+ (offset off the grid) is refused in one line that names the way out."""
    pytest.importorskip("onnx")
    from srq.export import export_onnx, export_ready, int_grid

    net = _lsqplus("lsqplus_int")
    snapped = [q for _, q in srq.quant.quantizers(net) if q.mode == "lsqplus_int"]
    with torch.no_grad():
        for q in snapped:
            q.offset.add_(0.37 * q.step)  # a learned offset between levels: the forward snaps it
        above = next(q for q in snapped if q.bits == 4)
        above.offset.copy_(3.2 * above.step)  # levels 3 … 18 (all above 0): zero point 0, qmin 3
    grid = int_grid(above)
    assert (int(grid.vmin), int(grid.vmax)) == (3, 18) and grid.as_uint8()[1:] == (3, 18)
    x = _image()
    with torch.no_grad():
        ref = net(x)
        assert torch.equal(export_ready(net, bias="float", asym="zero_point")(x), ref)
    path = export_onnx(net, tmp_path / "int.onnx", bias="float", asym="zero_point")
    if importlib.util.find_spec("onnxruntime") is not None:
        from srq.export.runtime import RuntimeModel

        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", ".*VNNI")
            got = RuntimeModel(path, "onnxruntime", threads=1)(x)
        assert (got - ref).abs().mean() < 1e-3
    with pytest.raises(SrqError, match="zero_point=integer") as e:
        export_onnx(_lsqplus("lsqplus"), tmp_path / "float.onnx")
    assert "\n" not in str(e.value) and not (tmp_path / "float.onnx").exists()


def test_a_graph_fixed_to_the_traced_size_is_one_line(tmp_path):
    """FSRCNN's Y-channel wrapper computes its bicubic chroma tables from the input size in Python: the trace only
    works at the traced size, which export finds out (with ONNX Runtime) and says in one line."""
    pytest.importorskip("onnxruntime")
    from srq.export import export_onnx

    net = prepare(srq.create_model("fsrcnn", 4, None).eval(), QuantConfig(w_bits=8, a_bits=8))
    calibrate(net, [torch.rand(1, 3, 24, 24)])
    with pytest.raises(SrqError, match="traced input size") as e:
        export_onnx(net, tmp_path / "m.onnx")
    assert "\n" not in str(e.value) and not (tmp_path / "m.onnx").exists()


# ---- packed files -----------------------------------------------------------------------------------------

@pytest.mark.parametrize("bits", [1, 2, 3, 4, 5, 7, 8])
def test_pack_bits_round_trip(bits):
    k = np.random.default_rng(bits).integers(0, 2**bits, 1001).astype(np.uint8)
    packed = pack_bits(k, bits)
    assert packed.size == (k.size * bits + 7) // 8
    assert np.array_equal(unpack_bits(packed, bits, k.size), k)


@pytest.mark.parametrize("bits", [(8, 8), (4, 4), (2, 2)])
def test_packed_file_round_trip_is_exact(tmp_path, bits):
    model = _quantized(*bits)
    run = tmp_path / "run"
    srq.save(model, run)
    path = save_packed(srq.load(run), run, tmp_path / "m.safetensors")
    loaded = load_packed(path)
    x = _image()
    with torch.no_grad():
        assert torch.equal(loaded(x), model(x))
    # size: srq's cost accounting, plus the header and < 1 byte of padding per quantized layer
    from safetensors import safe_open

    with open(path, "rb") as f:
        header = int.from_bytes(f.read(8), "little") + 8
    with safe_open(str(path), framework="pt") as f:
        assert set(f.keys()) == {"packed", "floats", "flags", "bools"}
    layers = sum(1 for m in model.modules() if isinstance(m, QuantConv2d))
    payload = os.path.getsize(path) - header
    assert model_cost(model).size_bytes <= payload < model_cost(model).size_bytes + layers


def _per_layer_rules_run(tmp_path) -> tuple[nn.Module, Path]:
    """A run whose config holds one rule per layer, as mixed precision writes (GBA, AdaBM)."""
    names = [n for n, m in _quantized(4, 4).named_modules() if isinstance(m, QuantConv2d)]
    rules = tuple(LayerRule(re.escape(n), a_bits=3 + i % 3) for i, n in enumerate(names))
    model = _quantized(4, 4, rules=rules)
    srq.save(model, tmp_path / "run")
    return model, tmp_path / "run"


def test_packed_header_compresses_per_layer_rules_and_restores_them(tmp_path):
    from srq.export.packed import read_header

    model, run = _per_layer_rules_run(tmp_path)
    path = save_packed(srq.load(run), run, tmp_path / "m.safetensors")
    header = read_header(path)
    assert header["quant_config"] == read_meta(run)["quant_config"]
    with torch.no_grad():
        assert torch.equal(load_packed(path)(_image()), model(_image()))
    inline = len(json.dumps(json.dumps(header)))  # the header as format 1 wrote it (JSON in a JSON string)
    with open(path, "rb") as f:
        stored = int.from_bytes(f.read(8), "little")
    assert stored < inline - len(json.dumps(header["quant_config"]["rules"])) // 2


def test_lsq_sign_choices_are_packed_one_bit_each(tmp_path):
    from safetensors import safe_open

    fp = srq.create_model("srq_tiny", 4, "official")
    model = srq.quant.prepare(fp, QuantConfig(w_bits=4, a_bits=4, w_mode="lsq", a_mode="lsq"), _calib()[:1])
    srq.quant.calibrate(model, [_calib()], progress=False)
    signs = [t for k, t in model.state_dict().items() if t.dtype == torch.bool and not k.endswith("initialized")]
    assert sum(t.numel() for t in signs) > 100 and not all(bool(t.all()) for t in signs)  # per channel, both kinds
    srq.save(model, tmp_path / "run")
    path = save_packed(srq.load(tmp_path / "run"), tmp_path / "run", tmp_path / "m.safetensors")
    with safe_open(str(path), framework="pt") as f:
        assert f.get_tensor("bools").numel() == (sum(t.numel() for t in signs) + 7) // 8
        assert f.get_tensor("flags").numel() == 0
    with torch.no_grad():
        assert torch.equal(load_packed(path)(_image()), model(_image()))


def test_packed_files_of_format_1_still_load(tmp_path, w4a4, w4a4_run):
    from safetensors.torch import load_file

    from srq.fileio import write_safetensors
    from srq.export.packed import read_header

    path = save_packed(srq.load(w4a4_run), w4a4_run, tmp_path / "m.safetensors")
    header = {**read_header(path), "format": "srq-packed-1"}
    tensors = {k: v for k, v in load_file(str(path)).items() if k != "bools"}  # format 1 had no bools
    old = write_safetensors(tmp_path / "old.safetensors", tensors, metadata={"srq": json.dumps(header)})
    with torch.no_grad():
        assert torch.equal(load_packed(old)(_image()), w4a4(_image()))


@pytest.mark.parametrize("blob", ["not base64!", base64.b64encode(b"not zlib").decode(),
                                  base64.b64encode(zlib.compress(b'{"a": 1}')).decode()])
def test_damaged_rules_in_a_packed_header_are_one_line(tmp_path, w4a4_run, blob):
    from safetensors.torch import load_file

    from srq.fileio import write_safetensors
    from srq.export.packed import read_header

    path = save_packed(srq.load(w4a4_run), w4a4_run, tmp_path / "m.safetensors")
    header = {**read_header(path), "rules_zlib": blob}
    bad = write_safetensors(tmp_path / "bad.safetensors", load_file(str(path)), metadata={"srq": json.dumps(header)})
    with pytest.raises(SrqError, match="layer rules in its header are not readable"):
        load_packed(bad)


def test_srq_load_reads_a_packed_file(tmp_path, w4a4, w4a4_run):
    path = save_packed(srq.load(w4a4_run), w4a4_run, tmp_path / "m.safetensors")
    x = _image()
    with torch.no_grad():
        assert torch.equal(srq.load(path)(x), w4a4(x))


# ---- command line and bench -------------------------------------------------------------------------------

def _srq(*args: str, cwd=None) -> subprocess.CompletedProcess:
    env = {**os.environ, "SRQ_WEIGHTS": "/nonexistent-weights", "OMP_NUM_THREADS": "1"}
    return subprocess.run([console_script(), *args], capture_output=True, text=True, env=env, cwd=cwd, timeout=600)


def test_cli_packed_export_reports_its_size_against_cost_accounting(tmp_path, w4a4, w4a4_run):
    out = tmp_path / "m.safetensors"
    proc = _srq("export", w4a4_run, "--format", "packed", "-o", str(out))
    assert proc.returncode == 0, proc.stderr
    text = " ".join(proc.stderr.split())
    match = re.search(r"cost accounting ([\d.]+) KiB \(\+([\d.]+) %\)", text)
    assert match, text
    cost = model_cost(w4a4).size_bytes
    assert float(match.group(1)) == pytest.approx(cost / 1024, abs=0.05)
    assert float(match.group(2)) == pytest.approx(100 * (out.stat().st_size / cost - 1), abs=0.01)
    with torch.no_grad():
        assert torch.equal(srq.load(out)(_image()), w4a4(_image()))


def test_cli_export_and_eval_on_a_runtime(tmp_path, w4a4_run):
    """``srq export`` then ``srq eval FILE.onnx``: with srq's float bias and zero points the deployed file scores what
    srq scores (within 0.02 dB); ``srq eval RUN --runtime`` exports with the defaults (int32 bias, which moves each
    output by up to half a step s_in·s_w: on this tiny W4A4 model about 0.1 dB, on IMDN x4 W4A4 0.004 dB)."""
    pytest.importorskip("onnxruntime")
    from PIL import Image

    from srq.data.samples import sample_images

    images = tmp_path / "images"
    images.mkdir()
    for i, (_, img) in enumerate(sample_images("train")[:2]):
        Image.fromarray(img[:64, :64]).save(images / f"im{i}.png")
    onnx_file = tmp_path / "m.onnx"
    proc = _srq("export", w4a4_run, "-o", str(onnx_file), "--bias", "float", "--asym", "zero_point")
    assert proc.returncode == 0, proc.stderr
    proc = _srq("export", w4a4_run, "-o", str(onnx_file))
    assert proc.returncode == 2 and "--overwrite" in proc.stderr
    psnr = {}
    for model, runtime in ((w4a4_run, "torch"), (str(onnx_file), "onnxruntime"), (w4a4_run, "onnxruntime")):
        out = tmp_path / f"{runtime}{len(psnr)}.json"
        proc = _srq("eval", model, "--runtime", runtime, "--datasets", str(images), "--threads", "1", "-o", str(out))
        assert proc.returncode == 0, proc.stderr
        doc = json.loads(out.read_text())
        assert doc["runtime"] == runtime if runtime != "torch" else "runtime" not in doc
        psnr[(model, runtime)] = doc["results"][0]["psnr"]
    srq_psnr = psnr[(w4a4_run, "torch")]
    assert abs(psnr[(str(onnx_file), "onnxruntime")] - srq_psnr) < 0.02, psnr
    assert abs(psnr[(w4a4_run, "onnxruntime")] - srq_psnr) < 0.2, psnr


def test_cli_refusals_are_one_line(tmp_path, w4a4_run):
    cases = [(("eval", str(tmp_path / "none.onnx"), "--runtime", "onnxruntime", "--datasets", "Set5"),
              "does not exist"),
             (("eval", w4a4_run, "--runtime", "tensorrt", "--datasets", "Set5"), "--runtime"),
             (("export", w4a4_run, "--format", "tflite", "-o", str(tmp_path / "m.onnx")), "--format"),
             (("export", w4a4_run, "-o", str(tmp_path / "m.txt")), "must end in")]
    for argv, fragment in cases:
        proc = _srq(*argv)
        errors = [ln for ln in proc.stderr.splitlines() if ln.startswith("error:")]
        assert proc.returncode == 2 and len(errors) == 1 and fragment in errors[0], (argv, proc.stderr)


def test_bench_runs_and_reports_ratios(w4a4):
    pytest.importorskip("onnxruntime")
    from srq.cli_deploy import BENCH_VARIANTS
    from srq.export.bench import VARIANTS, bench, format_bench

    assert BENCH_VARIANTS.split(",") == list(VARIANTS)
    variants = ("torch_fp32", "torch_fakequant", "onnxruntime_int")
    if importlib.util.find_spec("openvino"):
        variants += ("openvino_int_bf16",)  # the integer file with bf16 float operations
    result = bench(w4a4, (16, 16), threads=(1,), runs=2, warmup=0, variants=variants, memory=False)
    stats = result.latency["1"]
    assert set(stats) == set(variants)
    assert stats["torch_fp32"]["speedup_vs_torch_fp32"] == 1.0 and len(stats["onnxruntime_int"]["times"]) == 2
    assert result.file_bytes["onnx_int"] > 0 and "onnxruntime_int" in format_bench(result)


def test_symmetric_8bit_weights_export_as_plain_int8_convolutions(tmp_path):
    """``w_grid="symmetric"`` (PTQ recipes): 8-bit weights with zero point 0 need no zero-point correction, so the
    graph has one Conv per quantized layer; the default affine grid at 8 bit adds a correction convolution."""
    onnx = pytest.importorskip("onnx")
    from srq.export import export_onnx

    layers = lambda m: sum(isinstance(x, QuantConv2d) for x in m.modules())  # noqa: E731
    convs = lambda p: sum(n.op_type == "Conv" for n in onnx.load(str(p)).graph.node)  # noqa: E731
    sym = _quantized(8, 8, w_grid="symmetric")
    assert {m.weight_quantizer.mode for m in sym.modules() if isinstance(m, QuantConv2d)} == {"symmetric"}
    assert convs(export_onnx(sym, tmp_path / "sym.onnx")) == layers(sym)
    affine = _quantized(8, 8)
    assert convs(export_onnx(affine, tmp_path / "affine.onnx")) > layers(affine)


def test_w_grid_is_recorded_only_off_its_default():
    default = srq.methods.Percentile(w_bits=8, a_bits=8)
    assert "w_grid" not in default.to_dict()  # recipes of the default grid read (and hash) as before
    sym = srq.methods.Percentile(w_bits=8, a_bits=8, fine_tune=True, w_grid="symmetric")
    assert sym.to_dict()["w_grid"] == "symmetric" and srq.methods.Recipe.from_dict(sym.to_dict()) == sym
    with pytest.raises(ValueError, match="w_grid must be one of affine, symmetric"):
        srq.methods.MinMax(w_grid="lsq")


def test_openvino_profile_groups_time_by_operation(tmp_path, w4a4):
    pytest.importorskip("openvino")
    from srq.export import export_onnx
    from srq.export.profile import format_profile, openvino_profile

    found = openvino_profile(export_onnx(w4a4, tmp_path / "m.onnx"), (1, 3, 24, 32), runs=2)
    assert found.ops and abs(sum(o.share for o in found.ops) - 1) < 1e-6
    assert any(o.node_type == "Convolution" and "I8" in o.exec_type for o in found.ops)  # integer convolutions
    assert [o.ms for o in found.ops] == sorted((o.ms for o in found.ops), reverse=True)
    assert "Convolution" in format_profile(found) and json.dumps(found.to_dict())


@pytest.mark.parametrize("mode", ["lsq", "lsq_tanh", "lsq_3sigma", "lsq_range"])
def test_lsq_family_weights_have_their_exact_integer_levels(mode):
    from srq.export import int_grid
    from srq.export.qparams import int_weight
    from srq.quant.quantizer import Quantizer

    w = torch.randn(6, 3, 3, 3, generator=torch.Generator().manual_seed(1)) * 0.2
    q = Quantizer(3, mode=mode, channel_axis=0, num_channels=6)
    q.start_calibration()
    q(w)
    q.finish_calibration()
    ints = int_weight(q(w), q)
    grid = int_grid(q, weight=True)
    assert (grid.vmin.tolist(), grid.vmax.tolist()) == ([-4] * 6, [3] * 6)  # signed 3-bit levels
    assert ints.q.dtype == torch.int8 and int(ints.q.min()) >= -4 and int(ints.q.max()) <= 3
    torch.testing.assert_close(ints.q.float() * ints.scale.view(6, 1, 1, 1), q(w), rtol=0, atol=0)


def test_output_quantizers_requantize_integer_layers_and_onnx_runtime_fuses_them(tmp_path, monkeypatch):
    """``a_output_bits``: every layer with quantized weights and input gets an output quantizer (placed, calibrated,
    saved); the exported graph then has ``DQ → Conv → Q``, which ONNX Runtime runs as ``QLinearConv``, and the
    runtime computes srq's outputs (to the tolerance of ``test_runtime_output_matches_srq``)."""
    ort = pytest.importorskip("onnxruntime")
    from srq.export import export_onnx, export_ready
    from srq.export.runtime import RuntimeModel
    from srq.utils.device import cpu_has_vnni

    q = _quantized(8, 8, w_grid="symmetric", a_output_bits=8)
    integer = [m for m in q.modules() if isinstance(m, QuantConv2d) and m.input_quantizer is not None]
    assert integer and all(m.output_quantizer is not None and m.output_quantizer.initialized for m in integer)
    outputs = [e for e in srq.quant.placement(q) if e.kind == "output"]
    assert len(outputs) == len(integer) and {e.a_bits for e in outputs} == {8}
    assert q.srq_recipe["a_output_bits"] == 8 and "a_output_bits" not in srq.methods.MinMax().to_dict()
    assert "a_output_bits" not in QuantConfig().to_dict()  # configs without it read (and hash) as before
    with pytest.raises(SrqError, match="a_output_bits must be an integer from 2 to 8"):
        QuantConfig(a_output_bits=1)
    x = _image()
    with torch.no_grad():
        plain = _quantized(8, 8, w_grid="symmetric")(x)
        ref = q(x)
        assert not torch.equal(ref, plain)  # the requantization is in srq's own output
        assert torch.equal(export_ready(q, bias="float")(x), ref)
    srq.save(q, tmp_path / "run")
    with torch.no_grad():
        assert torch.equal(srq.load(tmp_path / "run")(x), ref)
    with pytest.warns(UserWarning, match="reduce_range"):
        path = export_onnx(q, tmp_path / "m.onnx", bias="int32")
    options = ort.SessionOptions()
    options.optimized_model_filepath = str(tmp_path / "optimized.onnx")
    ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    import onnx
    fused = [n.op_type for n in onnx.load(str(tmp_path / "optimized.onnx")).graph.node]
    assert fused.count("QLinearConv") == len(integer), fused
    with torch.no_grad():
        ref = export_ready(q, bias="int32")(x)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        diff = (RuntimeModel(path, "onnxruntime", threads=1)(x) - ref).abs()
    # without VNNI, QLinearConv's int16 pair sums saturate (an AMD EPYC Zen 3 here: mean 0.0023, max 4.2/255)
    mean_bound = 1e-3 if cpu_has_vnni() else 4e-3
    assert diff.mean() < mean_bound and diff.max() < 8 / 255, (diff.mean(), diff.max())
    saturating = not cpu_has_vnni() and platform.machine().lower() in ("x86_64", "amd64")
    assert len([w for w in caught if "VNNI" in str(w.message)]) == int(saturating)
    # the warning follows the CPU's instruction set, and only files with layers at risk get it
    safe = export_onnx(_quantized(8, 8, w_grid="symmetric", reduce_range=True), tmp_path / "safe.onnx")
    for has_vnni, file, warned in [(False, path, 1), (True, path, 0), (False, safe, 0)]:
        monkeypatch.setattr("srq.export.runtime.cpu_has_vnni", lambda: has_vnni)
        monkeypatch.setattr("srq.export.runtime._x86", lambda: True)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            RuntimeModel(file, "onnxruntime", threads=1)
        assert len([w for w in caught if "VNNI" in str(w.message)]) == warned, (has_vnni, file)


def test_int16_overflow_risk_is_found_and_reduce_range_removes_it(tmp_path):
    """8-bit inputs × 8-bit weights can overflow the int16 pair sums of x86 CPUs without VNNI: export names those
    layers (a warning, and the file's metadata). ``reduce_range`` gives exactly those layers 7-bit weights within ±64,
    and then ONNX Runtime computes srq's output on any CPU, to the tolerance of a VNNI CPU."""
    onnx = pytest.importorskip("onnx")
    from srq.export import export_onnx, export_ready
    from srq.export.onnx_qdq import INT16_RISK_KEY, int16_overflow_layers

    plain = _quantized(4, 4, w_grid="symmetric")  # first/last layers 8 bit
    risky = int16_overflow_layers(export_ready(plain))
    edges = [n for n, m in plain.named_modules() if isinstance(m, QuantConv2d) and m.srq_role != "body"]
    assert risky and set(risky) <= set(edges)
    with pytest.warns(UserWarning, match=f"{len(risky)} integer layer.*reduce_range"):
        path = export_onnx(plain, tmp_path / "plain.onnx")
    meta = {p.key: p.value for p in onnx.load(str(path)).metadata_props}
    assert meta[INT16_RISK_KEY].split(",") == risky

    safe = _quantized(4, 4, w_grid="symmetric", reduce_range=True)
    bits = {n: m.weight_quantizer.bits for n, m in safe.named_modules() if isinstance(m, QuantConv2d)}
    assert {bits[n] for n in edges} == {7} and {b for n, b in bits.items() if n not in edges} == {4}
    assert int16_overflow_layers(export_ready(safe)) == []
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no overflow warning
        path = export_onnx(safe, tmp_path / "safe.onnx", bias="float", asym="zero_point")
    assert {p.key: p.value for p in onnx.load(str(path)).metadata_props}[INT16_RISK_KEY] == ""
    w8a8 = _quantized(8, 8, w_grid="symmetric", reduce_range=True, a_output_bits=8)
    assert {m.weight_quantizer.bits for m in w8a8.modules() if isinstance(m, QuantConv2d)} == {7}
    if importlib.util.find_spec("onnxruntime") is not None:
        from srq.export.runtime import RuntimeModel

        x = _image()
        path = export_onnx(w8a8, tmp_path / "w8a8.onnx", bias="int32")
        with torch.no_grad():
            ref = export_ready(w8a8, bias="int32")(x)
        diff = (RuntimeModel(path, "onnxruntime", threads=1)(x) - ref).abs()
        assert diff.mean() < 1e-3 and diff.max() < 8 / 255, (diff.mean(), diff.max())
    assert "reduce_range" not in QuantConfig().to_dict()
    assert QuantConfig(w_mode="symmetric", reduce_range=True).to_dict()["reduce_range"]
    with pytest.raises(SrqError, match="affine or zero-centred"):
        QuantConfig(w_mode="dorefa", reduce_range=True)
    for refused in (srq.methods.GBA(mp_weights=True), srq.methods.AdaBM(mp_weights=True)):
        with pytest.raises(ConfigError, match="weight-bit allocation"):
            dataclasses.replace(refused, reduce_range=True)
    assert srq.methods.GBA(reduce_range=True).config().reduce_range
    assert "reduce_range" not in srq.methods.GBA().to_dict()


def test_every_method_takes_reduce_range_or_refuses_it_in_one_line():
    """``reduce_range`` is a setting of every recipe: it reaches the quantizer placement, is recorded only when set
    (so older recipes hash as before), survives a to_dict round trip, or is refused where the weight grid cannot
    hold 7-bit levels within ±64."""
    from srq.methods.registry import list_methods

    for info in list_methods():
        name, recipe = info.name, info.create()
        assert "reduce_range" not in recipe.to_dict(), name
        try:
            reduced = dataclasses.replace(recipe, reduce_range=True)
        except ConfigError as e:
            assert "\n" not in str(e) and ("weight grid" in str(e) or "weight-bit" in str(e)), (name, e)
            continue
        assert reduced.config().reduce_range, name
        assert type(reduced).from_dict(reduced.to_dict()) == reduced, name


@pytest.mark.parametrize("runtime", ["onnxruntime", "openvino"])
@pytest.mark.filterwarnings("error:.*VNNI")  # no layer of these files is at risk
def test_reduce_range_affine_weights_are_centred_by_the_export(tmp_path, runtime):
    """Affine 7-bit weights (``reduce_range`` on the default grid) can sit anywhere in −127 … 127; the export
    centres each channel within ±64 (int8 levels plus an offset and its correction), so no layer is at risk and the
    runtime computes srq's output — on a CPU without VNNI too, where the uncentred file would overflow."""
    pytest.importorskip(runtime)
    from srq.export import export_onnx, export_ready
    from srq.export.onnx_qdq import _ExportLayer, int16_overflow_layers
    from srq.export.runtime import RuntimeModel

    model = _quantized(4, 4, reduce_range=True)
    edges = {n for n, m in model.named_modules() if isinstance(m, QuantConv2d) and m.srq_role != "body"}
    assert {model.get_submodule(n).weight_quantizer.bits for n in edges} == {7}
    ready = export_ready(model)
    centred = {n for n, m in ready.named_modules() if isinstance(m, _ExportLayer) and m.spec.offset is not None}
    assert centred and centred <= edges and int16_overflow_layers(ready) == []
    assert set(int16_overflow_layers(export_ready(model, asym="zero_point"))) == centred  # uncentred: at risk
    for n in centred:
        q = ready.get_submodule(n).spec.weight.q.to(torch.int32)
        assert q.min() >= -64 and q.max() <= 63
    x = _image()
    with torch.no_grad():
        ref = ready(x)  # (int32 bias)
        # with srq's float bias, the centred convolution plus its correction is srq's up to float rounding
        assert (export_ready(model, bias="float")(x) - model(x)).abs().mean() < 1e-3
    path = export_onnx(model, tmp_path / "m.onnx")
    diff = (RuntimeModel(path, runtime, threads=1)(x) - ref).abs()
    assert diff.mean() < 1e-3 and diff.max() < 8 / 255, (diff.mean(), diff.max())


class _SplitNet(nn.Module):
    """IMDN's distillation pattern: a convolution's activated output split by channels, one part kept, one refined;
    ``shared`` adds a second consumer of the first convolution's output (a Split that must stay)."""

    def __init__(self, shared: bool = False) -> None:
        super().__init__()
        self.head, self.body = nn.Conv2d(3, 8, 3, padding=1), nn.Conv2d(6, 6, 3, padding=1)
        self.tail = nn.Conv2d(8, 3, 1)
        self.act, self.shared = nn.LeakyReLU(0.05), shared

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.head(x)
        kept, rest = torch.split(self.act(y), (2, 6), dim=1)
        out = self.tail(torch.cat([kept, self.act(self.body(rest))], dim=1))
        return out + y[:, :3] if self.shared else out


@pytest.mark.parametrize("runtime", ["onnxruntime", "openvino"])
@pytest.mark.parametrize("bits", [(8, 8), (4, 4)])
@pytest.mark.filterwarnings("ignore:.*VNNI")
def test_a_split_convolution_output_becomes_one_convolution_per_part_exactly(tmp_path, runtime, bits):
    """``split_convs`` (the default): ``Conv → Q → DQ → LeakyRelu → Split`` is exported as one convolution per part
    (no Split left, two more Conv nodes), and the runtime's output is the same, bit for bit, as with the Split; a
    convolution output that something else reads too keeps its Split."""
    onnx = pytest.importorskip("onnx")
    pytest.importorskip(runtime)
    from srq.export import export_onnx
    from srq.export.runtime import RuntimeModel

    torch.manual_seed(0)
    # symmetric weights: the 8-bit first layer's affine ones would add a zero-point correction (an Add) before it
    extra = {"a_output_bits": 8} if bits == (8, 8) else {}
    method = srq.methods.MinMax(w_bits=bits[0], a_bits=bits[1], w_grid="symmetric", **extra)
    x = _image()
    for shared in (False, True):
        q = srq.quantize(_SplitNet(shared), method, _calib(), progress=False)
        paths = [export_onnx(q, tmp_path / f"{shared}-{split}.onnx", split_convs=split) for split in (True, False)]
        ops = [[n.op_type for n in onnx.load(str(p)).graph.node] for p in paths]
        assert ops[1].count("Split") == 1
        assert ops[0].count("Split") == int(shared)
        assert ops[0].count("Conv") == ops[1].count("Conv") + (0 if shared else 1)
        outs = [RuntimeModel(p, runtime, threads=1)(x) for p in paths]
        assert torch.equal(outs[0], outs[1])
        with torch.no_grad():
            assert (outs[0] - q(x)).abs().max() < 8 / 255


def _conv_split_graph(activation: str, slope_channels: int = 1):
    """An ONNX graph ``Conv(4→6) → activation → Split(axis 1, three equal parts, no sizes)``, three outputs."""
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array(rng.standard_normal((6, 4, 3, 3)).astype(np.float32), "w"),
             numpy_helper.from_array(rng.standard_normal(6).astype(np.float32), "b")]
    act_inputs = ["y"]
    if activation == "PRelu":
        inits.append(numpy_helper.from_array(np.full((slope_channels, 1, 1), 0.1, np.float32), "slope"))
        act_inputs.append("slope")
    nodes = [helper.make_node("Conv", ["x", "w", "b"], ["y"], pads=[1, 1, 1, 1]),
             helper.make_node(activation, act_inputs, ["z"]),
             helper.make_node("Split", ["z"], ["p0", "p1", "p2"], axis=1)]
    outputs = [helper.make_tensor_value_info(p, TensorProto.FLOAT, [1, 2, 8, 8]) for p in ("p0", "p1", "p2")]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4, 8, 8])],
                              outputs, inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


@pytest.mark.parametrize("activation, slope_channels, rewritten", [("Relu", 1, True), ("PRelu", 1, True),
                                                                    ("PRelu", 6, False)])
def test_split_rewrite_on_a_plain_onnx_graph(activation, slope_channels, rewritten):
    """Equal parts (no sizes input) are split too; a per-channel parameter between Conv and Split (PRelu with one
    slope per channel) leaves the graph as it is. Outputs equal the original's."""
    onnx = pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")
    from srq.export.graph_rewrites import split_producer_convs

    original = _conv_split_graph(activation, slope_channels)
    proto = onnx.ModelProto()
    proto.CopyFrom(original)
    assert split_producer_convs(proto) == int(rewritten)
    onnx.checker.check_model(proto)
    ops = [n.op_type for n in proto.graph.node]
    assert ops.count("Split") == int(not rewritten) and ops.count("Conv") == (3 if rewritten else 1)
    read = {name for n in proto.graph.node for name in n.input}
    assert all(t.name in read for t in proto.graph.initializer)  # the replaced weights are gone
    x = np.random.default_rng(1).standard_normal((1, 4, 8, 8)).astype(np.float32)
    run = lambda m: ort.InferenceSession(m.SerializeToString()).run(None, {"x": x})  # noqa: E731
    for got, want in zip(run(proto), run(original)):
        assert got.shape == (1, 2, 8, 8)
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-6)
