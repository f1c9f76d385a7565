"""PSNR/SSIM and BT.601 conversions against hand-computed values and an independent reference."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from srq.metrics import psnr, rgb_to_y, rgb_to_ycbcr, ssim, ycbcr_to_rgb


def test_rgb_to_y_matches_matlab_constants():
    img = np.array([[[0, 0, 0], [255, 255, 255], [255, 0, 0], [10, 200, 30]]], dtype=np.uint8)
    y = rgb_to_y(img)[0]
    expected_last = 16 + (65.481 * 10 + 128.553 * 200 + 24.966 * 30) / 255
    assert y == pytest.approx([16.0, 235.0, 16 + 65.481, expected_last], abs=1e-12)


def test_ycbcr_roundtrip():
    x = torch.rand(2, 3, 5, 7, dtype=torch.float64)
    assert torch.allclose(ycbcr_to_rgb(rgb_to_ycbcr(x)), x, atol=1e-12)
    white = rgb_to_ycbcr(torch.ones(1, 3, 1, 1, dtype=torch.float64)).flatten() * 255
    assert torch.allclose(white, torch.tensor([235.0, 128.0, 128.0], dtype=torch.float64), atol=1e-9)


def test_psnr_hand_computed_and_crop():
    hr = np.full((10, 10, 3), 100, np.uint8)
    sr = hr.copy()
    sr[2:8, 2:8] = 110  # grey shift of 10 on RGB -> Y shift of 10 * 219 / 255
    d = 10 * 219 / 255
    # crop 2: the 6x6 changed block is all that is left
    assert psnr(sr, hr, crop_border=2) == pytest.approx(10 * math.log10(255**2 / d**2))
    # crop 0: 36 of 100 pixels changed
    assert psnr(sr, hr, crop_border=0) == pytest.approx(10 * math.log10(255**2 / (d**2 * 36 / 100)))
    # RGB PSNR: exact shift of 10 on all three channels
    assert psnr(sr, hr, crop_border=2, y_channel=False) == pytest.approx(10 * math.log10(255**2 / 100))
    assert psnr(hr, hr, crop_border=0) == math.inf


def test_ssim_identity_and_reference():
    rng = np.random.default_rng(0)
    hr = rng.integers(0, 256, (40, 48, 3), dtype=np.uint8)
    noise = rng.integers(-20, 21, hr.shape)
    sr = np.clip(hr.astype(int) + noise, 0, 255).astype(np.uint8)
    assert ssim(hr, hr, crop_border=4) == pytest.approx(1.0)
    skm = pytest.importorskip("skimage.metrics")
    a, b = rgb_to_y(sr)[4:-4, 4:-4], rgb_to_y(hr)[4:-4, 4:-4]
    ref = skm.structural_similarity(a, b, gaussian_weights=True, sigma=1.5, use_sample_covariance=False,
                                    data_range=255)
    assert ssim(sr, hr, crop_border=4) == pytest.approx(ref, abs=1e-10)


def test_metrics_reject_float_and_shape_mismatch():
    a = np.zeros((16, 16, 3), np.uint8)
    with pytest.raises(TypeError, match="uint8"):
        psnr(a.astype(np.float32), a, crop_border=0)
    with pytest.raises(ValueError, match="shape"):
        ssim(a, np.zeros((16, 17, 3), np.uint8), crop_border=0)
