"""Image files <-> uint8 RGB arrays <-> float tensors.

Conventions:

* :func:`read_image` always returns an (H, W, 3) uint8 RGB array, whatever the file holds:
  greyscale becomes three equal channels; alpha is dropped (not composited: SR works on the colour
  values as stored); palette images are expanded; 16-bit PNG/TIFF samples ``v`` become
  ``round(v * 255 / 65535)``, the nearest 8-bit level (greyscale, RGB and RGBA; Pillow's own
  8-bit reduction is kept for rarer 16-bit layouts; 32-bit integer images are clipped to 16 bit);
  floating-point images are refused; an EXIF orientation tag is applied, so the
  array is upright as image viewers show it.
* :func:`write_image` saves JPEG and WebP at quality 95.
* Tensors are float32 (1, 3, H, W) in [0, 1]; :func:`to_uint8` clamps to [0, 1], multiplies by 255
  and rounds half to even (``torch.round``), which is what the benchmark protocol does to SR output.
"""

from __future__ import annotations

import os
import struct
import sys
import tempfile
import zlib
from pathlib import Path
from typing import TYPE_CHECKING, cast

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

if TYPE_CHECKING:
    from PIL.ImageFile import _Tile

from ..errors import SrqError
from ..fileio import follow_umask

__all__ = ["IMAGE_EXTENSIONS", "is_image_file", "read_image", "write_image", "to_tensor", "to_uint8", "mod_crop"]

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".ppm", ".pgm")

_ENDIAN_SWAP = {"B": "L", "L": "B", "N": "B" if sys.byteorder == "little" else "L"}
_DECODE_ERRORS = (
    UnidentifiedImageError, OSError, SyntaxError, ValueError, EOFError, struct.error, zlib.error,
    Image.DecompressionBombError,
)
_EXIF_ORIENTATION = 0x0112


def _orient(img: np.ndarray, orientation: int) -> np.ndarray:
    """Apply an EXIF orientation (1-8) to an (H, W, C) array."""
    ops = {
        2: lambda a: a[:, ::-1],
        3: lambda a: a[::-1, ::-1],
        4: lambda a: a[::-1],
        5: lambda a: a.transpose(1, 0, 2),
        6: lambda a: np.rot90(a, -1),
        7: lambda a: a.transpose(1, 0, 2)[::-1, ::-1],
        8: lambda a: np.rot90(a, 1),
    }
    return ops[orientation](img) if orientation in ops else img


def is_image_file(path: str | os.PathLike) -> bool:
    """Whether ``path`` has an image extension (any case)."""
    return Path(path).suffix.lower() in IMAGE_EXTENSIONS


def _rawmode(tile: _Tile) -> str:
    """The raw mode of a Pillow tile (``ImageFile._Tile``): how the file stores the samples."""
    args = tile.args
    return cast(str, args[0] if isinstance(args, tuple) else args)  # image decoders' args start with it


def _with_rawmode(tile: _Tile, rawmode: str) -> _Tile:
    args = tile.args
    return tile._replace(args=(rawmode, *args[1:]) if isinstance(args, tuple) else rawmode)


def _low_bytes(path: Path, tiles: list[_Tile]) -> np.ndarray:
    """Decode the low byte of each 16-bit sample of an image Pillow reduces to 8 bit (its high byte).

    Pillow decodes ``RGB;16B`` data to 8 bit by keeping the most significant byte; decoding the same
    data as ``RGB;16L`` keeps the other one.
    """
    with Image.open(path) as im:
        im.tile = [_with_rawmode(t, _rawmode(t)[:-1] + _ENDIAN_SWAP[_rawmode(t)[-1]]) for t in tiles]
        im.load()
        return np.asarray(im)


def _to_rgb8(im: Image.Image, path: Path) -> np.ndarray:
    tiles = list(getattr(im, "tile", None) or [])
    wide = [t for t in tiles if _rawmode(t)[-4:-1] == ";16" and _rawmode(t)[-1] in _ENDIAN_SWAP]
    if im.mode in ("I;16", "I;16L", "I;16B", "I;16N", "I"):  # 16-bit greyscale, values kept
        v = np.clip(np.asarray(im).astype(np.int64), 0, 65535)
        return np.repeat(((v * 255 + 32767) // 65535).astype(np.uint8)[..., None], 3, axis=2)
    if im.mode == "F":
        raise SrqError(f"cannot read image {path}: floating-point images are not supported; save it as 8- or 16-bit")
    if im.mode in ("RGB", "RGBA") and wide and len(wide) == len(tiles):
        im.load()
        hi = np.asarray(im).astype(np.int64)
        try:
            lo = _low_bytes(path, tiles).astype(np.int64)
        except Exception:  # an exotic layout: keep Pillow's 8-bit reduction
            lo = np.full_like(hi, 128)
        v = hi * 256 + lo
        return ((v[..., :3] * 255 + 32767) // 65535).astype(np.uint8)
    if im.mode in ("P", "PA"):
        im = im.convert("RGBA")
    if im.mode == "LA":
        im = im.convert("L")
    return np.asarray(im.convert("RGB"))


def read_image(path: str | os.PathLike) -> np.ndarray:
    """Read any common image file (PNG, JPEG, BMP, TIFF, WebP, ...) as an (H, W, 3) uint8 RGB array (writable).

    Raises:
        SrqError: the file is missing, not an image, corrupt or truncated.
    """
    path = Path(path)
    if not path.is_file():
        raise SrqError(f"cannot read image {path}: no such file; check the path")
    try:
        with Image.open(path) as im:
            img = _to_rgb8(im, path)  # before getexif(), which may load the pixels
            img = _orient(img, im.getexif().get(_EXIF_ORIENTATION, 1))
    except SrqError:
        raise
    except _DECODE_ERRORS as err:
        detail = " ".join(str(err).split()) or type(err).__name__
        raise SrqError(
            f"cannot read image {path}: {detail}; the file is not a readable image (corrupt, truncated "
            "or an unsupported format): replace it or remove it from the folder"
        ) from None
    img = np.ascontiguousarray(img)
    return img if img.flags.writeable else img.copy()  # Pillow's buffer is read-only; torch warns on those


def write_image(path: str | os.PathLike, img: np.ndarray) -> Path:
    """Write an (H, W, 3) or (H, W) uint8 array; the format follows the extension (PNG if none).

    The file appears atomically: it is written to a temporary file in the same folder and renamed.
    Parent folders are created. Returns the path written.
    """
    path = Path(path)
    if img.dtype != np.uint8 or img.ndim not in (2, 3) or (img.ndim == 3 and img.shape[2] not in (1, 3)):
        raise ValueError(f"write_image expects (H, W[, 3]) uint8, got {img.dtype} {img.shape}")
    if img.ndim == 3 and img.shape[2] == 1:
        img = img[..., 0]
    fmt = Image.registered_extensions().get(path.suffix.lower(), "PNG")
    params = {"quality": 95} if fmt in ("JPEG", "WEBP") else {}
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            Image.fromarray(np.ascontiguousarray(img)).save(f, format=fmt, **params)
        follow_umask(tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def to_tensor(img: np.ndarray) -> torch.Tensor:
    """(H, W, 3) uint8 -> float32 (1, 3, H, W) in [0, 1]."""
    if img.dtype != np.uint8 or img.ndim != 3:
        raise ValueError(f"to_tensor expects (H, W, C) uint8, got {img.dtype} {img.shape}")
    t = torch.from_numpy(np.ascontiguousarray(img)).permute(2, 0, 1).unsqueeze(0)
    return t.to(torch.float32).div_(255.0)


def to_uint8(t: torch.Tensor) -> np.ndarray:
    """(1, 3, H, W) or (3, H, W) float in [0, 1] -> (H, W, 3) uint8.

    Clamps to [0, 1], scales by 255 and rounds half to even (``torch.round``).
    """
    if t.dim() == 4:
        if t.shape[0] != 1:
            raise ValueError(f"to_uint8 expects a single image, got batch of {t.shape[0]}")
        t = t[0]
    if t.dim() != 3:
        raise ValueError(f"to_uint8 expects (1, C, H, W) or (C, H, W), got shape {tuple(t.shape)}")
    u8 = torch.round(t.detach().float().clamp(0, 1) * 255.0).to(torch.uint8)
    return np.ascontiguousarray(u8.permute(1, 2, 0).cpu().numpy())


def mod_crop(img: np.ndarray, scale: int) -> np.ndarray:
    """Crop an (H, W[, C]) array from the top-left so that H and W are multiples of ``scale``."""
    h, w = img.shape[0] - img.shape[0] % scale, img.shape[1] - img.shape[1] % scale
    return img[:h, :w]
