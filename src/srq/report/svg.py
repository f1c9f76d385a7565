"""A small dependency-free SVG chart: grouped bars or lines over categories (e.g. layers)."""

from __future__ import annotations

import math
from html import escape

__all__ = ["chart_svg", "nice_ticks"]

_COLOURS = ("#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd")
_CHAR_WIDTH = 6.5  # px per character of the 11-px legend font (an estimate; SVG has no text metrics)


def nice_ticks(lo: float, hi: float, target: int = 5) -> list[float]:
    """Evenly spaced round values (steps of 1, 2, 2.5 or 5 × 10^k) from ≤ ``lo`` to ≥ ``hi``, their number as
    close to ``target`` as such steps allow (on a tie, the tighter axis)."""
    if hi <= lo:
        hi = lo + 1.0
    base = 10 ** math.floor(math.log10((hi - lo) / max(target - 1, 1)))
    best: tuple[tuple[int, int], float, int, int] | None = None  # (key, step, first, last)
    for step in (m * base for m in (0.5, 1, 2, 2.5, 5, 10)):
        first, last = math.floor(lo / step + 1e-9), math.ceil(hi / step - 1e-9)
        key = (abs(last - first + 1 - target), -(last - first))
        if best is None or key < best[0]:
            best = (key, step, first, last)
    assert best is not None  # the loop above ran
    _, step, first, last = best
    return [round(k * step, 12) for k in range(first, last + 1)]


def chart_svg(categories: list[str], series: dict[str, list[float]], title: str, ylabel: str = "",
              kind: str = "bars", width: int = 960, height: int = 360) -> str:
    """An SVG document plotting each series (same length as ``categories``) as grouped bars or lines.

    The y axis spans the data (always including 0) with round tick values; category labels are drawn rotated
    under the axis; legend entries are spaced by the length of their names.
    """
    if kind not in ("bars", "lines"):
        raise ValueError(f"kind must be 'bars' or 'lines', got {kind!r}")
    if any(len(v) != len(categories) for v in series.values()):
        raise ValueError("every series needs one value per category")
    left, right, top, bottom = 60, 20, 40, 110
    pw, ph = width - left - right, height - top - bottom
    values = [v for vs in series.values() for v in vs] + [0.0]
    ticks = nice_ticks(min(values), max(values))
    lo, hi = ticks[0], ticks[-1]
    n = max(len(categories), 1)

    def y(v: float) -> float:
        return top + ph * (hi - v) / (hi - lo)

    def x(i: float) -> float:
        return left + pw * (i + 0.5) / n

    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" font-family="sans-serif" '
           f'font-size="11">', f'<rect width="{width}" height="{height}" fill="white"/>',
           f'<text x="{width / 2}" y="20" text-anchor="middle" font-size="14">{escape(title)}</text>',
           f'<text x="14" y="{top + ph / 2}" transform="rotate(-90 14 {top + ph / 2})" '
           f'text-anchor="middle">{escape(ylabel)}</text>']
    for v in ticks:  # y grid and ticks
        out.append(f'<line x1="{left}" x2="{left + pw}" y1="{y(v):.1f}" y2="{y(v):.1f}" stroke="#ddd"/>')
        out.append(f'<text x="{left - 4}" y="{y(v) + 4:.1f}" text-anchor="end">{v:.3g}</text>')
    out.append(f'<line x1="{left}" x2="{left + pw}" y1="{y(0):.1f}" y2="{y(0):.1f}" stroke="#444"/>')
    group = 0.8 * pw / n
    legend_x: float = left + 10
    for s, (name, vs) in enumerate(series.items()):
        colour = _COLOURS[s % len(_COLOURS)]
        if kind == "bars":
            bw = group / len(series)
            for i, v in enumerate(vs):
                x0 = x(i) - group / 2 + s * bw
                out.append(f'<rect x="{x0:.1f}" y="{min(y(v), y(0)):.1f}" width="{bw:.1f}" '
                           f'height="{abs(y(v) - y(0)):.1f}" fill="{colour}"/>')
        else:
            pts = " ".join(f"{x(i):.1f},{y(v):.1f}" for i, v in enumerate(vs))
            out.append(f'<polyline points="{pts}" fill="none" stroke="{colour}" stroke-width="2"/>')
        out.append(f'<rect x="{legend_x:.1f}" y="{top - 14}" width="10" height="10" fill="{colour}"/>')
        out.append(f'<text x="{legend_x + 14:.1f}" y="{top - 5}">{escape(name)}</text>')
        legend_x += 14 + _CHAR_WIDTH * len(name) + 24
    for i, c in enumerate(categories):
        out.append(f'<text x="{x(i):.1f}" y="{top + ph + 8}" transform="rotate(60 {x(i):.1f} {top + ph + 8})" '
                   f'font-size="9">{escape(c)}</text>')
    out.append("</svg>")
    return "\n".join(out) + "\n"
