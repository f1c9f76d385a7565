"""The ``srq`` command line. Every user mistake ends in one line on stderr and exit code 2."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.table import Table

from .cli_deploy import PRECISION_HELP, RUNTIME_HELP, check_runtime, register as register_deploy, runtime_model
from .cli_models import ARCH_HELP, MODEL_CODE_HELP, MODEL_HELP, PIXEL_RANGE_HELP, build_model, probe
from .cli_support import check_output_file, check_output_folder, check_tile, check_writable_folder, run_app
from .cli_tasks import CALIB_SIGMA_HELP, QUALITY_HELP, SIGMA_HELP, TASK_HELP
from .errors import Interrupted, SrqError

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="srq: quantize image super-resolution networks and measure them with the exact protocol. "
                       "A mistake in the command prints one 'error:' line and exits with code 2; add --debug "
                       "anywhere for the traceback of an unexpected failure.")
out = Console()
err = Console(stderr=True)


def _print_version(value: bool) -> None:
    if value:
        from ._version import __version__

        print(f"srq {__version__}")
        raise typer.Exit()


@app.callback()
def _options(version: bool = typer.Option(False, "--version", callback=_print_version, is_eager=True,
                                          help="print srq's version and exit")) -> None:
    pass

DEFAULT_SETS = "Set5,Set14,B100,Urban100"


def _split(value: str) -> list[str]:
    return [v.strip() for v in value.split(",") if v.strip()]


def _setup_device(device: str, threads: Optional[int]):
    """The torch device for ``--device`` (auto, cpu, cuda, cuda:N; checked before any work); ``--threads`` applied."""
    import torch

    from .utils.device import resolve_device

    if threads:
        torch.set_num_threads(threads)
    try:
        return resolve_device(device)
    except ValueError as e:
        raise SrqError(f"--device: {e}")


DEVICE_HELP = "auto (CUDA if present, else CPU), cpu, cuda or cuda:N"


def _check_results_path(path: Optional[Path]) -> None:
    check_output_file(path, (".json", ".csv"))


def _score_table(title: str, rows: list[tuple[str, list]]) -> Table:
    table = Table(title=title)
    for col in ("model", "dataset", "images", "PSNR (dB)", "SSIM", "time (s)"):
        table.add_column(col, justify="left" if col in ("model", "dataset") else "right")
    for label, scores in rows:
        for s in scores:
            table.add_row(label, s.dataset, str(len(s.images)), f"{s.psnr:.3f}", f"{s.ssim:.4f}", f"{s.seconds:.1f}")
    return table


@app.command("models")
def models_cmd(pattern: str = typer.Argument("*", help="shell-style filter, e.g. 'edsr*'"),
               weights_root: Optional[Path] = typer.Option(None, help="folder with official checkpoints "
                                                                 "[env SRQ_WEIGHTS]")):
    """List the model zoo: names, scales, parameters and whether official weights are at hand."""
    from .models import get_model_info, list_models
    from .models.registry import resolve_weights

    table = Table(title="srq model zoo")
    for col in ("name", "scales", "params", "weights at hand", "description"):
        table.add_column(col)
    names = list_models(pattern)
    if not names:
        raise SrqError(f"no model matches {pattern!r}; `srq models` lists them all")
    for name in names:
        info = get_model_info(name)
        params = sum(p.numel() for p in info.builder(info.scales[-1]).parameters())
        have = []
        for s in info.scales:
            if s in info.weights:
                try:
                    resolve_weights(info, s, "official", weights_root)
                    have.append(f"x{s}")
                except SrqError:
                    pass
        at_hand = ", ".join(have) if have else ("n/a" if not info.weights else "no")
        table.add_row(name, ",".join(map(str, info.scales)), f"{params:,}", at_hand, info.description)
    out.print(table)


#: The registered method names, written out so that ``--method``'s help does not import the methods (and torch,
#: seconds) on every call; ``tests/test_methods_registry.py`` checks it against the registry.
METHOD_NAMES = ("adabm", "adabm_star", "dorefa", "gba", "gba_star", "lsq", "lsq_plus", "minmax", "minmax_ft", "omse",
                "omse_ft", "pams", "percentile", "percentile_ft", "ptq4sr", "qmambair", "quantsr", "quantsr_plus",
                "spr2q")


@app.command("methods")
def methods_cmd(pattern: str = typer.Argument("*", help="shell-style filter, e.g. 'gba*'")):
    """List the quantization methods: what each does, the paper it implements, whether it saves a run folder."""
    from fnmatch import fnmatch

    from .methods.registry import list_methods

    table = Table(title="srq methods")
    table.add_column("name", no_wrap=True)
    for col in ("description", "implements", "run folder"):
        table.add_column(col)
    found = [m for m in list_methods() if fnmatch(m.name, pattern)]
    if not found:
        raise SrqError(f"no method matches {pattern!r}; `srq methods` lists them all")
    for m in found:
        table.add_row(m.name, m.description, m.paper, "yes" if m.savable else "no")
    out.print(table)


@app.command("eval")
def eval_cmd(
    model: str = typer.Argument(..., help=MODEL_HELP),
    scale: Optional[int] = typer.Option(None, "--scale", "-s", help="upscaling factor (not needed for a run folder)"),
    weights: str = typer.Option("official", help="checkpoint path, or 'official' for the file in the weights root "
                                "(for your own model: the parameters its function returns)"),
    arch_param: list[str] = typer.Option([], "--arch-param", "-a", help=ARCH_HELP),
    pixel_range: Optional[float] = typer.Option(None, "--pixel-range", help=PIXEL_RANGE_HELP),
    model_code: Optional[str] = typer.Option(None, "--model-code", help=MODEL_CODE_HELP),
    datasets: Optional[str] = typer.Option(None, help=f"comma-separated set names or folders [default: "
                                            f"{DEFAULT_SETS} for sr, Urban100 for denoise, Classic5 for jpeg]"),
    task: Optional[str] = typer.Option(None, "--task", help=TASK_HELP),
    sigma: Optional[float] = typer.Option(None, "--sigma", help=SIGMA_HELP),
    quality: Optional[int] = typer.Option(None, "--quality", help=QUALITY_HELP),
    data_root: Optional[Path] = typer.Option(None, help="benchmark data root [env SRQ_DATA]"),
    weights_root: Optional[Path] = typer.Option(None, help="official checkpoint folder [env SRQ_WEIGHTS]"),
    tile: int = typer.Option(0, help="LR tile size for tiled inference (0: whole images)"),
    tile_overlap: int = typer.Option(32, min=0, help="LR context pixels around each tile"),
    rgb: bool = typer.Option(False, "--rgb", help="score RGB instead of the Y channel"),
    save_images: Optional[Path] = typer.Option(None, help="write SR images to this folder"),
    output: Optional[Path] = typer.Option(None, "--output", "-o", help="results file (.json or .csv)"),
    device: str = typer.Option("auto", help=DEVICE_HELP),
    threads: Optional[int] = typer.Option(None, min=1, help="CPU threads for torch (or the runtime)"),
    runtime: str = typer.Option("auto", help=RUNTIME_HELP),
    precision: str = typer.Option("fp32", help=PRECISION_HELP),
):
    """Evaluate a model on benchmark sets (SR: PSNR/SSIM on Y, crop = scale, MATLAB bicubic LR; --task denoise / jpeg:
    that task's protocol, see docs/tasks.md)."""
    from .cli_tasks import default_datasets, resolve_task, task_arch, task_scale
    from .engine.evaluate import evaluate
    from .engine.results import provenance, write_results
    from .fileio import file_sha256

    the_task = resolve_task(model, task, sigma, quality, scale)
    scale = task_scale(the_task, scale)
    if the_task.name != "sr" and rgb:
        raise SrqError(f"--rgb is for the sr task; the {the_task.name} task scores by its own protocol")
    arch_param = task_arch(model, the_task, arch_param)
    _check_results_path(output)
    check_tile(tile, tile_overlap)
    if save_images is not None:
        check_writable_folder(save_images, "--save-images")
    runtime = check_runtime(runtime, model)
    dev = _setup_device(device if runtime == "torch" else "cpu", threads)
    net, name, scale, path, label, extra = runtime_model(model, runtime, scale, weights, weights_root, arch_param,
                                                          pixel_range, model_code, threads, precision)
    net = net.to(dev)
    sets = _split(datasets or default_datasets(the_task, DEFAULT_SETS))
    scores = evaluate(net, sets, scale, data_root=data_root, tile=tile or None, overlap=tile_overlap,
                      y_channel=not rgb, save_dir=save_images, task=the_task)
    out.print(_score_table(label + (f" {the_task.label()}" if the_task.name != "sr" else "")
                           + (" (tiled)" if tile else ""), [(name, scores)]))
    if output is not None:
        meta = {"model": name, "scale": scale, **extra, "weights": str(path) if path else None,
                "weights_sha256": file_sha256(path) if path else None,
                "protocol": {"lr": "MATLAB bicubic (antialiased) of the mod-cropped HR", "metric_channel":
                             "RGB" if rgb else "Y (BT.601 coefficients of MATLAB rgb2ycbcr, unrounded)",
                             "crop_border": scale,
                             "ssim": "11x11 Gaussian, sigma 1.5, float64", "tile": tile or None,
                             "tile_overlap": tile_overlap if tile else None},
                **({"protocol": the_task.protocol()} if the_task.name != "sr" else {}), "task": the_task.to_dict(),
                "provenance": provenance()}
        write_results(output, scores, meta)
        err.print(f"results written to {output}")


@app.command("upscale")
def upscale_cmd(
    model: str = typer.Argument(..., help=MODEL_HELP),
    input: Path = typer.Argument(..., help="input image, or a folder of images"),
    output: Path = typer.Argument(..., help="output image (.png, .jpg, .webp, ...), or a folder for folder input "
                                            "(PNG files named after the inputs)"),
    scale: Optional[int] = typer.Option(None, "--scale", "-s", help="upscaling factor (not needed for a run folder)"),
    weights: str = typer.Option("official", help="checkpoint path or 'official'"),
    arch_param: list[str] = typer.Option([], "--arch-param", "-a", help=ARCH_HELP),
    pixel_range: Optional[float] = typer.Option(None, "--pixel-range", help=PIXEL_RANGE_HELP),
    model_code: Optional[str] = typer.Option(None, "--model-code", help=MODEL_CODE_HELP),
    weights_root: Optional[Path] = typer.Option(None, help="official checkpoint folder [env SRQ_WEIGHTS]"),
    tile: int = typer.Option(0, help="LR tile size (0: whole image); use e.g. 256 for large photos"),
    tile_overlap: int = typer.Option(32, min=0, help="LR context pixels around each tile"),
    overwrite: bool = typer.Option(False, "--overwrite", help="replace output images that exist"),
    device: str = typer.Option("auto", help=DEVICE_HELP),
    threads: Optional[int] = typer.Option(None, min=1, help="CPU threads for torch (or the runtime)"),
    runtime: str = typer.Option("auto", help=RUNTIME_HELP),
    precision: str = typer.Option("fp32", help=PRECISION_HELP),
):
    """Upscale an image, or every image of a folder, with a model or a quantized run folder."""
    from .data import read_image, write_image
    from .engine.inference import super_resolve
    from .utils.progress import progress_bar

    check_tile(tile, tile_overlap)
    pairs = _upscale_pairs(input, output)
    existing = [dst for _, dst in pairs if dst.exists()]
    if existing and not overwrite:
        raise SrqError(f"{existing[0]} exists{f' (and {len(existing) - 1} more)' if len(existing) > 1 else ''}; "
                       f"add --overwrite to replace")
    runtime = check_runtime(runtime, model)
    dev = _setup_device(device if runtime == "torch" else "cpu", threads)
    net, name, scale, *_ = runtime_model(model, runtime, scale, weights, weights_root, arch_param, pixel_range,
                                         model_code, threads, precision)
    net = net.to(dev)
    folder_mode = len(pairs) > 1 or input.is_dir()
    for src, dst in progress_bar(pairs, total=len(pairs), description="upscaling", enabled=folder_mode):
        img = read_image(src)
        write_image(dst, super_resolve(net, img, scale, tile=tile or None, overlap=tile_overlap,
                                       progress=not folder_mode))
        if not folder_mode:
            err.print(f"{src} ({img.shape[1]}×{img.shape[0]}) → {dst} ({img.shape[1] * scale}×{img.shape[0] * scale})")
    if folder_mode:
        err.print(f"{len(pairs)} images from {input} upscaled x{scale} by {name} → {output}")


def _upscale_pairs(source: Path, target: Path) -> list[tuple[Path, Path]]:
    """(input, output) image paths of ``srq upscale``, checked before any model is loaded."""
    from .data.io import IMAGE_EXTENSIONS, is_image_file

    if source.is_dir():
        files = sorted(p for p in source.iterdir() if p.is_file() and is_image_file(p))
        if not files:
            raise SrqError(f"no images in {source}; srq reads {', '.join(IMAGE_EXTENSIONS)}")
        if target.resolve() == source.resolve():
            raise SrqError("the output folder is the input folder; choose another one")
        check_writable_folder(target, "output folder")
        return [(p, target / f"{p.stem}.png") for p in files]
    if not source.is_file():
        raise SrqError(f"input {source} does not exist")
    check_output_file(target, IMAGE_EXTENSIONS, option="output")
    return [(source, target)]


@app.command("quantize")
def quantize_cmd(
    model: str = typer.Argument(..., help="model name (see `srq models`) or your own model as "
                                           "path/to/my_arch.py:build_model"),
    scale: Optional[int] = typer.Option(None, "--scale", "-s", help="upscaling factor (sr task; required there)"),
    weights: str = typer.Option("official", help="checkpoint path or 'official' (for your own model: the "
                                "parameters its function returns)"),
    task: Optional[str] = typer.Option(None, "--task", help=TASK_HELP),
    sigma: Optional[float] = typer.Option(None, "--sigma", help=SIGMA_HELP),
    quality: Optional[int] = typer.Option(None, "--quality", help=QUALITY_HELP),
    calib_sigma: Optional[str] = typer.Option(None, "--calib-sigma", help=CALIB_SIGMA_HELP),
    arch_param: list[str] = typer.Option([], "--arch-param", "-a", help=ARCH_HELP),
    pixel_range: Optional[float] = typer.Option(None, "--pixel-range", help=PIXEL_RANGE_HELP),
    method: str = typer.Option("minmax", help=f"one of {', '.join(METHOD_NAMES)} (`srq methods` describes them)"),
    param: list[str] = typer.Option([], "--param", "-p", help="method hyper-parameter key=value, repeatable "
                                    "(e.g. -p iterations=500 -p batch=4 for spr2q; a nested config's field: "
                                    "-p alloc.lambda_feat=10)"),
    bits: str = typer.Option("w4a4", help="body-layer bits, e.g. w4a4, w8a8, w2a2"),
    first_last: str = typer.Option("8bit", help="first/last layer policy: 8bit, fp or same"),
    config: Optional[Path] = typer.Option(None, help="JSON file with per-layer rules (a list of "
                                          "{pattern, w_bits, a_bits, fp}) or a QuantConfig (only its rules "
                                          "are used; the method sets the rest)"),
    calib: str = typer.Option("auto", help="calibration inputs: an LR set (under <data-root>/calibration) or "
                              "folder, or hr:FOLDER[,FOLDER] of HR images downscaled to the model's scale; "
                              "samples: the photos that ship with scikit-image (a quick try, no data root); auto: "
                              "DIV2K_test_LRx4 at x4, else hr:train/BSD200,train/T91"),
    train_data: Optional[str] = typer.Option(None, help="QAT methods (lsq, lsq_plus, pams, dorefa): comma-separated "
                                             "folders of HR training images, or names under the data root "
                                             "[default: train/T91,train/BSD200]"),
    calib_n: int = typer.Option(100, min=1, help="number of calibration images"),
    patch: int = typer.Option(96, min=8, help="LR patch size cut from each calibration image"),
    data_root: Optional[Path] = typer.Option(None, help="data root [env SRQ_DATA]"),
    weights_root: Optional[Path] = typer.Option(None, help="official checkpoint folder [env SRQ_WEIGHTS]"),
    show_placement: bool = typer.Option(False, "--show-placement", help="print where quantizers sit"),
    output: Path = typer.Option(..., "--output", "-o", help="run folder to write"),
    overwrite: bool = typer.Option(False, "--overwrite", help="replace an existing run folder (all of it)"),
    resume: bool = typer.Option(False, "--resume", help="continue an interrupted run in this run folder from its "
                                "last checkpoint (same command otherwise)"),
    checkpoint_every: int = typer.Option(25, min=1, help="checkpoint long stages every this many steps "
                                         "(and at least every minute)"),
    device: str = typer.Option("auto", help=DEVICE_HELP),
    threads: Optional[int] = typer.Option(None, min=1, help="CPU threads for torch"),
):
    """Quantize a model (PTQ on calibration images, or QAT on HR training images) and save it as a run folder."""
    import dataclasses
    import json

    import torch

    from . import pipeline
    from ._version import __version__
    from .cli_support import WORK_AREA
    from .data import calibration_set
    from .data.calibration import default_calibration
    from .engine.checkpoint import WorkArea, resumable
    from .fileio import file_sha256
    from .methods.base import apply_params
    from .methods.registry import get_method
    from .quant import LayerRule, QuantConfig, parse_bits
    from .utils.distributed import barrier, init_from_env
    from .cli_tasks import resolve_task, task_arch, task_calibration, task_scale

    the_task = resolve_task(model, task, sigma, quality, scale, calib_sigma)
    scale = task_scale(the_task, scale)
    if scale is None:
        raise SrqError("--scale is required for the sr task")
    arch_param = task_arch(model, the_task, arch_param)
    w_bits, a_bits = parse_bits(bits)
    info = get_method(method)  # one line naming the choices for an unknown method
    if not info.savable:
        raise SrqError(f"{method} models choose bits per image and cannot be saved as a run folder yet; "
                       f"run them from Python (srq.methods.AdaBM) or benchmarks/gba_bench.py")
    rules = []
    if config is not None:
        try:
            doc = json.loads(config.read_text())
            rules = [LayerRule(**r) for r in doc] if isinstance(doc, list) else QuantConfig.from_dict(doc).rules
        except (OSError, ValueError, TypeError, AttributeError) as e:
            raise SrqError(f"cannot read --config {config}: {e}")
    recipe = apply_params(info.create(w_bits=w_bits, a_bits=a_bits, first_last=first_last, rules=rules), param)
    if train_data is not None:
        if not hasattr(recipe, "train_data"):
            raise SrqError(f"--train-data is for quantization-aware training; {method} calibrates on --calib")
        recipe = dataclasses.replace(recipe, **{"train_data": tuple(_split(train_data))})  # type: ignore[arg-type]
    recipe.config()  # validate before any work
    if the_task.name != "sr" and hasattr(recipe, "task"):  # QAT: train on clean crops degraded by the task
        recipe = dataclasses.replace(recipe, task=the_task.to_dict())  # type: ignore[call-arg]
    if hasattr(recipe, "training_folders"):
        recipe.training_folders()  # one line for a missing folder, before any work
    dev = _setup_device(device, threads)
    rank, world = init_from_env(dev)  # under torchrun: rank 0 writes the run folder and the checkpoints
    if rank == 0:
        check_output_folder(output, overwrite=overwrite, resume=resume)
    if Path(model).is_dir():
        raise SrqError(f"{model} is a folder; srq quantize takes a model name or path/to/my_arch.py:build_model")
    loaded = build_model(model, scale, weights, weights_root, arch_param, pixel_range)
    weights_path, name = loaded.weights, loaded.name
    net = loaded.net.to(dev)  # quantizers follow; calibration batches move one by one
    data: torch.Tensor | list[torch.Tensor]
    if the_task.name != "sr":  # clean crops degraded by the task
        data, calibration = task_calibration(the_task, calib, calib_n, patch, data_root)
    else:
        if calib == "auto":
            calib = default_calibration(scale)
        if calib == "samples":
            from .data.samples import sample_calibration

            data = sample_calibration(scale, n=calib_n, patch=patch)
        else:
            data = calibration_set(calib, patch=patch, n=calib_n, data_root=data_root, scale=scale)
        calibration = {"set": calib, "images": len(data), "patch": patch,
                       **({"lr_made_at_scale": scale} if calib.startswith("hr:") or calib == "samples" else {})}
    probe(loaded._replace(net=net), data[0][:1] if isinstance(data, list) else data[:1])
    fingerprint = {"srq": __version__, "torch": torch.__version__, "threads": torch.get_num_threads(),
                   "device": dev.type, "world_size": world, "model": model, "scale": scale, **loaded.extra,
                   "weights_sha256": file_sha256(weights_path) if weights_path else None,
                   "recipe": recipe.to_dict(), "calibration": {**calibration, "sha256": pipeline.tensor_sha256(data)},
                   **({"task": the_task.to_dict()} if the_task.name != "sr" else {})}
    if rank == 0:
        work = WorkArea.open(output / WORK_AREA, fingerprint, resume=resume, every_steps=checkpoint_every)
    barrier()
    if rank > 0:  # the work area rank 0 made (or kept, with --resume): read its checkpoints, never write them
        work = WorkArea.open(output / WORK_AREA, fingerprint, resume=True, every_steps=checkpoint_every)
    try:
        result = pipeline.run(net, recipe, data, name=name, scale=scale, output=output if rank == 0 else None,
                              calibration=calibration, checkpoints=resumable(work),
                              extra={"resumed": resume, "world_size": world, "task": the_task.to_dict()})
    except KeyboardInterrupt:
        raise Interrupted("interrupted; the run can continue from its last checkpoint: repeat the command with "
                          "--resume") from None
    except BaseException:
        if rank == 0:
            work.remove()
            _remove_if_empty(output)
        raise
    if rank > 0:
        return
    if show_placement:
        out.print(result.files["placement.txt"].rstrip("\n"), highlight=False, soft_wrap=True)
    for table in ("bitmap.txt", "routing.txt"):
        if table in result.files:
            out.print(result.files[table].rstrip("\n"), highlight=False, soft_wrap=True)
    err.print(f"{result.summary}{' (resumed part)' if resume else ''} → {output}")


def _remove_if_empty(folder: Path) -> None:
    try:
        folder.rmdir()
    except OSError:
        pass


@app.command("demo")
def demo_cmd(
    bits: str = typer.Option("w8a8,w6a6,w4a4", help="bit widths to quantize to (MinMax PTQ)"),
    save_images: Optional[Path] = typer.Option(None, help="write SR images to this folder"),
    output: Optional[Path] = typer.Option(None, "--output", "-o", help="results file (.json or .csv)"),
):
    """The embedded default: srq's tiny x4 model in FP and quantized, vs. bicubic, on held-out photos.

    No data root, download or GPU needed: the model ships with srq and the photos with scikit-image.
    """
    from . import api
    from .data.samples import sample_calibration, sample_set
    from .engine.evaluate import evaluate_dataset
    from .engine.results import provenance, write_results
    from .methods import MinMax
    from .models import create_model
    from .quant import model_cost, parse_bits

    _check_results_path(output)
    if save_images is not None:
        check_writable_folder(save_images, "--save-images")
    scale, specs = 4, [parse_bits(b) for b in _split(bits)]
    fp = create_model("srq_tiny", scale, "official")
    calib = sample_calibration(scale)
    runs = [("bicubic", "-", create_model("bicubic", scale)), ("srq_tiny", "FP32", fp)]
    runs += [("srq_tiny", f"W{w}A{a}", api.quantize(fp, MinMax(w_bits=w, a_bits=a), calib, progress=False))
             for w, a in specs]
    table = Table(title="srq demo: x4 on held-out scikit-image photos (Y PSNR/SSIM, crop 4); MinMax PTQ, "
                        "first/last layer 8 bit")
    for col in ("model", "bits", "PSNR (dB)", "SSIM", "size (KB)", "BitOPs (G, 720p out)"):
        table.add_column(col, justify="left" if col in ("model", "bits") else "right")
    scores = []
    for name, label, net in runs:
        score = evaluate_dataset(net, sample_set("test", scale), progress=False,
                                 save_dir=save_images / f"{name}_{label}" if save_images else None)
        score.dataset = f"{score.dataset} {name} {label}"
        scores.append(score)
        cost = model_cost(net, scale=scale) if name != "bicubic" else None
        table.add_row(name, label, f"{score.psnr:.3f}", f"{score.ssim:.4f}",
                      f"{cost.size_kb:.1f}" if cost else "-", f"{cost.bitops / 1e9:.1f}" if cost else "-")
    out.print(table)
    if output is not None:
        write_results(output, scores, {"demo": "srq_tiny x4", "provenance": provenance()})


@app.command("train")
def train_cmd(
    model: str = typer.Argument("srq_tiny", help="model name (trained from scratch)"),
    scale: Optional[int] = typer.Option(None, "--scale", "-s", help="upscaling factor [default: 4 for sr, 1 for "
                                                                "denoise and jpeg]"),
    images: str = typer.Option("skimage", help="'skimage' (photos shipped with scikit-image) or a folder of HR images"),
    steps: int = typer.Option(3000, min=1),
    batch: int = typer.Option(16, min=1),
    patch: int = typer.Option(96, min=8, help="HR patch size"),
    lr: float = typer.Option(2e-3, min=0.0),
    seed: int = typer.Option(0),
    task: Optional[str] = typer.Option(None, "--task", help=TASK_HELP),
    sigma: Optional[float] = typer.Option(None, "--sigma", help=SIGMA_HELP),
    quality: Optional[int] = typer.Option(None, "--quality", help=QUALITY_HELP),
    calib_sigma: Optional[str] = typer.Option(None, "--calib-sigma", help="denoise task: σ range low,high of the "
                                              "training patches (a blind denoiser, e.g. 0,55) [default: --sigma]"),
    output: Path = typer.Option(..., "--output", "-o", help="weights file (.safetensors)"),
    device: str = typer.Option("auto", help=DEVICE_HELP),
    threads: Optional[int] = typer.Option(None, min=1, help="CPU threads for torch"),
):
    """Train a small model from scratch with L1 loss (how srq's embedded model is made); --task denoise / jpeg
    trains a restoration model (scale 1) on the task's degraded patches."""
    import json

    from .cli_tasks import resolve_task, task_scale

    import torch
    from .data import read_image
    from .data.io import is_image_file
    from .data.samples import sample_images
    from .engine.results import atomic_write_text, provenance
    from .engine.train import TrainConfig, train_l1
    from .fileio import write_safetensors
    from .models import create_model

    check_output_file(output, (".safetensors",))
    the_task = resolve_task(model, task, sigma, quality, scale, calib_sigma)
    scale = task_scale(the_task, scale) or 4
    dev = _setup_device(device, threads)
    if images == "skimage":
        hr = [img for _, img in sample_images("train")]
    else:
        folder = Path(images)
        files = sorted(p for p in folder.glob("*") if is_image_file(p))
        if not files:
            raise SrqError(f"no images found in {folder}; pass --images skimage or a folder of HR images")
        hr = [read_image(p) for p in files]
    torch.manual_seed(seed)
    net = create_model(model, scale, None, wrap=False).to(dev)  # initialised on the CPU, then moved
    cfg = TrainConfig(steps=steps, batch=batch, patch=patch, lr=lr, seed=seed)
    try:
        losses = train_l1(net, hr, scale, cfg, task=the_task)
    except ValueError as e:
        raise SrqError(f"{e}; change --patch")
    write_safetensors(output, {k: v.detach().cpu().contiguous() for k, v in net.state_dict().items()},
                      metadata={"model": model, "scale": str(scale), "config": json.dumps(cfg.__dict__),
                                "task": json.dumps(the_task.to_dict())})
    atomic_write_text(output.with_suffix(".json"), json.dumps(
        {"model": model, "scale": scale, "images": images, "config": cfg.__dict__, "device": dev.type,
         "task": the_task.to_dict(),
         "final_loss_mean_last_100": sum(losses[-100:]) / len(losses[-100:]), "provenance": provenance()}, indent=2))
    err.print(f"trained {model} x{scale} for {steps} steps (final L1 {losses[-1]:.4f}) → {output}")


@app.command("download")
def download_cmd(
    datasets: str = typer.Option(DEFAULT_SETS, help="sets to fetch (Manga109 must be requested from its authors)"),
    data_root: Optional[Path] = typer.Option(None, help="where to put them [env SRQ_DATA]"),
):
    """Fetch the standard benchmark sets (HR images) from their public sources (needs internet)."""
    from .data.download import download_benchmarks
    from .paths import data_root as resolve_root

    root = resolve_root(data_root)
    download_benchmarks(_split(datasets), root)
    err.print(f"benchmarks are in {root / 'benchmarks'}")


@app.command("convert")
def convert_cmd(
    model: str = typer.Argument(..., help="model name (see `srq models`)"),
    scale: int = typer.Option(..., "--scale", "-s", help="upscaling factor"),
    weights: Path = typer.Option(..., "--weights", help="official checkpoint (.pth/.pt/.pdparams/.safetensors)"),
    output: Path = typer.Option(..., "--output", "-o", help="converted weights (.safetensors)"),
):
    """Convert an official checkpoint (e.g. Paddle .pdparams) into srq's .safetensors layout."""
    from .models.convert import convert_checkpoint

    check_output_file(output, (".safetensors",))
    path = convert_checkpoint(model, scale, weights, output)
    err.print(f"wrote {path} ({model} x{scale})")


@app.command("report")
def report_cmd(
    paths: list[Path] = typer.Argument(..., help="run folders, result files (.json), or folders holding them"),
    output: Path = typer.Option(..., "--output", "-o", help="the HTML file to write (self-contained)"),
    images: Optional[str] = typer.Option(None, help="images to crop, SET/IMAGE comma-separated (e.g. "
                                         "Set14/barbara,Urban100/img_092) [default: the worst-hit Urban100/Set14 "
                                         "images by Δ PSNR]"),
    datasets: Optional[str] = typer.Option(None, help="sets shown in the table, comma-separated; the last one is "
                                           "plotted [default: all scored]"),
    no_crops: bool = typer.Option(False, "--no-crops", help="table, plots and per-run sections only (loads no model)"),
    cache_dir: Optional[Path] = typer.Option(None, help="FP and bicubic crop cache [default: ~/.cache/srq/report]"),
    data_root: Optional[Path] = typer.Option(None, help="benchmark data root for the crops [env SRQ_DATA]"),
    title: str = typer.Option("srq report", help="the page title"),
):
    """One self-contained HTML page over runs: sortable table, trade-off plots, per-run details, image crops."""
    from .report.html import write_report

    check_output_file(output, (".html", ".htm"))
    done = write_report(paths, output, images=_split(images or ""), datasets=_split(datasets or ""),
                        crops=not no_crops, cache_dir=cache_dir, data_root=data_root, title=title,
                        log=lambda m: err.print(m, highlight=False))
    err.print(f"report of {done.runs} runs, {done.images} cropped images ({done.bytes / 1e6:.2f} MB, "
              f"{done.seconds:.1f} s) → {done.path}")


register_deploy(app, out, err)  # srq export, srq bench


def main() -> None:
    """Console entry point (see :func:`srq.cli_support.run_app` for the exit codes)."""
    sys.exit(run_app(app))


if __name__ == "__main__":
    main()
