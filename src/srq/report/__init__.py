"""Human-facing reports: plain-text tables and dependency-free SVG charts."""

from .bitmap import format_bit_map
from .svg import chart_svg

__all__ = ["chart_svg", "format_bit_map"]
