"""Calibration inputs at the model's scale: LR crops made from HR images (hr:...), the per-scale default and the
warning for an LR set made for another scale."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

from srq.data import calibration_set, imresize_uint8, mod_crop, write_image
from srq.data.calibration import default_calibration
from srq.errors import SrqError

RNG = np.random.default_rng(0)


@pytest.fixture
def roots(tmp_path):
    """A data root with train/A (two HR images, one too small for the patch) and calibration/Set_LRx4."""
    (tmp_path / "train" / "A").mkdir(parents=True)
    write_image(tmp_path / "train" / "A" / "big.png", RNG.integers(0, 256, (70, 90, 3), dtype=np.uint8))
    write_image(tmp_path / "train" / "A" / "small.png", RNG.integers(0, 256, (20, 20, 3), dtype=np.uint8))
    (tmp_path / "calibration" / "Set_LRx4").mkdir(parents=True)
    write_image(tmp_path / "calibration" / "Set_LRx4" / "x.png", RNG.integers(0, 256, (30, 30, 3), dtype=np.uint8))
    return tmp_path


def test_hr_source_gives_crops_of_the_bicubic_lr_at_the_models_scale(roots):
    crops = calibration_set("hr:train/A", patch=16, n=5, data_root=roots, scale=2)
    assert crops.shape == (1, 3, 16, 16)  # the 20-pixel image cannot give a 32-pixel HR patch: left out
    from srq.data import read_image

    lr = imresize_uint8(mod_crop(read_image(roots / "train" / "A" / "big.png"), 2), 0.5)  # 35 × 45
    windows = np.lib.stride_tricks.sliding_window_view(lr, (16, 16, 3)).reshape(-1, 16, 16, 3)
    crop = (crops[0].permute(1, 2, 0) * 255).round().to(torch.uint8).numpy()
    assert any(np.array_equal(w, crop) for w in windows)  # exactly a window of the x2 LR image


def test_hr_source_needs_the_scale_and_existing_folders(roots):
    with pytest.raises(SrqError, match="needs the model's scale"):
        calibration_set("hr:train/A", patch=16, data_root=roots)
    with pytest.raises(SrqError, match=r"train/nope does not exist"):
        calibration_set("hr:train/nope", patch=16, data_root=roots, scale=2)


def test_an_lr_set_made_for_another_scale_warns_in_one_line(roots):
    with pytest.warns(UserWarning, match=r"x4 LR images but the model is x2.*hr:train/BSD200,train/T91"):
        calibration_set("Set_LRx4", patch=8, data_root=roots, scale=2)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        calibration_set("Set_LRx4", patch=8, data_root=roots, scale=4)
        calibration_set("Set_LRx4", patch=8, data_root=roots)  # scale unknown: no claim


def test_default_source_per_scale():
    assert default_calibration(4) == "DIV2K_test_LRx4"
    assert default_calibration(2) == default_calibration(3) == "hr:train/BSD200,train/T91"


@pytest.mark.data
def test_real_hr_calibration_at_x2(data_root):
    crops = calibration_set(default_calibration(2), patch=48, n=100, data_root=data_root, scale=2)
    assert crops.shape == (100, 3, 48, 48) and 0 <= crops.min() and crops.max() <= 1
