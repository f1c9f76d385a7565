"""Trade-off scatter plots as dependency-free SVG: quality against cost with the Pareto front marked, and
quality against bits, one line per method. Sized by a ``viewBox`` so they shrink to the page width and print."""

from __future__ import annotations

import math
from html import escape

from .svg import nice_ticks

__all__ = ["tradeoff_svg", "bits_svg", "versus_svg", "responsive_svg", "COLOURS"]

COLOURS = ("#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf")


def responsive_svg(svg: str) -> str:
    """An SVG document with its fixed ``width``/``height`` turned into a ``viewBox`` (scales with the page);
    any XML declaration is dropped so it can sit inline in HTML."""
    import re

    svg = re.sub(r"^\s*<\?xml[^>]*>\s*", "", svg)
    m = re.search(r"<svg\b[^>]*>", svg)
    if m is None:
        return svg
    tag = m.group(0)
    w, h = re.search(r'\bwidth="([\d.]+)', tag), re.search(r'\bheight="([\d.]+)', tag)
    if w is None or h is None or "viewBox" in tag:
        return svg
    new = re.sub(r'\s(width|height)="[\d.]+(px)?"', "", tag, count=2)
    new = new[:-1] + f' viewBox="0 0 {w.group(1)} {h.group(1)}" class="plot" overflow="visible">'
    return svg.replace(tag, new, 1)


def _log_ticks(lo: float, hi: float) -> list[float]:
    """1, 2, 5 × 10^k values covering [lo, hi] (powers of ten only when they are many)."""
    ticks = []
    for k in range(math.floor(math.log10(lo)), math.ceil(math.log10(hi)) + 1):
        ticks += [m * 10 ** k for m in ((1, 2, 5) if math.log10(hi / lo) < 3 else (1,))]
    inside = [t for t in ticks if lo / 1.0001 <= t <= hi * 1.0001]
    return inside or [lo, hi]


def _tick(v: float) -> str:
    """A short axis label: 500, 2k, 50k, 1.5M."""
    for div, unit in ((1e6, "M"), (1e3, "k")):
        if abs(v) >= div:
            return f"{v / div:g}{unit}"
    return f"{v:.3g}"


def _frame(title: str, xlabel: str, ylabel: str, width: int, height: int) -> list[str]:
    return [f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} {height}" class="plot" '
            f'font-family="sans-serif" font-size="11" role="img" aria-label="{escape(title)}">',
            f'<rect width="{width}" height="{height}" fill="white"/>',
            f'<text x="{width / 2}" y="18" text-anchor="middle" font-size="14">{escape(title)}</text>',
            f'<text x="{width / 2}" y="{height - 6}" text-anchor="middle">{escape(xlabel)}</text>',
            f'<text x="14" y="{height / 2}" transform="rotate(-90 14 {height / 2})" '
            f'text-anchor="middle">{escape(ylabel)}</text>']


def tradeoff_svg(points: list[tuple[str, float, float]], front: list[int], title: str, xlabel: str,
                 ylabel: str = "PSNR (dB)", log_x: bool = True, width: int = 640, height: int = 400) -> str:
    """Scatter of (label, cost, quality) points; the Pareto-front points (indices ``front``, sorted by cost) are
    filled, labelled and joined by a step line, the others hollow (labelled too when there are few points; a
    tooltip names each). Cost on a log axis by default (FP is far off)."""
    left, right, top, bottom = 64, 24, 34, 46
    pw, ph = width - left - right, height - top - bottom
    out = _frame(title, xlabel, ylabel, width, height)
    if not points:
        out.append(f'<text x="{width / 2}" y="{height / 2}" text-anchor="middle">no runs with both values</text>')
        return "\n".join(out + ["</svg>"]) + "\n"
    xs, ys = [p[1] for p in points], [p[2] for p in points]
    log_x = log_x and min(xs) > 0
    yt = nice_ticks(min(ys), max(ys))
    if log_x:
        xlo, xhi = min(xs) / 1.5, max(xs) * 1.5
        xt = _log_ticks(xlo, xhi)
    else:
        xt = nice_ticks(min(xs), max(xs))
        xlo, xhi = xt[0], xt[-1]

    def tx(v: float) -> float:
        return math.log10(v) if log_x else v

    span = (tx(xhi) - tx(xlo)) or 1.0

    def px(v: float) -> float:
        return left + pw * (tx(v) - tx(xlo)) / span

    def py(v: float) -> float:
        return top + ph * (yt[-1] - v) / ((yt[-1] - yt[0]) or 1.0)

    for v in yt:
        out.append(f'<line x1="{left}" x2="{left + pw}" y1="{py(v):.1f}" y2="{py(v):.1f}" stroke="#e4e4e4"/>'
                   f'<text x="{left - 4}" y="{py(v) + 4:.1f}" text-anchor="end">{v:.4g}</text>')
    for v in xt:
        out.append(f'<line x1="{px(v):.1f}" x2="{px(v):.1f}" y1="{top}" y2="{top + ph}" stroke="#f0f0f0"/>'
                   f'<text x="{px(v):.1f}" y="{top + ph + 14}" text-anchor="middle">{_tick(v)}</text>')
    out.append(f'<rect x="{left}" y="{top}" width="{pw}" height="{ph}" fill="none" stroke="#888"/>')
    if len(front) > 1:
        steps = []
        for a, b in zip(front, front[1:]):
            steps += [f"{px(points[a][1]):.1f},{py(points[a][2]):.1f}",
                      f"{px(points[b][1]):.1f},{py(points[a][2]):.1f}"]
        steps.append(f"{px(points[front[-1]][1]):.1f},{py(points[front[-1]][2]):.1f}")
        out.append(f'<polyline points="{" ".join(steps)}" fill="none" stroke="#2ca02c" stroke-width="1.5" '
                   f'stroke-dasharray="4 3"/>')
    for i, (label, x, y) in enumerate(points):
        on = i in front
        colour = "#2ca02c" if on else "#1f77b4"
        anchor, dx = ("end", -7) if px(x) > left + pw * 0.7 else ("start", 7)
        out.append(f'<circle cx="{px(x):.1f}" cy="{py(y):.1f}" r="5" fill="{colour if on else "white"}" '
                   f'stroke="{colour}" stroke-width="2"><title>{escape(label)}: {x:.4g}, {y:.2f} dB</title></circle>')
        if on or len(points) <= 8:  # many points: only the front is labelled (the others on hover)
            out.append(f'<text x="{px(x) + dx:.1f}" y="{py(y) - 6:.1f}" text-anchor="{anchor}" font-size="10">'
                       f'{escape(label)}</text>')
    out.append(f'<g font-size="10"><circle cx="{left + 10}" cy="{top + 10}" r="4" fill="#2ca02c"/>'
               f'<text x="{left + 18}" y="{top + 14}">Pareto front</text>'
               f'<circle cx="{left + 100}" cy="{top + 10}" r="4" fill="white" stroke="#1f77b4" stroke-width="2"/>'
               f'<text x="{left + 108}" y="{top + 14}">dominated</text></g>')
    return "\n".join(out + ["</svg>"]) + "\n"


def bits_svg(series: dict[str, list[tuple[float, float]]], fp: float | None, title: str,
             ylabel: str = "PSNR (dB)", width: int = 640, height: int = 400) -> str:
    """Quality against average weight bits, one line per method (``series``: method → (bits, quality)); the
    FP model's quality as a dashed line."""
    left, right, top, bottom = 64, 24, 34, 46
    pw, ph = width - left - right, height - top - bottom
    out = _frame(title, "average weight bits", ylabel, width, height)
    pts = [p for s in series.values() for p in s]
    if not pts:
        out.append(f'<text x="{width / 2}" y="{height / 2}" text-anchor="middle">no quantized runs</text>')
        return "\n".join(out + ["</svg>"]) + "\n"
    yt = nice_ticks(min(y for _, y in pts + ([(0, fp)] if fp is not None else [])),
                    max(y for _, y in pts + ([(0, fp)] if fp is not None else [])))
    xlo, xhi = math.floor(min(x for x, _ in pts)) - 0.5, math.ceil(max(x for x, _ in pts)) + 0.5

    def px(v: float) -> float:
        return left + pw * (v - xlo) / (xhi - xlo)

    def py(v: float) -> float:
        return top + ph * (yt[-1] - v) / ((yt[-1] - yt[0]) or 1.0)

    for v in yt:
        out.append(f'<line x1="{left}" x2="{left + pw}" y1="{py(v):.1f}" y2="{py(v):.1f}" stroke="#e4e4e4"/>'
                   f'<text x="{left - 4}" y="{py(v) + 4:.1f}" text-anchor="end">{v:.4g}</text>')
    for b in range(math.ceil(xlo), math.floor(xhi) + 1):
        out.append(f'<text x="{px(b):.1f}" y="{top + ph + 14}" text-anchor="middle">{b}</text>')
    out.append(f'<rect x="{left}" y="{top}" width="{pw}" height="{ph}" fill="none" stroke="#888"/>')
    if fp is not None:
        out.append(f'<line x1="{left}" x2="{left + pw}" y1="{py(fp):.1f}" y2="{py(fp):.1f}" stroke="#444" '
                   f'stroke-dasharray="6 4"/><text x="{left + pw - 4}" y="{py(fp) - 4:.1f}" text-anchor="end" '
                   f'font-size="10">FP32 {fp:.2f} dB</text>')
    for k, (method, line) in enumerate(sorted(series.items())):
        colour = COLOURS[k % len(COLOURS)]
        line = sorted(line)
        if len(line) > 1:
            coords = " ".join(f"{px(x):.1f},{py(y):.1f}" for x, y in line)
            out.append(f'<polyline points="{coords}" fill="none" stroke="{colour}" stroke-width="2"/>')
        out += [f'<circle cx="{px(x):.1f}" cy="{py(y):.1f}" r="4" fill="{colour}"><title>{escape(method)}: '
                f'{x:.2f} bits, {y:.2f} dB</title></circle>' for x, y in line]
        out.append(f'<rect x="{left + 8}" y="{top + 8 + 15 * k}" width="10" height="10" fill="{colour}"/>'
                   f'<text x="{left + 22}" y="{top + 17 + 15 * k}" font-size="10">{escape(method)}</text>')
    return "\n".join(out + ["</svg>"]) + "\n"


def versus_svg(series: dict[str, list[tuple[float, float]]], title: str, xlabel: str, ylabel: str,
               log: bool = False, width: int = 520, height: int = 440) -> str:
    """Scatter of (x, y) pairs, one colour per series, on shared axes with the line y = x dashed (a prediction
    against its reference). ``log``: both axes logarithmic (pairs with a value ≤ 0 are left out)."""
    left, right, top, bottom = 64, 24, 34, 46
    pw, ph = width - left - right, height - top - bottom
    out = _frame(title, xlabel, ylabel, width, height)
    series = {k: [(x, y) for x, y in v if math.isfinite(x) and math.isfinite(y) and (not log or min(x, y) > 0)]
              for k, v in series.items()}
    pts = [p for s in series.values() for p in s]
    if not pts:
        out.append(f'<text x="{width / 2}" y="{height / 2}" text-anchor="middle">no points</text>')
        return "\n".join(out + ["</svg>"]) + "\n"
    lo, hi = min(min(p) for p in pts), max(max(p) for p in pts)
    if log:
        lo, hi = lo / 1.2, hi * 1.2
        ticks = _log_ticks(lo, hi)
    else:
        ticks = nice_ticks(lo, hi)
        lo, hi = min(ticks[0], lo), max(ticks[-1], hi)

    def t(v: float) -> float:
        return math.log10(v) if log else v

    span = (t(hi) - t(lo)) or 1.0

    def px(v: float) -> float:
        return left + pw * (t(v) - t(lo)) / span

    def py(v: float) -> float:
        return top + ph * (t(hi) - t(v)) / span

    for v in ticks:
        out.append(f'<line x1="{left}" x2="{left + pw}" y1="{py(v):.1f}" y2="{py(v):.1f}" stroke="#eee"/>'
                   f'<text x="{left - 4}" y="{py(v) + 4:.1f}" text-anchor="end">{_tick(v)}</text>'
                   f'<text x="{px(v):.1f}" y="{top + ph + 14}" text-anchor="middle">{_tick(v)}</text>')
    out.append(f'<rect x="{left}" y="{top}" width="{pw}" height="{ph}" fill="none" stroke="#888"/>'
               f'<line x1="{px(lo):.1f}" y1="{py(lo):.1f}" x2="{px(hi):.1f}" y2="{py(hi):.1f}" stroke="#444" '
               f'stroke-dasharray="6 4"/>')
    for k, (name, pairs) in enumerate(series.items()):
        colour = COLOURS[k % len(COLOURS)]
        out += [f'<circle cx="{px(x):.1f}" cy="{py(y):.1f}" r="2.5" fill="{colour}" fill-opacity="0.6"/>'
                for x, y in pairs]
        out.append(f'<rect x="{left + 8}" y="{top + 8 + 15 * k}" width="10" height="10" fill="{colour}"/>'
                   f'<text x="{left + 22}" y="{top + 17 + 15 * k}" font-size="10">{escape(name)}</text>')
    return "\n".join(out + ["</svg>"]) + "\n"
