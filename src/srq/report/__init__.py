"""Human-facing reports: plain-text tables and dependency-free SVG charts."""

from .bitmap import bit_offsets_svg, format_bit_map
from .routing import format_routing
from .svg import chart_svg
from .training import training_csv, training_svg

__all__ = ["bit_offsets_svg", "chart_svg", "format_bit_map", "format_routing", "training_csv",
           "training_svg"]
