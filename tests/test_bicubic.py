"""MATLAB-exact bicubic: hand-checked cases, a naive reference, and MATLAB's own LR images."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from srq.data.bicubic import imresize, imresize_uint8, resize_weights
from srq.data.io import mod_crop, read_image


# --- a deliberately naive, loop-based port of MATLAB's contributions(), independent of the module ---

def _cubic(t: float) -> float:
    t = abs(t)
    if t <= 1:
        return 1.5 * t**3 - 2.5 * t**2 + 1
    if t <= 2:
        return -0.5 * t**3 + 2.5 * t**2 - 4 * t + 2
    return 0.0


def _naive_1d(signal: np.ndarray, out_len: int, scale: float, antialias: bool = True) -> np.ndarray:
    n = len(signal)
    shrink = scale < 1 and antialias
    width = 4 / scale if shrink else 4
    out = np.zeros(out_len)
    for x in range(1, out_len + 1):
        u = x / scale + 0.5 * (1 - 1 / scale)
        left = math.floor(u - width / 2)
        weights, values = [], []
        for j in range(left, left + math.ceil(width) + 2):
            weights.append(scale * _cubic(scale * (u - j)) if shrink else _cubic(u - j))
            k = j  # symmetric mirroring, 1-based: 0 -> 1, -1 -> 2, n + 1 -> n, ...
            while k < 1 or k > n:
                k = 1 - k if k < 1 else 2 * n + 1 - k
            values.append(signal[k - 1])
        out[x - 1] = np.dot(weights, values) / sum(weights)
    return out


def _naive_2d(img: np.ndarray, scale: float, antialias: bool = True) -> np.ndarray:
    """(H, W) float64 -> (ceil(sH), ceil(sW)), rows first."""
    h, w = img.shape
    oh, ow = math.ceil(scale * h), math.ceil(scale * w)
    tmp = np.stack([_naive_1d(img[:, c], oh, scale, antialias) for c in range(w)], axis=1)
    return np.stack([_naive_1d(tmp[r], ow, scale, antialias) for r in range(oh)], axis=0)


# --- hand-checkable cases ---

def test_upscale_x2_weights_by_hand():
    # x2: u = x/2 + 1/4. Output 1 (u = 0.75) sees input 1-based indices -1..2 at distances 1.75, 0.75,
    # 0.25, 1.25 -> cubic weights -0.0234375, 0.2265625, 0.8671875, -0.0703125; indices -1, 0 mirror to
    # 2, 1. Output 2 (u = 1.25) sees 0..3 at distances 1.25, 0.25, 0.75, 1.75.
    a, b, c, d = 1.0, 2.0, 4.0, 8.0
    row = torch.tensor([a, b, c, d], dtype=torch.float64)
    img = row.expand(4, 4).clone()[None]  # (1, 4, 4), every row [a, b, c, d]
    out = imresize(img, scale=2)
    assert out.shape == (1, 8, 8)
    first = (0.2265625 + 0.8671875) * a + (-0.0234375 - 0.0703125) * b
    second = (-0.0703125 + 0.8671875) * a + 0.2265625 * b - 0.0234375 * c
    torch.testing.assert_close(out[0, :, 0], torch.full((8,), first, dtype=torch.float64))
    torch.testing.assert_close(out[0, :, 1], torch.full((8,), second, dtype=torch.float64))
    # The right border mirrors the left one.
    last = (0.2265625 + 0.8671875) * d + (-0.0234375 - 0.0703125) * c
    torch.testing.assert_close(out[0, 0, 7].item(), last)


def test_weight_rows_sum_to_one():
    for n, m, s in [(10, 20, 2.0), (12, 6, 0.5), (12, 4, 1 / 3), (7, 5, 5 / 7)]:
        w = resize_weights(n, m, s)
        assert w.shape == (m, n)
        np.testing.assert_allclose(w.sum(axis=1), 1.0, atol=1e-12)


@pytest.mark.parametrize("scale", [2, 3, 0.5, 1 / 3, 0.25, 0.7])
def test_constant_stays_constant(scale):
    x = torch.full((2, 3, 13, 17), 0.37, dtype=torch.float64)
    y = imresize(x, scale=scale)
    assert y.shape == (2, 3, math.ceil(scale * 13), math.ceil(scale * 17))
    torch.testing.assert_close(y, torch.full_like(y, 0.37))


@pytest.mark.parametrize("scale", [2, 4, 0.5, 0.25])
def test_ramp_stays_linear_inside(scale):
    # Cubic convolution reproduces linear functions; away from the mirrored borders, output pixel x
    # (1-based) of a ramp v(j) = j holds its sample position u = x/scale + (1 - 1/scale)/2.
    n = 64
    ramp = torch.arange(1, n + 1, dtype=torch.float64).expand(1, 4, n)
    out = imresize(ramp, scale=scale)[0, 0]
    x = torch.arange(1, len(out) + 1, dtype=torch.float64)
    u = x / scale + 0.5 * (1 - 1 / scale)
    margin = 3 / min(scale, 1.0)
    inside = (u > margin) & (u < n + 1 - margin)
    assert inside.sum() > len(out) // 2
    torch.testing.assert_close(out[inside], u[inside])


@pytest.mark.parametrize("scale,antialias", [(2, True), (3, True), (0.5, True), (1 / 3, True), (0.25, True),
                                             (0.6, True), (0.5, False)])
def test_matches_naive_reference(scale, antialias):
    rng = np.random.default_rng(0)
    img = rng.random((9, 14))
    expected = _naive_2d(img, scale, antialias)
    got = imresize(torch.from_numpy(img)[None, None], scale=scale, antialias=antialias)[0, 0].numpy()
    np.testing.assert_allclose(got, expected, atol=1e-12)


def test_banded_matches_dense_on_large_sizes():
    x = torch.rand(1, 2, 300, 90, dtype=torch.float64)
    for scale in (3.5, 0.3):
        y = imresize(x, scale=scale)
        dense = torch.from_numpy(resize_weights(300, y.shape[-2], scale)) @ x
        dense = dense @ torch.from_numpy(resize_weights(90, y.shape[-1], scale)).T
        torch.testing.assert_close(y, dense)


def test_size_argument_layouts_and_dtypes():
    x = torch.rand(3, 10, 12)
    y = imresize(x, size=(5, 24))
    assert y.shape == (3, 5, 24) and y.dtype == torch.float32
    # size gives per-dimension scales out/in, like MATLAB
    torch.testing.assert_close(y, imresize(x, scale=(0.5, 2.0)))
    assert imresize(x.half(), scale=2).dtype == torch.float16
    assert imresize(x, scale=1) is not None and torch.equal(imresize(x, scale=1), x)
    with pytest.raises(ValueError):
        imresize(x, scale=2, size=(3, 3))
    with pytest.raises(ValueError):
        imresize(x)
    with pytest.raises(TypeError):
        imresize(x.to(torch.uint8), scale=2)


def test_differentiable():
    x = torch.rand(1, 1, 6, 5, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda t: imresize(t, scale=0.5), (x,))
    assert torch.autograd.gradcheck(lambda t: imresize(t, scale=2), (x,))


def test_uint8_rounds_each_pass_half_away_from_zero():
    rng = np.random.default_rng(1)
    img = rng.integers(0, 256, (12, 18, 3), dtype=np.uint8)
    out = imresize_uint8(img, 1 / 3)
    assert out.shape == (4, 6, 3) and out.dtype == np.uint8

    def to_u8(v):
        return np.clip(np.floor(v + 0.5), 0, 255)  # v >= 0 here, so half away from zero == floor(v + .5)

    for c in range(3):
        tmp = to_u8(np.stack([_naive_1d(img[:, j, c].astype(float), 4, 1 / 3) for j in range(18)], axis=1))
        ref = to_u8(np.stack([_naive_1d(tmp[i], 6, 1 / 3) for i in range(4)], axis=0))
        np.testing.assert_array_equal(out[..., c], ref)
    grey = imresize_uint8(img[..., 0], 2)
    assert grey.shape == (24, 36)
    # overshoot is clipped: a sharp edge upscaled rings below 0 and above 255
    edge = np.zeros((4, 8), np.uint8)
    edge[:, 4:] = 255
    up = imresize(torch.from_numpy(edge.astype(np.float64))[None], scale=2)
    assert up.min() < 0 and up.max() > 255
    assert imresize_uint8(edge, 2).min() == 0 and imresize_uint8(edge, 2).max() == 255


# --- MATLAB's own output ---

@pytest.mark.data
@pytest.mark.parametrize("bench", ["Set5", "Set14"])
@pytest.mark.parametrize("scale", [2, 3, 4])
def test_matches_matlab_fixtures(data_root, bench, scale):
    fixtures = data_root / "fixtures" / "matlab_bicubic_lr" / bench / f"X{scale}"
    hr_files = sorted((data_root / "benchmarks" / bench).glob("*.png"))
    if not fixtures.is_dir() or not hr_files:
        pytest.skip(f"no MATLAB fixtures for {bench} x{scale}")
    for hr_file in hr_files:
        hr = mod_crop(read_image(hr_file), scale)  # bridge.png (greyscale) -> 3 equal channels
        matlab = read_image(fixtures / f"{hr_file.stem}x{scale}.png").astype(int)
        diff = np.abs(imresize_uint8(hr, 1 / scale).astype(int) - matlab)
        # Bit-exact here; allow a rare +-1 from floating-point summation order on other BLAS builds.
        # (The brief's bounds: Set5 max <= 2, Set14 mean <= 0.16.)
        assert diff.max() <= 1, f"{hr_file.stem}: max |diff| {diff.max()}"
        assert (diff > 0).mean() <= 1e-4, f"{hr_file.stem}: {(diff > 0).mean():.2%} of pixels differ"
