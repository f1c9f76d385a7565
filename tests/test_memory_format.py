"""Memory formats: evaluation leaves the model as it was, and a quantized model reloads bit-identically in the
format it is run in (outputs depend on the format: convolutions sum in another order and rounding flips)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import srq
from srq.data import write_image
from srq.engine.evaluate import evaluate
from srq.engine.inference import memory_format

FORMATS = {"contiguous": torch.contiguous_format, "channels_last": torch.channels_last}


@pytest.fixture(scope="module")
def quantized() -> torch.nn.Module:
    from srq.data.samples import sample_images

    calib = torch.stack([torch.from_numpy(img[:48, :48].copy()).permute(2, 0, 1).float() / 255
                         for _, img in sample_images("train")[:4]])
    fp = srq.create_model("srq_tiny", 4, "official")
    return srq.quantize(fp, srq.methods.MinMax(w_bits=4, a_bits=4), calib, progress=False)


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> str:
    """A benchmark folder of two small noise images."""
    folder = tmp_path_factory.mktemp("set")
    rng = np.random.default_rng(0)
    for i in range(2):
        write_image(folder / f"img{i}.png", rng.integers(0, 256, (32, 40, 3), dtype=np.uint8))
    return str(folder)


def _layout(model: torch.nn.Module) -> dict[str, tuple]:
    """Every parameter's and buffer's identity, storage and strides."""
    return {n: (id(t), t.data_ptr(), t.stride()) for n, t in [*model.named_parameters(), *model.named_buffers()]}


def _in(model: torch.nn.Module, fmt: torch.memory_format) -> torch.nn.Module:
    return model.to(memory_format=fmt)  # type: ignore[call-overload]  # documented; not in the stubs


def _run(model: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model(x)


@pytest.mark.parametrize("fmt", list(FORMATS))
@pytest.mark.parametrize("channels_last", [True, False])
def test_evaluate_leaves_the_model_as_it_was(quantized, images, fmt, channels_last):
    model = _in(quantized, FORMATS[fmt])
    model.train()
    before = _layout(model)
    evaluate(model, images, 4, progress=False, channels_last=channels_last)
    assert _layout(model) == before and model.training


def test_evaluate_runs_in_a_defined_format(quantized, images):
    """Scores do not depend on the format the model is kept in."""
    scores = [evaluate(_in(quantized, f), images, 4, progress=False)[0].to_dict()["images"] for f in FORMATS.values()]
    for s in scores:
        for row in s:
            row.pop("seconds")
    assert scores[0] == scores[1]


def test_memory_format_restores_each_tensor_and_keeps_changes():
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.Linear(4, 2))
    model.register_buffer("kernel", torch.rand(2, 3, 4, 5))
    before = _layout(model)
    with memory_format(model, torch.channels_last):
        assert model[0].weight.is_contiguous(memory_format=torch.channels_last)
        assert model.kernel.is_contiguous(memory_format=torch.channels_last)
        with torch.no_grad():
            model[0].weight.add_(1.0)
        changed = model[0].weight.clone()
    assert _layout(model) == before
    assert torch.equal(model[0].weight, changed)


@pytest.mark.parametrize("fmt", list(FORMATS))
def test_reload_after_an_evaluation_is_bit_identical(quantized, images, tmp_path, fmt):
    """Saved tensors are contiguous; a reloaded model run in the saved model's format gives its outputs bit for
    bit, also after the saved model was evaluated."""
    from safetensors.torch import load_file

    model = _in(quantized, FORMATS[fmt])
    evaluate(model, images, 4, progress=False)
    srq.save(model, tmp_path / "run")
    assert all(t.is_contiguous() for t in load_file(str(tmp_path / "run" / "model.safetensors")).values())
    again = srq.load(tmp_path / "run")
    assert all(p.is_contiguous() for p in again.parameters())  # a reloaded model is in the contiguous format
    x = torch.rand(1, 3, 24, 20)
    if fmt == "contiguous":  # evaluate() left it so: as reloaded
        assert torch.equal(_run(model, x), _run(again, x))
    for run_in in FORMATS.values():  # same format: same outputs
        assert torch.equal(_run(_in(model, run_in), x), _run(_in(again, run_in), x))
