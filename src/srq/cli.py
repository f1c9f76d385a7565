"""The ``srq`` command line. Every user mistake ends in one line on stderr and exit code 2."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Optional

import click
import typer
from rich.console import Console
from rich.table import Table

from .errors import SrqError

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="srq: quantize image super-resolution networks and measure them with the exact protocol.")
out = Console()
err = Console(stderr=True)

DEFAULT_SETS = "Set5,Set14,B100,Urban100"


def _split(value: str) -> list[str]:
    return [v.strip() for v in value.split(",") if v.strip()]


def _setup_device(model, device: str, threads: Optional[int]):
    import torch

    if threads:
        torch.set_num_threads(threads)
    try:
        dev = torch.device(device)
        if dev.type == "cuda" and not torch.cuda.is_available():
            raise SrqError("--device cuda was asked for but no CUDA GPU is available; use --device cpu")
    except RuntimeError as e:
        raise SrqError(f"unknown device {device!r} ({e}); use cpu, cuda or cuda:N")
    return model.to(dev)


def _check_results_path(path: Optional[Path]) -> None:
    if path is not None and path.suffix.lower() not in (".json", ".csv"):
        raise SrqError(f"--output must end in .json or .csv, not {path.name!r}")


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
               weights_root: Optional[Path] = typer.Option(None, help="folder with official checkpoints [env SRQ_WEIGHTS]")):
    """List the model zoo: names, scales, parameters and whether official weights are at hand."""
    from .models import get_model_info, list_models
    from .models.registry import resolve_weights

    table = Table(title="srq model zoo")
    for col in ("name", "scales", "params", "weights at hand", "description"):
        table.add_column(col)
    for name in list_models(pattern):
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


@app.command("eval")
def eval_cmd(
    model: str = typer.Argument(..., help="model name (see `srq models`) or a run folder from `srq quantize`"),
    scale: Optional[int] = typer.Option(None, "--scale", "-s", help="upscaling factor (not needed for a run folder)"),
    weights: str = typer.Option("official", help="checkpoint path, or 'official' for the file in the weights root"),
    datasets: str = typer.Option(DEFAULT_SETS, help="comma-separated set names or folders"),
    data_root: Optional[Path] = typer.Option(None, help="benchmark data root [env SRQ_DATA]"),
    weights_root: Optional[Path] = typer.Option(None, help="official checkpoint folder [env SRQ_WEIGHTS]"),
    tile: int = typer.Option(0, help="LR tile size for tiled inference (0: whole images)"),
    tile_overlap: int = typer.Option(32, help="LR context pixels around each tile"),
    rgb: bool = typer.Option(False, "--rgb", help="score RGB instead of the Y channel"),
    save_images: Optional[Path] = typer.Option(None, help="write SR images to this folder"),
    output: Optional[Path] = typer.Option(None, "--output", "-o", help="results file (.json or .csv)"),
    device: str = typer.Option("cpu", help="cpu, cuda, cuda:N"),
    threads: Optional[int] = typer.Option(None, help="CPU threads for torch"),
):
    """Evaluate a model on benchmark sets (PSNR/SSIM on Y, crop = scale, MATLAB bicubic LR)."""
    from .engine.evaluate import evaluate
    from .engine.results import file_sha256, provenance, write_results
    from .models import create_model
    from .models.registry import check_scale, get_model_info, resolve_weights

    from .api import load, read_meta

    _check_results_path(output)
    extra: dict = {}
    if Path(model).is_dir():  # a saved quantized model
        run_meta = read_meta(model)
        net = load(model)
        name, scale, path = run_meta["architecture"]["model"], run_meta["architecture"]["scale"], None
        label = f"{name} x{scale} {Path(model).name}"
        extra = {"run": str(model), "recipe": run_meta.get("recipe"), "placement": run_meta.get("placement")}
    else:
        if scale is None:
            raise SrqError("--scale is required when evaluating a model by name")
        info = get_model_info(model)
        check_scale(info, scale)
        path = resolve_weights(info, scale, weights, weights_root)
        net, name, label = create_model(model, scale, path), info.name, f"{info.name} x{scale}"
    net = _setup_device(net, device, threads)
    scores = evaluate(net, _split(datasets), scale, data_root=data_root, tile=tile or None, overlap=tile_overlap,
                      y_channel=not rgb, save_dir=save_images)
    out.print(_score_table(label + (" (tiled)" if tile else ""), [(name, scores)]))
    if output is not None:
        meta = {"model": name, "scale": scale, **extra, "weights": str(path) if path else None,
                "weights_sha256": file_sha256(path) if path else None,
                "protocol": {"lr": "MATLAB bicubic (antialiased) of the mod-cropped HR", "metric_channel":
                             "RGB" if rgb else "Y (BT.601 coefficients of MATLAB rgb2ycbcr, unrounded)", "crop_border": scale,
                             "ssim": "11x11 Gaussian, sigma 1.5, float64", "tile": tile or None,
                             "tile_overlap": tile_overlap if tile else None},
                "provenance": provenance()}
        write_results(output, scores, meta)
        err.print(f"results written to {output}")


@app.command("upscale")
def upscale_cmd(
    model: str = typer.Argument(..., help="model name (see `srq models`)"),
    input: Path = typer.Argument(..., help="input image"),
    output: Path = typer.Argument(..., help="output image (PNG recommended)"),
    scale: int = typer.Option(..., "--scale", "-s"),
    weights: str = typer.Option("official", help="checkpoint path or 'official'"),
    weights_root: Optional[Path] = typer.Option(None, help="official checkpoint folder [env SRQ_WEIGHTS]"),
    tile: int = typer.Option(0, help="LR tile size (0: whole image); use e.g. 256 for large photos"),
    tile_overlap: int = typer.Option(32, help="LR context pixels around each tile"),
    device: str = typer.Option("cpu"),
):
    """Upscale one image with a model."""
    from .data import read_image, write_image
    from .engine.inference import super_resolve
    from .models import create_model

    img = read_image(input)
    net = _setup_device(create_model(model, scale, weights, weights_root=weights_root), device, None)
    write_image(output, super_resolve(net, img, scale, tile=tile or None, overlap=tile_overlap))
    err.print(f"{input} ({img.shape[1]}×{img.shape[0]}) → {output} ({img.shape[1] * scale}×{img.shape[0] * scale})")


@app.command("quantize")
def quantize_cmd(
    model: str = typer.Argument(..., help="model name (see `srq models`)"),
    scale: int = typer.Option(..., "--scale", "-s"),
    weights: str = typer.Option("official", help="checkpoint path or 'official'"),
    method: str = typer.Option("minmax", help="minmax, percentile, omse, minmax_ft, percentile_ft, ptq4sr, "
                               "gba (mixed-precision activations), gba_star (mixed weights and activations), "
                               "spr2q (rectifiers fused before quantization)"),
    param: list[str] = typer.Option([], "--param", "-p", help="method hyper-parameter key=value, repeatable "
                                    "(e.g. -p iterations=500 -p batch=4 for spr2q; a nested config's field: "
                                    "-p alloc.lambda_feat=10)"),
    bits: str = typer.Option("w4a4", help="body-layer bits, e.g. w4a4, w8a8, w2a2"),
    first_last: str = typer.Option("8bit", help="first/last layer policy: 8bit, fp or same"),
    config: Optional[Path] = typer.Option(None, help="JSON file with per-layer rules (a list of "
                                          "{pattern, w_bits, a_bits, fp}) or a QuantConfig (only its rules "
                                          "are used; the method sets the rest)"),
    calib: str = typer.Option("DIV2K_test_LRx4", help="calibration set name (under <data-root>/calibration) or folder"),
    calib_n: int = typer.Option(100, help="number of calibration images"),
    patch: int = typer.Option(96, help="LR patch size cut from each calibration image"),
    data_root: Optional[Path] = typer.Option(None, help="data root [env SRQ_DATA]"),
    weights_root: Optional[Path] = typer.Option(None, help="official checkpoint folder [env SRQ_WEIGHTS]"),
    show_placement: bool = typer.Option(False, "--show-placement", help="print where quantizers sit"),
    output: Path = typer.Option(..., "--output", "-o", help="run folder to write"),
    threads: Optional[int] = typer.Option(None, help="CPU threads for torch"),
):
    """Quantize a model with a PTQ method on calibration images and save it as a run folder."""
    import json
    import time

    from . import api
    from .data import calibration_set
    from .engine.results import atomic_write_text, provenance
    from .methods import METHODS
    from .methods.base import apply_params
    from .models import create_model
    from .quant import LayerRule, QuantConfig, format_placement, model_cost, parse_bits, placement

    w_bits, a_bits = parse_bits(bits)
    if method not in METHODS:
        raise SrqError(f"unknown method {method!r}; choose from {', '.join(METHODS)}")
    if method.startswith("adabm"):
        raise SrqError(f"{method} models choose bits per image and cannot be saved as a run folder yet; "
                       f"run them from Python (srq.methods.AdaBM) or benchmarks/gba_bench.py")
    rules = []
    if config is not None:
        try:
            doc = json.loads(config.read_text())
        except (OSError, json.JSONDecodeError) as e:
            raise SrqError(f"cannot read --config {config}: {e}")
        rules = [LayerRule(**r) for r in doc] if isinstance(doc, list) else QuantConfig.from_dict(doc).rules
    recipe = apply_params(METHODS[method](w_bits=w_bits, a_bits=a_bits, first_last=first_last, rules=rules), param)
    recipe.config()  # validate before any work
    net = _setup_device(create_model(model, scale, weights, weights_root=weights_root), "cpu", threads)
    data = calibration_set(calib, patch=patch, n=calib_n, data_root=data_root)
    t0 = time.perf_counter()
    qnet = api.quantize(net, recipe, data)
    seconds = time.perf_counter() - t0
    entries = placement(qnet)
    if show_placement:
        out.print(format_placement(entries), highlight=False, soft_wrap=True)
    cost = model_cost(qnet, scale=scale)
    api.save(qnet, output, extra={"calibration": {"set": calib, "images": len(data), "patch": patch},
                                  "quantize_seconds": seconds, "cost": cost.to_dict(),
                                  "provenance": provenance()})
    atomic_write_text(output / "placement.txt", format_placement(entries) + "\n")
    report = api.current_report(qnet)
    if report and ("a" in report or "w" in report):
        from .report import bit_offsets_svg, format_bit_map

        table = format_bit_map(report)
        out.print(table, highlight=False, soft_wrap=True)
        atomic_write_text(output / "bitmap.txt", table + "\n")
        atomic_write_text(output / "bitmap.svg",
                          bit_offsets_svg(report, f"{model} x{scale} {method} w{w_bits}a{a_bits}: bit offset per layer"))
    if report and "routing" in report:
        from .report import format_routing

        table = format_routing(report)
        out.print(table, highlight=False, soft_wrap=True)
        atomic_write_text(output / "routing.txt", table + "\n")
    err.print(f"{model} x{scale} {method} w{w_bits}a{a_bits}: {seconds:.1f} s; size {cost.size_kb:.1f} KB "
              f"(FP32 {cost.fp32_size_kb:.1f} KB), BitOPs {cost.bitops / 1e9:.1f} G (FP32 {cost.fp32_bitops / 1e9:.1f} G) "
              f"→ {output}")


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
    scores, rows = [], []
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
    scale: int = typer.Option(4, "--scale", "-s"),
    images: str = typer.Option("skimage", help="'skimage' (photos shipped with scikit-image) or a folder of HR images"),
    steps: int = typer.Option(3000),
    batch: int = typer.Option(16),
    patch: int = typer.Option(96, help="HR patch size"),
    lr: float = typer.Option(2e-3),
    seed: int = typer.Option(0),
    output: Path = typer.Option(..., "--output", "-o", help="weights file (.safetensors)"),
):
    """Train a small SR model from scratch with L1 loss (how srq's embedded model is made)."""
    import json

    import torch
    from safetensors.torch import save_file

    from .data import read_image
    from .data.samples import sample_images
    from .engine.results import atomic_write_text, provenance
    from .engine.train import TrainConfig, train_l1
    from .models import create_model

    if output.suffix != ".safetensors":
        raise SrqError(f"--output must end in .safetensors, not {output.name!r}")
    if images == "skimage":
        hr = [img for _, img in sample_images("train")]
    else:
        folder = Path(images)
        files = sorted(p for p in folder.glob("*") if p.suffix.lower() in (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp"))
        if not files:
            raise SrqError(f"no images found in {folder}; pass --images skimage or a folder of HR images")
        hr = [read_image(p) for p in files]
    torch.manual_seed(seed)
    net = create_model(model, scale, None, wrap=False)
    cfg = TrainConfig(steps=steps, batch=batch, patch=patch, lr=lr, seed=seed)
    try:
        losses = train_l1(net, hr, scale, cfg)
    except ValueError as e:
        raise SrqError(f"{e}; change --patch")
    output.parent.mkdir(parents=True, exist_ok=True)
    tmp = output.with_name(f".{output.name}.tmp")
    save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(tmp),
              metadata={"model": model, "scale": str(scale), "config": json.dumps(cfg.__dict__)})
    tmp.replace(output)
    atomic_write_text(output.with_suffix(".json"), json.dumps(
        {"model": model, "scale": scale, "images": images, "config": cfg.__dict__,
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

    path = convert_checkpoint(model, scale, weights, output)
    err.print(f"wrote {path} ({model} x{scale})")


def main() -> None:
    """Console entry point: run the app, turning user errors into one line and exit code 2."""
    try:
        app(standalone_mode=False)
    except SrqError as e:
        err.print(f"[bold red]error:[/] {e}", highlight=False, soft_wrap=True)
        sys.exit(2)
    except click.exceptions.Abort:
        err.print("aborted")
        sys.exit(130)
    except KeyboardInterrupt:
        err.print("interrupted")
        sys.exit(130)
    except click.exceptions.ClickException as e:
        e.show()
        sys.exit(e.exit_code)


if __name__ == "__main__":
    main()
