"""Which grid each quantizer uses, for methods that mix grids (Q-MambaIR: DLS in the SSM blocks, LSQ+ elsewhere).

:func:`grid_placement` reads it from a prepared model; :func:`format_grid_placement` prints it grouped by grid
(``placement.txt`` gets it below the placement table when a method's report records it).
"""

from __future__ import annotations

from torch import nn

from .layers import QUANT_LAYER_TYPES, WeightPointQuantizer
from .quantizer import Quantizer

__all__ = ["grid_placement", "format_grid_placement"]


def grid_placement(model: nn.Module) -> list[dict[str, str | int]]:
    """One ``{"name", "side", "grid", "bits"}`` per quantizer: ``side`` is ``"weight"`` (a layer's weight, or a marked
    raw weight such as ``x_proj``), ``"input"`` (a layer's input) or ``"operand"`` (a marked operand, e.g.
    ``scan_B``); ``name`` is the layer's, the marker's or the operand's."""
    out: list[dict[str, str | int]] = []
    for name, m in model.named_modules():
        if isinstance(m, QUANT_LAYER_TYPES):
            for side, q in (("weight", m.weight_quantizer), ("input", m.input_quantizer)):
                if q is not None:
                    out.append({"name": name, "side": side, "grid": q.mode, "bits": q.bits})
        elif isinstance(m, Quantizer) and hasattr(m, "srq_point_kind"):
            out.append({"name": name, "side": "operand", "grid": m.mode, "bits": m.bits})
        elif isinstance(m, WeightPointQuantizer):
            out.append({"name": name, "side": "weight", "grid": m.quantizer.mode, "bits": m.quantizer.bits})
    return out


def format_grid_placement(entries: list[dict]) -> str:
    """Plain text: per side and grid, how many quantizers use it, then their names."""
    groups: dict[tuple[str, str], list[str]] = {}
    for e in entries:
        groups.setdefault((str(e["side"]), str(e["grid"])), []).append(str(e["name"]))
    rows = ["quantizer grids (side, grid: count: names):"]
    for (side, grid), names in sorted(groups.items()):
        rows.append(f"{side:<8} {grid:<15} {len(names):>4}: {', '.join(names)}")
    return "\n".join(rows)
