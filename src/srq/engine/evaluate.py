"""Evaluation runner: model + benchmark sets → PSNR/SSIM per image and per set, with wall time."""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TYPE_CHECKING, Callable, Iterable, Iterator, Protocol, Sequence

import torch
from torch import nn

from ..data import Sample, SRBenchmark, write_image
from ..metrics import psnr_ssim
from .inference import memory_format, super_resolve, to_uint8_image
from ..utils.memory import release_memory
from ..utils.progress import progress_bar

if TYPE_CHECKING:
    from ..tasks import Task

__all__ = ["ImageScore", "DatasetScore", "ScoreLog", "BenchmarkSet", "evaluate", "evaluate_dataset", "validation_psnr",
           "input_psnr", "score_log_path"]


class _Samples(Protocol):
    """An indexable set of ``(name, lr, hr)`` samples."""

    def __len__(self) -> int: ...

    def __getitem__(self, index: int) -> Sample: ...


class BenchmarkSet(_Samples, Protocol):
    """What :func:`evaluate_dataset` needs of a set (e.g. :class:`~srq.data.SRBenchmark`): indexable
    ``(name, lr, hr)`` samples, a ``name`` and a ``scale``."""

    @property
    def name(self) -> str: ...

    @property
    def scale(self) -> int: ...


@dataclass
class ImageScore:
    """Scores of one image: PSNR in dB, SSIM in [0, 1], inference + metric time in seconds."""

    name: str
    psnr: float
    ssim: float
    seconds: float


@dataclass
class DatasetScore:
    """Scores of one benchmark set at one scale; ``psnr``/``ssim`` are means over images."""

    dataset: str
    scale: int
    images: list[ImageScore] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def psnr(self) -> float:
        return sum(i.psnr for i in self.images) / max(len(self.images), 1)

    @property
    def ssim(self) -> float:
        return sum(i.ssim for i in self.images) / max(len(self.images), 1)

    def to_dict(self) -> dict:
        return {"dataset": self.dataset, "scale": self.scale, "psnr": self.psnr, "ssim": self.ssim,
                "num_images": len(self.images), "seconds": self.seconds,
                "images": [asdict(i) for i in self.images]}

    @classmethod
    def from_dict(cls, d: dict) -> "DatasetScore":
        """Inverse of :meth:`to_dict` (e.g. to reuse scores from a results file)."""
        return cls(d["dataset"], d["scale"], [ImageScore(**i) for i in d["images"]], d.get("seconds", 0.0))


def _prefetch(dataset: _Samples, pool: ThreadPoolExecutor) -> Iterator[Sample]:
    """Yield ``dataset[i]`` while ``dataset[i + 1]`` is read and downsampled in ``pool``."""
    if len(dataset) == 0:
        return
    nxt = pool.submit(dataset.__getitem__, 0)
    for i in range(len(dataset)):
        item = nxt.result()
        if i + 1 < len(dataset):
            nxt = pool.submit(dataset.__getitem__, i + 1)
        yield item


class _Subset:
    """The items ``indices`` of ``dataset`` (same ``name`` / ``scale``), for a resumed evaluation."""

    def __init__(self, dataset: _Samples, indices: list[int]) -> None:
        self.dataset, self.indices = dataset, indices
        self.name, self.scale = getattr(dataset, "name", ""), getattr(dataset, "scale", 1)

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int) -> Sample:
        return self.dataset[self.indices[i]]


class ScoreLog:
    """Per-image scores of one set appended to a JSON-lines file as they are made, so that an interrupted
    evaluation goes on where it stopped.

    Line 1 describes the evaluation (set, scale, number of images, inference settings); a file that describes
    another evaluation is started afresh. Each further line is ``{"index", "name", "psnr", "ssim",
    "seconds"}``; a torn last line (the process was killed while writing) is ignored.
    """

    def __init__(self, path: str | os.PathLike, header: dict) -> None:
        self.path, self.header = Path(path), header
        self.done: dict[int, ImageScore] = {}  # the rows found when the log was opened
        lines = self.path.read_text().splitlines() if self.path.is_file() else []
        if lines and _json_or_none(lines[0]) == header:
            for line in lines[1:]:
                row = _json_or_none(line)
                if isinstance(row, dict) and row.keys() == {"index", "name", "psnr", "ssim", "seconds"}:
                    index = row.pop("index")
                    self.done[index] = ImageScore(**row)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "w") as f:  # rewrite: drops a torn line and any other evaluation's rows
            f.write(json.dumps(header) + "\n")
            f.writelines(json.dumps({"index": i, **asdict(s)}) + "\n" for i, s in sorted(self.done.items()))

    def append(self, index: int, score: ImageScore) -> None:
        with open(self.path, "a") as f:
            f.write(json.dumps({"index": index, **asdict(score)}) + "\n")
            f.flush()
            os.fsync(f.fileno())


def _json_or_none(line: str):
    try:
        return json.loads(line)
    except json.JSONDecodeError:
        return None


@torch.no_grad()
def evaluate_dataset(model: nn.Module, dataset: BenchmarkSet, *, tile: int | None = None, overlap: int = 32,
                     y_channel: bool = True, save_dir: str | os.PathLike | None = None,
                     progress: bool = True, split: int | None = None,
                     score_log: str | os.PathLike | None = None,
                     task: "Task | None" = None) -> DatasetScore:
    """Super-resolve every image of ``dataset`` and score it with the benchmark protocol.

    ``dataset`` is an indexable set of ``(name, lr, hr)`` with ``.name`` and ``.scale`` (e.g.
    :class:`~srq.data.SRBenchmark`). Protocol: HR mod-cropped to the scale, LR by MATLAB-exact bicubic,
    SR clamped and rounded to uint8, PSNR/SSIM on Y (BT.601) with ``crop_border = scale``;
    ``y_channel=False`` scores RGB instead. Reading the next image and scoring the last one run in a
    helper thread while the model works; ``ImageScore.seconds`` is the model's time on that image.
    ``score_log``: a JSON-lines file (:class:`ScoreLog`) that keeps each image's scores as soon as they are
    made; images already in it are not run again (the caller must delete it when the model changes). The
    set's ``seconds`` then add the earlier images' model time to this call's wall time.
    ``task`` (:mod:`srq.tasks`): score with the task's protocol (``dataset`` then yields the task's
    ``(name, input, target)``, e.g. :class:`~srq.tasks.TaskBenchmark`); None: the SR protocol above.
    """
    scale = dataset.scale
    score: Callable[[object, object], tuple[float, float]] = (
        task.score if task is not None else lambda sr, hr: psnr_ssim(sr, hr, scale, y_channel))  # type: ignore
    result = DatasetScore(dataset.name, scale)
    start = time.perf_counter()
    log = None if score_log is None else ScoreLog(score_log, {
        "dataset": dataset.name, "scale": scale, "images": len(dataset), "tile": tile,
        "overlap": overlap if tile else None, "split": split, "y_channel": y_channel,
        **({"task": task.to_dict()} if task is not None else {})})
    earlier = {} if log is None else log.done  # scores from an interrupted run of this evaluation
    todo = [i for i in range(len(dataset)) if i not in earlier]
    done = dict(earlier)
    pending: list[tuple[int, str, float, Future[tuple[float, float]]]] = []  # (index, name, seconds, scores)
    writes: list[Future[Path]] = []

    def collect(wait: bool) -> None:  # record finished scores in image order
        while pending and (wait or pending[0][3].done()):
            index, name, seconds, scores = pending.pop(0)
            done[index] = ImageScore(name, *scores.result(), seconds)
            if log is not None:
                log.append(index, done[index])

    with ThreadPoolExecutor(max_workers=1) as pool:
        items = zip(todo, _prefetch(_Subset(dataset, todo), pool))
        for index, (name, lr, hr) in progress_bar(items, total=len(todo), description=f"{dataset.name} x{scale}",
                                                  enabled=progress):
            t0 = time.perf_counter()
            sr = super_resolve(model, lr, scale, tile=tile, overlap=overlap, split=split)
            seconds = time.perf_counter() - t0
            release_memory(collect=False)  # image sizes vary: do not let freed buffers pile up
            collect(wait=False)
            pending.append((index, name, seconds, pool.submit(score, sr, hr)))
            if save_dir is not None:
                png = Path(save_dir) / dataset.name / f"{Path(name).stem}_x{scale}.png"
                writes.append(pool.submit(write_image, png, sr))
        collect(wait=True)
        for w in writes:
            w.result()
    result.images = [done[i] for i in sorted(done)]
    result.seconds = time.perf_counter() - start + sum(s.seconds for s in earlier.values())
    return result


def evaluate(model: nn.Module, datasets: Sequence[str | os.PathLike] | str, scale: int, *,
             data_root: str | os.PathLike | None = None, tile: int | None = None, overlap: int = 32,
             y_channel: bool = True, save_dir: str | os.PathLike | None = None,
             progress: bool = True, channels_last: bool = True, split: int | None = None,
             score_logs: str | os.PathLike | None = None, task: "Task | None" = None) -> list[DatasetScore]:
    """Evaluate ``model`` on benchmark sets given by name (``"Set5"``) or folder.

    All sets are resolved before any work starts, so a missing set fails at once. ``channels_last`` (default)
    runs the model with its 4-D weights in the NHWC memory format, a defined format whatever the model's own
    (convolutions sum in a format-dependent order, and a quantized model's outputs can round the other way);
    ``False`` runs it as it is. Either way the model is left as it was: same tensors, formats and mode.
    ``tile`` / ``split``: tiled or partitioned inference (see
    :func:`~srq.engine.inference.super_resolve`; ``split=200`` is MambaIRv2's official test).
    ``score_logs``: a folder where each set's per-image scores are kept as they are made
    (:func:`score_log_path`), so that an interrupted evaluation of the same model goes on where it stopped.
    ``task`` (:mod:`srq.tasks`, e.g. ``Denoise(sigma=25)``): make each set's inputs from its clean images and score
    them by that task's protocol (``scale`` must then be 1 and ``y_channel`` is the task's); None or an
    :class:`~srq.tasks.SR` task: the SR protocol.
    Returns one :class:`DatasetScore` per set, in the given order.
    """
    from ..tasks import SR, TaskBenchmark

    if isinstance(task, SR):
        task = None  # the SR protocol, at ``scale``
    if task is not None and scale != task.scale:
        from ..errors import SrqError

        raise SrqError(f"the {task.name} task runs models at scale {task.scale}, not x{scale}")
    names: Iterable[str | os.PathLike] = [datasets] if isinstance(datasets, (str, os.PathLike)) else datasets
    sets: list[BenchmarkSet] = [SRBenchmark(n, scale, data_root=data_root) if task is None
                                else TaskBenchmark(n, task, data_root=data_root) for n in names]
    was_training = model.training
    model.eval()
    try:
        with memory_format(model, torch.channels_last if channels_last else None):
            return [evaluate_dataset(model, s, tile=tile, overlap=overlap, y_channel=y_channel, save_dir=save_dir,
                                     progress=progress, split=split, task=task,
                                     score_log=None if score_logs is None else
                                     score_log_path(score_logs, s.name, scale, tile=tile, split=split,
                                                    y_channel=y_channel, task=task))
                    for s in sets]
    finally:
        model.train(was_training)


def score_log_path(folder: str | os.PathLike, dataset: str, scale: int, *, tile: int | None = None,
                   split: int | None = None, y_channel: bool = True, task: "Task | None" = None) -> Path:
    """``<folder>/<set>_x<scale>[_<task>][_split<N>][_tile<T>][_rgb].jsonl``: one score log per set and inference."""
    parts = [f"{dataset}_x{scale}"] + ([task.label()] if task is not None else []) \
        + ([f"split{split}"] if split else []) + ([f"tile{tile}"] if tile else []) + ([] if y_channel else ["rgb"])
    return Path(folder) / ("_".join(parts) + ".jsonl")


def validation_psnr(model: nn.Module, dataset: str | os.PathLike, scale: int, *, images: int = 0,
                    data_root: str | os.PathLike | None = None, task: "Task | None" = None) -> float:
    """Mean PSNR (dB, Y channel, benchmark protocol; with a restoration ``task``, that task's protocol) of ``model``
    on the first ``images`` images of ``dataset`` (0: all of them), for validation during training. The model's
    memory format is left as it is and its train/eval mode is restored."""
    from ..tasks import SR, TaskBenchmark

    data = SRBenchmark(dataset, scale, data_root=data_root) if task is None or isinstance(task, SR) \
        else TaskBenchmark(dataset, task, data_root=data_root)
    n = len(data) if images == 0 else min(images, len(data))
    was_training = model.training
    model.eval()
    try:
        return evaluate_dataset(model, _Subset(data, list(range(n))), progress=False,
                                task=None if task is None or isinstance(task, SR) else task).psnr
    finally:
        model.train(was_training)


def input_psnr(dataset: str | os.PathLike, task: "Task", *, images: int = 0,
               data_root: str | os.PathLike | None = None) -> float:
    """Mean PSNR (dB) of a restoration ``task``'s degraded inputs themselves on the first ``images`` images of
    ``dataset`` (0: all), by the task's protocol: what a model that passes its input through scores (the noisy or
    JPEG image, clamped to [0, 1] and rounded to uint8 as a model's output would be)."""
    from ..tasks import TaskBenchmark
    from ..tasks.data import to_tensor

    data = TaskBenchmark(dataset, task, data_root=data_root)
    n = len(data) if images == 0 else min(images, len(data))
    scores = [task.score(to_uint8_image(to_tensor([s.lr])), s.hr)[0] for s in (data[i] for i in range(n))]
    return sum(scores) / len(scores)
