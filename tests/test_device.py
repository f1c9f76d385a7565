"""Any device: ``--device auto|cpu|cuda``, and everything srq makes while quantizing lands on the model's device.

Without a GPU the placement is checked on PyTorch's ``meta`` device (tensors with shapes and no data): a model
moved there before quantization must stay there, every quantizer, bit offset, normaliser buffer, rectifier and
bit mapper included; a tensor made on the CPU by mistake shows up at once. The meta device cannot run steps
that read values back (histogram observers, training), so full runs are compared on CUDA when one is present.
"""

from __future__ import annotations

import dataclasses

import pytest
import torch

import srq
from srq.errors import SrqError
from srq.utils.device import device_arg, resolve_device

META = torch.device("meta")
needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA GPU")


def devices(model: torch.nn.Module) -> set[str]:
    """Device types of every parameter and buffer (persistent or not) of ``model``."""
    return {t.device.type for t in [*model.parameters(), *model.buffers()]}


@pytest.fixture(scope="module")
def calib() -> torch.Tensor:
    from srq.data.samples import sample_calibration

    return sample_calibration(4, n=8, patch=24)


# ---- choosing the device -------------------------------------------------------------------------------------
def test_auto_is_cuda_when_present_else_cpu():
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    assert resolve_device("cpu") == torch.device("cpu") and resolve_device(" CPU ") == torch.device("cpu")
    assert resolve_device(torch.device("cpu")) == torch.device("cpu")


@pytest.mark.parametrize("spec", ["tpu9", "meta", "xla", "cuda:99"])
def test_unknown_or_unsupported_devices_fail_with_one_line(spec):
    with pytest.raises(ValueError) as e:
        resolve_device(spec)
    assert "\n" not in str(e.value) and spec in str(e.value)
    import argparse

    with pytest.raises(argparse.ArgumentTypeError):
        device_arg(spec)


@pytest.mark.skipif(torch.cuda.is_available(), reason="a CUDA GPU is present")
def test_cuda_without_a_gpu_says_so():
    with pytest.raises(ValueError, match="no CUDA GPU"):
        resolve_device("cuda")


def test_cli_device_errors_are_one_line():
    from srq.cli import _setup_device

    with pytest.raises(SrqError, match="--device"):
        _setup_device("tpu9", None)
    assert _setup_device("auto", None) == resolve_device("auto")


@pytest.mark.parametrize("command", ["quantize", "eval", "train", "upscale"])
def test_every_model_command_takes_device_auto_by_default(command):
    import inspect

    from srq import cli

    fn = {"quantize": cli.quantize_cmd, "eval": cli.eval_cmd, "train": cli.train_cmd,
          "upscale": cli.upscale_cmd}[command]
    option = inspect.signature(fn).parameters["device"].default
    assert option.default == "auto"


# ---- placement, checked on the meta device ---------------------------------------------------------------------
def test_minmax_quantization_of_a_meta_model_stays_on_meta(calib):
    """The whole MinMax path (prepare, weight and activation calibration) runs on meta: nothing lands on the CPU."""
    fp = srq.create_model("srq_tiny", 4, "official").to(META)
    q = srq.quantize(fp, srq.methods.MinMax(w_bits=4, a_bits=4), calib, progress=False)  # calib stays on the CPU
    assert devices(q) == {"meta"} and len(srq.quant.quantizers(q)) > 0
    assert all(bool(t.device == META) for _, m in srq.quant.quantizers(q) for t in m.state_dict().values())
    assert devices(fp) == {"meta"}


@pytest.mark.parametrize("dan", ["none", "range", "capped"])
def test_quantizers_bit_offsets_and_dan_buffers_are_made_on_the_model_device(dan):
    from srq.quant import QuantConfig, calibrate_weights, prepare, quantizers

    model = srq.create_model("srq_tiny", 4, "official").to(META)
    q = prepare(model, QuantConfig(w_bits=4, a_bits=4, w_observer="omse", a_dan=dan))
    assert devices(q) == {"meta"}
    calibrate_weights(q)  # OMSE on the weight tensors themselves
    assert devices(q) == {"meta"}
    found = quantizers(q)
    for _, quantizer in found:
        if quantizer.grid.variable_bits:
            offset = quantizer.enable_bit_offset(-1, 1)
            assert offset.device == META
    assert devices(q) == {"meta"}
    for _, quantizer in found:
        quantizer.set_bits(4)
    assert devices(q) == {"meta"}


def test_quant_points_get_quantizers_on_the_model_device():
    from srq.quant import QuantConfig, prepare, quantizers

    with torch.device("meta"):
        model = srq.create_model("mambair_light", 4, None)  # scan operands are marked QuantPoints
    q = prepare(model, QuantConfig(w_bits=4, a_bits=4, quant_points=True), example_input=torch.zeros(1, 3, 16, 16))
    points = [m for _, m in quantizers(q) if hasattr(m, "srq_point_kind")]
    assert points and devices(q) == {"meta"}


def test_rectifiers_gates_and_static_routing_are_made_on_the_model_device():
    from srq.methods.rectifiers import attach_rectifiers, rectifier_groups

    q = srq.methods.SPR2Q(w_bits=4, a_bits=4).prepare(srq.create_model("srq_tiny", 4, "official").to(META))
    attach_rectifiers(q, rank=2, group_size=4)
    for group in rectifier_groups(q).values():
        group.make_static(torch.full((group.group_size,), 1 / group.group_size))  # weights given on the CPU
    assert devices(q) == {"meta"}


def test_adabm_bit_mapper_is_made_on_the_model_device(calib, monkeypatch):
    """AdaBM.run builds its BitMapper on the model's device (the run stops before training: meta has no values)."""
    from srq.methods import adabm

    made = []

    class Stop(Exception):
        pass

    def stop(*args, **kwargs):
        raise Stop

    monkeypatch.setattr(adabm.AdaBM, "_calibrate",
                        staticmethod(lambda qmodel, act, batches, progress: [1.0] * len(act)))
    monkeypatch.setattr(adabm.AdaBM, "_image_thresholds", staticmethod(lambda batches: (1.0, 2.0)))
    monkeypatch.setattr(adabm, "_attach", lambda qmodel, mapper: made.append(mapper))
    monkeypatch.setattr(adabm.AdaBM, "_bit_aware_clipping", staticmethod(stop))
    fp = srq.create_model("srq_tiny", 4, "official").to(META)
    with pytest.raises(Stop):
        srq.quantize(fp, adabm.AdaBM(w_bits=4, a_bits=4), calib, progress=False)
    (mapper,) = made
    assert devices(mapper) == {"meta"}
    assert mapper.budget_excess(4, 4).device == META


# ---- full runs on CUDA ----------------------------------------------------------------------------------------
def _psnr(model: torch.nn.Module) -> float:
    from srq.data.samples import sample_set
    from srq.engine.evaluate import evaluate_dataset

    return evaluate_dataset(model, sample_set("test", 4), progress=False).psnr


CUDA_RECIPES = {
    # name: (recipe, PSNR tolerance between the CPU and the CUDA run, dB)
    "minmax": (lambda: srq.methods.MinMax(w_bits=4, a_bits=4), 0.05),
    "percentile_ft": (lambda: srq.methods.Percentile(
        w_bits=4, a_bits=4, fine_tune=True,
        finetune_config=dataclasses.replace(srq.methods.Percentile().finetune_config, steps=6)), 0.2),
    "gba": (lambda: dataclasses.replace(srq.methods.GBA(w_bits=4, a_bits=4, init_batch=4),
                                        alloc=dataclasses.replace(srq.methods.GBA().alloc, steps=4),
                                        finetune_config=dataclasses.replace(srq.methods.GBA().finetune_config,
                                                                            steps=4)),
            0.3),
    "spr2q": (lambda: srq.methods.SPR2Q(w_bits=4, a_bits=4, rank=2, group_size=2, iterations=6, osrc_iterations=3,
                                        batch=2), 0.3),
}


@needs_cuda
@pytest.mark.parametrize("name", list(CUDA_RECIPES))
def test_a_short_quantization_on_cuda_stays_on_cuda_and_matches_the_cpu(name, calib, tmp_path):
    make, tolerance = CUDA_RECIPES[name]
    fp = srq.create_model("srq_tiny", 4, "official")
    on_cpu = srq.quantize(fp, make(), calib, progress=False)
    fp_cuda = srq.create_model("srq_tiny", 4, "official").to("cuda")
    on_cuda = srq.quantize(fp_cuda, make(), calib, progress=False)  # calibration patches stay on the CPU
    assert devices(on_cuda) == {"cuda"} and devices(fp_cuda) == {"cuda"}
    assert abs(_psnr(on_cuda) - _psnr(on_cpu)) < tolerance
    srq.save(on_cuda, tmp_path / "run")  # CPU tensors in the file
    loaded = srq.load(tmp_path / "run")
    assert devices(loaded) == {"cpu"}
    x = calib[:1]
    with torch.no_grad():
        assert torch.allclose(loaded.to("cuda")(x.cuda()), on_cuda(x.cuda()), atol=1e-5)


@needs_cuda
def test_a_short_adabm_run_on_cuda_stays_on_cuda_and_matches_the_cpu(calib):
    make = lambda: srq.methods.AdaBM(w_bits=4, a_bits=4, epochs=3, batch=4)  # noqa: E731
    on_cpu = srq.quantize(srq.create_model("srq_tiny", 4, "official"), make(), calib, progress=False)
    on_cuda = srq.quantize(srq.create_model("srq_tiny", 4, "official").to("cuda"), make(), calib, progress=False)
    assert devices(on_cuda) == {"cuda"}
    assert abs(_psnr(on_cuda) - _psnr(on_cpu)) < 0.3
