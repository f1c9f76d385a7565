"""The command line's deployment side: ``srq export`` and ``srq bench``, and the model that ``srq eval`` /
``srq upscale`` run with ``--runtime onnxruntime|openvino`` (an exported file, or a model exported on the fly).

Registered on the app by :func:`register`, so :mod:`srq.cli` stays the place of the other commands.
"""

from __future__ import annotations

import atexit
import json
import shutil
import tempfile
from pathlib import Path
from typing import Any, Optional

import typer

from .cli_models import MODEL_CODE_HELP, LoadedModel, load_model
from .cli_support import check_output_file
from .errors import SrqError

__all__ = ["register", "runtime_model", "check_runtime", "export_file", "RUNTIME_HELP", "PRECISION_HELP",
           "EXPORT_FORMATS", "BENCH_VARIANTS"]

RUNTIME_CHOICES = ("auto", "torch", "onnxruntime", "openvino")
RUNTIME_HELP = ("auto (torch, or onnxruntime for an .onnx file), torch, onnxruntime or openvino: the last two run "
                "the model exported to integer ONNX (pip install \"srq[deploy]\")")
PRECISION_HELP = "float layers on OpenVINO: fp32 (default) or bf16"
EXPORT_FORMATS = ("onnx", "packed")
# srq.export.bench.VARIANTS, written out so that the command line starts without importing torch
BENCH_VARIANTS = ("torch_fp32,torch_fakequant,onnxruntime_fp32,openvino_fp32,openvino_bf16,onnxruntime_int,"
                  "openvino_int,openvino_int_bf16")


def _temp_dir() -> Path:
    path = Path(tempfile.mkdtemp(prefix="srq-deploy-"))
    atexit.register(shutil.rmtree, path, ignore_errors=True)
    return path


def check_runtime(runtime: str, model: str) -> str:
    """``--runtime`` resolved (``auto`` → torch, or onnxruntime for an .onnx file) and checked."""
    if runtime not in RUNTIME_CHOICES:
        raise SrqError(f"--runtime must be one of {', '.join(RUNTIME_CHOICES)}, got {runtime!r}")
    is_onnx = model.lower().endswith(".onnx")
    if runtime == "auto":
        return "onnxruntime" if is_onnx else "torch"
    if runtime == "torch" and is_onnx:
        raise SrqError(f"{model} is an ONNX file: run it with --runtime onnxruntime or openvino")
    return runtime


def runtime_model(model: str, runtime: str, scale: Optional[int], weights: str, weights_root: Optional[Path],
                  arch: list[str], pixel_range: Optional[float], model_code: Optional[str],
                  threads: Optional[int], precision: str = "fp32") -> LoadedModel:
    """The model ``srq eval`` / ``srq upscale`` run: as :func:`~srq.cli_models.load_model` gives it (``runtime``
    torch), or as ONNX on ``runtime``: an .onnx file as it is, any other model exported first (a run folder
    to its integer QDQ graph, a float model to float ONNX) into a temporary file."""
    from .export.runtime import RuntimeModel, onnx_metadata

    if precision not in ("fp32", "bf16") or (precision != "fp32" and runtime != "openvino"):
        raise SrqError(f"--precision {precision}: fp32, or bf16 with --runtime openvino")
    if runtime == "torch":
        return load_model(model, scale, weights, weights_root, arch, pixel_range, model_code)
    if model.lower().endswith(".onnx"):
        if not Path(model).is_file():
            raise SrqError(f"ONNX file {model} does not exist")
        meta = onnx_metadata(model)
        recorded = int(meta["scale"]) if meta.get("scale") else None
        if scale is not None and recorded is not None and scale != recorded:
            raise SrqError(f"{model} is a x{recorded} model; drop --scale or pass --scale {recorded}")
        scale = scale or recorded
        if scale is None:
            raise SrqError(f"{model} does not record its scale (not exported by srq); pass --scale")
        net = RuntimeModel(model, runtime, threads, precision)
        name = meta.get("model", Path(model).stem)
        return LoadedModel(net, name, scale, None, f"{name} x{scale} {Path(model).name} ({runtime})",
                           {"onnx": str(model), "runtime": runtime, "precision": precision,
                            "export": json.loads(meta.get("srq_export", "{}"))})
    loaded = load_model(model, scale, weights, weights_root, arch, pixel_range, model_code)
    path = export_file(loaded, _temp_dir() / "model.onnx", source=model)
    net = RuntimeModel(path, runtime, threads, precision)
    return loaded._replace(net=net, label=f"{loaded.label} ({runtime})",
                           extra={**loaded.extra, "runtime": runtime, "precision": precision})


def export_file(loaded: LoadedModel, path: Path, source: str, opset: Optional[int] = None, bias: str = "int32",
                clip: str = "int", asym: str = "split") -> Path:
    """Export the loaded model to ONNX at ``path``, recording scale, model name and source in its metadata."""
    from .export import DEFAULT_OPSET, export_onnx

    opset = opset or DEFAULT_OPSET
    meta = {"scale": str(loaded.scale), "model": loaded.name, "source": source,
            "srq_export": json.dumps({"opset": opset, "bias": bias, "clip": clip, "asym": asym})}
    return export_onnx(loaded.net, path, metadata=meta, opset=opset, bias=bias, clip=clip, asym=asym)


def _placement_bits(net: Any) -> str:
    from .quant import placement

    bits = sorted({(e.w_bits, e.a_bits) for e in placement(net)}, key=str)
    return ", ".join(f"W{w or 'fp'}A{a or 'fp'}" for w, a in bits) or "float"


def register(app: typer.Typer, out: Any, err: Any) -> None:
    """Add ``export`` and ``bench`` to ``app`` (``out``/``err``: its consoles for results and messages)."""

    @app.command("export")
    def export_cmd(
        model: str = typer.Argument(..., help="a run folder from `srq quantize` (or a zoo model name for float "
                                              "ONNX)"),
        output: Path = typer.Option(..., "--output", "-o", help="the file to write: .onnx (--format onnx) or "
                                                              ".safetensors (--format packed)"),
        format: str = typer.Option("onnx", "--format", help="onnx: QDQ graph with srq's integer grids; packed: "
                                                           "weights as packed 1-8-bit integers + scales"),
        scale: Optional[int] = typer.Option(None, "--scale", "-s", help="upscaling factor (not needed for a run "
                                                                        "folder)"),
        weights: str = typer.Option("official", help="checkpoint for a zoo model (float export)"),
        model_code: Optional[str] = typer.Option(None, "--model-code", help=MODEL_CODE_HELP),
        opset: int = typer.Option(17, min=13, help="ONNX opset"),
        bias: str = typer.Option("int32", help="int32 (at scale s_in·s_w, as integer runtimes add it) or float "
                                               "(srq's float bias)"),
        clip: str = typer.Option("int", help="where activations below 8 bit keep to their levels: int (a Clip on "
                                             "the uint8 integers) or float (a Clip before QuantizeLinear)"),
        asym: str = typer.Option("split", help="8-bit weights with per-channel zero points: split (int8 levels plus "
                                               "a zero-point correction; integer convolutions) or zero_point (uint8 "
                                               "with zero points: srq's values exactly; OpenVINO convolves in float)"),
        overwrite: bool = typer.Option(False, "--overwrite", help="replace an existing output file"),
    ):
        """Export a quantized run folder: an integer QDQ ONNX graph with srq's own ranges, or packed weights."""
        from .export.onnx_qdq import check_export_options

        if format not in EXPORT_FORMATS:
            raise SrqError(f"--format must be one of {', '.join(EXPORT_FORMATS)}, got {format!r}")
        check_output_file(output, (".onnx",) if format == "onnx" else (".safetensors",))
        if output.exists() and not overwrite:
            raise SrqError(f"{output} exists; add --overwrite to replace it")
        check_export_options(bias=bias, clip=clip, asym=asym, flag="--")
        loaded = load_model(model, scale, weights, None, [], None, model_code)
        if format == "packed":
            from .export.packed import save_packed

            if not Path(model).is_dir():
                raise SrqError("--format packed needs a run folder from `srq quantize`")
            path = save_packed(loaded.net, Path(model), output)
        else:
            path = export_file(loaded, output, source=model, opset=opset, bias=bias, clip=clip, asym=asym)
        size = path.stat().st_size
        if format == "packed":
            from .quant.cost import model_cost

            cost = model_cost(loaded.net)
            over = 100 * (size / cost.size_bytes - 1)
            detail = (f"cost accounting {cost.size_bytes / 1024:.1f} KiB ({over:+.2f} %), "
                      f"FP32 {cost.fp32_size_bits / 8 / 1024:.0f} KiB")
        else:
            detail = f"opset {opset}, bias {bias}"
        err.print(f"wrote {path} ({size / 1024:.1f} KiB; {loaded.label}; {_placement_bits(loaded.net)}; {detail})")

    @app.command("bench")
    def bench_cmd(
        model: str = typer.Argument(..., help="a run folder from `srq quantize`"),
        size: str = typer.Option("180x320", help="LR input size HxW (180x320 gives 720p at x4)"),
        threads: str = typer.Option("1,2", help="comma-separated thread counts"),
        runs: int = typer.Option(5, min=1, help="interleaved timed runs per variant"),
        warmup: int = typer.Option(1, min=0, help="untimed runs per variant first"),
        variants: str = typer.Option(BENCH_VARIANTS, help="comma-separated variants"),
        memory: bool = typer.Option(True, "--memory/--no-memory", help="measure peak memory (one fresh process "
                                                                       "per variant)"),
        model_code: Optional[str] = typer.Option(None, "--model-code", help=MODEL_CODE_HELP),
        profile: bool = typer.Option(False, "--profile", help="also profile the integer model in OpenVINO: time "
                                                               "per operation type and kernel (1 thread)"),
        output: Optional[Path] = typer.Option(None, "--output", "-o", help="results file (.json)"),
    ):
        """Latency (median, min), peak memory and file size: PyTorch eager FP32 and fake-quant, ONNX Runtime and
        OpenVINO FP32, OpenVINO bf16 and the exported integer model, interleaved in one run. ``--profile`` adds
        where the integer model's time goes in OpenVINO."""
        from .engine.results import atomic_write_text, provenance
        from .export.bench import bench, format_bench

        check_output_file(output, (".json",))
        try:
            h, w = (int(v) for v in size.lower().split("x"))
            counts = tuple(int(t) for t in threads.split(","))
        except ValueError:
            raise SrqError(f"--size must look like 180x320 and --threads like 1,2; got {size!r} and {threads!r}")
        if not Path(model).is_dir():
            raise SrqError(f"srq bench measures a run folder; {model} is not one")
        loaded = load_model(model, None, "official", None, [], None, model_code)
        result = bench(loaded.net, (h, w), threads=counts, runs=runs, warmup=warmup,
                       variants=tuple(v.strip() for v in variants.split(",") if v.strip()), memory=memory,
                       progress=lambda line: err.print(line))
        out.print(format_bench(result), soft_wrap=True, markup=False, highlight=False)
        extra = {}
        if profile:
            from .export import export_onnx
            from .export.profile import format_profile, openvino_profile

            with tempfile.TemporaryDirectory(prefix="srq-profile-") as tmp:
                onnx_file = export_onnx(loaded.net, Path(tmp) / "int.onnx")
                found = openvino_profile(onnx_file, (1, 3, h, w), threads=1)
            out.print(format_profile(found), soft_wrap=True, markup=False, highlight=False)
            extra["openvino_int_profile"] = found.to_dict()
        if output is not None:
            doc = {"model": loaded.name, "scale": loaded.scale, "run": model, "bits": _placement_bits(loaded.net),
                   **result.to_dict(), **extra, "provenance": provenance()}
            atomic_write_text(output, json.dumps(doc, indent=2) + "\n")
            err.print(f"results written to {output}")

