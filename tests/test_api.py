"""srq.quantize / save / load on the embedded model: recipes run end to end, reload is bit-identical."""

from __future__ import annotations

import json

import pytest
import torch

import srq
from srq.errors import SrqError


@pytest.fixture(scope="module")
def calib() -> torch.Tensor:
    from srq.data.samples import sample_images

    torch.manual_seed(0)
    crops = []
    for _, img in sample_images("train")[:4]:
        t = torch.from_numpy(img[:48, :48].copy()).permute(2, 0, 1).float() / 255
        crops.append(t)
    return torch.stack(crops)


@pytest.mark.parametrize("method", ["minmax", "percentile", "omse"])
def test_recipes_run_and_leave_fp_model_alone(calib, method):
    fp = srq.create_model("srq_tiny", 4, "official")
    before = {k: v.clone() for k, v in fp.state_dict().items()}
    q = srq.quantize(fp, srq.methods.METHODS[method](w_bits=8, a_bits=8), calib, progress=False)
    assert all(torch.equal(before[k], v) for k, v in fp.state_dict().items())
    x = calib[:1, :, :20, :20]
    with torch.no_grad():
        err = (q(x) - fp(x)).abs().max().item()
    assert 0 < err < 0.05  # quantized, and close at 8 bit


def test_finetune_lowers_the_distillation_loss(calib):
    fp = srq.create_model("srq_tiny", 4, "official")
    plain = srq.quantize(fp, srq.methods.MinMax(w_bits=3, a_bits=3), calib, progress=False)
    tuned = srq.quantize(fp, srq.methods.MinMax(w_bits=3, a_bits=3, fine_tune=True), calib, progress=False)
    with torch.no_grad():
        target = fp(calib)
        assert (tuned(calib) - target).abs().mean() < (plain(calib) - target).abs().mean()


def test_save_load_bit_identical(tmp_path, calib):
    fp = srq.create_model("srq_tiny", 4, "official")
    q = srq.quantize(fp, srq.methods.MinMax(w_bits=4, a_bits=4), calib, progress=False)
    srq.save(q, tmp_path / "run")
    meta = json.loads((tmp_path / "run" / "srq.json").read_text())
    assert meta["architecture"]["model"] == "srq_tiny" and meta["recipe"]["method"] == "minmax"
    assert {e["role"] for e in meta["placement"]} == {"first", "last", "body"}
    q2 = srq.load(tmp_path / "run")
    x = torch.rand(1, 3, 17, 23)
    with torch.no_grad():
        assert torch.equal(q(x), q2(x))


def test_load_rejects_non_run_folder(tmp_path):
    with pytest.raises(SrqError, match="not a saved srq model"):
        srq.load(tmp_path)
