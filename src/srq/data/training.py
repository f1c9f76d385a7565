"""Training data for quantization-aware training: random aligned LR/HR crops from folders of HR images.

:class:`TrainingSet` reads every HR image of one or more folders once (DIV2K, the "291" set under
``<data_root>/train/``, any folder of photographs), mod-crops it to a multiple of the scale and makes its LR
image once, with the benchmark protocol: MATLAB-exact bicubic of the uint8 HR, rounded to uint8
(:func:`~srq.data.bicubic.imresize_uint8`, as :class:`~srq.data.SRBenchmark` does). Both stay in memory as
uint8 arrays; the LR images can also be kept on disk (``cache_dir``), keyed by the file's SHA-256 and the
scale, so that the next run skips the bicubic.

A batch is a pure function of ``(seed, step)``: the crop positions and the augmentation of step ``k`` are drawn
from ``numpy.random.Generator(PCG64(SeedSequence([seed, k])))``, so a run resumed at step ``k`` sees the same
batches as one that never stopped, and batches do not depend on how many batches were drawn before, on worker
processes or on the global RNGs. Crops are cut on the LR grid: LR pixel ``(i, j)`` of a crop is the LR image's
pixel ``(top + i, left + j)``, made from HR block ``[(top + i) * s : (top + i + 1) * s, ...]``, and the HR crop is
exactly the union of those blocks. Augmentation is one of the 8 symmetries of the square (horizontal flip,
vertical flip, transpose), the same for the LR and the HR crop of an item.

Data-parallel training: rank ``r`` of ``world_size`` ranks gets items ``r::world_size`` of the global batch of a
step, so the ranks' items are disjoint and together are the batch a single process gets.

:class:`LROnlySet` is the same sampler over LR images alone (``hr`` is ``None``): the targets are then the FP
teacher's outputs, as in the PTQ/QAT papers that fine-tune on DIV2K LR inputs
(``<data_root>/calibration/DIV2K_test_LRx4``).

Cost (the "291" set, T91 + BSD200, x4, on a busy 2-core CPU): loading takes about 2.7 s (decoding 0.9 s, the
bicubic 1.3 s single-threaded) and holds 110 MiB; with ``cache_dir`` filled, 1.1 s. A batch of 16 HR 192 crops
takes about 5 ms in the main process and 10-15 ms through worker processes (the hand-over costs more than the
crop), hence ``workers=0`` by default; a CPU training step of IMDN on that batch takes seconds.

Example::

    data = TrainingSet(["/data/DIV2K_train_HR"], scale=4, hr_patch=192, seed=0, cache_dir="~/.cache/srq/lr")
    for step, (lr, hr) in enumerate(data.batches(16, start=resume_step), start=resume_step):
        ...
"""

from __future__ import annotations

import itertools
import os
import tempfile
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Optional, Union

import numpy as np
import torch

from ..errors import ConfigError, SrqError
from ..fileio import file_sha256, follow_umask
from .bicubic import imresize_uint8
from .datasets import calibration_images, list_images
from .io import mod_crop, read_image

__all__ = ["TrainingSet", "LROnlySet", "dihedral", "BICUBIC_CACHE_VERSION"]

PathLike = Union[str, os.PathLike]
Batch = tuple[torch.Tensor, Optional[torch.Tensor]]

#: Part of the disk-cache file names: bump it if the LR convention ever changes, so old files are not used.
BICUBIC_CACHE_VERSION = 1


def dihedral(img: np.ndarray, t: int) -> np.ndarray:
    """One of the 8 symmetries of the square on an (H, W[, C]) array, as a view.

    Bit 0 of ``t`` flips horizontally (the W axis), bit 1 vertically (the H axis), bit 2 then transposes H and W;
    ``t = 0`` is the identity, 3 a half turn, 5 a quarter turn counter-clockwise and 6 a quarter turn clockwise.
    """
    if t & 1:
        img = img[:, ::-1]
    if t & 2:
        img = img[::-1]
    if t & 4:
        img = img.swapaxes(0, 1)
    return img


def _check_int(name: str, value: object, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ConfigError(f"{name} must be an integer ≥ {minimum}, got {value!r}")
    return int(value)


def _check_split(batch_size: int, rank: int, world_size: int) -> None:
    """Refuse a global batch that ``world_size`` ranks cannot share equally, or a rank out of range."""
    world_size = _check_int("world_size", world_size, 1)
    rank = _check_int("rank", rank, 0)
    if rank >= world_size:
        raise ConfigError(f"rank {rank} is out of range for world_size {world_size}: ranks are 0..{world_size - 1}")
    if _check_int("batch_size", batch_size, 1) % world_size:
        raise ConfigError(f"batch size {batch_size} is not a multiple of the world size {world_size}: every rank "
                          f"must get the same number of items; use e.g. {-(-batch_size // world_size) * world_size}")


def _folders(hr_folders: PathLike | Sequence[PathLike]) -> list[Path]:
    """``hr_folders`` as a list of paths (one folder may be given alone)."""
    if isinstance(hr_folders, (str, os.PathLike)):
        return [Path(hr_folders).expanduser()]
    folders = [Path(f).expanduser() for f in hr_folders]
    if not folders:
        raise SrqError("no image folders given: name one or more folders of images")
    return folders


def _folder_images(folder: Path, what: str) -> list[Path]:
    """The image files of a folder of training images (not its sub-folders), with one-line errors."""
    if not folder.exists():
        raise SrqError(f"{what} folder {folder} does not exist: check the path")
    if not folder.is_dir():
        raise SrqError(f"{what} path {folder} is a file, not a folder: give the folder that holds the images")
    files = list_images(folder)
    if not files:
        subs = sorted(p.name for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))
        hint = (f"it has sub-folders ({', '.join(subs[:6])}{', ...' if len(subs) > 6 else ''}): list those instead"
                if subs else "add PNG/JPEG/... files or give another folder")
        raise SrqError(f"{what} folder {folder} has no images: {hint}")
    return files


def _save_npy(path: Path, arr: np.ndarray) -> None:
    """Write ``arr`` to ``path`` atomically (temp file in the same folder, then rename); concurrent writers are safe."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            np.save(f, arr, allow_pickle=False)
        follow_umask(tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _load_npy(path: Path, shape: tuple[int, ...]) -> np.ndarray | None:
    """A cached uint8 array of ``shape``, or None when the file is absent, unreadable or does not fit."""
    try:
        arr = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError):
        return None
    return arr if arr.dtype == np.uint8 and arr.shape == shape else None


class _CropSampler:
    """Deterministic random crops of in-memory uint8 images on the LR grid; subclasses fill the image lists."""

    scale: int
    lr_patch: int
    seed: int
    augment: bool
    files: list[Path]
    skipped: list[Path]
    _lr: list[np.ndarray]
    _hr: list[np.ndarray] | None

    def _init_sampler(self, lr_patch: int, seed: int, augment: bool) -> None:
        self.lr_patch = lr_patch
        self.seed = _check_int("seed", seed, 0)
        self.augment = bool(augment)
        self._sizes = np.array([img.shape[:2] for img in self._lr], dtype=np.int64).reshape(-1, 2)

    def __len__(self) -> int:
        return len(self._lr)

    @property
    def lr_images(self) -> list[np.ndarray]:
        """The LR images (uint8, H×W×3), in :attr:`files` order."""
        return list(self._lr)

    @property
    def nbytes(self) -> int:
        """Bytes of image data held in memory (LR and HR)."""
        return sum(a.nbytes for a in self._lr) + sum(a.nbytes for a in self._hr or [])

    def plan(self, step: int, batch_size: int) -> np.ndarray:
        """The global batch of ``step`` as an (batch_size, 4) int64 array of ``(image, top, left, transform)``.

        ``top``/``left`` are in LR pixels; ``transform`` is the :func:`dihedral` code (0 without augmentation).
        The same draws are made with and without augmentation, so ``augment=False`` gives the same crops unturned.
        """
        step = _check_int("step", step, 0)
        batch_size = _check_int("batch_size", batch_size, 1)
        rng = np.random.Generator(np.random.PCG64(np.random.SeedSequence([self.seed, step])))
        image = rng.integers(len(self._lr), size=batch_size)
        room = self._sizes[image] - self.lr_patch + 1  # positions per axis, ≥ 1 (checked at load)
        top = rng.integers(0, room[:, 0])
        left = rng.integers(0, room[:, 1])
        transform = rng.integers(8, size=batch_size)
        if not self.augment:
            transform[:] = 0
        return np.stack([image, top, left, transform], axis=1)

    def crops(self, step: int, batch_size: int, rank: int = 0, world_size: int = 1
              ) -> tuple[np.ndarray, np.ndarray | None]:
        """:meth:`batch` as uint8 arrays: ``lr`` (n, 3, p, p) and ``hr`` (n, 3, p*scale, p*scale) or None."""
        _check_split(batch_size, rank, world_size)
        items = self.plan(step, batch_size)[rank::world_size]
        p, s = self.lr_patch, self.scale
        lr = np.empty((len(items), 3, p, p), np.uint8)
        hr = None if self._hr is None else np.empty((len(items), 3, p * s, p * s), np.uint8)
        for k, (i, top, left, t) in enumerate(items.tolist()):
            # straight to (C, H, W): one strided copy, as fast with a transpose as without
            lr[k] = dihedral(self._lr[i][top:top + p, left:left + p], t).transpose(2, 0, 1)
            if hr is not None:
                hr_crop = self._hr[i][top * s:(top + p) * s, left * s:(left + p) * s]  # type: ignore[index]
                hr[k] = dihedral(hr_crop, t).transpose(2, 0, 1)
        return lr, hr

    def batch(self, step: int, batch_size: int, rank: int = 0, world_size: int = 1) -> Batch:
        """The ``(lr, hr)`` batch of ``step``: float32 NCHW tensors in [0, 1] (``hr`` is None for LR-only sets).

        ``batch_size`` is the global batch; rank ``rank`` of ``world_size`` gets its items ``rank::world_size``
        (``batch_size / world_size`` of them; ``batch_size`` must be a multiple of ``world_size``).
        ``lr`` is (n, 3, p, p) with ``p = lr_patch`` and ``hr`` (n, 3, p*scale, p*scale); values are
        ``uint8 / 255`` as :func:`~srq.data.to_tensor` makes them.
        """
        return _to_float(self.crops(step, batch_size, rank, world_size))

    def batches(self, batch_size: int, *, start: int = 0, steps: int | None = None, rank: int = 0,
                world_size: int = 1, workers: int = 0, pin_memory: bool = False) -> Iterator[Batch]:
        """The batches of steps ``start``, ``start + 1``, ... (``steps`` of them; endless when None).

        Each is :meth:`batch` of its step, so the stream is the same whatever ``workers`` is. ``workers > 0``
        cuts the crops in that many worker processes (a :class:`torch.utils.data.DataLoader`, in step order) and
        converts them to float here. A batch takes a few milliseconds in the main process, less than passing
        it from a worker costs, so the default is 0. ``pin_memory`` pins the tensors for faster copies to a GPU.
        """
        start = _check_int("start", start, 0)
        workers = _check_int("workers", workers, 0)
        stop = None if steps is None else start + _check_int("steps", steps, 0)
        order = itertools.count(start) if stop is None else range(start, stop)
        _check_split(batch_size, rank, world_size)  # now, not at the first next()
        if workers == 0:
            made: Iterator = (self.crops(k, batch_size, rank, world_size) for k in order)
        else:
            made = iter(torch.utils.data.DataLoader(
                _StepCrops(self, batch_size, rank, world_size), batch_size=None, sampler=order,
                num_workers=workers, collate_fn=_identity,
            ))
        return (_pin(_to_float(c), pin_memory) for c in made)

    def __repr__(self) -> str:
        mib = self.nbytes / 2**20
        return (f"{type(self).__name__}(images={len(self)}, scale={self.scale}, lr_patch={self.lr_patch}, "
                f"seed={self.seed}, augment={self.augment}, memory={mib:.0f} MiB)")


def _to_float(crops: tuple) -> Batch:
    """uint8 (N, 3, H, W) arrays or tensors (``hr`` may be None) -> float32 tensors ``x / 255``.

    In numpy, single-threaded: torch's threads can make this copy ten times slower on a busy small CPU.
    """
    def one(u8: np.ndarray | torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(np.divide(np.asarray(u8), np.float32(255.0), dtype=np.float32))

    lr, hr = crops
    return one(lr), None if hr is None else one(hr)


def _pin(b: Batch, pin: bool) -> Batch:
    if not pin:
        return b
    return b[0].pin_memory(), None if b[1] is None else b[1].pin_memory()


def _identity(b: Any) -> Any:
    return b


class _StepCrops(torch.utils.data.Dataset):
    """Map-style dataset whose item ``k`` is the uint8 crops of step ``k`` (for a DataLoader with workers)."""

    def __init__(self, source: _CropSampler, batch_size: int, rank: int, world_size: int) -> None:
        self.source, self.batch_size, self.rank, self.world_size = source, batch_size, rank, world_size

    def __getitem__(self, step: int) -> tuple:
        lr, hr = self.source.crops(step, self.batch_size, self.rank, self.world_size)
        return torch.from_numpy(lr), None if hr is None else torch.from_numpy(hr)  # shared memory, not pickled


class TrainingSet(_CropSampler):
    """Random aligned ``(lr, hr)`` crops of the HR images in ``hr_folders``, deterministic in ``(seed, step)``.

    Every image file directly in each folder (sub-folders are not searched) is read once, mod-cropped to a
    multiple of ``scale`` and downsampled once with MATLAB-exact bicubic to a uint8 LR image, the benchmarks'
    convention; both are kept in memory. Crops are ``hr_patch`` HR pixels square (``hr_patch / scale`` LR).

    Args:
        hr_folders: a folder of HR images, or several (e.g. ``train/T91`` and ``train/BSD200`` for "291").
        scale: the SR factor.
        hr_patch: HR crop size, a multiple of ``scale``.
        seed: the seed of the crop positions and augmentations (≥ 0).
        augment: apply one of the 8 flips/transposes per item (the same to LR and HR).
        cache_dir: keep each LR image also as ``<cache_dir>/<sha256 of the file>_x<scale>_v<N>.npy``, read
            instead of recomputed by later runs (any number of processes may share it). None: memory only.
        skip_small: leave out images smaller than the patch (after mod-crop) instead of refusing them; they are
            listed in :attr:`skipped`. The "291" set has 51 T91 images under 192 pixels.
        load_threads: threads that read and downsample the images (default: the CPU count, at most 8). While
            they run, torch's own thread count is set to 1 (restored after): its threads made the small bicubic
            products 15 times slower on a busy 2-core machine.

    Attributes:
        files: the image files used, in order (folder order, then file name).
        skipped: image files left out by ``skip_small``.
        load_seconds: the time the images took to load; ``cache_hits``: LR images read from ``cache_dir``.

    Raises:
        SrqError: a folder is missing or has no images, an image is unreadable or smaller than the patch.
        ConfigError: ``hr_patch`` is not a multiple of ``scale``, or a bad number.
    """

    def __init__(self, hr_folders: PathLike | Sequence[PathLike], scale: int, hr_patch: int, *, seed: int = 0,
                 augment: bool = True, cache_dir: PathLike | None = None, skip_small: bool = False,
                 load_threads: int | None = None) -> None:
        self.scale = _check_int("scale", scale, 1)
        hr_patch = _check_int("hr_patch", hr_patch, 1)
        if hr_patch % self.scale:
            lo = max(self.scale, hr_patch - hr_patch % self.scale)
            raise ConfigError(f"HR patch {hr_patch} is not a multiple of the scale {self.scale}: "
                              f"use e.g. {lo} or {lo + self.scale}")
        self.hr_patch = hr_patch
        self.cache_dir = None if cache_dir is None else Path(cache_dir).expanduser()
        files = [f for folder in _folders(hr_folders) for f in _folder_images(folder, "training")]
        threads = load_threads if load_threads is not None else min(8, os.cpu_count() or 1)
        t0 = time.perf_counter()
        before = torch.get_num_threads()
        try:  # parallel over images: torch's own threads slow the small bicubic matmuls down on a busy CPU
            torch.set_num_threads(1)
            with ThreadPoolExecutor(_check_int("load_threads", threads, 1)) as pool:
                loaded = list(pool.map(self._load, files))
        finally:
            torch.set_num_threads(before)
        self.cache_hits = sum(hit for _, _, hit in loaded)
        self.load_seconds = time.perf_counter() - t0
        self.files, self.skipped, self._lr, self._hr = [], [], [], []
        small: list[Path] = []
        for path, (lr, hr, _) in zip(files, loaded):
            if min(hr.shape[:2]) < hr_patch:
                (self.skipped if skip_small else small).append(path)
                continue
            self.files.append(path)
            self._lr.append(lr)
            self._hr.append(hr)
        if small:
            h, w = read_image(small[0]).shape[:2]
            more = f" and {len(small) - 1} more" if len(small) > 1 else ""
            raise SrqError(f"training image {small[0]} ({w}×{h}){more} is smaller than the HR patch {hr_patch} after "
                           f"mod-crop to x{self.scale}: use a smaller patch, remove it, or pass skip_small=True")
        if not self._lr:
            raise SrqError(f"all {len(files)} training images are smaller than the HR patch {hr_patch}: "
                           f"use a smaller patch")
        self._init_sampler(hr_patch // self.scale, seed, augment)

    def _cache_path(self, digest: str) -> Path:
        assert self.cache_dir is not None
        return self.cache_dir / f"{digest}_x{self.scale}_v{BICUBIC_CACHE_VERSION}.npy"

    def _load(self, path: Path) -> tuple[np.ndarray, np.ndarray, bool]:
        """``(lr, hr, from cache)`` of one file: HR mod-cropped, LR = MATLAB bicubic of it rounded to uint8."""
        hr = np.ascontiguousarray(mod_crop(read_image(path), self.scale))
        if min(hr.shape[:2]) < self.hr_patch:  # refused or skipped by the caller: no need for its LR
            return np.zeros((0, 0, 3), np.uint8), hr, False
        shape = (hr.shape[0] // self.scale, hr.shape[1] // self.scale, 3)
        if self.cache_dir is None:
            return imresize_uint8(hr, 1 / self.scale), hr, False
        cached = self._cache_path(file_sha256(path))
        lr = _load_npy(cached, shape)
        if lr is not None:
            return lr, hr, True
        lr = imresize_uint8(hr, 1 / self.scale)
        try:
            _save_npy(cached, lr)
        except OSError as err:
            raise SrqError(f"cannot write the LR cache {cached}: {err.strerror or err}; "
                           f"give a writable cache_dir or none") from None
        return lr, hr, False


class LROnlySet(_CropSampler):
    """Random LR crops (``hr`` is None) with :class:`TrainingSet`'s deterministic sampling and augmentation.

    For fine-tuning against an FP teacher, whose outputs are the targets.

    Args:
        lr_images: a folder of LR images, a calibration set name under ``<data_root>/calibration/``
            (e.g. ``"DIV2K_test_LRx4"``), a list of such folders, or a list of (H, W, 3) uint8 arrays.
        lr_patch: crop size in LR pixels.
        seed, augment: as for :class:`TrainingSet`.
        skip_small: leave out images smaller than the patch (listed in :attr:`skipped`) instead of refusing them.
        data_root: where calibration set names are looked up (default ``$SRQ_DATA``).
    """

    scale = 1

    def __init__(self, lr_images: PathLike | Sequence[PathLike] | Sequence[np.ndarray], lr_patch: int,
                 seed: int = 0, *, augment: bool = True, skip_small: bool = False,
                 data_root: PathLike | None = None) -> None:
        lr_patch = _check_int("lr_patch", lr_patch, 1)
        t0 = time.perf_counter()
        if isinstance(lr_images, (str, os.PathLike)):
            files = calibration_images(lr_images, data_root=data_root)
            images = [read_image(f) for f in files]
        elif len(lr_images) and all(isinstance(x, np.ndarray) for x in lr_images):
            images = [np.ascontiguousarray(x) for x in lr_images]
            bad = [x.shape for x in images if x.dtype != np.uint8 or x.ndim != 3 or x.shape[2] != 3]
            if bad:
                raise SrqError(f"LR images must be (H, W, 3) uint8 arrays, got one of shape {bad[0]}")
            files = [Path(f"<array {i}>") for i in range(len(images))]
        else:
            files = [f for folder in _folders(lr_images) for f in _folder_images(folder, "LR")]  # type: ignore[arg-type]
            images = [read_image(f) for f in files]
        self.load_seconds = time.perf_counter() - t0
        self.files, self.skipped, self._lr, self._hr = [], [], [], None
        for path, img in zip(files, images):
            if min(img.shape[:2]) < lr_patch:
                if not skip_small:
                    h, w = img.shape[:2]
                    raise SrqError(f"LR image {path} ({w}×{h}) is smaller than the patch {lr_patch}: "
                                   f"use a smaller patch, remove it, or pass skip_small=True")
                self.skipped.append(path)
                continue
            self.files.append(path)
            self._lr.append(img)
        if not self._lr:
            raise SrqError(f"no LR images to crop: all {len(files)} are smaller than the patch {lr_patch}")
        self._init_sampler(lr_patch, seed, augment)
