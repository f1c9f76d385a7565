"""QAT training data: aligned LR/HR crops, augmentation, determinism in (seed, step), DDP split, cache, LR-only."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from srq.data import LROnlySet, TrainingSet, imresize_uint8, mod_crop, read_image, to_tensor, write_image
from srq.data.training import dihedral
from srq.errors import ConfigError, SrqError

SIZES = [(41, 53), (36, 50), (60, 45)]  # (H, W); none a multiple of 3 and two not of 2: mod-crop matters


def _write_set(folder: Path, sizes=SIZES, seed: int = 0) -> list[Path]:
    rng = np.random.default_rng(seed)
    return [write_image(folder / f"img{i}.png", rng.integers(0, 256, (h, w, 3), dtype=np.uint8))
            for i, (h, w) in enumerate(sizes)]


@pytest.fixture(scope="module")
def hr_dir(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("hr")
    _write_set(folder)
    (folder / "notes.txt").write_text("not an image")
    return folder


def _d4(img: np.ndarray) -> list[np.ndarray]:
    """The 8 symmetries of the square, by rotations and a mirror (independently of ``dihedral``)."""
    return [np.rot90(m, k) for m in (img, img[:, ::-1]) for k in range(4)]


def _hwc(chw: np.ndarray) -> np.ndarray:
    return chw.transpose(1, 2, 0)


def test_lr_crop_is_the_crop_of_the_whole_image_bicubic(hr_dir):
    scale, hr_patch = 2, 24
    data = TrainingSet(hr_dir, scale, hr_patch, seed=3, augment=False)
    assert len(data) == 3 and [f.name for f in data.files] == ["img0.png", "img1.png", "img2.png"]
    hrs = [mod_crop(read_image(f), scale) for f in data.files]
    lrs = [imresize_uint8(h, 1 / scale) for h in hrs]  # the benchmark protocol, on the whole image
    p, m = hr_patch // scale, 3  # m: LR pixels at the border that see past the HR crop
    for step in range(4):
        plan = data.plan(step, 6)
        lr, hr = data.crops(step, 6)
        assert lr.shape == (6, 3, p, p) and hr.shape == (6, 3, hr_patch, hr_patch)
        for k, (i, top, left, t) in enumerate(plan.tolist()):
            assert t == 0
            hr_crop = hrs[i][top * scale:top * scale + hr_patch, left * scale:left * scale + hr_patch]
            np.testing.assert_array_equal(_hwc(lr[k]), lrs[i][top:top + p, left:left + p])
            np.testing.assert_array_equal(_hwc(hr[k]), hr_crop)
            # the alignment itself: away from the crop border, bicubic of the HR crop is the LR crop
            own = imresize_uint8(hr_crop, 1 / scale)
            np.testing.assert_array_equal(own[m:-m, m:-m], _hwc(lr[k])[m:-m, m:-m])
        # the float batch is uint8 / 255 as srq.data.to_tensor makes it
        lr_f, hr_f = data.batch(step, 6)
        assert lr_f.dtype == hr_f.dtype == torch.float32 and lr_f.is_contiguous()
        assert torch.equal(lr_f, torch.cat([to_tensor(_hwc(x)) for x in lr]))
        assert torch.equal(hr_f, torch.cat([to_tensor(_hwc(x)) for x in hr]))


def test_crop_positions_cover_the_image(hr_dir):
    data = TrainingSet(hr_dir, 3, 36, seed=0)
    plans = np.concatenate([data.plan(step, 16) for step in range(200)])
    assert set(plans[:, 0].tolist()) == {0, 1, 2}
    for i, (h, w) in enumerate(SIZES):  # every LR position, the last included, is drawn
        rows = plans[plans[:, 0] == i]
        assert set(rows[:, 1].tolist()) == set(range(h // 3 - 12 + 1))
        assert set(rows[:, 2].tolist()) == set(range(w // 3 - 12 + 1))
    assert set(plans[:, 3].tolist()) == set(range(8))


def test_augmentation_is_the_same_for_lr_and_hr(hr_dir):
    plain = TrainingSet(hr_dir, 2, 16, seed=7, augment=False)
    aug = TrainingSet(hr_dir, 2, 16, seed=7, augment=True)
    seen = set()
    for step in range(6):
        (lr0, hr0), (lr1, hr1) = plain.crops(step, 8), aug.crops(step, 8)
        for k in range(8):  # same crops as without augmentation, turned by one symmetry, the same one
            lr_g = {g for g, x in enumerate(_d4(_hwc(lr0[k]))) if np.array_equal(x, _hwc(lr1[k]))}
            hr_g = {g for g, x in enumerate(_d4(_hwc(hr0[k]))) if np.array_equal(x, _hwc(hr1[k]))}
            assert lr_g & hr_g, f"step {step} item {k}: LR turned by {lr_g}, HR by {hr_g}"
            seen |= lr_g & hr_g
    assert seen == set(range(8))


def test_dihedral_codes():
    a = np.arange(12).reshape(3, 4)
    for t, want in [(0, a), (3, np.rot90(a, 2)), (5, np.rot90(a, 1)), (6, np.rot90(a, -1))]:
        np.testing.assert_array_equal(dihedral(a, t), want)
    assert {dihedral(a, t).tobytes() + bytes(dihedral(a, t).shape) for t in range(8)} == {
        x.tobytes() + bytes(x.shape) for x in _d4(a)}


def test_batches_are_a_function_of_seed_and_step(hr_dir):
    a, b = TrainingSet(hr_dir, 2, 16, seed=1), TrainingSet(hr_dir, 2, 16, seed=1)
    b.batch(9, 4)  # drawing other steps first changes nothing
    for step in (0, 5):
        x, y = a.batch(step, 4), b.batch(step, 4)
        assert torch.equal(x[0], y[0]) and torch.equal(x[1], y[1])
    assert not torch.equal(a.batch(5, 4)[1], a.batch(6, 4)[1])
    assert not torch.equal(a.batch(5, 4)[1], TrainingSet(hr_dir, 2, 16, seed=2).batch(5, 4)[1])
    # resuming at step 3 gives the batches an uninterrupted run gets there
    resumed = list(a.batches(4, start=3, steps=2))
    for got, step in zip(resumed, (3, 4)):
        want = a.batch(step, 4)
        assert torch.equal(got[0], want[0]) and torch.equal(got[1], want[1])
    endless = a.batches(4, start=2)
    assert torch.equal(next(endless)[1], a.batch(2, 4)[1]) and torch.equal(next(endless)[1], a.batch(3, 4)[1])


def test_worker_processes_give_the_same_stream(hr_dir):
    data = TrainingSet(hr_dir, 2, 16, seed=4)
    with_workers = list(data.batches(4, start=1, steps=3, workers=2))
    assert len(with_workers) == 3
    for step, (lr, hr) in zip((1, 2, 3), with_workers):
        want = data.batch(step, 4)
        assert torch.equal(lr, want[0]) and torch.equal(hr, want[1])


@pytest.mark.parametrize("world_size", [1, 2, 4])
def test_ddp_ranks_split_the_global_batch(hr_dir, world_size):
    data = TrainingSet(hr_dir, 2, 16, seed=5)
    full_lr, full_hr = data.batch(3, 8)
    parts = [data.batch(3, 8, rank=r, world_size=world_size) for r in range(world_size)]
    for r, (lr, hr) in enumerate(parts):
        assert len(lr) == 8 // world_size
        assert torch.equal(lr, full_lr[r::world_size]) and torch.equal(hr, full_hr[r::world_size])
    stream = list(data.batches(8, start=3, steps=1, rank=world_size - 1, world_size=world_size))
    assert torch.equal(stream[0][1], parts[-1][1])


def test_bad_split_arguments(hr_dir):
    data = TrainingSet(hr_dir, 2, 16)
    with pytest.raises(ConfigError, match="not a multiple of the world size 4.*use e.g. 8"):
        data.batch(0, 6, rank=0, world_size=4)
    with pytest.raises(ConfigError, match="rank 2 is out of range"):
        data.batches(8, rank=2, world_size=2)  # refused at the call, not at the first batch
    with pytest.raises(ConfigError, match="step"):
        data.batch(-1, 4)


def _one_line_error(exc_info) -> str:
    msg = str(exc_info.value)
    assert "\n" not in msg
    return msg


def test_errors_for_bad_folders_and_patches(tmp_path, hr_dir):
    with pytest.raises(SrqError, match="does not exist") as e:
        TrainingSet(tmp_path / "nope", 2, 16)
    _one_line_error(e)
    with pytest.raises(SrqError, match="is a file, not a folder"):
        TrainingSet(hr_dir / "img0.png", 2, 16)
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "readme.txt").write_text("x")
    with pytest.raises(SrqError, match="has no images: add PNG"):
        TrainingSet(empty, 2, 16)
    parent = tmp_path / "parent"
    _write_set(parent / "A")
    (parent / "B").mkdir()
    with pytest.raises(SrqError, match=r"has no images: it has sub-folders \(A, B\)"):
        TrainingSet(parent, 2, 16)
    with pytest.raises(SrqError, match="no image folders given"):
        TrainingSet([], 2, 16)
    with pytest.raises(ConfigError, match="HR patch 18 is not a multiple of the scale 4: use e.g. 16 or 20"):
        TrainingSet(hr_dir, 4, 18)
    with pytest.raises(ConfigError, match="scale"):
        TrainingSet(hr_dir, 0, 16)
    # img1 is 36 high: smaller than a 40 patch (img0 is 40x52 after the x2 mod-crop: it fits)
    with pytest.raises(SrqError, match=r"img1.png \(50×36\) is smaller than the HR patch 40 .*skip_small=True") as e:
        TrainingSet(hr_dir, 2, 40)
    _one_line_error(e)
    data = TrainingSet([hr_dir, parent / "A"], 2, 40, skip_small=True)
    assert [f.name for f in data.skipped] == ["img1.png", "img1.png"] and len(data) == 4
    assert data.batch(0, 2)[1].shape == (2, 3, 40, 40)
    with pytest.raises(SrqError, match="all 3 training images are smaller than the HR patch 62"):
        TrainingSet(hr_dir, 2, 62, skip_small=True)
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"garbage")
    with pytest.raises(SrqError, match="broken.png"):
        TrainingSet(bad, 2, 16)


def test_disk_cache_of_lr_images(tmp_path, hr_dir):
    cache = tmp_path / "cache"
    first = TrainingSet(hr_dir, 2, 16, seed=0, cache_dir=cache)
    files = sorted(cache.glob("*.npy"))
    assert len(files) == 3 and first.cache_hits == 0
    assert all(len(f.name.split("_")[0]) == 64 and f.name.endswith("_x2_v1.npy") for f in files)
    second = TrainingSet(hr_dir, 2, 16, seed=0, cache_dir=cache)
    assert second.cache_hits == 3
    for a, b in zip(first._lr, second._lr):
        np.testing.assert_array_equal(a, b)
    files[0].write_bytes(b"not an array")  # a damaged entry is recomputed and rewritten
    third = TrainingSet(hr_dir, 2, 16, seed=0, cache_dir=cache)
    assert third.cache_hits == 2 and torch.equal(third.batch(0, 8)[0], first.batch(0, 8)[0])
    TrainingSet(hr_dir, 3, 18, cache_dir=cache)  # the scale is part of the key
    assert len(list(cache.glob("*_x3_v1.npy"))) == 3 and len(list(cache.glob("*.npy"))) == 6
    assert not list(cache.glob(".*"))  # no temporary files left


def test_lr_only_set(tmp_path):
    rng = np.random.default_rng(1)
    images = [rng.integers(0, 256, (h, w, 3), dtype=np.uint8) for h, w in [(20, 30), (25, 17)]]
    folder = tmp_path / "data" / "calibration" / "MyLR"
    for i, img in enumerate(images):
        write_image(folder / f"{i}.png", img)
    from_arrays = LROnlySet(images, 12, seed=2)
    from_folder = LROnlySet(folder, 12, seed=2)
    by_name = LROnlySet("MyLR", 12, seed=2, data_root=tmp_path / "data")
    by_list = LROnlySet([folder], 12, seed=2)
    lr, hr = from_arrays.batch(4, 6)
    assert hr is None and lr.shape == (6, 3, 12, 12) and lr.dtype == torch.float32
    for other in (from_folder, by_name, by_list):
        assert torch.equal(other.batch(4, 6)[0], lr)
    assert not torch.equal(from_arrays.batch(5, 6)[0], lr)
    plain = LROnlySet(images, 12, seed=2, augment=False)
    u8, _ = from_arrays.crops(4, 6)
    for k, (i, top, left, t) in enumerate(plain.plan(4, 6).tolist()):
        assert t == 0
        crop = images[i][top:top + 12, left:left + 12]
        assert any(np.array_equal(g, _hwc(u8[k])) for g in _d4(crop))
    halves = [from_arrays.batch(4, 6, rank=r, world_size=2)[0] for r in range(2)]
    assert torch.equal(halves[0], lr[0::2]) and torch.equal(halves[1], lr[1::2])
    assert [b[1] for b in from_arrays.batches(2, steps=2, workers=1)] == [None, None]
    with pytest.raises(SrqError, match=r"<array 1> \(17×25\) is smaller than the patch 18.*skip_small=True"):
        LROnlySet(images, 18)
    assert len(LROnlySet(images, 18, skip_small=True)) == 1
    with pytest.raises(SrqError, match="not found"):
        LROnlySet("NoSuchSet", 8, data_root=tmp_path / "data")
    with pytest.raises(SrqError, match=r"\(H, W, 3\) uint8"):
        LROnlySet([np.zeros((20, 20), np.uint8)], 8)


@pytest.mark.data
def test_real_291_training_set(data_root):
    train = data_root / "train"
    if not (train / "T91").is_dir() or not (train / "BSD200").is_dir():
        pytest.skip(f"the 291 training set is not in {train}")
    with pytest.raises(SrqError, match="has no images: it has sub-folders"):
        TrainingSet(train, 4, 192)
    with pytest.raises(SrqError, match="T91.* and 50 more is smaller than the HR patch 192"):
        TrainingSet(train / "T91", 4, 192)
    data = TrainingSet([train / "T91", train / "BSD200"], 4, 192, skip_small=True)
    assert len(data) + len(data.skipped) == 291 and len(data.skipped) == 51
    lr, hr = data.batch(0, 16)
    assert lr.shape == (16, 3, 48, 48) and hr.shape == (16, 3, 192, 192)
    assert 0 <= float(lr.min()) and float(hr.max()) <= 1
    i, top, left, _ = data.plan(0, 16)[0].tolist()
    hr_img = mod_crop(read_image(data.files[i]), 4)
    np.testing.assert_array_equal(data._hr[i], hr_img)
    np.testing.assert_array_equal(data._lr[i], imresize_uint8(hr_img, 1 / 4))
