"""Classic quantization-aware-training baselines: LSQ, LSQ+, PAMS, DoReFa.

Each is the QAT loop of :mod:`srq.engine.qat` (weights and quantizer parameters trained together on HR images)
around its own quantizer grids:

* LSQ (Esser et al., ICLR 2020): learned step for weights (per channel) and activations (per tensor).
* LSQ+ (Bhalgat et al., CVPRW 2020): learned step and offset for activations; weights LSQ's grid with the
  paper's init ``max(|μ − 3σ|, |μ + 3σ|)/2ᵇ⁻¹``.
* PAMS (Li et al., ECCV 2020): learned symmetric clipping value for activations; weights symmetric per channel
  from max|w|.
* DoReFa (Zhou et al., 2016): tanh-normalised weights; activations as LSQ (DoReFa's own activation quantizer
  assumes [0, 1] inputs, which SR features are not).

Placement is the PTQ methods' (body weights and activations quantized, first/last layer 8 bit by default), so QAT
rows sit next to PTQ rows. The quantizers are initialised on the calibration inputs, then trained on random
crops of ``train_data`` (HR folders; LR made by MATLAB-exact bicubic at the model's scale).
"""

from __future__ import annotations

import copy
import dataclasses
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar, NamedTuple

import torch
from torch import nn

from ..data.training import LROnlySet, TrainingSet
from ..tasks import SR, Task, TaskTrainingSet, task_from_dict
from ..engine.batches import calibration_batches
from ..engine.blocks import check_blocks_pattern
from ..engine.evaluate import input_psnr, validation_psnr
from ..engine.qat import QATConfig, train_qat
from ..errors import SrqError
from ..paths import data_root
from ..quant import QuantConfig, calibrate, quantizers
from ..typed_config import check_choice
from .base import Recipe
from .registry import register_method

__all__ = ["LSQ", "LSQPlus", "PAMS", "DoReFa", "model_scale"]

DEFAULT_TRAIN_DATA = ("train/T91", "train/BSD200")  # the classic "291" set, under the data root


class QATStart(NamedTuple):
    """The data side of a QAT run's start: an example input (1, 3, h, w), the model's scale, the training folders
    and the training set made from them."""

    example: torch.Tensor
    scale: int
    folders: list[Path]
    data: TrainingSet | LROnlySet | TaskTrainingSet


@dataclass(frozen=True)
class _QAT(Recipe):
    """QAT recipe: ``train`` (the loop's hyper-parameters), ``train_data`` (HR folders: paths, or names under the
    data root), ``cache_dir`` (where LR images made from them are kept between runs; empty: memory only).
    ``lr_only``: ``train_data`` are LR images (folders, or calibration set names such as ``DIV2K_test_LRx4``) and
    the targets are the FP model's outputs (crops of ``train.hr_patch / scale`` LR pixels). ``blocks``: the blocks of
    the feature term (``train.lambda_feat``): a regular expression over module names, None: automatic."""

    train: QATConfig = field(default_factory=QATConfig)
    train_data: tuple[str, ...] = DEFAULT_TRAIN_DATA
    cache_dir: str = "~/.cache/srq/lr"
    lr_only: bool = False
    blocks: str | None = None  # the feature loss's blocks: a regex over module names (None: automatic)
    task: dict | None = None  # a restoration task (srq.tasks.Task.to_dict(), e.g. denoise σ 25); None: SR

    w_mode: ClassVar[str] = "lsq"
    a_mode: ClassVar[str] = "lsq"

    def validate(self) -> None:
        if not self.train_data:
            raise SrqError(f"{self.name}: train_data is empty; give one or more folders of HR images")
        check_blocks_pattern(self, self.blocks)

    def training_folders(self) -> list[Path]:
        """The folders of ``train_data`` (paths, or names under the data root, or for ``lr_only`` under its
        ``calibration/``); one line if one is missing."""
        return [_resolve(f, "calibration" if self.lr_only else "") for f in self.train_data]

    def restoration_task(self) -> Task | None:
        """The recipe's restoration task (denoise, jpeg), or None for super-resolution."""
        task = task_from_dict(self.task)
        return None if task is None or isinstance(task, SR) else task

    def training_set(self, folders: list[Path], scale: int) -> TrainingSet | LROnlySet | TaskTrainingSet:
        """The training crops of ``folders``: HR/LR pairs, LR crops alone (``lr_only``), or for a restoration task
        clean crops (``train.hr_patch`` pixels) degraded by it."""
        task = self.restoration_task()
        if task is not None:
            if self.lr_only:
                raise SrqError(f"{self.name}: lr_only is for super-resolution; the {task.name} task trains on "
                               f"clean images degraded on the fly")
            return TaskTrainingSet(task, folders, patch=self.train.hr_patch, seed=self.train.seed)
        if self.train.hr_patch % scale:
            raise SrqError(f"train.hr_patch {self.train.hr_patch} is not a multiple of the scale {scale}")
        if self.lr_only:
            return LROnlySet(folders, self.train.hr_patch // scale, seed=self.train.seed, skip_small=True)
        return TrainingSet(folders, scale, self.train.hr_patch, seed=self.train.seed,
                           skip_small=True, cache_dir=Path(self.cache_dir).expanduser() if self.cache_dir else None)

    def start(self, model: nn.Module, calib: torch.Tensor | list[torch.Tensor],
              progress: bool = True) -> tuple[QATStart, nn.Module, nn.Module]:
        """What every QAT run begins with: the training data, the quantized model calibrated on ``calib`` and a
        frozen copy of ``model`` (the FP teacher)."""
        example = calib[:1] if isinstance(calib, torch.Tensor) else calib[0]
        scale = model_scale(model, example)
        if scale == 1 and self.restoration_task() is None and not self.lr_only:
            raise SrqError(f"{self.name}: the model does not upscale (scale 1), so it is a restoration model; give "
                           f"its task (CLI: --task denoise|jpeg; Python: the recipe's task=srq.tasks.JPEG(10)"
                           f".to_dict()) or train on its own inputs with lr_only=True — as super-resolution, "
                           f"training would pair each image with itself")
        folders = self.training_folders()
        data = self.training_set(folders, scale)
        qmodel = self.prepare(model, example)
        batches = calibration_batches(calib)
        calibrate(qmodel, batches, total=len(batches), progress=progress)
        teacher = copy.deepcopy(model).eval()
        for p in teacher.parameters():
            p.requires_grad_(False)
        return QATStart(example, scale, folders, data), qmodel, teacher

    def data_record(self, folders: list[Path], data: TrainingSet | LROnlySet | TaskTrainingSet,
                    scale: int) -> dict:
        """What a run trained on, for its report: folders, images, patch, targets (and the task)."""
        targets = "FP model outputs" if self.lr_only else "HR images" if self.task is None else "clean images"
        return {"folders": [str(f) for f in folders], "images": len(data), "skipped_small": len(data.skipped),
                "scale": scale, "hr_patch": self.train.hr_patch, "targets": targets,
                **({"task": self.task} if self.task else {})}

    def run(self, model: nn.Module, calib: torch.Tensor, progress: bool = True) -> nn.Module:
        (_, scale, folders, data), qmodel, teacher = self.start(model, calib, progress)
        quant_params = [p for _, q in quantizers(qmodel) for p in q.parameters()]
        weights = [p for p in qmodel.parameters() if all(p is not q for q in quant_params)]
        val = self.train.val_set

        def validate(m: nn.Module) -> float:
            return validation_psnr(m, val, scale, images=self.train.val_images, task=self.restoration_task())

        record = train_qat(qmodel, teacher, data, self.train, weights=weights, quant_params=quant_params,
                           validate=validate if val else None, progress=progress, description=f"{self.name} QAT",
                           blocks=self.blocks)
        record["data"] = self.data_record(folders, data, scale)
        task = self.restoration_task()
        if val and task is not None:
            self._check_not_pass_through(record, task, val)
        setattr(qmodel, "srq_report", {"training": record})
        return qmodel.eval()

    def _check_not_pass_through(self, record: dict, task: Task, val: str) -> None:
        """Record the validation inputs' own PSNR (``record["input_psnr"]``) and warn when the trained model does
        not beat it by 0.05 dB: a quantized residual restorer can learn to output its input unchanged (DnCNN-3
        JPEG at lr 5e-4, docs/tasks.md)."""
        reference = input_psnr(val, task, images=self.train.val_images)
        record["input_psnr"] = reference
        best = record["best"]["psnr"]
        if best is not None and best < reference + 0.05:
            warnings.warn(f"{self.name} QAT: validation PSNR {best:.2f} dB is no better than the {task.label()} "
                          f"inputs' own {reference:.2f} dB on {val}: the quantized network passes its input "
                          f"through, or worse; try a lower train.lr (DnCNN-3: 5e-5 instead of 5e-4) or more "
                          f"steps (docs/tasks.md)", stacklevel=2)


def _resolve(folder: str, under: str = "") -> Path:
    """A training folder: the path if it exists, else the name under the data root (``train/T91``), or under its
    ``under`` sub-folder (``calibration`` for LR sets)."""
    path = Path(folder).expanduser()
    if path.is_dir():
        return path
    for candidate in (data_root() / folder, data_root() / under / folder):
        if candidate.is_dir():
            return candidate
    raise SrqError(f"training folder {folder} not found (nor under the data root {data_root()}); give folders "
                   f"of HR images (srq quantize --train-data DIR,DIR; train_data=(DIR, ...) in Python) or set SRQ_DATA")


def model_scale(model: nn.Module, example: torch.Tensor) -> int:
    """The upscaling factor of an SR model: its ``srq_spec`` scale, else output size ÷ input size of ``example``."""
    spec = getattr(model, "srq_spec", None)
    if spec and spec.get("scale"):
        return int(spec["scale"])
    x = example[:1, :, :16, :16].to(next(model.parameters()).device)
    with torch.no_grad():
        out = model(x)
    scale, rest = divmod(out.shape[-1], x.shape[-1])
    if rest or scale < 1:
        raise SrqError(f"cannot tell the model's scale: a {x.shape[-1]}-pixel input gives {out.shape[-1]} pixels")
    return scale


_QAT_PAPER = "quantization-aware training"


@register_method("lsq", description="QAT with learned step sizes for weights and activations (grad scale "
                 "1/√(N·Qp))", paper="LSQ (Esser et al., ICLR 2020)")
@dataclass(frozen=True)
class LSQ(_QAT):
    """``init``: where the steps start. ``"paper"``: LSQ's ``s = 2·mean|v|/√Qp``; ``"percentile"``: the ranges of
    the Percentile PTQ row (weights min/max per channel, activations percentile) or ``"omse"`` (both MSE-optimal),
    which the grid then covers (``s = range/Qp``, the ``lsq_range`` grid). The paper's start can sit far below
    the PTQ rows: DnCNN-3 JPEG q10 W8A8 starts at 27.85 dB, with ``"percentile"`` at 29.31 (docs/tasks.md)."""

    init: str = "paper"

    name: ClassVar[str] = "lsq"

    def validate(self) -> None:
        super().validate()
        check_choice(self, "init", ("paper", "percentile", "omse"))

    def config(self) -> QuantConfig:
        config = super().config()
        if self.init == "paper":
            return config
        w_observer, a_observer = self._observers()
        return dataclasses.replace(config, w_mode="lsq_range", a_mode="lsq_range", w_observer=w_observer,
                                   a_observer=a_observer)

    def _observers(self) -> tuple[str, str]:
        """The weight and activation observers of a range start (``init`` other than the paper's)."""
        return ("minmax" if self.init == "percentile" else "omse"), self.init

    def to_dict(self) -> dict:
        d = super().to_dict()
        if self.init == "paper":  # the paper's LSQ reads (and hashes) as before the field
            del d["init"]
        else:
            d["w_observer"], d["a_observer"] = self._observers()
        return d


@register_method("lsq_plus", description="QAT with learned step and offset for activations (MSE-initialised), "
                 "learned step for weights (μ ± 3σ init)", paper="LSQ+ (Bhalgat et al., CVPRW 2020)")
@dataclass(frozen=True)
class LSQPlus(_QAT):
    """``zero_point``: ``"float"`` (the paper's: the offset β anywhere) or ``"integer"`` (β snapped to the grid, the
    ``lsqplus_int`` grid: an integer zero point, so the run exports to integer ONNX; docs/deploy.md)."""

    zero_point: str = "float"

    name: ClassVar[str] = "lsq_plus"
    w_mode: ClassVar[str] = "lsq_3sigma"  # the paper's weight init (μ ± 3σ)
    a_mode: ClassVar[str] = "lsqplus"
    a_observer: ClassVar[str] = "omse"  # the paper's MSE-based initialisation of s and β (docs/methods.md)

    def validate(self) -> None:
        super().validate()
        check_choice(self, "zero_point", ("float", "integer"))

    def config(self) -> QuantConfig:
        config = super().config()
        return dataclasses.replace(config, a_mode="lsqplus_int") if self.zero_point == "integer" else config

    def to_dict(self) -> dict:
        d = super().to_dict()
        if self.zero_point == "float":  # the paper's LSQ+ reads (and hashes) as before the field
            del d["zero_point"]
        return d


@register_method("pams", description="QAT with a learned symmetric clipping value for activations, symmetric "
                 "per-channel weights", paper="PAMS (Li et al., ECCV 2020)")
@dataclass(frozen=True)
class PAMS(_QAT):
    name: ClassVar[str] = "pams"
    w_mode: ClassVar[str] = "symmetric"
    a_mode: ClassVar[str] = "pams"


@register_method("dorefa", description="QAT with DoReFa's tanh-normalised weights, LSQ activations",
                 paper="DoReFa-Net (Zhou et al., 2016), weights")
@dataclass(frozen=True)
class DoReFa(_QAT):
    name: ClassVar[str] = "dorefa"
    w_mode: ClassVar[str] = "dorefa"
