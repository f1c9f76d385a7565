"""AdaBM: image complexity, straight-through offsets, and the recipe end to end on the embedded model."""

from __future__ import annotations

import pytest
import torch

import srq
from srq.errors import SrqError
from srq.methods import AdaBM, MinMax
from srq.methods.adabm import BitMapper, image_complexity


def test_image_complexity_hand_values():
    flat = torch.full((1, 3, 6, 6), 0.5)
    assert image_complexity(flat).item() == 0.0
    step = torch.zeros(1, 3, 4, 4)
    step[..., 2:] = 1.0  # vertical edge between columns 1 and 2, grey value 1 (weights sum to 1)
    # normalised Sobel x: 1/8·(1 + 2 + 1) = 0.5 at columns 1 and 2, 0 elsewhere; y: 0 → mean |g| over 2×16
    assert image_complexity(step).item() == pytest.approx(1e3 * (0.5 * 8) / 32)


def test_offsets_are_hard_forward_soft_backward():
    m = torch.tensor([0.2, -0.7, 3.0], requires_grad=True)
    out = BitMapper.layer_offsets(m)
    assert out.tolist() == [0.0, -1.0, 1.0]
    out.sum().backward()
    assert torch.allclose(m.grad, 1 - torch.tanh(m.detach()) ** 2)


@pytest.fixture(scope="module")
def calib() -> torch.Tensor:
    from srq.data.samples import sample_images

    return torch.stack([torch.from_numpy(img[:48, :48].copy()).permute(2, 0, 1).float() / 255
                        for _, img in sample_images("train")[:4]])


def test_adabm_runs_adapts_and_beats_minmax(calib):
    fp = srq.create_model("srq_tiny", 4, "official")
    q = srq.quantize(fp, AdaBM(w_bits=3, a_bits=3, epochs=3, mp_weights=True), calib, progress=False)
    with torch.no_grad():
        target = fp(calib)
        err = (q(calib) - target).abs().mean()
        plain = srq.quantize(fp, MinMax(w_bits=3, a_bits=3), calib, progress=False)
        assert err < (plain(calib) - target).abs().mean()
    report = srq.api.current_report(q)
    assert report["images_seen"] == 4 and sum(report["image_offset_counts"].values()) == 4
    assert {r["bits"] for r in report["a"]["layers"]} <= {2, 3, 4} and "w" in report
    # the quantizers are left without per-batch extra bits after a forward pass
    assert all(qq.extra_bits is None for _, qq in srq.quant.quantizers(q))
    with pytest.raises(SrqError, match="cannot be saved"):
        srq.save(q, "unused")


def test_activation_init_is_selectable_and_recorded():
    """AdaBM's own init is EMA min/max; ``a_init`` swaps it (ablation) and the recipe file says which."""
    from srq.methods.base import apply_params

    assert AdaBM().config().a_observer == "ema_minmax"
    recipe = apply_params(AdaBM(), ["a_init=percentile"])
    assert recipe.config().a_observer == "percentile" and recipe.to_dict()["a_observer"] == "percentile"
    with pytest.raises(SrqError, match="a_init must be one of"):
        apply_params(AdaBM(), ["a_init=median"])


def test_weight_bit_average_is_over_parameters_and_penalised():
    """AdaBM*: the weight-bit average is weighted by parameters and the mapping loss holds it at the base."""
    from srq.methods.bit_slots import BitSlot
    from srq.quant.quantizer import Quantizer

    weight = [BitSlot("small", "w", Quantizer(4, mode="affine")), BitSlot("big", "w", Quantizer(4, mode="affine"))]
    mapper = BitMapper([], weight, weight_sizes=[10, 30])
    with torch.no_grad():
        mapper.weight_m.copy_(torch.tensor([1.0, 0.0]))  # +1 bit on the small layer only
    mapper.apply(torch.rand(1, 3, 8, 8))
    assert mapper.last_average_weight_bits.item() == pytest.approx(4 + 10 / 40)
    assert mapper.budget_excess(a_base=4, w_base=5).item() == 0.0  # under budget: no penalty
    excess = mapper.budget_excess(a_base=4, w_base=4)
    assert excess.item() == pytest.approx(0.25)
    excess.backward()
    # d/dm_k of (4 + Σ n_k·tanh(m_k)/Σn − 4) through the straight-through offsets: n_k/Σn·(1 − tanh²m_k)
    expected = torch.tensor([10 / 40, 30 / 40]) * (1 - torch.tanh(torch.tensor([1.0, 0.0])) ** 2)
    assert torch.allclose(mapper.weight_m.grad, expected)
    mapper.clear()
