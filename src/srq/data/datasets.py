"""Benchmark sets (HR images -> LR/HR pairs by the standard protocol) and calibration folders.

Layout under the data root (see :mod:`srq.paths`)::

    <data_root>/benchmarks/Set5/*.png      HR images of a benchmark set
    <data_root>/calibration/<name>/*.png   LR images used as calibration inputs
    <data_root>/restoration/Classic5/*.png clean images of a denoising / JPEG test set (also looked up in benchmarks/)

A set is named case-insensitively (``"set5"``, ``"BSD100"`` for B100, ...) or given as any folder.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import NamedTuple

import numpy as np

from ..errors import SrqError
from ..paths import data_root as _data_root
from .bicubic import imresize_uint8
from .io import is_image_file, mod_crop, read_image

__all__ = [
    "BENCHMARKS",
    "RESTORATION_SETS",
    "Sample",
    "SRBenchmark",
    "benchmark_dir",
    "calibration_images",
    "canonical_name",
    "list_images",
    "spellings_of",
]

BENCHMARKS = ("Set5", "Set14", "B100", "Urban100", "Manga109")
#: Test sets of denoising and JPEG artifact removal (clean images; the task makes the inputs), known by name.
RESTORATION_SETS = ("Classic5", "LIVE1", "CBSD68", "Kodak24", "McMaster", "Set12", "BSD68")
_ALIASES = {"bsd100": "B100", "bsds100": "B100", "kodak": "Kodak24", "cbsd": "CBSD68",
            **{name.lower(): name for name in BENCHMARKS + RESTORATION_SETS}}


class Sample(NamedTuple):
    """One benchmark image: ``lr`` (h, w, 3) and ``hr`` (scale*h, scale*w, 3), both uint8 RGB."""

    name: str
    lr: np.ndarray
    hr: np.ndarray


def canonical_name(name: str) -> str | None:
    """The canonical spelling of a known benchmark name or alias (``"bsd100"`` -> ``"B100"``), else None."""
    return _ALIASES.get(name.strip().lower())


def spellings_of(name: str) -> set[str]:
    """Lower-case names that mean the benchmark ``name`` (``"B100"`` -> ``{"b100", "bsd100", "bsds100"}``)."""
    canonical = canonical_name(name)
    return {key for key, value in _ALIASES.items() if value == canonical} if canonical else {name.lower()}


def list_images(folder: Path) -> list[Path]:
    """Image files directly in ``folder``, sorted by file name; other and hidden files are skipped."""
    files = [p for p in folder.iterdir() if p.is_file() and not p.name.startswith(".") and is_image_file(p)]
    return sorted(files, key=lambda p: p.name)


def _find_child_dir(parent: Path, names: set[str], preferred: str) -> Path | None:
    """``parent/preferred`` if it is a folder, else a sub-folder whose lower-cased name is in ``names``."""
    if (parent / preferred).is_dir():
        return parent / preferred
    if not parent.is_dir():
        return None
    matches = sorted(p for p in parent.iterdir() if p.is_dir() and p.name.lower() in names)
    return matches[0] if matches else None


def _setup_hint(root: Path, name: str = "<Set>") -> str:
    where = (f"put the HR images in {root / 'benchmarks' / name}/ or point --data-root or SRQ_DATA at a data root "
             "that has them")
    if name == "Manga109":  # licensed per user, not downloadable
        return f"request Manga109 at http://www.manga109.org/, then {where}"
    if name in RESTORATION_SETS:  # not in `srq download`: the authors' test-set folders have them
        return (f"copy the clean images (e.g. the testsets/{name} folder of github.com/cszn/KAIR or cszn/FFDNet) "
                f"to {root / 'restoration' / name}/, point --data-root or SRQ_DATA at a data root that has them, "
                f"or give the folder itself")
    return f"{where}, or fetch them with `srq download`"


def benchmark_dir(name_or_path: str | os.PathLike, data_root: str | os.PathLike | None = None) -> tuple[str, Path]:
    """Resolve a benchmark name or folder to ``(display name, folder)``.

    A known name (any case, aliases included) is looked up as ``<data_root>/benchmarks/<Name>/``,
    then ``<data_root>/restoration/<Name>/``, then ``<data_root>/<Name>/``, accepting folders spelled in any
    case. Anything else must be a folder.

    Raises:
        SrqError: unknown name, missing folder.
    """
    if not str(name_or_path).strip():
        raise SrqError(f"no benchmark set given: name one of {', '.join(BENCHMARKS)} or a folder of HR images")
    root = _data_root(data_root)
    canonical = canonical_name(str(name_or_path)) if isinstance(name_or_path, str) else None
    if canonical is not None:
        spellings = spellings_of(canonical)
        for parent in (root / "benchmarks", root / "restoration", root):
            found = _find_child_dir(parent, spellings, canonical)
            if found is not None:
                return canonical, found
        raise SrqError(f"benchmark set {canonical} not found under {root}: {_setup_hint(root, canonical)}")
    path = Path(name_or_path).expanduser()
    if path.is_dir():
        return path.name, path
    if path.exists():
        raise SrqError(f"{path} is a file, not a folder of images: give a benchmark name or a folder")
    if not isinstance(name_or_path, str) or any(sep in name_or_path for sep in {"/", os.sep}):
        raise SrqError(f"benchmark folder {name_or_path} does not exist: check the path")
    raise SrqError(
        f"unknown benchmark set {str(name_or_path)!r} and no such folder: known sets are "
        f"{', '.join(BENCHMARKS + RESTORATION_SETS)} (give one of them or a folder of images); {_setup_hint(root)}"
    )


class SRBenchmark:
    """A benchmark set as ``(name, lr, hr)`` samples, loaded one at a time.

    ``hr`` is the HR image mod-cropped to ``scale`` and ``lr`` is MATLAB-exact bicubic downsampling of
    it (``imresize_uint8(hr, 1 / scale)``): the protocol behind published SR tables. Both are
    (H, W, 3) uint8 RGB. Images are taken in file-name order.

    Args:
        name_or_path: a benchmark name (see :data:`BENCHMARKS`, any case) or a folder of HR images.
        scale: the SR scale factor (a positive integer).
        data_root: the data root; defaults to ``$SRQ_DATA`` or ``~/.cache/srq/data``.
    """

    def __init__(
        self, name_or_path: str | os.PathLike, scale: int, data_root: str | os.PathLike | None = None
    ) -> None:
        if isinstance(scale, bool) or not isinstance(scale, (int, np.integer)) or scale < 1:
            raise SrqError(f"scale must be a positive integer, got {scale!r}")
        self.scale = int(scale)
        self.name, self.folder = benchmark_dir(name_or_path, data_root)
        self.files = list_images(self.folder)
        if not self.files:
            raise SrqError(f"benchmark folder {self.folder} has no images: add PNG/JPEG/... files or pick another set")

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int) -> Sample:
        path = self.files[index]
        hr = mod_crop(read_image(path), self.scale)
        if hr.shape[0] == 0 or hr.shape[1] == 0:
            raise SrqError(f"image {path} is smaller than the scale {self.scale}: remove it from the set")
        return Sample(path.stem, imresize_uint8(hr, 1 / self.scale), hr)

    def __iter__(self) -> Iterator[Sample]:
        for index in range(len(self)):
            yield self[index]

    def __repr__(self) -> str:
        return f"SRBenchmark({self.name!r}, scale={self.scale}, images={len(self)}, folder='{self.folder}')"


def calibration_images(name_or_path: str | os.PathLike, data_root: str | os.PathLike | None = None) -> list[Path]:
    """The image files of a calibration set: ``<data_root>/calibration/<name>/`` (any case) or a folder.

    Raises:
        SrqError: the set is not found or holds no images.
    """
    if not str(name_or_path).strip():
        raise SrqError("no calibration set given: name a set under <data_root>/calibration/ or a folder of images")
    root = _data_root(data_root)
    calib_root = root / "calibration"
    folder = None
    if isinstance(name_or_path, str) and len(Path(name_or_path).parts) == 1:
        folder = _find_child_dir(calib_root, {name_or_path.lower()}, name_or_path)
    if folder is None:
        path = Path(name_or_path).expanduser()
        if not path.is_dir():
            known = sorted(p.name for p in calib_root.iterdir() if p.is_dir()) if calib_root.is_dir() else []
            have = f"available: {', '.join(known)}" if known else f"none found in {calib_root}"
            raise SrqError(
                f"calibration set {str(name_or_path)!r} not found ({have}): give a folder of images, or put "
                f"the set in {calib_root}/<name>/ and point --data-root or SRQ_DATA at {root}"
            )
        folder = path
    files = list_images(folder)
    if not files:
        raise SrqError(f"calibration folder {folder} has no images: add PNG/JPEG/... files or pick another folder")
    return files
