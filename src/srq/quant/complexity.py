"""Model complexity in the shape of Q-MambaIR's Table 4: parameters and operations as 32-bit equivalents.

From srq's cost accounting (:class:`~srq.quant.cost.ModelCost`): the 32-bit-equivalent parameter count is the
stored size in bits ÷ 32 (a 4-bit weight counts ⅛, bounds and float parameters 1), and the 32-bit-equivalent
operation count is BitOPs ÷ (32 × 32) (a W4A4 MAC counts 1/64 of a float one). The reductions are
``1 − quantized / FP32`` of each (``convention="bops64"``: the BOPs ÷ 64 count of QuantSR-style tables instead).
Operations are the Conv2d/Linear MACs srq counts (attention matmuls and scans
are not counted, see ``srq.quant.cost``), so the operation reduction describes that part of the model.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from .cost import FLOAT_BITS, LayerCost, ModelCost

__all__ = ["Complexity", "complexity", "complexity_from_dict", "format_complexity", "CONVENTIONS"]


@dataclass(frozen=True)
class Complexity:
    """One Table 4 row. ``params``/``fp32_params``: 32-bit-equivalent parameters; ``ops``/``fp32_ops``:
    32-bit-equivalent MACs for one image of ``input_size``; reductions in [0, 1]."""

    label: str
    input_size: tuple[int, int]
    params: float
    fp32_params: float
    ops: float
    fp32_ops: float

    @property
    def params_reduction(self) -> float:
        return 1 - self.params / self.fp32_params if self.fp32_params else float("nan")

    @property
    def ops_reduction(self) -> float:
        return 1 - self.ops / self.fp32_ops if self.fp32_ops else float("nan")

    def to_dict(self) -> dict:
        return {**asdict(self), "params_reduction": self.params_reduction, "ops_reduction": self.ops_reduction}


CONVENTIONS = ("srq", "bops64")


def complexity_from_dict(cost: dict, label: str = "", convention: str = "srq") -> Complexity:
    """:func:`complexity` of a cost as :meth:`ModelCost.to_dict` wrote it (a result file's ``cost``)."""
    layers = [LayerCost(**{k: v for k, v in row.items() if k in LayerCost.__dataclass_fields__})
              for row in cost["layers"]]
    h, w = (int(v) for v in cost["input_size"])
    model = ModelCost((h, w), cost["scale"], layers, cost["size_bits"], cost["fp32_size_bits"], cost["macs"],
                      cost["bitops"], cost["fp32_bitops"], cost["quantized_weight_params"], cost["float_params"],
                      cost["quantizer_params"], cost["excluded_params"])
    return complexity(model, label, convention)


def complexity(cost: ModelCost, label: str = "", convention: str = "srq") -> Complexity:
    """The Table 4 row of a model's cost. ``convention``: ``"srq"`` (operations = BitOPs ÷ 32²) or ``"bops64"``
    (the Bi-Real/BiBERT count QuantSR-style tables use: a layer with both sides quantized costs MACs × w·a ÷ 64, a
    layer with a float side its MACs)."""
    if convention not in CONVENTIONS:
        raise ValueError(f"convention must be one of {', '.join(CONVENTIONS)}, got {convention!r}")
    if convention == "srq":
        ops = cost.bitops / FLOAT_BITS**2
    else:
        ops = sum(c.macs if max(c.w_bits, c.a_bits) >= FLOAT_BITS else c.macs * c.w_bits * c.a_bits / 64
                  for c in cost.layers)
    return Complexity(label, cost.input_size, cost.size_bits / FLOAT_BITS, cost.fp32_size_bits / FLOAT_BITS,
                      ops, cost.fp32_bitops / FLOAT_BITS**2)


def format_complexity(rows: list[Complexity]) -> str:
    """A markdown table: label, #Params (K, ↓ ratio), Ops (G, ↓ ratio), as Table 4 prints them."""
    out = ["| model | #Params (K) | ↓ ratio | Ops (G) | ↓ ratio |", "|---|---:|---:|---:|---:|"]
    for r in rows:
        out.append(f"| {r.label} | {r.params / 1e3:.2f} | {100 * r.params_reduction:.1f}% | {r.ops / 1e9:.2f} | "
                   f"{100 * r.ops_reduction:.1f}% |")
    return "\n".join(out) + "\n"
