"""Fetch the standard benchmark HR sets into ``<data_root>/benchmarks/<Name>/``.

Only :func:`download_benchmarks` touches the network; :func:`extract_benchmark` (archive -> folder)
is pure and works on any local archive.

Sources: the per-set archives of the ``eugenesiow/<Set>`` Hugging Face datasets, each a
``data/<Set>_HR.tar.gz`` holding ``<Set>_HR/*.png`` (as their dataset cards and the many scripts
that use them document; the URLs were not fetched while writing this, there is no network here).
The EDSR authors' ``https://cv.snu.ac.kr/research/EDSR/benchmark.tar`` (``benchmark/<Set>/HR/*.png``)
is a documented alternative: :func:`extract_benchmark` understands its layout too. B100 is
distributed at 481 x 321 or 480 x 321 depending on the source; the mod-crop makes both give the
same HR for scales 2, 3 and 4. Manga109 is licensed per user (http://www.manga109.org/) and is
not downloaded.
"""

from __future__ import annotations

import os
import shutil
import tarfile
import tempfile
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable
from pathlib import Path, PurePosixPath

from ..errors import SrqError
from ..fileio import follow_umask, replace_folder
from ..paths import data_root as _data_root
from .datasets import BENCHMARKS, canonical_name, list_images, spellings_of
from .io import is_image_file

__all__ = ["DATASET_URLS", "ProgressFn", "download_benchmarks", "extract_benchmark", "fetch"]

_HF = "https://huggingface.co/datasets/eugenesiow"
DATASET_URLS: dict[str, str] = {
    "Set5": f"{_HF}/Set5/resolve/main/data/Set5_HR.tar.gz",
    "Set14": f"{_HF}/Set14/resolve/main/data/Set14_HR.tar.gz",
    "B100": f"{_HF}/BSD100/resolve/main/data/BSD100_HR.tar.gz",
    "Urban100": f"{_HF}/Urban100/resolve/main/data/Urban100_HR.tar.gz",
}

ProgressFn = Callable[[str, int, int | None], None]
"""Called as ``progress(label, bytes_done, bytes_total_or_None)`` while downloading."""


def fetch(url: str, dest: Path, progress: ProgressFn | None = None, label: str = "") -> Path:
    """Download ``url`` to ``dest`` (written to a temporary file, then renamed)."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".part", dir=dest.parent)
    try:
        request = urllib.request.Request(url, headers={"User-Agent": "srq"})
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(request, timeout=60) as response:
            total = int(response.headers.get("Content-Length") or 0) or None
            done = 0
            while chunk := response.read(1 << 20):
                out.write(chunk)
                done += len(chunk)
                if progress is not None:
                    progress(label or dest.name, done, total)
        follow_umask(tmp)
        os.replace(tmp, dest)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return dest


def _hr_members(tar: tarfile.TarFile, name: str) -> list[tarfile.TarInfo]:
    """The archive's HR images of set ``name``.

    Keeps regular image files; in a multi-set archive (folders named like known sets) only those under
    this set's folder; then, if some sit under an ``HR`` / ``*_HR`` folder, only those.
    """
    spellings = {name.lower(), *spellings_of(name)}
    known_sets = {s for bench in BENCHMARKS for s in spellings_of(bench)}

    def dirs(m: tarfile.TarInfo) -> list[str]:
        return [part.lower() for part in PurePosixPath(m.name).parts[:-1]]

    members = [
        m for m in tar.getmembers()
        if m.isfile() and is_image_file(m.name) and not PurePosixPath(m.name).name.startswith(".")
        and "__macosx" not in dirs(m)
    ]
    if any(known_sets.intersection(dirs(m)) for m in members):
        members = [m for m in members if spellings.intersection(dirs(m))]
    if any(d == "hr" or d.endswith("_hr") for m in members for d in dirs(m)):
        members = [m for m in members if any(d == "hr" or d.endswith("_hr") for d in dirs(m))]
    return members


def extract_benchmark(
    archive: str | os.PathLike, name: str, data_root: str | os.PathLike | None = None, force: bool = False
) -> Path:
    """Extract the HR images of benchmark ``name`` from a tar archive into ``<data_root>/benchmarks/<Name>/``.

    Images land flat in that folder under their own file names. The folder appears atomically (built
    in a temporary folder next to it, then renamed); an existing non-empty one is kept unless ``force``.
    Returns the folder.
    """
    canonical = canonical_name(name) or name
    target = _data_root(data_root) / "benchmarks" / canonical
    if target.is_dir() and list_images(target) and not force:
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{canonical}.", dir=target.parent))
    try:
        try:
            with tarfile.open(archive, "r:*") as tar:
                members = _hr_members(tar, canonical)
                if not members:
                    raise SrqError(f"archive {archive} holds no HR images of {canonical}: check the file or its source")
                for member in members:
                    out = tmp / PurePosixPath(member.name).name
                    if out.exists():
                        raise SrqError(f"archive {archive} holds two images named {out.name} for {canonical}")
                    source = tar.extractfile(member)
                    assert source is not None  # a regular file (_hr_members keeps no others)
                    with source, open(out, "wb") as f:
                        shutil.copyfileobj(source, f)
        except (tarfile.TarError, OSError, EOFError) as err:
            raise SrqError(f"cannot extract {archive}: {err}; delete it and download again") from None
        follow_umask(tmp)
        replace_folder(tmp, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def download_benchmarks(
    names: Iterable[str] | None = None,
    data_root: str | os.PathLike | None = None,
    progress: ProgressFn | None = None,
    force: bool = False,
) -> dict[str, Path]:
    """Download and extract benchmark HR sets (default: all of :data:`DATASET_URLS`).

    Sets already present are skipped unless ``force``. Returns ``{name: folder}``.

    Raises:
        SrqError: unknown or non-downloadable name, network or archive failure.
    """
    root = _data_root(data_root)
    wanted = []
    for raw in names if names is not None else DATASET_URLS:
        canonical = canonical_name(raw)
        if canonical is None:
            raise SrqError(f"unknown benchmark set {raw!r}: choose from {', '.join(DATASET_URLS)}")
        if canonical not in DATASET_URLS:
            raise SrqError(
                f"{canonical} cannot be downloaded automatically (its licence requires a request at "
                f"http://www.manga109.org/): put its images in {root / 'benchmarks' / canonical}/"
            )
        wanted.append(canonical)
    done: dict[str, Path] = {}
    for name in dict.fromkeys(wanted):
        target = root / "benchmarks" / name
        if target.is_dir() and list_images(target) and not force:
            done[name] = target
            continue
        url = DATASET_URLS[name]
        root.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(prefix=".srq-download-", dir=root) as tmp:
            archive = Path(tmp) / PurePosixPath(url).name
            try:
                fetch(url, archive, progress, label=name)
            except (urllib.error.URLError, OSError) as err:
                raise SrqError(
                    f"cannot download {name} from {url}: {err}; check the network, or download the "
                    f"archive yourself and put its HR images in {target}/"
                ) from None
            done[name] = extract_benchmark(archive, name, root, force=force)
    return done

