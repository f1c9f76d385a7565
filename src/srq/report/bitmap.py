"""Per-layer bit map tables for mixed-precision methods (GBA's allocation report)."""

from __future__ import annotations

__all__ = ["format_bit_map"]


def format_bit_map(report: dict) -> str:
    """A plain-text table of a GBA report: layer, W/A bits, offsets and bit-width gradients, then averages."""
    rows: dict[str, dict] = {}
    for kind in ("w", "a"):
        for r in report.get(kind, {}).get("layers", []):
            rows.setdefault(r["name"], {})[kind] = r
    if not rows:
        return "(no bit allocation)"
    width = max(len(n) for n in rows)
    lines = [f"{'layer':<{width}}  {'W':>2} {'ΔW':>3} {'gW':>10}  {'A':>2} {'ΔA':>3} {'gA':>10}"]
    for name, r in rows.items():
        cells = []
        for kind in ("w", "a"):
            if kind in r:
                g = r[kind].get("gradient")
                cells.append(f"{r[kind]['bits']:>2} {r[kind]['offset']:>+3d} {'' if g is None else f'{g:.3g}':>10}")
            else:
                cells.append(f"{'-':>2} {'':>3} {'':>10}")
        lines.append(f"{name:<{width}}  {cells[0]}  {cells[1]}")
    for kind, label in (("w", "weights"), ("a", "activations")):
        if kind in report:
            k = report[kind]
            line = f"average {label} bits: {k['average_bits']:.3f} (base {k['base_bits']}, weighted by " \
                   f"{k['average_weighted_by']})"
            if "bitops_average_bits" in k:
                line += f"; {k['bitops_average_bits']:.3f} weighted by MACs × the other side's bits (the budget)"
            lines.append(line)
    return "\n".join(lines)


def bit_offsets_svg(report: dict, title: str) -> str:
    """The paper's Fig. 5: per-layer bit offset of weights and activations as grouped bars (SVG)."""
    from .svg import chart_svg

    rows = report.get("a", report.get("w", {})).get("layers", [])
    names = [r["name"] for r in rows]
    series = {}
    for kind, label in (("w", "weight"), ("a", "activation")):
        if kind in report:
            offsets = {r["name"]: r["offset"] for r in report[kind]["layers"]}
            series[label] = [offsets.get(n, 0) for n in names]
    return chart_svg(names, series, title, ylabel="bit offset", kind="bars")
