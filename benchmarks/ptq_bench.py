"""PTQ baselines on real checkpoints: MinMax, Percentile, OMSE, MinMax+FT, Percentile+FT.

Usage (from the repository root; data and weights from $SRQ_DATA / $SRQ_WEIGHTS):
    python benchmarks/ptq_bench.py --model imdn --scale 4 --bits w8a8,w6a6,w4a4,w3a3,w2a2 \
        --methods minmax,percentile,omse,minmax_ft,percentile_ft --datasets Set5,Set14,B100,Urban100
Recipe hyper-parameters as in `srq quantize`: -p key=value (repeatable; the result files' tag names them).
Each (model, method, bits) run writes benchmarks/results/ptq/<model>_x<scale>_<method>_<bits>.json with
per-set PSNR/SSIM, cost (size, BitOPs), calibration/fine-tuning wall time, the eval time of the
fake-quantized model and of the FP model on the same images (ratio), placement and provenance;
benchmarks/results/ptq/summary.md is rebuilt from all result files.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import re
from pathlib import Path
from typing import Sequence

import torch

import srq
from srq import pipeline
from srq.cli_support import WORK_AREA
from srq.engine.checkpoint import WorkArea, resumable
from srq.data import calibration_set
from srq.engine.evaluate import DatasetScore, evaluate
from srq.engine.results import atomic_write_text, provenance, run_script
from srq.methods import METHODS
from srq.quant import model_cost, parse_bits, placement
from srq.report.runs import layer_average_bits
from srq.utils.device import device_arg

HERE = Path(__file__).resolve().parent
OUT = HERE / "results" / "ptq"


DEFAULT_CALIB = "DIV2K_test_LRx4"
SCORE_LOGS = "scores"  # in a saved run: per-image scores kept as they are made (an interrupted eval goes on)


def _recorded(folder: Path) -> dict:
    """What a saved run recorded about its making: ``srq.json``, or the ``bench.json`` beside older run folders
    (their ``srq.json`` had no time or provenance)."""
    meta = srq.api.read_meta(folder)
    if "quantize_seconds" not in meta and (folder / "bench.json").is_file():
        return json.loads((folder / "bench.json").read_text())
    return meta


def checkpointed(folder: Path, fingerprint: dict, resume: bool, every_steps: int):
    """A context manager that makes a quantization into run ``folder`` resumable: its work area checkpoints the long
    stages every ``every_steps`` steps (and every minute); with ``resume`` an existing one is continued."""
    return resumable(WorkArea.open(folder / WORK_AREA, fingerprint, resume=resume and (folder / WORK_AREA).is_dir(),
                                   every_steps=every_steps))


def recorded_quantize_seconds(folder: Path, q: torch.nn.Module) -> float:
    """The quantization time a saved run recorded, else the sum of its report's stage times."""
    seconds = _recorded(folder).get("quantize_seconds")
    if seconds is not None:
        return seconds
    stages = (getattr(q, "srq_report", None) or {}).get("seconds")
    if not isinstance(stages, dict):
        raise SystemExit(f"error: {folder} has no recorded quantization time; run again without --resume")
    return sum(stages.values())


def run(model_name: str, scale: int, method: str, bits: str, datasets: list[str], calib, fp_scores,
        out_dir: Path = OUT, recipe=None, tag: str | None = None, device: str = "cpu",
        fp_source: str | None = None, save_dir: Path | None = None, resume: bool = False,
        split: int | None = None, calibration: dict | None = None,
        checkpoint_every: int | None = None) -> tuple[dict, torch.nn.Module]:
    """Quantize and evaluate through :func:`srq.pipeline.run`, and write
    ``out_dir/<model>_x<scale>_<tag or method>_<bits>.json``; returns (doc, model). Where that name (or the run
    folder's) is taken by a different recipe (a default changed since), the tag gets ``-<recipe hash>``
    (:func:`distinct_tag`); ``doc["method"]`` is the tag used.

    ``fp_source``: the results file ``fp_scores`` were read from (None: measured in this process); the
    eval-time ratio is only reported for FP scores measured in the same process. ``save_dir``: write the
    quantized model there (``srq.save``, a run folder named like the result file) before evaluating it, so
    that a long quantization is not lost if the evaluation fails; each image's scores are kept in its
    ``scores/`` folder as they are made. ``resume``: if that run folder exists already, load it instead of
    quantizing again (its quantization time is the one it recorded), go on from the images already scored, and
    keep the rows of other data sets from the result file of that run (:func:`keep_earlier_rows`). ``split``:
    partitioned inference (MambaIRv2's official test, e.g. 200 LR px), recorded in the file as ``inference``.
    ``checkpoint_every``: with ``save_dir``, checkpoint the quantization's long stages (fine-tuning, QAT) in the run
    folder's work area every this many steps (and every minute); with ``resume``, an interrupted quantization
    continues from its last checkpoint, to the same result as an uninterrupted one.
    """
    w, a = parse_bits(bits)
    recipe = recipe if recipe is not None else METHODS[method](w_bits=w, a_bits=a)
    tag = distinct_tag(f"{model_name}_x{scale}", fit_tag(f"{model_name}_x{scale}", tag or method, bits.lower()),
                       bits.lower(), pipeline.recipe_hash(recipe),
                       [out_dir] + ([Path(save_dir)] if save_dir is not None else []))
    stem = f"{model_name}_x{scale}_{tag}_{bits.lower()}"
    folder = Path(save_dir) / stem if save_dir is not None else None
    resumed = resume and folder is not None and (folder / "srq.json").is_file()
    calibration = calibration or {"set": "DIV2K_test_LRx4", "images": len(calib), "patch": int(calib.shape[-1])}
    eval_options = {"split": split, "score_logs": None if folder is None else folder / SCORE_LOGS}
    if resumed:
        q = srq.load(folder).to(device)
        quant_seconds = recorded_quantize_seconds(folder, q)
        print(f"{stem}: evaluating the saved run {folder}", flush=True)
        scores = evaluate(q, datasets, scale, progress=False, **eval_options)
    else:
        fp = srq.create_model(model_name, scale, "official").to(device)
        checkpoints = None
        if folder is not None and checkpoint_every:
            fingerprint = {"model": model_name, "scale": scale, "recipe": recipe.to_dict(), "device": str(device),
                           "threads": torch.get_num_threads(), "calibration": pipeline.tensor_sha256(calib)}
            checkpoints = checkpointed(folder, fingerprint, resume, checkpoint_every)
        made = pipeline.run(fp, recipe, calib, name=model_name, scale=scale, output=folder, calibration=calibration,
                            datasets=datasets, eval_options=eval_options, checkpoints=checkpoints, progress=True)
        q, quant_seconds, scores = made.model, made.quantize_seconds, made.scores
    cost = model_cost(q, scale=scale)
    doc = {"model": model_name, "scale": scale, "method": tag, "bits": bits.lower(),
           "calibration": calibration,
           "quantize_seconds": quant_seconds,
           "eval_seconds": {s.dataset: s.seconds for s in scores},
           "fp_eval_seconds": {s.dataset: s.seconds for s in fp_scores}, "fp_source": fp_source,
           "inference": inference_label(split),
           "results": [{k: v for k, v in s.to_dict().items() if k != "images"} for s in scores],
           "fp_results": [{k: v for k, v in s.to_dict().items() if k != "images"} for s in fp_scores],
           "cost": cost.to_dict(), "recipe": q.srq_recipe, "recipe_hash": pipeline.recipe_hash(recipe),
           "placement": [e.to_dict() for e in placement(q)], "report": srq.api.current_report(q),
           "provenance": provenance()}
    if resumed:  # quantized by an earlier process: where, and (if it was recorded) by which revision and command
        doc["resumed_from"] = {"run": str(folder), "provenance": _recorded(folder).get("provenance")}
        keep_earlier_rows(doc, out_dir / f"{stem}.json")
    atomic_write_text(out_dir / f"{stem}.json", json.dumps(doc, indent=2) + "\n")
    print(f"{model_name} x{scale} {tag} {bits}: " + "  ".join(f"{s.dataset} {s.psnr:.3f}/{s.ssim:.4f}"
          for s in scores) + f"  ({quant_seconds:.0f} s)", flush=True)
    return doc, q


def _recipe_hash_in(path: Path) -> str | None:
    """The recipe hash of a result file or a run folder's ``srq.json`` (recorded), or of an unfinished run's work
    area fingerprint (computed from its recipe as :func:`srq.pipeline.recipe_hash` does); None: none there."""
    try:
        doc = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    if "recipe_hash" in doc:
        return doc["recipe_hash"]
    return pipeline.recipe_hash(doc["recipe"]) if isinstance(doc.get("recipe"), dict) else None


def distinct_tag(model: str, tag: str, bits: str, recipe_hash: str, places: list[Path]) -> str:
    """``tag``, or ``tag-<recipe_hash>`` where ``<model>_<tag>_<bits>`` already names a result file (``.json``) or a
    run folder (``srq.json`` inside) in ``places`` made by a different recipe: result names are built from the
    options given, so a changed default would otherwise overwrite (or resume) a row of another recipe."""
    stem = f"{model}_{tag}_{bits}"
    for place in places:
        for path in (place / f"{stem}.json", place / stem / "srq.json", place / stem / WORK_AREA / "fingerprint.json"):
            recorded = _recipe_hash_in(path) if path.is_file() else None
            if recorded is not None and recorded != recipe_hash:
                return f"{tag}-{recipe_hash}"
    return tag


def keep_earlier_rows(doc: dict, path: Path) -> None:
    """Add to a resumed run's ``doc`` the rows of the data sets it did not evaluate from the result file at
    ``path``, when that file was made from the same run folder with the same inference (so evaluating one more
    set of a saved run does not need the others again); their provenance is kept under ``earlier_rows``."""
    if not path.is_file():
        return
    old = json.loads(path.read_text())
    if (old.get("resumed_from") or {}).get("run") != doc["resumed_from"]["run"] \
            or recorded_inference(old) != doc["inference"]:
        return
    done = {r["dataset"] for r in doc["results"]}
    rows = [r for r in old["results"] if r["dataset"] not in done]
    if not rows:
        return
    kept = {r["dataset"] for r in rows}
    doc["results"] = rows + doc["results"]
    doc["fp_results"] = [r for r in old["fp_results"] if r["dataset"] in kept] + doc["fp_results"]
    for key in ("eval_seconds", "fp_eval_seconds"):
        doc[key] = {**{k: v for k, v in old[key].items() if k in kept}, **doc[key]}
    doc["earlier_rows"] = {"datasets": sorted(kept), "provenance": old["provenance"],
                           "fp_source": old.get("fp_source")}


PTQ_NOTE = ("Made by `python benchmarks/ptq_bench.py` (see each JSON file for the exact command, git revision "
            "and machine). First/last layer 8 bit; weights per output channel, activations per tensor, affine "
            "(zero-point) grids; calibration: 96×96 LR patches of DIV2K_test_LRx4. FT rows before a7170bc could go "
            "NaN at 2 bits (IMDN's contrast layer); none of the kept rows did. Times were taken with other jobs "
            "running (see benchmarks/fakequant_speed.py for the quiet-machine ratio).")


def inference_label(split: int | None) -> str:
    """How images were inferred, as recorded in result files: ``whole image`` or ``split <N>``."""
    return f"split {split}" if split else "whole image"


def recorded_inference(row: dict, doc: dict | None = None) -> str:
    """The inference label of a result row, else of its file ``doc``; files from before it was recorded:
    ``whole image``."""
    return row.get("inference", (doc or {}).get("inference", inference_label(None)))


def saved_fp_scores(model: str, scale: int, datasets: list[str],
                    split: int | None = None) -> tuple[list[DatasetScore], str]:
    """FP scores of ``datasets`` from ``results/fp/<model>_x<scale>.json`` (made by fp_eval.py / srq eval),
    which must have been inferred the same way (``split``) as the quantized model will be."""
    path = HERE / "results" / "fp" / f"{model}_x{scale}.json"
    rerun = f"run benchmarks/fp_eval.py {model}:{scale}{f' --split {split}' if split else ''} --datasets"
    if not path.is_file():
        raise SystemExit(f"error: {path} not found; {rerun} {','.join(datasets)} or use --fp-scores run")
    doc = json.loads(path.read_text())
    saved = {r["dataset"]: r for r in doc["results"]}
    missing = [d for d in datasets if d not in saved]
    if missing:
        raise SystemExit(f"error: {path.name} has no FP scores for {', '.join(missing)}; use --fp-scores run")
    other = [d for d in datasets if recorded_inference(saved[d], doc) != inference_label(split)]
    if other:
        raise SystemExit(f"error: the FP scores of {', '.join(other)} in {path.name} were not inferred by "
                         f"{inference_label(split)}; {rerun} {','.join(other)} or use --fp-scores run")
    return [DatasetScore.from_dict(saved[d]) for d in datasets], str(path.relative_to(HERE.parent))


def add_device_option(p: argparse.ArgumentParser) -> None:
    """``--device``: where models are quantized and evaluated (default auto: CUDA if present, else CPU)."""
    p.add_argument("--device", type=device_arg, default="auto", help="auto (CUDA if present), cpu, cuda or cuda:N")


def add_param_option(p: argparse.ArgumentParser) -> None:
    """``-p key=value`` (repeatable): a recipe hyper-parameter, as in ``srq quantize -p`` (see :func:`with_params`)."""
    p.add_argument("-p", "--param", action="append", default=[], metavar="KEY=VALUE",
                   help="recipe hyper-parameter for every method run, as in `srq quantize -p` (repeatable; a nested "
                        "config's field: -p finetune_config.epochs=3); the result files' tag names them")


def with_params(recipe, params: list[str], tag: str):
    """``recipe`` with ``-p`` hyper-parameters applied (one-line error for a bad key or value) and the result tag
    extended by them (``gba`` + ``-p iterations=100`` → ``gba_iterations-100``)."""
    from srq.methods.base import apply_params

    if not params:
        return recipe, tag
    parts = [re.sub(r"[^A-Za-z0-9.+-]+", "-", item.replace("=", "-")).strip("-") for item in params]
    return apply_params(recipe, params), "_".join([tag, *parts])


def add_calib_option(p: argparse.ArgumentParser) -> None:
    """``--calib``: the calibration source, as ``srq quantize --calib`` (default: DIV2K_test_LRx4, the committed
    rows' inputs at every scale; ``hr:...`` makes LR at the model's scale from HR images)."""
    p.add_argument("--calib", default=DEFAULT_CALIB,
                   help="LR set or folder, or hr:FOLDER[,FOLDER] (LR made at the model's scale, e.g. "
                        "hr:train/BSD200,train/T91); any other than the default is named in the result files' tag")


def calib_data(args: argparse.Namespace, patch: int, default_patch: int) -> tuple[torch.Tensor, dict, str]:
    """(calibration patches, what the result file records of them, the tag part naming a non-default source or
    patch size, e.g. ``calib-hr_patch160``)."""
    calib = calibration_set(args.calib, patch=patch, n=args.calib_n, scale=args.scale)
    assert isinstance(calib, torch.Tensor)  # patches of one size
    record = {"set": args.calib, "images": len(calib), "patch": patch,
              **({"lr_made_at_scale": args.scale} if args.calib.startswith("hr:") else {})}
    parts = []
    if args.calib != DEFAULT_CALIB:
        name = "hr" if args.calib == "hr:train/BSD200,train/T91" else re.sub(r"[^A-Za-z0-9.+-]+", "-", args.calib)
        parts.append(f"calib-{name.strip('-')}")
    if patch != default_patch:
        parts.append(f"patch{patch}")
    return calib, record, join_tag(*parts)


def join_tag(*parts: str) -> str:
    """``method``, options... joined by ``_``, empty parts left out."""
    return "_".join(p for p in parts if p)


def add_fp_scores_option(p: argparse.ArgumentParser) -> None:
    """``--fp-scores run|saved``: how a benchmark gets its FP reference scores (see :func:`fp_reference`)."""
    p.add_argument("--fp-scores", default="run", choices=["run", "saved"],
                   help="FP reference: evaluate it here (run) or read results/fp/<model>_x<scale>.json (saved; "
                        "saves one FP evaluation, e.g. 25 min for MambaIRv2-light x4 on CPU; no eval-time ratio)")


def add_split_option(p: argparse.ArgumentParser) -> None:
    """``--split N``: partitioned inference of the FP and quantized models (see :func:`run`)."""
    p.add_argument("--split", type=int, default=None, metavar="N",
                   help="partitioned inference as in the official MambaIR/MambaIRv2 tests (e.g. 200 LR px); "
                        "with --fp-scores saved the FP rows must have been made with the same --split")


def fp_reference(args: argparse.Namespace, datasets: list[str]) -> tuple[list[DatasetScore], str | None]:
    """FP scores of ``datasets`` for ``args.model`` / ``args.scale`` and their source file (None: measured here)."""
    split = getattr(args, "split", None)
    if args.fp_scores == "saved":
        return saved_fp_scores(args.model, args.scale, datasets, split)
    model = srq.create_model(args.model, args.scale, "official").to(getattr(args, "device", "cpu"))
    return evaluate(model, datasets, args.scale, progress=False, split=split), None


NAME_MAX = 255  # bytes in one file name (Linux, macOS)
LONGEST_SUFFIX = "-12345678.training.csv"  # distinct_tag's recipe hash and the longest file a result writes


def fit_tag(prefix: str, tag: str, bits: str) -> str:
    """``tag`` unchanged when ``<prefix>_<tag>_<bits>`` and its files fit in a file name (:data:`NAME_MAX`), else
    cut, with 8 hex digits of its hash in place of the rest (the result file records the full recipe)."""
    room = NAME_MAX - len(f"{prefix}__{bits}{LONGEST_SUFFIX}".encode())
    if len(tag.encode()) <= room:
        return tag
    digest = hashlib.sha1(tag.encode()).hexdigest()[:8]
    return f"{tag.encode()[:room - 9].decode(errors='ignore')}-{digest}"


# A result file's name: <model>_x<scale>_<method>[_tag]_<bits> (model names may contain "_", e.g. carn_m).
RESULT_NAME = re.compile(r"(?P<model>.+?_x\d+)_(?P<tag>.+)_(?P<bits>[^_]+)$")


def result_key(path: Path) -> str:
    """``<model>_x<scale>|<bits>`` of a result file (:data:`RESULT_NAME`)."""
    m = RESULT_NAME.match(path.stem)
    return f"{m['model']}|{m['bits']}" if m else path.stem


def matching_rows(out_dir: Path, folders: tuple[str, ...], pattern: str = "*_x*_*.json") -> list[Path]:
    """Result files (``pattern``) of the sibling ``folders`` of ``out_dir`` whose model, scale and bits
    (:func:`result_key`) match a result file in ``out_dir``."""
    keys = {result_key(f) for f in out_dir.glob("*_x*_*.json")}
    return [f for d in folders for f in sorted((out_dir.parent / d).glob(pattern)) if result_key(f) in keys]


def result_tag(path: Path) -> str:
    """The ``<method>[_tag]`` part of a result file's name (:data:`RESULT_NAME`): the method with the options that
    made it (``gba_alloclf10``), which the JSON's ``method`` field may lack."""
    m = RESULT_NAME.match(path.stem)
    return m["tag"] if m else path.stem


def average_bits(doc: dict) -> str:
    """``W/A`` average body bits: from a mixed-precision report when there is one; with per-layer rules, weight bits
    averaged over the body layers' weights and activation bits over their MACs; else the base bits."""
    w, a = parse_bits(doc["bits"])
    body = {p["name"] for p in doc.get("placement") or [] if p.get("role") == "body"}
    layers = [r for r in (doc.get("cost") or {}).get("layers") or [] if r["name"] in body and r.get("w_bits")]
    if (doc.get("recipe") or {}).get("rules") and layers:
        w, a = layer_average_bits(layers)
    report = doc.get("report") or {}
    w_avg = report.get("w", {}).get("average_bits", w)
    a_avg = report.get("a", {}).get("average_bits", a)
    return f"{w_avg:.2f}/{a_avg:.2f}"


def result_docs(source: Path | Sequence[Path]) -> list[tuple[Path, dict]]:
    """``(path, document)`` of every result file in folder ``source`` (``*_x*_*.json``) or in the list of files,
    leaving out other JSON files kept beside them (e.g. dls_ranges.py's)."""
    files = sorted(source.glob("*_x*_*.json")) if isinstance(source, Path) else list(source)
    docs = [(f, json.loads(f.read_text())) for f in files]
    return [(f, d) for f, d in docs if "results" in d and "fp_results" in d and "cost" in d]


def summary(out_dir: Path = OUT, title: str = "PTQ baselines", note: str = PTQ_NOTE, also: list[Path] = ()) -> None:
    """Rebuild ``out_dir/summary.md`` from every result file there (and the files in ``also``)."""
    rows = [f"# {title}", "", note, "",
            "| model | method | bits | avg W/A bits | set PSNR / SSIM (Δ vs FP) | size KB | BitOPs G | quantize s | "
            "eval time ÷ FP | rev |", "|---|---|---|---|---|---|---|---|---|---|"]
    for f, d in sorted([*result_docs(out_dir), *result_docs(also)], key=lambda fd: fd[0].name):
        fp = {r["dataset"]: r for r in d["fp_results"]}
        cells = "; ".join(f"{r['dataset']} {r['psnr']:.2f}/{r['ssim']:.4f} "
                          f"({r['psnr'] - fp[r['dataset']]['psnr']:+.2f})" for r in d["results"])
        ratio = "—" if d.get("fp_source") else \
            f'{sum(d["eval_seconds"].values()) / max(sum(d["fp_eval_seconds"].values()), 1e-9):.2f}'
        inference = recorded_inference(d)
        method = result_tag(f) + ("" if inference == inference_label(None) else f" [{inference}]")
        rows.append(f"| {d['model']} x{d['scale']} | {method} | {d['bits']} | {average_bits(d)} | {cells} | "
                    f"{d['cost']['size_kb']:.1f} | {d['cost']['bitops'] / 1e9:.1f} | {d['quantize_seconds']:.0f} | "
                    f"{ratio} | {d['provenance']['git_revision'][:7]} |")
    atomic_write_text(out_dir / "summary.md", "\n".join(rows) + "\n")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="imdn")
    p.add_argument("--scale", type=int, default=4)
    p.add_argument("--bits", default="w8a8,w4a4")
    p.add_argument("--methods", default="minmax,percentile,omse,minmax_ft,percentile_ft")
    p.add_argument("--datasets", default="Set5,Set14,B100,Urban100")
    p.add_argument("--calib-n", type=int, default=100)
    p.add_argument("--patch", type=int, default=None,
                   help="LR patch size of the calibration inputs (default 384/scale: HR 384 as in GBA; another size "
                        "is named in the result files' tag)")
    add_fp_scores_option(p)
    add_split_option(p)
    add_device_option(p)
    add_param_option(p)
    add_calib_option(p)
    args = p.parse_args()
    datasets = args.datasets.split(",")
    calib, calibration, calib_tag = calib_data(args, args.patch or 384 // args.scale, 384 // args.scale)
    fp_scores, fp_source = fp_reference(args, datasets)
    for bits in args.bits.split(","):
        w, a = parse_bits(bits)
        for method in args.methods.split(","):
            recipe, tag = with_params(METHODS[method](w_bits=w, a_bits=a), args.param, join_tag(method, calib_tag))
            run(args.model, args.scale, method, bits, datasets, calib, fp_scores, recipe=recipe, tag=tag,
                fp_source=fp_source, split=args.split, device=args.device, calibration=calibration)
    summary()


if __name__ == "__main__":
    run_script(main)
