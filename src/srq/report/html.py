"""``srq report``: one self-contained HTML page (inline SVG plots, inline PNG crops, a few lines of plain
JavaScript; no network) over run folders and result files. Scores are read, never re-evaluated; crops are
computed once and cached (:mod:`srq.report.crops`)."""

from __future__ import annotations

import datetime as _dt
import json
import math
import time
from dataclasses import dataclass
from html import escape
from pathlib import Path
from typing import Any, Callable, Sequence

from .crops import DEFAULT_CACHE, ImageCrops, choose_images, make_crops
from .page_assets import CSS, JS
from .plots import bits_svg, responsive_svg, tradeoff_svg
from .runs import ReportRun, gather_runs, pareto_front
from .svg import chart_svg

__all__ = ["write_report", "render_page", "ReportSummary"]

_ORDER = ("Set5", "Set14", "B100", "Urban100", "Manga109")


@dataclass
class ReportSummary:
    """What :func:`write_report` wrote: the file, its size, the rows, crop images and the time it took (s)."""

    path: Path
    bytes: int
    runs: int
    images: int
    seconds: float


def _fmt_seconds(s: float | None) -> str:
    if s is None:
        return "–"
    return f"{s:.0f} s" if s < 120 else f"{s / 60:.1f} min" if s < 7200 else f"{s / 3600:.1f} h"


def _cell(text: str, value: Any = None, cls: str = "") -> str:
    v = "" if value is None or (isinstance(value, float) and math.isnan(value)) else f' data-v="{value}"'
    return f'<td{v}{f" class={chr(34)}{cls}{chr(34)}" if cls else ""}>{text}</td>'


def _datasets(runs: list[ReportRun], wanted: Sequence[str]) -> list[str]:
    found = {d for r in runs for d in r.scores}
    if wanted:
        return [d for d in wanted if d in found]
    return [d for d in _ORDER if d in found] + sorted(found - set(_ORDER))


def _table(runs: list[ReportRun], datasets: list[str]) -> str:
    head = ["run", "model", "task", "scale", "method", "bits W/A (avg)", "size (KB)", "BitOPs (G)", "quant. time"]
    head += [f"{d} {k}" for d in datasets for k in ("PSNR", "SSIM", "Δ PSNR")]
    rows = []
    for r in runs:
        bits = "FP32" if r.is_fp else (f"{r.w_bits:.2f} / {r.a_bits:.2f}" if r.w_bits and r.a_bits else
                                       f"{r.recipe.get('w_bits', '?')} / {r.recipe.get('a_bits', '?')}")
        cells = [_cell(f'<a href="#{_anchor(r)}">{escape(r.label)}</a>', escape(r.label)), _cell(escape(r.model)),
                 _cell(r.task), _cell(f"×{r.scale}", r.scale), _cell(escape(r.method)), _cell(bits, r.w_bits),
                 _cell("–" if r.size_kb is None else f"{r.size_kb:,.1f}", r.size_kb),
                 _cell("–" if r.bitops is None else f"{r.bitops / 1e9:,.1f}", r.bitops),
                 _cell(_fmt_seconds(r.quantize_seconds), r.quantize_seconds)]
        for d in datasets:
            p, s = r.scores.get(d, (None, None))
            delta = r.delta(d)
            cells += [_cell("–" if p is None else f"{p:.2f}", p), _cell("–" if s is None else f"{s:.4f}", s),
                      _cell("–" if delta is None or r.is_fp else f"{delta:+.2f}", delta,
                            "bad" if delta is not None and delta < -1 else "")]
        rows.append(f'<tr id="row-{_anchor(r)}">{"".join(cells)}</tr>')
    ths = "".join(f'<th title="click to sort">{escape(h)}</th>' for h in head)
    return (f'<div class="scroll"><table class="runs sortable"><thead><tr>{ths}</tr></thead><tbody>'
            f'{"".join(rows)}</tbody></table></div>')


def _anchor(r: ReportRun) -> str:
    import re

    return "run-" + re.sub(r"[^A-Za-z0-9]+", "-", r.label).strip("-").lower()


def _plots(runs: list[ReportRun], dataset: str) -> str:
    scored = [r for r in runs if dataset in r.scores]
    out = []
    for attr, xlabel, scale in (("bitops", "BitOPs (G, log scale)", 1e9), ("size_kb", "size (KB, log scale)", 1.0)):
        pts = [(r.label, getattr(r, attr) / scale, r.scores[dataset][0]) for r in scored if getattr(r, attr)]
        front = pareto_front([(x, y) for _, x, y in pts])
        title = f"{dataset} PSNR vs {'BitOPs' if attr == 'bitops' else 'model size'}"
        out.append(f"<figure>{tradeoff_svg(pts, front, title, xlabel)}<figcaption>Pareto front: "
                   f"{escape(', '.join(pts[i][0] for i in front)) or '–'}</figcaption></figure>")
    series: dict[str, list[tuple[float, float]]] = {}
    networks = {(r.model, r.scale) for r in scored}
    for r in scored:
        if not r.is_fp and r.w_bits:
            name = r.method if len(networks) == 1 else f"{r.model} x{r.scale} {r.method}"
            series.setdefault(name, []).append((r.w_bits, r.scores[dataset][0]))
    fp = None  # the FP line only where all runs share one network
    if len(networks) == 1:
        fp = next((r.scores[dataset][0] for r in scored if r.is_fp), None)
        if fp is None:
            fp = next((r.fp_scores[dataset][0] for r in scored if dataset in r.fp_scores), None)
    out.append(f"<figure>{bits_svg(series, fp, f'{dataset} PSNR vs bits, per method')}</figure>")
    return '<div class="plots">' + "".join(out) + "</div>"


def _crops_html(items: list[ImageCrops], scale: int = 3) -> str:
    out = []
    for k, item in enumerate(items):
        t, left, s = item.box
        figs = []
        for c in item.crops:
            label = escape(c.label) + ("" if c.psnr is None else f"<br>{c.psnr:.2f} dB")
            body = (f'<img src="{c.data_uri}" width="{s * scale}" height="{s * scale}" alt="{escape(c.label)}">'
                    if c.png else f'<div class="missing" style="width:{s * scale}px;height:{s * scale}px">'
                                  f'{escape(c.note)}</div>')
            figs.append(f"<figure>{body}<figcaption>{label}</figcaption></figure>")
        shown = [c for c in item.crops if c.png]  # the slider indexes the page's <img> elements
        options = "".join(f'<option value="{i}">{escape(c.label)}</option>' for i, c in enumerate(shown))
        n_ok = len(shown)
        compare = (f'<div class="compare" data-size="{s * scale * 2}"><div class="pick">left <select>{options}'
                   f'</select> right <select data-default="{n_ok - 1}">{options}</select></div>'
                   f'<div class="stage" style="width:{s * scale * 2}px;height:{s * scale * 2}px">'
                   f'<canvas class="under" width="{s}" height="{s}"></canvas>'
                   f'<canvas class="over" width="{s}" height="{s}"></canvas><div class="bar"></div></div>'
                   f'<input type="range" min="0" max="100" value="50" aria-label="before/after position"></div>')
        out.append(f'<section class="image" id="img-{k}"><h3>{escape(item.dataset)}/{escape(item.name)}</h3>'
                   f'<p class="note">{escape(item.why)}; HR crop {s}×{s} at (y={t}, x={left}), zoomed ×{scale} '
                   f'nearest-neighbour; PSNR of the whole image (Y, crop border = scale).</p>'
                   f'<div class="crops">{"".join(figs)}</div>{compare}</section>')
    return "".join(out)


def _placement_summary(r: ReportRun) -> str:
    if not r.cost_layers:
        return ""
    counts: dict[str, int] = {}
    for layer in r.cost_layers:
        w, a = layer.get("w_bits"), layer.get("a_bits")
        key = "float" if w is None and a is None else f"W{w or 'FP'}A{a or 'FP'}"
        counts[key] = counts.get(key, 0) + 1
    parts = ", ".join(f"{n} at {k}" for k, n in sorted(counts.items(), key=lambda kv: -kv[1]))
    return f"<p>{len(r.cost_layers)} layers: {escape(parts)}.</p>"


def _shown_path(path: Path) -> str:
    """``path`` relative to the working folder when it lies under it (no user's home in a shared page)."""
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


def _run_section(r: ReportRun) -> str:
    facts = [f"source: <code>{escape(_shown_path(r.source))}</code>"]
    if r.is_fp:
        facts.append("the float model: its crops come from the official weights")
    elif r.folder is None:
        facts.append("result file without a model: table and plots only, no crops" if not r.source.is_dir()
                     else "run folder without model.safetensors: no crops")
    if r.quantize_seconds is not None:
        facts.append(f"quantization/training time {_fmt_seconds(r.quantize_seconds)}")
    parts = [f'<section class="run" id="{_anchor(r)}"><h3>{escape(r.label)}</h3><p>{"; ".join(facts)}.</p>',
             _placement_summary(r)]
    if r.recipe:
        parts.append(f"<details><summary>recipe</summary><pre>{escape(json.dumps(r.recipe, indent=1))}</pre>"
                     f"</details>")
    if "placement.txt" in r.artefacts:
        parts.append(f"<details><summary>placement</summary><pre>{escape(r.artefacts['placement.txt'])}</pre>"
                     f"</details>")
    if "bitmap.svg" in r.artefacts:
        parts.append(f'<figure class="wide">{responsive_svg(r.artefacts["bitmap.svg"])}</figure>')
    if "routing.txt" in r.artefacts:
        parts.append(f"<details><summary>routing table (SPR²Q)</summary>"
                     f"<pre>{escape(r.artefacts['routing.txt'])}</pre></details>")
    if "training.svg" in r.artefacts:
        parts.append(f'<figure class="wide">{responsive_svg(r.artefacts["training.svg"])}</figure>')
    if r.cost_layers and not r.is_fp:
        names = [layer["name"] for layer in r.cost_layers]
        bitops = [float(layer.get("bitops") or 0) / 1e9 for layer in r.cost_layers]
        chart = chart_svg(names, {"BitOPs (G)": bitops}, f"{r.label}: cost per layer", ylabel="BitOPs (G)")
        parts.append(f'<details><summary>cost per layer (BitOPs)</summary><figure class="wide">'
                     f'{responsive_svg(chart)}</figure></details>')
    return "".join(parts) + "</section>"


def render_page(runs: list[ReportRun], crops: list[ImageCrops], datasets: list[str], notes: list[str],
                title: str = "srq report") -> str:
    """The whole HTML document (UTF-8 text) for rows ``runs`` and image crops ``crops``."""
    primary = datasets[-1] if datasets else ""
    stamp = _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    body = [f"<h1>{escape(title)}</h1><p class='note'>{len(runs)} runs; generated {stamp} by srq report. "
            f"Scores are read from the run folders and result files, not re-evaluated. Δ PSNR: against the FP "
            f"model of the same network and scale. Click a column header to sort.</p>"]
    body += [f"<p class='note'>{escape(n)}</p>" for n in notes]
    body.append("<h2>Runs</h2>" + _table(runs, datasets))
    if primary:
        body.append(f"<h2>Trade-offs ({escape(primary)})</h2>" + _plots(runs, primary))
    body.append("<h2>Visual comparison</h2>" + (_crops_html(crops) if crops else
                                                 "<p class='note'>no crops: no run with a model, or --no-crops.</p>"))
    body.append("<h2>Per run</h2>" + "".join(_run_section(r) for r in runs))
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><meta name="viewport" '
            f'content="width=device-width, initial-scale=1"><title>{escape(title)}</title><style>{CSS}</style>'
            f'</head><body>{"".join(body)}<script>{JS}</script></body></html>\n')


def write_report(paths: Sequence[str | Path], output: str | Path, images: Sequence[str] = (),
                 datasets: Sequence[str] = (), crops: bool = True, cache_dir: str | Path | None = None,
                 data_root: str | Path | None = None, title: str = "srq report",
                 log: Callable[[str], None] = lambda m: None) -> ReportSummary:
    """Gather the runs at ``paths``, render the page and write it to ``output`` atomically.

    Args:
        images: ``SET/IMAGE`` names to crop (default: the worst-hit Urban100/Set14 images by Δ PSNR).
        datasets: the sets shown in the table and plots (default: all scored; the last is plotted).
        crops: False: table, plots and per-run sections only (no model is loaded).
        cache_dir: FP and bicubic crops (default ``~/.cache/srq/report``); runs' crops go in their folders.
    """
    from ..engine.results import atomic_write_text

    t0 = time.perf_counter()
    runs, skipped = gather_runs(paths)
    notes = [f"skipped {len(skipped)} JSON files that are not result files: "
             + ", ".join(p.name for p in skipped[:5]) + (" ..." if len(skipped) > 5 else "")] if skipped else []
    no_model = [r.label for r in runs if r.folder is None and not r.is_fp]
    if no_model:
        notes.append("without a model (result files only: table and plots, no crops): " + ", ".join(no_model))
    shown = _datasets(runs, datasets)
    items: list[ImageCrops] = []
    if crops:
        chosen = choose_images(runs, list(images))
        items = make_crops(runs, chosen, Path(cache_dir or DEFAULT_CACHE).expanduser(), data_root=data_root, log=log)
    text = render_page(runs, items, shown, notes, title)
    path = atomic_write_text(output, text)
    return ReportSummary(path, len(text.encode()), len(runs), len(items), time.perf_counter() - t0)
