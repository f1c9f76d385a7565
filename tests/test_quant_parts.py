"""The quantizer's parts one by one: grids, rounding, bit widths, normalisers, and the registries that name them."""

from __future__ import annotations

import math

import pytest
import torch

from srq.quant import Quantizer
from srq.quant.bitwidth import BITWIDTHS, FixedBits, OffsetBits
from srq.quant.grids import GRIDS, AffineGrid, BinaryGrid, SymmetricGrid, UniformGrid
from srq.quant.grids.base import Grid
from srq.quant.normalisers import NORMALISERS, CappedRangeNorm, RangeNorm, StdNorm
from srq.quant.registry import Registry
from srq.quant.rounding import ROUNDINGS, STE

# ---- registries ------------------------------------------------------------------------------------------


def test_registries_name_every_part():
    assert list(GRIDS) == ["uniform", "affine", "symmetric", "binary", "lsq", "lsq_3sigma", "lsq_range", "lsqplus",
                           "lsqplus_int", "pams", "dorefa", "dls", "dls_4sigma", "dls_minmax", "dls_mean_range",
                           "dls_mse", "rfa", "nu2u", "lsq_tanh", "rlq", "rbd", "rbd_act"]
    assert list(ROUNDINGS) == ["ste", "tanh"] and list(BITWIDTHS) == ["fixed", "offset"]
    assert list(NORMALISERS) == ["range", "std", "capped"]
    assert GRIDS["affine"] is AffineGrid and AffineGrid.name == "affine"


def test_registry_refuses_duplicates_and_names_the_choices():
    reg = Registry("widget")
    reg.register("a")(type("A", (), {}))
    with pytest.raises(ValueError, match="registered twice"):
        reg.register("a")(type("B", (), {}))
    with pytest.raises(ValueError, match="unknown widget 'b'; choose from a"):
        reg.get_class("b")


def test_a_new_grid_is_one_class_and_one_registration(monkeypatch):
    class HalfRange(UniformGrid):
        """Uniform grid over half the calibrated range (a toy estimator)."""

        def fit(self, lower, upper, bits=None):
            return super().fit(lower / 2, upper / 2, bits)

    monkeypatch.setitem(GRIDS, "half", HalfRange)
    monkeypatch.setattr(HalfRange, "name", "half", raising=False)
    q = Quantizer(2, mode="half")
    q.set_bounds(torch.tensor(-2.0), torch.tensor(4.0))
    assert q.mode == "half" and list(q.state_dict()) == ["lower", "upper", "initialized"]
    assert q(torch.tensor([-9.0, 0.1, 9.0])).tolist() == [-1.0, 0.0, 2.0]


def test_a_new_rounding_estimator_reaches_every_grid(monkeypatch):
    class Floor(STE):
        def __call__(self, z):
            return z + (torch.floor(z) - z).detach()

    monkeypatch.setitem(ROUNDINGS, "floor", Floor)
    x = torch.tensor([0.9, 1.6])
    q = Quantizer(4, mode="symmetric", rounding="floor")
    q.set_bounds(torch.tensor(-7.0), torch.tensor(7.0))
    x.requires_grad_(True)
    y = q(x)
    assert y.tolist() == [0.0, 1.0]
    y.sum().backward()
    assert x.grad.tolist() == [1.0, 1.0]


# ---- grids -------------------------------------------------------------------------------------------------

def _grad(fn, *tensors):
    tensors = [t.clone().requires_grad_(True) for t in tensors]
    y = fn(*tensors)
    y.sum().backward()
    return y.detach(), [t.grad for t in tensors]


def test_uniform_grid_is_eq1_with_the_eq8_bound_gradients():
    grid, x = UniformGrid(), torch.tensor([-3.0, -0.4, 0.3, 1.2, 5.0])
    a, b, n = torch.tensor(-1.0), torch.tensor(2.0), 2  # step s = 1: levels −1, 0, 1, 2
    y, (gx, ga, gb) = _grad(lambda x, a, b: grid.quantize(x, {"lower": a, "upper": b}, n, STE()), x, a, b)
    assert y.tolist() == [-1.0, 0.0, 0.0, 1.0, 2.0]
    assert gx.tolist() == [0.0, 1.0, 1.0, 1.0, 0.0]  # STE inside, zero where clipped
    z = (x.clamp(-1, 2) + 1)  # grid coordinate (x̂ − a)/s
    r = (torch.round(z) - z)[1:4]  # rounding residuals of the inner values
    # clipped below: 1; inside: −(round(z) − z)/(2ⁿ − 1)
    assert ga.item() == pytest.approx(1.0 - r.sum().item() / 3)
    assert gb.item() == pytest.approx(1.0 + r.sum().item() / 3)
    assert torch.equal(grid.quantize_fwd(x, {"lower": a, "upper": b}, n), y)


def test_affine_grid_puts_zero_on_the_grid_with_an_integer_zero_point():
    grid, a, b = AffineGrid(), torch.tensor(-0.3), torch.tensor(1.0)
    s = 1.3 / 3  # zero point round(0.3 / s) = 1: levels −s, 0, s, 2s
    y = grid.quantize(torch.tensor([-5.0, -0.3, 0.0, 0.5, 5.0]), {"lower": a, "upper": b}, 2, STE())
    torch.testing.assert_close(y, torch.tensor([-s, -s, 0.0, s, 2 * s]))
    assert y[2].item() == 0.0
    p = {"lower": torch.tensor(0.5), "upper": torch.tensor(-0.5)}
    grid.project_(p)
    assert p["lower"].item() == 0.0 and p["upper"].item() == pytest.approx(1e-8)


def test_affine_grid_snaps_a_normaliser_offset_to_its_step():
    grid, p = AffineGrid(), {"lower": torch.tensor(0.0), "upper": torch.tensor(1.0)}
    offset = torch.tensor([0.26, -0.9], requires_grad=True)
    snapped = grid.snap(offset, torch.tensor(3.0), p, 2)  # step 3·1/3 = 1
    assert snapped.tolist() == [0.0, -1.0]
    snapped.sum().backward()
    assert offset.grad.tolist() == [1.0, 1.0]
    assert UniformGrid().snap(offset, torch.tensor(3.0), p, 2) is offset


def test_symmetric_and_binary_grids():
    p = {"alpha": torch.tensor(1.5)}
    y, (gx, ga) = _grad(lambda x, a: SymmetricGrid().quantize(x, {"alpha": a}, 3, STE()),
                        torch.tensor([0.7, -9.0, 0.0]), p["alpha"])
    assert y.tolist() == [0.5, -1.5, 0.0] and gx.tolist() == [1.0, 0.0, 1.0]
    assert ga.item() == pytest.approx((0.5 - 0.7) / 1.5 - 1.0)  # inside: (round(z) − z)·s/α; clipped: −1
    y, (gx, ga) = _grad(lambda x, a: BinaryGrid().quantize(x, {"alpha": a}, 1, STE()),
                        torch.tensor([0.2, -3.0, 0.0]), p["alpha"])
    assert y.tolist() == [1.5, -1.5, 1.5] and gx.tolist() == [1.0, 0.0, 1.0] and ga.item() == 1.0
    assert BinaryGrid.observer == "meanabs" and Grid.observer is None
    assert SymmetricGrid().fit(torch.tensor([-2.0]), torch.tensor([1.0]))["alpha"].tolist() == [2.0]


# ---- rounding ------------------------------------------------------------------------------------------------

def test_ste_rounds_forward_and_passes_the_gradient_unchanged():
    z = torch.tensor([-1.5, -0.4, 0.5, 2.7], requires_grad=True)
    y = STE()(z)
    assert y.tolist() == torch.round(z.detach()).tolist()
    (y * torch.tensor([1.0, 2.0, 3.0, 4.0])).sum().backward()
    assert z.grad.tolist() == [1.0, 2.0, 3.0, 4.0]


# ---- bit width -------------------------------------------------------------------------------------------------

def test_fixed_and_offset_bit_widths():
    assert FixedBits(4).value({}) == 4 and FixedBits.params == ()
    part = OffsetBits(3, -4, 9)
    assert part.range == (-2, 5) and part.params == ("bit_offset",)
    s = torch.tensor(7.0)
    assert (part.value({"bit_offset": s}) == 10).item()
    part.project_({"bit_offset": s})
    assert s.item() == 5.0
    with pytest.raises(ValueError, match="contain 0"):
        OffsetBits(3, 1, 2)


def test_bit_offset_gradient_is_the_derivative_of_eq1_in_n():
    q = Quantizer(3)
    q.set_bounds(torch.tensor(-1.0), torch.tensor(2.0))
    s = q.enable_bit_offset()
    x = torch.tensor([-0.55, 0.1, 0.8, 1.3])
    q(x).sum().backward()
    n, width = 3.0, 3.0
    levels = 2**n - 1
    z = (x + 1) / (width / levels)
    ds_dn = -width * 2**n * math.log(2) / levels**2  # d(step)/dn
    assert s.grad.item() == pytest.approx(float(((torch.round(z) - z) * ds_dn).sum()), rel=1e-5)


def test_per_sample_extra_bits_quantize_each_sample_at_its_own_width():
    x = torch.randn(2, 3, 4, 4, generator=torch.Generator().manual_seed(0))
    q, wide = Quantizer(3, mode="affine"), Quantizer(4, mode="affine")
    for m in (q, wide):
        m.set_bounds(torch.tensor(-1.0), torch.tensor(1.5))
    extra = torch.tensor([0.0, 1.0], requires_grad=True)
    q.extra_bits = extra
    y = q(x)
    assert torch.equal(y[1], wide(x[1:])[0])
    q.extra_bits = None
    assert torch.equal(y[0], q(x[:1])[0])
    y.sum().backward()
    assert extra.grad is not None and extra.grad[0].item() != 0.0


def test_bit_width_changes_keep_the_state_dict_keys():
    q = Quantizer(4, mode="affine")
    assert q.enable_bit_offset() is q.bit_offset and "bit_offset" in q.state_dict()
    q.set_bits(5)
    assert q.bit_offset is None and q.bits == 5 and list(q.state_dict()) == ["lower", "upper", "initialized"]
    assert Quantizer(4, bit_width="offset").bit_offset is not None
    with pytest.raises(ValueError, match="uniform/affine"):
        Quantizer(4, mode="symmetric", bit_width="offset")


# ---- normalisers -------------------------------------------------------------------------------------------------

X = torch.randn(2, 3, 6, 7, generator=torch.Generator().manual_seed(1)) * 3 + 1


def test_range_normaliser_maps_each_sample_channel_to_0_1():
    m, s = RangeNorm(axis=1).stats(X, {})
    z = (X - m) / s
    assert m.shape == s.shape == (2, 3, 1, 1)
    torch.testing.assert_close(z.amin((2, 3)), torch.zeros(2, 3))
    torch.testing.assert_close(z.amax((2, 3)), torch.ones(2, 3))


def test_std_normaliser_gives_zero_mean_unit_std():
    m, s = StdNorm(axis=1).stats(X, {})
    z = (X - m) / s
    torch.testing.assert_close(z.mean((2, 3)), torch.zeros(2, 3), atol=1e-5, rtol=0)
    torch.testing.assert_close(z.std((2, 3), unbiased=False), torch.ones(2, 3), atol=1e-4, rtol=0)


def test_windowed_range_covers_each_window_and_pooled_inputs_normalise_over_channels():
    m, s = RangeNorm(axis=1, window=3).stats(X, {})
    first = X[..., :3, :3].amin((2, 3), keepdim=True).expand(2, 3, 3, 3)
    assert m.shape == X.shape and torch.equal(m[..., :3, :3], first)
    pooled = X.amax((2, 3), keepdim=True)
    m, _ = RangeNorm(axis=1, window=3).stats(pooled, {})
    assert m.shape == (2, 1, 1, 1)


def test_capped_normaliser_clamps_to_the_calibrated_extremes():
    norm = CappedRangeNorm(axis=1, channels=3)
    b = norm.init()
    norm.observe(X[:1] * 0.5, b)
    low, high = (X[:1] * 0.5).amin((0, 2, 3)), (X[:1] * 0.5).amax((0, 2, 3))
    assert torch.equal(b["dan_low"], low) and torch.equal(b["dan_high"], high)
    m, s = norm.stats(X, b)
    assert torch.equal(m.flatten(1), X.amin((2, 3)).clamp(low, high))
    norm.start_calibration(b)
    assert b["dan_low"].isinf().all() and b["dan_high"].isinf().all()


@pytest.mark.parametrize("dan", ["range", "std", "capped"])
def test_dan_round_trip_is_within_half_a_normalised_step(dan):
    q = Quantizer(8, mode="affine", dan=dan, dan_channels=3)
    q.start_calibration()
    q(X)
    q.finish_calibration()
    m, s = q.normaliser.stats(X, {"dan_low": getattr(q, "dan_low", None), "dan_high": getattr(q, "dan_high", None)})
    lower, upper = q.bounds()
    step = s * (upper.clamp(min=0) - lower.clamp(max=0)) / 255
    assert ((q(X) - X).abs() <= step * 0.5 + 1e-5).all()
