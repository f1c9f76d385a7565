"""The runs a report shows, gathered from run folders (``srq quantize``) and result files (``srq eval -o``,
``benchmarks/results/*/``), merged where a folder and a file describe the same run. Nothing is re-evaluated:
scores come from the files."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

from ..errors import SrqError

__all__ = ["ReportRun", "gather_runs", "pareto_front", "fill_fp", "layer_average_bits"]


@dataclass
class ReportRun:
    """One row of the report. Scores: dataset → (PSNR dB on Y, SSIM); per-image: dataset → image name → PSNR."""

    label: str
    source: Path  # the run folder or result file it was read from
    model: str
    scale: int
    method: str  # "fp" for the float model
    w_bits: float | None = None  # averaged over weight parameters (32 for FP)
    a_bits: float | None = None  # averaged over MACs
    size_kb: float | None = None
    bitops: float | None = None
    fp32_size_kb: float | None = None
    fp32_bitops: float | None = None
    quantize_seconds: float | None = None
    task: str = "sr"
    recipe: dict[str, Any] = field(default_factory=dict)
    recipe_hash: str | None = None
    scores: dict[str, tuple[float, float]] = field(default_factory=dict)
    fp_scores: dict[str, tuple[float, float]] = field(default_factory=dict)
    images: dict[str, dict[str, float]] = field(default_factory=dict)
    folder: Path | None = None  # a run folder holding model.safetensors (crops possible)
    artefacts: dict[str, str] = field(default_factory=dict)  # placement.txt, bitmap.svg, routing.txt, training.svg
    cost_layers: list[dict[str, Any]] = field(default_factory=list)
    report: dict[str, Any] = field(default_factory=dict)

    @property
    def is_fp(self) -> bool:
        return self.method == "fp"

    @property
    def key(self) -> tuple:
        """What identifies the same run in a folder and a result file: model, scale, method, nominal bits."""
        return (self.model, self.scale, self.method, self.recipe.get("w_bits"), self.recipe.get("a_bits"))

    def delta(self, dataset: str) -> float | None:
        """PSNR minus the FP model's on ``dataset`` (dB), None when either is unknown."""
        if dataset not in self.scores or dataset not in self.fp_scores:
            return None
        return self.scores[dataset][0] - self.fp_scores[dataset][0]


def layer_average_bits(layers: list[dict[str, Any]]) -> tuple[float | None, float | None]:
    """Weight bits averaged over weight parameters, activation bits averaged over MACs (float layers: 32)."""
    wp = sum(float(r.get("weight_params") or 0) for r in layers)
    macs = sum(float(r.get("macs") or 0) for r in layers)
    w = sum(float(r.get("w_bits") or 32) * float(r.get("weight_params") or 0) for r in layers) / wp if wp else None
    a = sum(float(r.get("a_bits") or 32) * float(r.get("macs") or 0) for r in layers) / macs if macs else None
    return w, a


def _apply_cost(run: ReportRun, cost: dict[str, Any] | None) -> None:
    if not cost:
        return
    run.size_kb, run.bitops = cost.get("size_kb"), cost.get("bitops")
    run.fp32_size_kb, run.fp32_bitops = cost.get("fp32_size_kb"), cost.get("fp32_bitops")
    run.cost_layers = list(cost.get("layers") or [])
    if run.cost_layers:
        run.w_bits, run.a_bits = layer_average_bits(run.cost_layers)


def _scores(rows: Iterable[dict[str, Any]]) -> tuple[dict[str, tuple[float, float]], dict[str, dict[str, float]]]:
    """Per-set (PSNR, SSIM) and per-image PSNR from a result file's ``results`` list."""
    scores, images = {}, {}
    for r in rows:
        if isinstance(r, dict) and "dataset" in r and r.get("psnr") is not None:
            scores[r["dataset"]] = (float(r["psnr"]), float(r.get("ssim") or math.nan))
            if r.get("images"):
                images[r["dataset"]] = {i["name"]: float(i["psnr"]) for i in r["images"] if "psnr" in i}
    return scores, images


def is_result_file(doc: Any) -> bool:
    """Whether a parsed JSON document is a result file: a ``results`` list of per-set scores and a model."""
    return (isinstance(doc, dict) and isinstance(doc.get("results"), list) and "model" in doc
            and any(isinstance(r, dict) and "psnr" in r for r in doc["results"]))


def from_result_file(path: Path, doc: dict[str, Any]) -> ReportRun:
    """A row from a result file (``benchmarks/results/*/*.json`` or ``srq eval -o``); no model, so no crops."""
    recipe = doc.get("recipe") or {}
    method = recipe.get("method") or ("fp" if "method" not in doc else str(doc["method"]))
    run = ReportRun(label=path.stem, source=path, model=str(doc["model"]), scale=int(doc.get("scale") or 0),
                    method=method, recipe=recipe, recipe_hash=doc.get("recipe_hash"),
                    quantize_seconds=doc.get("quantize_seconds"), task=str(doc.get("task") or "sr"),
                    report=doc.get("report") or {})
    run.scores, run.images = _scores(doc["results"])
    run.fp_scores, _ = _scores(doc.get("fp_results") or [])
    _apply_cost(run, doc.get("cost"))
    if run.is_fp:
        run.w_bits = run.a_bits = 32.0
        run.fp_scores = dict(run.scores)
    for suffix, name in ((".training.svg", "training.svg"), ("_bits.svg", "bitmap.svg")):
        beside = path.with_name(path.stem + suffix)
        if beside.is_file():
            run.artefacts[name] = beside.read_text()
    _report_artefacts(run, f"{run.model} x{run.scale} {method}")
    return run


def _report_artefacts(run: ReportRun, title: str) -> None:
    """The bit map and routing table a run folder would hold, made from a result file's method report."""
    from .bitmap import bit_offsets_svg
    from .routing import format_routing

    report = run.report
    if isinstance(report.get("routing"), dict) and report["routing"]:
        run.artefacts.setdefault("routing.txt", format_routing(report))
    if ("w" in report or "a" in report) and "bitmap.svg" not in run.artefacts:
        try:
            run.artefacts["bitmap.svg"] = bit_offsets_svg(report, f"{title}: bit offset per layer")
        except (KeyError, TypeError):
            pass  # a report of another shape (e.g. AdaBM's per-image statistics)


def _score_logs(folder: Path) -> tuple[dict[str, tuple[float, float]], dict[str, dict[str, float]]]:
    """Scores from a run folder: ``scores/*.jsonl`` per-image logs, then ``*.json`` result files in it."""
    scores: dict[str, tuple[float, float]] = {}
    images: dict[str, dict[str, float]] = {}
    for log in sorted((folder / "scores").glob("*.jsonl")):
        lines = [json.loads(x) for x in log.read_text().splitlines() if x.strip()]
        if not lines or "dataset" not in lines[0]:
            continue
        rows = [r for r in lines[1:] if "psnr" in r]
        if rows and len(rows) == lines[0].get("images", len(rows)):
            scores[lines[0]["dataset"]] = (sum(r["psnr"] for r in rows) / len(rows),
                                           sum(r.get("ssim", math.nan) for r in rows) / len(rows))
            images[lines[0]["dataset"]] = {r["name"]: float(r["psnr"]) for r in rows}
    for path in sorted(folder.glob("*.json")):
        if path.name == "srq.json":
            continue
        doc = _read_json(path)
        if is_result_file(doc):
            s, i = _scores(doc["results"])
            scores.update(s)
            images.update(i)
    return scores, images


def from_run_folder(folder: Path) -> ReportRun:
    """A row from a run folder written by ``srq quantize`` / :func:`srq.pipeline.run`."""
    meta = _read_json(folder / "srq.json")
    if not isinstance(meta, dict) or "recipe" not in meta:
        raise SrqError(f"{folder}/srq.json is not a run folder's record (no recipe); pass a folder written by "
                       f"`srq quantize`")
    arch = meta.get("architecture") or {}
    recipe = meta.get("recipe") or {}
    run = ReportRun(label=folder.name, source=folder, model=str(arch.get("model") or "model"),
                    scale=int(arch.get("scale") or (meta.get("cost") or {}).get("scale") or 0),
                    method=str(recipe.get("method", "?")), recipe=recipe, recipe_hash=meta.get("recipe_hash"),
                    quantize_seconds=meta.get("quantize_seconds"), report=meta.get("report") or {},
                    folder=folder if (folder / "model.safetensors").is_file() else None)
    _apply_cost(run, meta.get("cost"))
    run.scores, run.images = _score_logs(folder)
    for name in ("placement.txt", "bitmap.svg", "routing.txt", "training.svg", "bitmap.txt"):
        if (folder / name).is_file():
            run.artefacts[name] = (folder / name).read_text()
    return run


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise SrqError(f"cannot read {path}: {e}")


def _collect(path: Path) -> tuple[list[ReportRun], list[Path]]:
    """Rows found at ``path`` and the JSON files skipped there (not result files) when it is a folder."""
    if path.is_file():
        doc = _read_json(path) if path.suffix == ".json" else None
        if not isinstance(doc, dict) or not is_result_file(doc):
            raise SrqError(f"{path} is not a result file (a JSON with a model and per-set 'results'); give run "
                           f"folders, result files or folders holding them")
        return [from_result_file(path, doc)], []
    if not path.is_dir():
        raise SrqError(f"{path} does not exist; give run folders, result files or folders holding them")
    if (path / "srq.json").is_file():
        return [from_run_folder(path)], []
    runs, skipped = [], []
    for child in sorted(path.iterdir()):
        if child.is_dir() and (child / "srq.json").is_file():
            runs.append(from_run_folder(child))
        elif child.suffix == ".json" and child.is_file():
            doc = _read_json(child)
            if is_result_file(doc):
                runs.append(from_result_file(child, doc))
            else:
                skipped.append(child)
    return runs, skipped


def _flat(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        out.update(_flat(v, f"{prefix}{k}.") if isinstance(v, dict) else {f"{prefix}{k}": v})
    return out


def _same_recipe(a: dict[str, Any], b: dict[str, Any]) -> bool:
    """Whether two recipes agree on every field both record (files written by older srq versions record fewer
    fields, so the recipe hash differs though the recipe is the same)."""
    fa, fb = _flat(a), _flat(b)
    return all(fa[k] == fb[k] for k in fa.keys() & fb.keys())


def _merge(runs: list[ReportRun]) -> list[ReportRun]:
    """One row per run: a result file matching a run folder (same model, scale, method and bits, and the same
    value in every recipe field both record) gives the folder the scores it lacks."""
    folders = [r for r in runs if r.folder is not None or r.source.is_dir()]
    out = list(folders)
    for r in runs:
        if r in folders:
            continue
        match = next((f for f in folders if f.key == r.key and _same_recipe(f.recipe, r.recipe)), None)
        if match is None:
            out.append(r)
            continue
        for ds, s in r.scores.items():
            match.scores.setdefault(ds, s)
        for ds, imgs in r.images.items():
            match.images.setdefault(ds, imgs)
        for ds, s in r.fp_scores.items():
            match.fp_scores.setdefault(ds, s)
        for name, text in r.artefacts.items():
            match.artefacts.setdefault(name, text)
        match.quantize_seconds = match.quantize_seconds or r.quantize_seconds
    return out


def fill_fp(runs: list[ReportRun]) -> None:
    """Share the float model's figures: FP scores for Δ (from an FP row of the same model and scale), and the
    FP row's size and BitOPs from its quantized siblings' FP32 cost."""
    for fp in (r for r in runs if r.is_fp):
        sibling = next((r for r in runs if not r.is_fp and (r.model, r.scale) == (fp.model, fp.scale)
                        and r.fp32_size_kb), None)
        if sibling is not None:
            fp.size_kb = fp.size_kb or sibling.fp32_size_kb
            fp.bitops = fp.bitops or sibling.fp32_bitops
        for r in runs:
            if not r.is_fp and (r.model, r.scale) == (fp.model, fp.scale):
                for ds, s in fp.scores.items():
                    r.fp_scores.setdefault(ds, s)


def _unique_labels(runs: list[ReportRun]) -> None:
    """Short distinct labels: model x scale, method, nominal bits; the source name where those collide."""
    for r in runs:
        bits = "FP32" if r.is_fp else f"W{r.recipe.get('w_bits', '?')}A{r.recipe.get('a_bits', '?')}"
        r.label = f"{r.model} x{r.scale} {'' if r.is_fp else r.method + ' '}{bits}"
    seen: dict[str, int] = {}
    for r in runs:
        seen[r.label] = seen.get(r.label, 0) + 1
    for r in runs:
        if seen[r.label] > 1:
            r.label += f" ({r.source.name})"


def gather_runs(paths: Iterable[str | Path]) -> tuple[list[ReportRun], list[Path]]:
    """The report's rows for ``paths`` (run folders, result files, folders holding them) and the JSON files
    skipped in those folders as not being result files.

    Raises:
        SrqError: no paths, a path that is none of those, or no run found at all.
    """
    given = [Path(p) for p in paths]
    if not given:
        raise SrqError("no runs given: name run folders, result files or folders holding them")
    runs: list[ReportRun] = []
    skipped: list[Path] = []
    for p in given:
        found, skip = _collect(p)
        if not found and p.is_dir():
            raise SrqError(f"{p} holds no run folders (with srq.json) and no result files")
        runs += found
        skipped += skip
    unique = {r.source.resolve(): r for r in reversed(runs)}  # a run named twice (file and its folder) once
    runs = _merge([r for r in runs if unique[r.source.resolve()] is r])
    runs.sort(key=lambda r: (r.model, r.scale, not r.is_fp, r.method, r.recipe.get("w_bits") or 0,
                             r.recipe.get("a_bits") or 0, r.source.name))
    fill_fp(runs)
    _unique_labels(runs)
    return runs, skipped


def pareto_front(points: list[tuple[float, float]]) -> list[int]:
    """Indices of the points (cost, quality) no other point beats: none has cost ≤ and quality ≥ with one of them
    strict. Sorted by cost. Equal points are all kept."""
    front = []
    for i, (c, q) in enumerate(points):
        if not any((c2 <= c and q2 >= q) and (c2 < c or q2 > q) for j, (c2, q2) in enumerate(points) if j != i):
            front.append(i)
    return sorted(front, key=lambda i: (points[i][0], -points[i][1]))
