"""Block discovery for feature alignment and the distillation loss."""

from __future__ import annotations

import pytest
import torch

import srq
from srq.engine.distill import capture_outputs, distill_loss, find_blocks


@pytest.mark.parametrize("name, scale, expected", [
    ("imdn", 4, [f"IMDB{i}" for i in range(1, 7)]),
    ("rfdn", 4, [f"B{i}" for i in range(1, 5)]),
    ("rlfn", 4, [f"block_{i}" for i in range(1, 7)]),
    ("pan", 4, [f"SCPA_trunk.{i}" for i in range(16)]),
    ("srq_tiny", 4, [f"body.{i}" for i in range(4)]),
])
def test_find_blocks_on_zoo_models(name, scale, expected):
    assert find_blocks(srq.create_model(name, scale, wrap=False)) == expected


def test_distill_loss_is_l1_plus_weighted_feature_mse():
    out_q, out_fp = torch.zeros(1, 3, 2, 2), torch.full((1, 3, 2, 2), 0.5)
    fq, ffp = {"b": torch.ones(1, 4)}, {"b": torch.zeros(1, 4)}
    assert distill_loss(out_q, out_fp, fq, ffp, 10.0).item() == pytest.approx(0.5 + 10 * 1.0)
    assert distill_loss(out_q, out_fp, fq, ffp, 0.0).item() == pytest.approx(0.5)


def test_capture_outputs_removes_its_hooks():
    net = srq.create_model("srq_tiny", 4, wrap=False)
    with capture_outputs(net, ["body.0"]) as store:
        net(torch.rand(1, 3, 8, 8))
        assert store["body.0"].shape == (1, 32, 8, 8)
    assert not net.body[0]._forward_hooks
