"""Observers of ``srq.quant.observers`` against numpy references."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from srq.quant.observers import (
    EMAMinMaxObserver,
    MeanAbsObserver,
    MinMaxObserver,
    OMSEObserver,
    PercentileObserver,
    make_observer,
)


def _batches(seed: int = 0, shape=(2, 4, 6, 6), n: int = 4) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    # the spread grows and shifts from batch to batch so running and smoothed values differ
    return [torch.randn(shape, generator=g) * (1 + i) + 0.3 * i for i in range(n)]


def _np_reduce(x: np.ndarray, axis: int | None, fn) -> np.ndarray:
    if axis is None:
        return fn(x)
    return fn(np.moveaxis(x, axis, 0).reshape(x.shape[axis], -1), axis=1)


# ---- MinMax / EMA -------------------------------------------------------------------------------------

@pytest.mark.parametrize("axis", [None, 0, 1])
def test_minmax_running_over_batches(axis):
    batches = _batches(1)
    obs = MinMaxObserver(channel_axis=axis)
    for x in batches:
        obs.observe(x)
    lo, hi = obs.bounds()
    stacked = np.stack([x.numpy() for x in batches])  # extra leading axis
    ref_lo = _np_reduce(np.moveaxis(stacked, 0, -1), axis, np.min)
    ref_hi = _np_reduce(np.moveaxis(stacked, 0, -1), axis, np.max)
    if axis is None:
        assert lo.shape == () and hi.shape == ()
    else:
        expected_shape = [1, 1, 1, 1]
        expected_shape[axis] = batches[0].shape[axis]
        assert list(lo.shape) == expected_shape
    np.testing.assert_allclose(lo.reshape(-1).numpy(), np.reshape(ref_lo, -1), rtol=0, atol=0)
    np.testing.assert_allclose(hi.reshape(-1).numpy(), np.reshape(ref_hi, -1), rtol=0, atol=0)


def test_minmax_conv_weight_per_output_channel_broadcasts():
    w = torch.randn(5, 3, 3, 3)
    obs = MinMaxObserver(channel_axis=0)
    obs.observe(w)
    lo, hi = obs.bounds()
    assert lo.shape == (5, 1, 1, 1)
    assert ((w >= lo) & (w <= hi)).all()
    np.testing.assert_array_equal(lo.reshape(-1).numpy(), w.reshape(5, -1).min(1).values.numpy())


@pytest.mark.parametrize("axis", [None, 0])
def test_ema_minmax_against_numpy(axis):
    batches = _batches(2)
    beta = 0.9
    obs = EMAMinMaxObserver(channel_axis=axis)
    assert obs.beta == beta  # GBA / AdaBM default
    ref_lo = ref_hi = None
    for x in batches:
        obs.observe(x)
        blo = _np_reduce(x.numpy().astype(np.float64), axis, np.min)
        bhi = _np_reduce(x.numpy().astype(np.float64), axis, np.max)
        if ref_lo is None:  # the first batch initialises
            ref_lo, ref_hi = blo, bhi
        else:
            ref_lo = beta * ref_lo + (1 - beta) * blo
            ref_hi = beta * ref_hi + (1 - beta) * bhi
    lo, hi = obs.bounds()
    np.testing.assert_allclose(lo.reshape(-1).numpy(), np.reshape(ref_lo, -1), rtol=1e-6)
    np.testing.assert_allclose(hi.reshape(-1).numpy(), np.reshape(ref_hi, -1), rtol=1e-6)
    # smoothed: strictly inside the running min/max once later batches are wider
    mm = MinMaxObserver(channel_axis=axis)
    for x in batches:
        mm.observe(x)
    assert (hi < mm.bounds()[1]).all() and (lo > mm.bounds()[0]).all()


def test_ema_single_batch_equals_minmax():
    x = torch.randn(3, 8)
    e, m = EMAMinMaxObserver(), MinMaxObserver()
    e.observe(x)
    m.observe(x)
    assert torch.equal(e.bounds()[0], m.bounds()[0]) and torch.equal(e.bounds()[1], m.bounds()[1])


def test_reset_and_no_data_error():
    for obs in (MinMaxObserver(), EMAMinMaxObserver(), PercentileObserver(), OMSEObserver(), MeanAbsObserver()):
        with pytest.raises(RuntimeError, match="no data"):
            obs.bounds()
        obs.observe(torch.randn(10))
        obs.bounds()
        obs.reset()
        with pytest.raises(RuntimeError, match="no data"):
            obs.bounds()


def test_observer_does_not_track_gradients():
    x = torch.randn(4, 4, requires_grad=True)
    obs = MinMaxObserver()
    obs.observe(x * 2)
    lo, hi = obs.bounds()
    assert not lo.requires_grad and not hi.requires_grad


# ---- Percentile -----------------------------------------------------------------------------------------

def test_percentile_against_numpy_within_one_bin():
    g = torch.Generator().manual_seed(3)
    batches = [torch.randn(4, 16, 32, 32, generator=g) for _ in range(4)]  # 262144 values
    data = torch.cat([b.flatten() for b in batches]).numpy().astype(np.float64)
    for low, high in [(0.1, 99.9), (1.0, 99.0), (10.0, 90.0), (25.0, 50.0)]:
        obs = PercentileObserver(low=low, high=high)
        for b in batches:
            obs.observe(b)
        lo, hi = obs.bounds()
        width = (data.max() - data.min()) / obs.nbins
        assert abs(float(lo) - np.percentile(data, low)) <= width
        assert abs(float(hi) - np.percentile(data, high)) <= width


def test_percentile_defaults_on_uniform_data():
    g = torch.Generator().manual_seed(4)
    x = torch.rand(200_000, generator=g) * 4 - 1
    obs = PercentileObserver()
    assert (obs.low, obs.high) == (0.01, 99.99)
    obs.observe(x)
    lo, hi = obs.bounds()
    d = x.double().numpy()
    width = (d.max() - d.min()) / obs.nbins
    assert abs(float(lo) - np.percentile(d, 0.01)) <= width
    assert abs(float(hi) - np.percentile(d, 99.99)) <= width


def test_percentile_when_range_widens_in_later_batches():
    g = torch.Generator().manual_seed(5)
    batches = [torch.rand(65536, generator=g) * 2 - 1,       # [−1, 1]
               torch.rand(65536, generator=g) * 6 - 3,       # wider on both sides: old counts re-binned
               torch.randn(65536, generator=g),              # inside
               torch.rand(65536, generator=g) * 10 - 2]      # wider on the top only
    data = torch.cat(batches).double().numpy()
    width = (data.max() - data.min()) / 2048
    obs = PercentileObserver(low=0.01, high=99.99)
    for b in batches:
        obs.observe(b)
    assert obs.hist.lo == pytest.approx(data.min()) and obs.hist.hi == pytest.approx(data.max())
    assert obs.hist.counts.sum() == data.size  # nothing lost when re-binning
    lo, hi = obs.bounds()
    assert abs(float(lo) - np.percentile(data, 0.01)) <= width
    assert abs(float(hi) - np.percentile(data, 99.99)) <= width
    for p in (0.1, 1, 10, 50, 90, 99, 99.9):  # the same histogram at other levels
        assert abs(obs.hist.quantile(p / 100) - np.percentile(data, p)) <= width, p


def test_percentile_validates_arguments():
    with pytest.raises(ValueError):
        PercentileObserver(low=50, high=10)
    with pytest.raises(ValueError):
        PercentileObserver(low=-1, high=99)


# ---- OMSE ------------------------------------------------------------------------------------------------

def _np_fake_quant(x, a, b, bits):
    n = 2**bits - 1
    s = np.maximum(b - a, 1e-8) / n
    return np.round((np.clip(x, a, b) - a) / s) * s + a


@pytest.mark.parametrize("axis", [None, 0])
@pytest.mark.parametrize("bits", [2, 4])
def test_omse_weights_brute_force(axis, bits):
    g = torch.Generator().manual_seed(6 + bits)
    # per-channel: some channels have outliers, some not, so the best ratio differs per channel
    w = torch.randn(6, 4, 3, 3, generator=g)
    w[0, 0, 0, 0] = 8.0
    w[2, 1, 1, 1] = -6.0
    obs = OMSEObserver(channel_axis=axis, bits=bits, steps=100, keep_tensor=True)
    obs.observe(w)
    lo, hi = obs.bounds()

    x = w.numpy().astype(np.float64)
    rows = x.reshape(1, -1) if axis is None else x.reshape(6, -1)
    ratios = np.linspace(0.01, 1.0, 100)
    ref_lo, ref_hi = [], []
    for row in rows:
        mn, mx = row.min(), row.max()
        errs = [np.mean((_np_fake_quant(row, mn * r, mx * r, bits) - row) ** 2) for r in ratios]
        r = ratios[int(np.argmin(errs))]
        ref_lo.append(mn * r)
        ref_hi.append(mx * r)
    np.testing.assert_allclose(lo.reshape(-1).numpy(), ref_lo, rtol=1e-5)
    np.testing.assert_allclose(hi.reshape(-1).numpy(), ref_hi, rtol=1e-5)
    if axis is not None:
        assert lo.shape == (6, 1, 1, 1)
        ratio = hi.reshape(-1) / torch.from_numpy(rows.max(1)).float()
        assert len(set(np.round(ratio.numpy(), 2).tolist())) > 1  # one ratio per channel, not one for all


def test_omse_histogram_clips_heavy_tails():
    # Symmetric range (x and −x), so the grid is symmetric around 0 and the error of the bulk near 0 shrinks
    # steadily with r. (With one-sided outliers the common ratio r·min, r·max can land on any r: the bulk's
    # error then depends on where the nearest grid level falls relative to 0, not on the tail.)
    rng = np.random.default_rng(7)
    obs = OMSEObserver(bits=4)
    data = []
    for _ in range(3):
        x = torch.from_numpy(rng.standard_t(2.0, size=15_000)).float()
        x = torch.cat([x, -x])
        data.append(x)
        obs.observe(x)
    lo, hi = obs.bounds()
    allx = torch.cat(data)
    ratio = float(hi / allx.max())
    assert ratio < 0.5
    assert float(lo / allx.min()) == pytest.approx(ratio)


@pytest.mark.parametrize("bits", [2, 4])
def test_omse_histogram_on_uniform_data_keeps_nearly_full_range(bits):
    # For U(−1, 1), MSE(r) = r³·(2/(2ⁿ−1))²/12 + (1 − r)³/3, minimised at r = (2ⁿ − 1)/2ⁿ:
    # 0.75 at 2 bits, 0.9375 at 4 bits — "≈ 1" up to the clipping an n-bit grid can afford.
    g = torch.Generator().manual_seed(8)
    x = torch.rand(200_000, generator=g) * 2 - 1
    obs = OMSEObserver(bits=bits)
    obs.observe(x)
    lo, hi = obs.bounds()
    r = float(hi / x.max())
    assert r == pytest.approx((2**bits - 1) / 2**bits, abs=0.015)
    assert float(lo / x.min()) == pytest.approx(r)


def test_omse_histogram_no_warnings():
    obs = OMSEObserver(bits=4)
    obs.observe(torch.randn(1000))
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        obs.bounds()


# ---- MeanAbs ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("axis", [None, 0])
def test_meanabs_over_batches(axis):
    batches = _batches(9, shape=(3, 2, 4, 4), n=3)
    obs = MeanAbsObserver(channel_axis=axis)
    for b in batches:
        obs.observe(b)
    lo, hi = obs.bounds()
    stacked = np.abs(np.concatenate([b.numpy() for b in batches], axis=1))  # same channels on axis 0
    ref = stacked.mean() if axis is None else stacked.reshape(3, -1).mean(1)
    np.testing.assert_allclose(hi.reshape(-1).numpy(), np.reshape(ref, -1), rtol=1e-5)
    torch.testing.assert_close(lo, -hi)


def test_meanabs_is_least_squares_binary_scale():
    # α = mean|x| minimises ‖x − sign(x)·α‖²
    x = torch.randn(5000, dtype=torch.float64)
    obs = MeanAbsObserver()
    obs.observe(x)
    alpha = float(obs.bounds()[1])
    sign = torch.where(x >= 0, 1.0, -1.0).double()
    err = lambda a: float(((x - sign * a) ** 2).sum())  # noqa: E731
    assert err(alpha) < err(alpha * 1.01) and err(alpha) < err(alpha * 0.99)


def test_make_observer():
    assert isinstance(make_observer("ema_minmax", 0), EMAMinMaxObserver)
    assert make_observer("omse", None, bits=3).bits == 3
    with pytest.raises(ValueError, match="unknown observer"):
        make_observer("nope")


def test_density_dual_clip_trims_the_sparser_tail_first():
    from srq.quant.observers import density_dual_clip

    counts = torch.tensor([1.0, 4.0, 40.0, 40.0, 10.0, 5.0])  # 100 values over [0, 6), bins of width 1
    # clip ≥ 6 %: drop bin 0 (1 < 5), bin 1 (4 < 5): 5 % so far; then bin 5 (5 < 40): 10 % clipped
    assert density_dual_clip(counts, 0.0, 6.0, 0.06) == (2.0, 5.0)
    assert density_dual_clip(counts, 0.0, 6.0, 0.0) == (0.0, 6.0)
    assert density_dual_clip(torch.tensor([3.0, 3.0]), 0.0, 2.0, 0.4) == (0.0, 1.0)  # ties trim the top


def test_dbdc_observer_averages_batches():
    from srq.quant.observers import DBDCObserver

    obs = DBDCObserver(clip_fraction=0.0, bins=16)
    obs.observe(torch.tensor([0.0, 1.0, 2.0]))
    obs.observe(torch.tensor([-2.0, 0.0, 4.0]))
    lo, hi = obs.bounds()
    assert lo.item() == pytest.approx(-1.0) and hi.item() == pytest.approx(3.0)


def test_omse_recalibration_after_set_bits_searches_at_the_new_width():
    from srq.quant import Quantizer

    torch.manual_seed(0)
    w = torch.randn(8, 16) * torch.linspace(0.1, 2, 8)[:, None]

    def calibrated(q: Quantizer) -> Quantizer:
        q.start_calibration()
        q(w)
        q.finish_calibration()
        return q

    def make(bits: int) -> Quantizer:
        return Quantizer(bits, mode="affine", channel_axis=0, num_channels=8, observer="omse",
                         observer_kwargs={"bits": bits, "keep_tensor": True})

    moved = calibrated(make(4))
    moved.set_bits(2)
    calibrated(moved)
    fresh = calibrated(make(2))
    assert torch.equal(moved.bounds()[0], fresh.bounds()[0]) and torch.equal(moved.bounds()[1], fresh.bounds()[1])
    assert not torch.equal(moved.bounds()[1], calibrated(make(4)).bounds()[1])
