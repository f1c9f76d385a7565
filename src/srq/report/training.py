"""Training logs of QAT runs: a CSV table and an SVG plot of loss and validation PSNR against the step."""

from __future__ import annotations

import csv
import io
from html import escape
from typing import Any, Sequence

from ..engine.qat import LOG_COLUMNS
from .svg import nice_ticks

__all__ = ["training_csv", "training_svg"]


def training_csv(log: Sequence[dict[str, Any]]) -> str:
    """The log as CSV, one row per step: step, loss, lr, psnr (empty where not validated), step_ms."""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=LOG_COLUMNS, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for row in log:
        writer.writerow({k: "" if row.get(k) is None else row[k] for k in LOG_COLUMNS})
    return buf.getvalue()


def _smooth(values: list[float], window: int) -> list[float]:
    """Running mean over the last ``window`` values."""
    out, total = [], 0.0
    for i, v in enumerate(values):
        total += v - (values[i - window] if i >= window else 0.0)
        out.append(total / min(i + 1, window))
    return out


def training_svg(log: Sequence[dict[str, Any]], title: str, width: int = 960, height: int = 320) -> str:
    """Two panels over the step: the loss (running mean over 2 % of the steps, raw in grey) and the validation
    PSNR (dB, at the steps where it was measured)."""
    steps = [r["step"] for r in log]
    loss = [r["loss"] for r in log]
    val = [(r["step"], r["psnr"]) for r in log if r.get("psnr") is not None]
    panels = [("loss", [(s, v) for s, v in zip(steps, loss)], _smooth(loss, max(1, len(loss) // 50))),
              ("validation PSNR (dB)", val, None)]
    pw = (width - 60) // 2 - 50
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" font-family="sans-serif" '
           f'font-size="11">', f'<rect width="{width}" height="{height}" fill="white"/>',
           f'<text x="{width / 2}" y="18" text-anchor="middle" font-size="14">{escape(title)}</text>']
    last = max(steps) if steps else 1
    for k, (name, points, smooth) in enumerate(panels):
        left, top, ph = 60 + k * (pw + 100), 40, height - 90
        out.append(f'<text x="{left + pw / 2}" y="{top - 6}" text-anchor="middle">{escape(name)}</text>')
        if not points:
            out.append(f'<text x="{left + pw / 2}" y="{top + ph / 2}" text-anchor="middle">not measured</text>')
            continue
        ys = [v for _, v in points]
        ticks = nice_ticks(min(ys), max(ys))
        lo, hi = ticks[0], ticks[-1]

        def px(s: float) -> float:
            return left + pw * s / last

        def py(v: float) -> float:
            return top + ph * (hi - v) / ((hi - lo) or 1.0)

        for v in ticks:
            out.append(f'<line x1="{left}" x2="{left + pw}" y1="{py(v):.1f}" y2="{py(v):.1f}" stroke="#ddd"/>')
            out.append(f'<text x="{left - 4}" y="{py(v) + 4:.1f}" text-anchor="end">{v:.4g}</text>')
        for s in nice_ticks(0, last):
            if s <= last:
                out.append(f'<text x="{px(s):.1f}" y="{top + ph + 16}" text-anchor="middle">{s:g}</text>')
        out.append(f'<text x="{left + pw / 2}" y="{top + ph + 32}" text-anchor="middle">step</text>')
        line = " ".join(f"{px(s):.1f},{py(v):.1f}" for s, v in points)
        if smooth is None:
            out.append(f'<polyline points="{line}" fill="none" stroke="#d62728" stroke-width="2"/>')
            out.extend(f'<circle cx="{px(s):.1f}" cy="{py(v):.1f}" r="3" fill="#d62728"/>' for s, v in points)
        else:
            out.append(f'<polyline points="{line}" fill="none" stroke="#bbb" stroke-width="1"/>')
            mean = " ".join(f"{px(s):.1f},{py(v):.1f}" for s, v in zip(steps, smooth))
            out.append(f'<polyline points="{mean}" fill="none" stroke="#1f77b4" stroke-width="2"/>')
    out.append("</svg>")
    return "\n".join(out) + "\n"
