"""Visual comparison crops: the same HR region from HR, bicubic, the FP model and each run with a model.

Each SR image is computed once per (image, crop box) and cached as a PNG with a JSON sidecar holding the whole
image's PSNR: a run's crops in ``<run>/report_crops/``, FP and bicubic crops in ``cache_dir``. The crop box is
the ``size``×``size`` HR window where the worst-hit run differs most from FP (the centre without models), kept in
``cache_dir/boxes.json``; the worst-hit run is the one with the lowest PSNR on that image among the runs with
per-image scores, else the one with the lowest PSNR on its set.
"""

from __future__ import annotations

import base64
import io
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from ..fileio import temp_beside
from ..errors import SrqError
from .runs import ReportRun

__all__ = ["Crop", "ImageCrops", "choose_images", "make_crops", "DEFAULT_CACHE"]

DEFAULT_CACHE = Path("~/.cache/srq/report").expanduser()
PREFERRED_SETS = ("Urban100", "Set14")


@dataclass
class Crop:
    """One panel: ``png`` (the crop, RGB uint8 encoded) and the whole image's PSNR (dB, Y; None for HR)."""

    label: str
    png: bytes | None
    psnr: float | None = None
    note: str = ""  # why there is no crop

    @property
    def data_uri(self) -> str:
        return "data:image/png;base64," + base64.b64encode(self.png or b"").decode("ascii")


@dataclass
class ImageCrops:
    """The crops of one benchmark image; ``box`` = (top, left, size) in HR pixels."""

    dataset: str
    name: str
    box: tuple[int, int, int]
    crops: list[Crop] = field(default_factory=list)
    why: str = ""  # how the image was chosen


def choose_images(runs: list[ReportRun], requested: list[str], per_set: int = 2) -> list[tuple[str, str, str]]:
    """(set, image, why) to show: ``requested`` as ``SET/IMAGE`` (SET a benchmark name or folder), else the
    ``per_set`` images of Urban100 and Set14 (or, lacking those, any set with per-image scores) whose PSNR drops
    most from FP on average over the quantized runs with per-image scores."""
    if requested:
        out = []
        for spec in requested:
            ds, _, name = spec.rpartition("/")
            if not ds or not name:
                raise SrqError(f"--images: {spec!r} is not SET/IMAGE (e.g. Set14/barbara)")
            out.append((ds, Path(name).stem, "chosen by name"))
        return out
    fp = {ds: imgs for r in runs if r.is_fp for ds, imgs in r.images.items()}
    quantized = [r for r in runs if not r.is_fp and r.images]
    sets = [s for s in PREFERRED_SETS if any(s in r.images for r in quantized)] or \
        sorted({s for r in quantized for s in r.images})
    out = []
    for ds in sets:
        drops: dict[str, list[float]] = {}
        for r in quantized:
            for name, p in r.images.get(ds, {}).items():
                drops.setdefault(name, []).append(p - fp.get(ds, {}).get(name, 0.0))
        worst = sorted(drops, key=lambda n: sum(drops[n]) / len(drops[n]))[:per_set]
        what = "Δ PSNR to FP" if ds in fp else "PSNR (no FP per-image scores)"
        out += [(ds, n, f"worst-hit in {ds} by mean {what}: {sum(drops[n]) / len(drops[n]):+.2f} dB") for n in worst]
    return out


def _png(img: np.ndarray) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(img)).save(buf, format="PNG", optimize=True)
    return buf.getvalue()


def _write_bytes(path: Path, data: bytes) -> None:
    """Write atomically (temp file in the same folder, then rename)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_beside(path)
    try:
        tmp.write_bytes(data)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name)


class _Cache:
    """A folder of crops ``<set>_<image>_<top>_<left>_<size>.png`` with ``.json`` sidecars ({"psnr": dB})."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    def _path(self, ds: str, name: str, box: tuple[int, int, int]) -> Path:
        return self.folder / f"{_safe(ds)}_{_safe(name)}_{box[0]}_{box[1]}_{box[2]}.png"

    def get(self, ds: str, name: str, box: tuple[int, int, int]) -> tuple[bytes, float | None] | None:
        path = self._path(ds, name, box)
        side = path.with_suffix(".json")
        if path.is_file() and side.is_file():
            return path.read_bytes(), json.loads(side.read_text()).get("psnr")
        return None

    def put(self, ds: str, name: str, box: tuple[int, int, int], sr: np.ndarray, psnr: float) -> tuple[bytes, float]:
        t, left, s = box
        data = _png(sr[t:t + s, left:left + s])
        path = self._path(ds, name, box)
        try:
            _write_bytes(path, data)
            _write_bytes(path.with_suffix(".json"), json.dumps({"psnr": psnr}).encode())
        except OSError:
            pass  # a read-only run folder: the crop is still shown, just not cached
        return data, psnr


def _max_diff_box(a: np.ndarray, b: np.ndarray, size: int, stride: int = 4) -> tuple[int, int, int]:
    """The ``size``² window (top, left, size) with the largest summed absolute difference of two images."""
    d = np.abs(a.astype(np.float32) - b.astype(np.float32)).sum(axis=2)
    c = np.pad(d.cumsum(0).cumsum(1), ((1, 0), (1, 0)))
    h, w = d.shape
    tops, lefts = np.arange(0, h - size + 1, stride), np.arange(0, w - size + 1, stride)
    sums = (c[tops[:, None] + size, lefts[None] + size] - c[tops[:, None], lefts[None] + size]
            - c[tops[:, None] + size, lefts[None]] + c[tops[:, None], lefts[None]])
    i, j = np.unravel_index(int(np.argmax(sums)), sums.shape)
    return int(tops[i]), int(lefts[j]), size


def _sample(ds: str, name: str, scale: int, data_root: Any):
    from ..data import SRBenchmark

    bench = SRBenchmark(ds, scale, data_root=data_root)
    for index, path in enumerate(bench.files):
        if path.stem == name:
            return bench.name, bench[index]
    raise SrqError(f"--images: no image {name!r} in {bench.name} ({bench.folder}); it has e.g. "
                   f"{', '.join(p.stem for p in bench.files[:4])}")


def _sr(model: Any, lr: np.ndarray, scale: int) -> np.ndarray:
    from ..engine.inference import super_resolve

    return super_resolve(model, lr, scale)


def _psnr(sr: np.ndarray, hr: np.ndarray, scale: int) -> float:
    from ..metrics import psnr

    return float(psnr(sr, hr, crop_border=scale))


def _run_cache(run: ReportRun, cache_dir: Path) -> _Cache:
    folder = run.folder or run.source
    if os.access(folder, os.W_OK):
        return _Cache(folder / "report_crops")
    return _Cache(cache_dir / "runs" / _safe(str(folder.resolve())))


def make_crops(runs: list[ReportRun], chosen: list[tuple[str, str, str]], cache_dir: Path, size: int = 64,
               data_root: Any = None, log: Callable[[str], None] = lambda m: None) -> list[ImageCrops]:
    """Crops of each chosen image for HR, bicubic, FP (official weights of the runs' model) and every run with a
    model. Models are loaded only when a crop is not cached yet."""
    from ..data import imresize_uint8

    with_model = [r for r in runs if r.folder is not None]
    if not with_model:
        return []
    model_name, scale = with_model[0].model, with_model[0].scale
    boxes_path = cache_dir / "boxes.json"
    boxes: dict[str, list[int]] = json.loads(boxes_path.read_text()) if boxes_path.is_file() else {}
    loaded: dict[str, Any] = {}

    def model_of(run: ReportRun | None) -> Any:
        key = "fp" if run is None else str(run.folder)
        if key not in loaded:
            from ..api import load
            from ..models import create_model

            log(f"loading {'FP ' + model_name if run is None else run.label}")
            loaded[key] = create_model(model_name, scale, "official") if run is None else load(run.folder)  # type: ignore[arg-type]
        return loaded[key]

    fp_cache = _Cache(cache_dir / f"{_safe(model_name)}_x{scale}_fp")
    bic_cache = _Cache(cache_dir / f"bicubic_x{scale}")
    fp_note = ""
    out = []
    for ds, name, why in chosen:
        ds, sample = _sample(ds, name, scale, data_root)
        candidates = [r for r in with_model if (r.model, r.scale) == (model_name, scale) and not r.is_fp]
        scored = [r for r in candidates if name in r.images.get(ds, {})]  # per-image scores say who is hit hardest
        worst = (min(scored, key=lambda r: r.images[ds][name]) if scored
                 else min(candidates, key=lambda r: r.scores.get(ds, (0.0,))[0]))
        key = f"{model_name}_x{scale}/{ds}/{name}/{worst.source.name}/{size}"
        computed: dict[str, np.ndarray] = {}
        if key not in boxes:
            s = min(size, *sample.hr.shape[:2])
            try:
                fp_sr = computed["fp"] = _sr(model_of(None), sample.lr, scale)
                computed[str(worst.folder)] = _sr(model_of(worst), sample.lr, scale)
                boxes[key] = list(_max_diff_box(fp_sr, computed[str(worst.folder)], s))
            except SrqError as e:
                fp_note = str(e)
                h, w = sample.hr.shape[:2]
                boxes[key] = [(h - s) // 2, (w - s) // 2, s]
            _write_bytes(boxes_path, json.dumps(boxes, indent=1).encode())
        box = (boxes[key][0], boxes[key][1], boxes[key][2])
        t, left, s = box
        item = ImageCrops(ds, name, box, why=why)
        item.crops.append(Crop("HR", _png(sample.hr[t:t + s, left:left + s])))
        cached = bic_cache.get(ds, name, box)
        if cached is None:
            bic = imresize_uint8(sample.lr, scale)
            cached = bic_cache.put(ds, name, box, bic, _psnr(bic, sample.hr, scale))
        item.crops.append(Crop("bicubic", *cached))
        sources: list[tuple[str, ReportRun | None, _Cache]] = [("FP", None, fp_cache)]
        sources += [(r.label, r, _run_cache(r, cache_dir)) for r in candidates]
        for label, run, cache in sources:
            cached = cache.get(ds, name, box)
            if cached is None:
                k = "fp" if run is None else str(run.folder)
                try:
                    sr = computed[k] if k in computed else _sr(model_of(run), sample.lr, scale)
                except SrqError as e:
                    fp_note = fp_note or str(e)
                    item.crops.append(Crop(label, None, note=f"no crop: {e}"))
                    continue
                cached = cache.put(ds, name, box, sr, _psnr(sr, sample.hr, scale))
            item.crops.append(Crop(label, *cached))
        out.append(item)
    return out
