"""Image IO, benchmark sets, calibration folders and benchmark archive extraction."""

from __future__ import annotations

import io
import struct
import tarfile
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from srq.data import (
    SRBenchmark,
    calibration_images,
    download_benchmarks,
    extract_benchmark,
    imresize_uint8,
    mod_crop,
    read_image,
    to_tensor,
    to_uint8,
    write_image,
)
from srq.errors import SrqError

RNG = np.random.default_rng(0)


def _rgb(h: int = 7, w: int = 9) -> np.ndarray:
    return RNG.integers(0, 256, (h, w, 3), dtype=np.uint8)


def _png16(path: Path, values: np.ndarray) -> None:
    """A minimal 16-bit RGB(A) PNG (Pillow cannot write one): (H, W, 3 or 4) uint16."""
    h, w, c = values.shape

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    rows = b"".join(b"\x00" + row.astype(">u2").tobytes() for row in values)
    header = struct.pack(">IIBBBBB", w, h, 16, {3: 2, 4: 6}[c], 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows))
                     + chunk(b"IEND", b""))


def _to8(v: np.ndarray) -> np.ndarray:
    return np.floor(v.astype(np.float64) * 255 / 65535 + 0.5).astype(np.uint8)


# --- read_image ---

@pytest.mark.parametrize("ext", [".png", ".PNG", ".bmp", ".tif", ".TIFF", ".webp", ".ppm"])
def test_read_lossless_formats(tmp_path, ext):
    img = _rgb()
    path = tmp_path / f"a{ext}"
    Image.fromarray(img).save(path, **({"lossless": True} if ext == ".webp" else {}))
    out = read_image(path)
    assert out.dtype == np.uint8 and out.shape == (7, 9, 3) and out.flags.writeable  # torch warns on read-only
    np.testing.assert_array_equal(out, img)


def test_read_jpeg_any_case(tmp_path):
    img = np.full((16, 16, 3), (200, 40, 90), np.uint8)
    Image.fromarray(img).save(tmp_path / "a.JPG", quality=100)
    out = read_image(tmp_path / "a.JPG")
    assert out.shape == (16, 16, 3) and np.abs(out.astype(int) - img).max() <= 3


@pytest.mark.parametrize("mode", ["L", "1", "LA", "P", "RGBA", "I;16"])
def test_read_modes_become_rgb(tmp_path, mode):
    grey = RNG.integers(0, 256, (5, 6), dtype=np.uint8)
    if mode == "L":
        im, expected = Image.fromarray(grey), np.repeat(grey[..., None], 3, 2)
    elif mode == "1":
        bits = grey > 127
        im, expected = Image.fromarray(bits), np.repeat((bits * 255).astype(np.uint8)[..., None], 3, 2)
    elif mode == "LA":
        im = Image.fromarray(np.stack([grey, 255 - grey], -1), "LA")
        expected = np.repeat(grey[..., None], 3, 2)
    elif mode == "P":
        rgb = _rgb(5, 6)
        im = Image.fromarray(rgb).quantize(colors=256)
        expected = np.asarray(im.convert("RGB"))
        im.info["transparency"] = 0
    elif mode == "RGBA":
        rgb = _rgb(5, 6)
        im = Image.fromarray(np.dstack([rgb, grey]), "RGBA")
        expected = rgb  # alpha dropped, colours kept as stored
    else:
        v = RNG.integers(0, 65536, (5, 6)).astype(np.uint16)
        im, expected = Image.fromarray(v), np.repeat(_to8(v)[..., None], 3, 2)
    im.save(tmp_path / "a.png")
    out = read_image(tmp_path / "a.png")
    assert out.shape == (5, 6, 3) and out.dtype == np.uint8
    np.testing.assert_array_equal(out, expected)


@pytest.mark.parametrize("channels", [3, 4])
def test_read_16bit_png_rounds_to_8bit(tmp_path, channels):
    v = RNG.integers(0, 65536, (4, 5, channels)).astype(np.uint16)
    v[0, 0, :3] = (255, 32895, 65535)  # 255/257 = 0.992 -> 1, where the high byte alone gives 0
    _png16(tmp_path / "a.png", v)
    np.testing.assert_array_equal(read_image(tmp_path / "a.png"), _to8(v[..., :3]))


def test_read_16bit_tiff_rounds_to_8bit(tmp_path):
    tifffile = pytest.importorskip("tifffile")
    v = RNG.integers(0, 65536, (4, 5, 3)).astype(np.uint16)
    tifffile.imwrite(tmp_path / "a.tif", v)
    tifffile.imwrite(tmp_path / "z.tiff", v, compression="zlib")
    for name in ("a.tif", "z.tiff"):
        np.testing.assert_array_equal(read_image(tmp_path / name), _to8(v))


def test_read_applies_exif_orientation(tmp_path):
    img = np.zeros((8, 16, 3), np.uint8)
    img[:, :4] = 255  # white band on the left
    exif = Image.Exif()
    exif[0x0112] = 6  # stored rotated: display after rotating 90 degrees clockwise
    Image.fromarray(img).save(tmp_path / "a.jpg", exif=exif, quality=100)
    out = read_image(tmp_path / "a.jpg")
    assert out.shape == (16, 8, 3)
    assert out[:4].mean() > 200 and out[4:].mean() < 50  # the band is now on top


@pytest.mark.parametrize("content", [b"", b"hello, not an image", "truncated"])
def test_read_bad_file_is_one_clear_line(tmp_path, content):
    path = tmp_path / "bad.png"
    if content == "truncated":
        Image.fromarray(_rgb(64, 64)).save(path)
        path.write_bytes(path.read_bytes()[:200])
    else:
        path.write_bytes(content)
    with pytest.raises(SrqError) as err:
        read_image(path)
    message = str(err.value)
    assert message.startswith(f"cannot read image {path}: ") and "\n" not in message
    assert "replace it" in message


def test_read_missing_file(tmp_path):
    with pytest.raises(SrqError, match="no such file"):
        read_image(tmp_path / "nope.png")


# --- write_image, tensors, mod_crop ---

def test_write_roundtrip_atomic_and_makes_dirs(tmp_path):
    img = _rgb()
    path = write_image(tmp_path / "a" / "b" / "out.png", img)
    np.testing.assert_array_equal(read_image(path), img)
    write_image(path, 255 - img)  # overwrite in place
    np.testing.assert_array_equal(read_image(path), 255 - img)
    assert sorted(p.name for p in path.parent.iterdir()) == ["out.png"]  # no temporary files left
    write_image(tmp_path / "g.jpg", img[..., 0])
    assert read_image(tmp_path / "g.jpg").shape == (7, 9, 3)
    with pytest.raises(ValueError):
        write_image(tmp_path / "f.png", img.astype(np.float32))


def test_write_failure_leaves_nothing(tmp_path):
    with pytest.raises(Exception):
        write_image(tmp_path / "x.png", np.zeros((0, 3, 3), np.uint8))
    assert list(tmp_path.iterdir()) == []


def test_tensor_roundtrip_and_rounding():
    img = _rgb()
    t = to_tensor(img)
    assert t.shape == (1, 3, 7, 9) and t.dtype == torch.float32 and 0 <= t.min() and t.max() <= 1
    np.testing.assert_array_equal(to_uint8(t), img)
    np.testing.assert_array_equal(to_uint8(t[0]), img)
    # clamp, then round half to even
    x = torch.tensor([-0.2, 0.5 / 255, 1.5 / 255, 2.5 / 255, 1.3]).reshape(1, 1, 1, 5).expand(1, 3, 1, 5)
    assert to_uint8(x)[0, :, 0].tolist() == [0, 0, 2, 2, 255]


def test_mod_crop():
    img = _rgb(10, 13)
    assert mod_crop(img, 4).shape == (8, 12, 3)
    assert mod_crop(img, 1).shape == img.shape
    np.testing.assert_array_equal(mod_crop(img, 3), img[:9, :12])


# --- benchmark sets ---

def _make_root(tmp_path: Path) -> Path:
    root = tmp_path / "data"
    set5 = root / "benchmarks" / "Set5"
    set5.mkdir(parents=True)
    for name, (h, w) in {"b": (13, 18), "a": (16, 17), "c": (12, 12)}.items():
        write_image(set5 / f"{name}.png", _rgb(h, w))
    (set5 / "notes.txt").write_text("not an image")
    (set5 / ".hidden.png").write_bytes(b"junk")
    (set5 / "sub").mkdir()
    bsd = root / "bsds100"  # directly under the root, spelled differently
    bsd.mkdir()
    write_image(bsd / "1.png", _rgb(9, 9))
    calib = root / "calibration" / "Tiny"
    calib.mkdir(parents=True)
    write_image(calib / "x.png", _rgb())
    (root / "calibration" / "Empty").mkdir()
    (root / "benchmarks" / "Set14").mkdir()
    return root


def test_benchmark_by_name_lazy_sorted_and_protocol(tmp_path):
    root = _make_root(tmp_path)
    bench = SRBenchmark("set5", 4, data_root=root)
    assert bench.name == "Set5" and len(bench) == 3
    assert [s.name for s in bench] == ["a", "b", "c"]
    name, lr, hr = bench[1]
    full = read_image(root / "benchmarks" / "Set5" / "b.png")
    np.testing.assert_array_equal(hr, full[:12, :16])
    np.testing.assert_array_equal(lr, imresize_uint8(hr, 1 / 4))
    assert lr.shape == (3, 4, 3) and lr.dtype == np.uint8


def test_benchmark_aliases_folders_and_env(tmp_path, monkeypatch):
    root = _make_root(tmp_path)
    assert SRBenchmark("B100", 2, data_root=root).folder == root / "bsds100"
    assert SRBenchmark("BSD100", 2, data_root=root).name == "B100"
    assert len(SRBenchmark(root / "benchmarks" / "Set5", 2)) == 3
    assert SRBenchmark(str(root / "bsds100"), 3).name == "bsds100"
    monkeypatch.setenv("SRQ_DATA", str(root))
    assert len(SRBenchmark("SET5", 2)) == 3


@pytest.mark.parametrize(
    "name,scale,pattern",
    [
        ("Set99", 2, r"unknown benchmark set 'Set99'.*Set5, Set14, B100, Urban100, Manga109.*SRQ_DATA.*srq download"),
        ("Urban100", 2, r"Urban100 not found under .*SRQ_DATA.*srq download"),
        ("Manga109", 2, r"manga109\.org"),
        ("Set14", 2, r"has no images"),
        ("./missing/folder", 2, r"does not exist"),
        ("Set5", 0, r"positive integer"),
    ],
)
def test_benchmark_errors(tmp_path, name, scale, pattern):
    root = _make_root(tmp_path)
    with pytest.raises(SrqError, match=pattern) as err:
        SRBenchmark(name, scale, data_root=root)
    assert "\n" not in str(err.value)


def test_calibration_images(tmp_path):
    root = _make_root(tmp_path)
    assert [p.name for p in calibration_images("tiny", data_root=root)] == ["x.png"]
    assert len(calibration_images(root / "benchmarks" / "Set5")) == 3
    with pytest.raises(SrqError, match=r"not found \(available: Empty, Tiny\)"):
        calibration_images("nope", data_root=root)
    with pytest.raises(SrqError, match="has no images"):
        calibration_images("Empty", data_root=root)


@pytest.mark.data
def test_real_benchmarks(data_root):
    set5 = SRBenchmark("Set5", 4, data_root=data_root)
    assert [s.name for s in set5] == ["baby", "bird", "butterfly", "head", "woman"]
    name, lr, hr = set5[0]
    assert hr.shape == (512, 512, 3) and lr.shape == (128, 128, 3)
    name, lr, hr = SRBenchmark("Set14", 3, data_root=data_root)[2]
    assert name == "bridge" and (hr[..., 0] == hr[..., 2]).all()  # greyscale -> 3 equal channels
    assert len(SRBenchmark("bsd100", 2, data_root=data_root)) == 100
    assert len(calibration_images("DIV2K_test_LRx4", data_root=data_root)) == 100


# --- archive extraction (the network-free part of `srq download`) ---

def _tar(path: Path, members: dict[str, bytes], mode: str = "w:gz") -> Path:
    with tarfile.open(path, mode) as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def _png_bytes(img: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="PNG")
    return buf.getvalue()


def test_extract_per_set_archive(tmp_path):
    a, b = _rgb(), _rgb(5, 5)
    archive = _tar(tmp_path / "Set5_HR.tar.gz", {
        "Set5_HR/baby.png": _png_bytes(a), "Set5_HR/bird.png": _png_bytes(b), "Set5_HR/readme.txt": b"hi",
    })
    root = tmp_path / "data"
    folder = extract_benchmark(archive, "set5", root)
    assert folder == root / "benchmarks" / "Set5"
    assert sorted(p.name for p in folder.iterdir()) == ["baby.png", "bird.png"]
    np.testing.assert_array_equal(read_image(folder / "bird.png"), b)
    assert sorted(p.name for p in (root / "benchmarks").iterdir()) == ["Set5"]  # no temporary folders
    assert len(SRBenchmark("Set5", 2, data_root=root)) == 2


def test_extract_multi_set_archive_takes_hr_only(tmp_path):
    img = _png_bytes(_rgb())
    archive = _tar(tmp_path / "benchmark.tar", {
        "benchmark/Set5/HR/baby.png": img,
        "benchmark/Set5/LR_bicubic/X2/babyx2.png": img,
        "benchmark/Set14/HR/bridge.png": img,
        "benchmark/B100/HR/3096.png": img,
    }, mode="w")
    root = tmp_path / "data"
    assert [p.name for p in extract_benchmark(archive, "Set5", root).iterdir()] == ["baby.png"]
    assert [p.name for p in extract_benchmark(archive, "bsd100", root).iterdir()] == ["3096.png"]
    with pytest.raises(SrqError, match="no HR images of Urban100"):
        extract_benchmark(archive, "Urban100", root)


def test_extract_keeps_existing_unless_forced(tmp_path):
    root = tmp_path / "data"
    old = root / "benchmarks" / "Set5"
    old.mkdir(parents=True)
    write_image(old / "old.png", _rgb())
    archive = _tar(tmp_path / "a.tar.gz", {"Set5_HR/new.png": _png_bytes(_rgb())})
    assert [p.name for p in extract_benchmark(archive, "Set5", root).iterdir()] == ["old.png"]
    assert [p.name for p in extract_benchmark(archive, "Set5", root, force=True).iterdir()] == ["new.png"]
    assert sorted(p.name for p in (root / "benchmarks").iterdir()) == ["Set5"]


def test_extract_bad_archives(tmp_path):
    (tmp_path / "junk.tar.gz").write_bytes(b"not a tar")
    with pytest.raises(SrqError, match="cannot extract"):
        extract_benchmark(tmp_path / "junk.tar.gz", "Set5", tmp_path / "data")
    archive = _tar(tmp_path / "empty.tar.gz", {"docs/readme.txt": b"hi"})
    with pytest.raises(SrqError, match="no HR images"):
        extract_benchmark(archive, "Set5", tmp_path / "data")
    assert list((tmp_path / "data" / "benchmarks").iterdir()) == []


def test_download_names_without_network(tmp_path):
    root = _make_root(tmp_path)
    assert download_benchmarks(["SET5"], data_root=root) == {"Set5": root / "benchmarks" / "Set5"}  # present
    with pytest.raises(SrqError, match="manga109.org"):
        download_benchmarks(["Manga109"], data_root=root)
    with pytest.raises(SrqError, match="unknown benchmark set 'Set99'"):
        download_benchmarks(["Set99"], data_root=root)
