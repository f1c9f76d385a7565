"""Bring your own model: docs/byo_model.md runs as written; srq.save / srq.load(folder, model=...) on a model
that is not in the zoo, with one-line errors for the wrong architecture; in-place ops named in fine-tuning."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import srq
from srq.engine.distill import FinetuneConfig
from srq.errors import SrqError

DOCS = Path(__file__).resolve().parents[1] / "docs"
sys.path.insert(0, str(DOCS / "examples"))

from my_sr_net import MySRNet  # noqa: E402


def _code_blocks(markdown: str) -> list[str]:
    return re.findall(r"^```python\n(.*?)^```", markdown, flags=re.S | re.M)


def test_tutorial_runs_and_reloads_bit_identically(capsys):
    blocks = _code_blocks((DOCS / "byo_model.md").read_text())
    assert len(blocks) >= 5
    scope: dict = {}
    exec(compile("\n".join(blocks), str(DOCS / "byo_model.md"), "exec"), scope)
    assert set(scope["loaded"]) == {"minmax", "percentile_ft", "gba"}
    for name, model in scope["quantized"].items():
        with torch.no_grad():
            assert torch.equal(scope["loaded"][name](scope["x"]), model(scope["x"]))
        meta = json.loads((scope["runs"] / name / "srq.json").read_text())
        assert meta["architecture"] is None and meta["user_model"]["class"] == "my_sr_net.MySRNet"
    assert all(s.psnr > 15 for s in scope["scores"].values())
    out = capsys.readouterr().out
    assert "in float" in out and "LayerNorm" in out and "PSNR" in out


@pytest.fixture(scope="module")
def saved(tmp_path_factory) -> tuple[Path, nn.Module]:
    torch.manual_seed(0)
    calib = torch.rand(4, 3, 16, 16)
    q = srq.quantize(MySRNet(), srq.methods.MinMax(w_bits=4, a_bits=4), calib, progress=False)
    folder = tmp_path_factory.mktemp("byo") / "run"
    srq.save(q, folder)
    return folder, q


def test_load_without_model_says_to_pass_one(saved):
    with pytest.raises(SrqError, match=r"your own architecture \(my_sr_net\.MySRNet\).*model=MySRNet\(") as e:
        srq.load(saved[0])
    assert "\n" not in str(e.value)


def test_load_leaves_the_model_passed_float(saved):
    fp = MySRNet()
    srq.load(saved[0], model=fp)
    assert type(fp.head) is nn.Conv2d and not hasattr(fp, "srq_quant_config")


@pytest.mark.parametrize("other, says", [
    (lambda: MySRNet(channels=8), r"shapes differ \d+ \(blocks\.0\."),
    (lambda: MySRNet(blocks=3), r"keys not in the file \d+ \(blocks\.2\."),
    (lambda: nn.Sequential(nn.Conv2d(3, 48, 3, padding=1), nn.PixelShuffle(4)),
     r"keys not in the file \d+ \(0\.bias, 0\.input_quantizer\..*\); keys not in the model \d+ \(blocks\.0\."),
])
def test_load_refuses_another_architecture_in_one_line(saved, other, says):
    with pytest.raises(SrqError, match=f"not the architecture saved in .*my_sr_net.MySRNet.*{says}") as e:
        srq.load(saved[0], model=other())
    assert "\n" not in str(e.value)


def test_load_refuses_an_already_quantized_model(saved):
    with pytest.raises(SrqError, match="already quantized.*pass the float model of my_sr_net.MySRNet"):
        srq.load(saved[0], model=saved[1])


def test_fp_layer_reasons_are_saved(saved):
    meta = json.loads((saved[0] / "srq.json").read_text())
    reasons = {f["name"]: f["reason"] for f in meta["float_layers"]}
    assert reasons["blocks.0.norm.norm"] == "srq does not quantize this type; its parameters (weight, bias) stay float"
    assert "(temperature)" in reasons["blocks.1.attn"]
    assert meta["user_model"]["example_shape"] == [1, 3, 16, 16]


class _InPlace(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Conv2d(3, 8, 3, padding=1)
        self.b = nn.Conv2d(8, 8, 3, padding=1)
        self.c = nn.Conv2d(8, 3, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.relu(self.a(x))
        h += self.b(h)  # relu's backward needs h as it was
        return self.c(h)


def test_in_place_forward_fails_fine_tuning_in_one_line():
    torch.manual_seed(0)
    recipe = srq.methods.MinMax(w_bits=4, a_bits=4, fine_tune=True, finetune_config=FinetuneConfig(steps=1))
    says = r"the forward of `<model>` \(_InPlace\) modifies a tensor .* in place \(`\+=`\).*`h = h \+ x`"
    with pytest.raises(SrqError, match=says) as e:
        srq.quantize(_InPlace(), recipe, torch.rand(2, 3, 12, 12), progress=False)
    assert "\n" not in str(e.value)
