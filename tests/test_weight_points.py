"""Raw weight parameters a model applies itself (``WeightPoint``, e.g. Mamba's ``x_proj_weight`` in an einsum):
quantized per output channel like a layer's weight, listed in the placement, counted at their bits, saved, packed
and reloaded; run folders saved before they were quantized load as they were made."""

from __future__ import annotations

import json
import os

import pytest
import torch
from torch import nn

import srq
from srq.errors import SrqError
from srq.quant import LayerRule, QuantConfig, Quantizer, calibrate, float_layers, model_cost, placement, prepare
from srq.quant.markers import WeightPoint
from srq.quant.prepare import weight_points


class RawProjection(nn.Module):
    """conv → an einsum with a raw (K, C_out, C_in) parameter, one projection per group → conv."""

    def __init__(self) -> None:
        super().__init__()
        self.head = nn.Conv2d(3, 8, 3, padding=1)
        self.proj_weight = nn.Parameter(torch.randn(2, 4, 4) * 0.3)  # (K=2 groups, C_out=4, C_in=4)
        self.proj = WeightPoint("proj", "proj_weight", lead=2)
        self.tail = nn.Conv2d(8, 3, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.head(x))
        b, _, hh, ww = h.shape
        g = h.reshape(b, 2, 4, hh, ww)
        g = torch.einsum("bkdhw,kcd->bkchw", g, self.proj(self.proj_weight))
        return self.tail(torch.relu(g.reshape(b, 8, hh, ww))) + x


def _quantized(**config) -> nn.Module:
    torch.manual_seed(0)
    net = prepare(RawProjection().eval(), QuantConfig(w_bits=4, a_bits=4, **config), torch.rand(1, 3, 8, 8))
    calibrate(net, [torch.rand(2, 3, 8, 8)], progress=False)
    return net


def test_raw_weight_is_quantized_per_output_channel():
    net = _quantized()
    (name, point, param), = weight_points(net)
    assert name == "proj" and param is net.proj_weight
    entry = next(e for e in placement(net) if e.name == "proj")
    assert (entry.kind, entry.role, entry.w_bits, entry.a_bits) == ("weight:proj", "point", 4, None)
    # the same as a per-channel weight quantizer on the (K·C_out, C_in) matrix, reshaped back
    ref = Quantizer(4, mode="affine", channel_axis=0, num_channels=8)
    matrix = param.detach().reshape(8, 4)
    ref.start_calibration()
    ref(matrix)
    ref.finish_calibration()
    with torch.no_grad():
        got = point(param)
        assert torch.equal(got, ref(matrix).reshape(2, 4, 4))
        assert all(len(torch.unique(row)) <= 16 for row in got.reshape(8, 4))
        assert not torch.equal(got, param)
    # and the model uses it: switching the quantizer off changes the output
    x = torch.rand(1, 3, 8, 8)
    with torch.no_grad():
        y = net(x)
        point.quantizer.enabled = False
        assert not torch.equal(net(x), y)
    assert not any(f.name == "" and "proj_weight" in f.reason for f in float_layers(net))


def test_cost_counts_the_raw_weight_at_its_bits():
    net = _quantized()
    cost, float_cost = model_cost(net, input_size=(8, 8)), model_cost(RawProjection(), input_size=(8, 8))
    layer_weights = net.head.weight.numel() + net.tail.weight.numel()
    assert cost.quantized_weight_params == layer_weights + 32
    assert float_cost.quantized_weight_params == 0


def test_fp_rule_keeps_the_raw_weight_float():
    net = _quantized(rules=[LayerRule(pattern="proj", fp=True)])
    assert weight_points(net) == [] and isinstance(net.proj, WeightPoint)
    entry = next(e for e in placement(net) if e.name == "proj")
    assert (entry.w_bits, entry.a_bits) == (None, None)
    assert any(f.name == "proj" and "fp=True" in f.reason for f in float_layers(net))
    assert model_cost(net, input_size=(8, 8)).quantized_weight_params == net.head.weight.numel() + \
        net.tail.weight.numel()


def test_marker_naming_a_missing_parameter_is_one_line():
    net = RawProjection()
    net.proj = WeightPoint("proj", "no_such_weight", lead=2)
    with pytest.raises(SrqError, match="has no such parameter"):
        prepare(net, QuantConfig(), torch.rand(1, 3, 8, 8))


def test_save_load_and_packed_round_trip(tmp_path):
    net = _quantized()
    x = torch.rand(1, 3, 8, 8)
    with torch.no_grad():
        y = net(x)
    srq.save(net, tmp_path / "run")
    with torch.no_grad():
        assert torch.equal(srq.load(tmp_path / "run", model=RawProjection())(x), y)
    from srq.export.packed import save_packed

    path = save_packed(net, tmp_path / "run", tmp_path / "m.safetensors")
    with torch.no_grad():
        assert torch.equal(srq.load(path, model=RawProjection())(x), y)


def test_folder_saved_before_raw_weights_were_quantized_loads_as_made(tmp_path):
    """A run folder whose placement does not list the marker (written before srq quantized marked raw weights)
    computes with the float weight, as when it was saved."""
    net = _quantized(rules=[LayerRule(pattern="proj", fp=True)])  # what such a folder holds: no quantizer there
    x = torch.rand(1, 3, 8, 8)
    with torch.no_grad():
        y = net(x)
    srq.save(net, tmp_path / "run")
    meta_path = tmp_path / "run" / "srq.json"
    meta = json.loads(meta_path.read_text())
    meta["quant_config"]["rules"] = []
    meta["placement"] = [e for e in meta["placement"] if e["name"] != "proj"]
    meta_path.write_text(json.dumps(meta))
    loaded = srq.load(tmp_path / "run", model=RawProjection())
    assert weight_points(loaded) == []
    assert any(f.name == "proj" and "kept marked raw weights in float" in f.reason for f in float_layers(loaded))
    with torch.no_grad():
        assert torch.equal(loaded(x), y)


def test_onnx_export_refuses_a_quantized_raw_weight_in_one_line(tmp_path):
    pytest.importorskip("onnx")
    from srq.export import export_onnx

    with pytest.raises(SrqError, match="raw weight 'proj_weight'") as e:
        export_onnx(_quantized(), tmp_path / "m.onnx")
    assert "\n" not in str(e.value) and not os.path.exists(tmp_path / "m.onnx")


def test_mambairv2_scan_projections_are_quantized():
    fp = srq.create_model("mambairv2_light", 4, None)
    assert not any(".x_proj." in k or ".dt_projs." in k for k in fp.state_dict())  # official keys: markers add none
    q = prepare(fp, QuantConfig(w_bits=4, a_bits=4), torch.rand(1, 3, 16, 16))
    kinds = [e.kind for e in placement(q) if e.kind.startswith("weight:")]
    assert kinds.count("weight:scan_x_proj") == kinds.count("weight:scan_dt_proj") == 20
    scans = [f for f in float_layers(q) if f.kind == "SelectiveScan"]
    assert scans and all("x_proj_weight" not in f.reason and "dt_projs_weight" not in f.reason for f in scans)
