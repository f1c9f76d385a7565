"""The SPR²Q routing table as text: per layer, the static weight of each rectifier and the fused increment's size."""

from __future__ import annotations

__all__ = ["format_routing"]


def format_routing(report: dict) -> str:
    """A plain-text table of an SPR²Q report: layer, ĝ_1 … ĝ_N, ‖ΔW‖/‖W‖; then the stage wall times (s)."""
    routing = report.get("routing") or {}
    if not routing:
        return "(no rectifiers)"
    width = max(len(n) for n in routing)
    n = max(len(g) for g in routing.values())
    lines = [f"{'layer':<{width}}  " + " ".join(f"{f'g{i + 1}':>6}" for i in range(n)) + f"  {'|dW|/|W|':>9}"]
    for name, g in routing.items():
        ratio = report.get("increment_norm_ratio", {}).get(name)
        lines.append(f"{name:<{width}}  " + " ".join(f"{v:6.3f}" for v in g) + " " * (7 * (n - len(g)))
                     + f"  {'' if ratio is None else f'{ratio:9.4f}'}")
    seconds = report.get("seconds") or {}
    if seconds:
        lines.append("stage seconds: " + ", ".join(f"{k} {v:.1f}" for k, v in seconds.items()))
    return "\n".join(lines)
