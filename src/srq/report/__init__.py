"""Human-facing reports: plain-text tables, dependency-free SVG charts, and the HTML page of ``srq report``."""

from .bitmap import bit_offsets_svg, format_bit_map
from .html import ReportSummary, write_report
from .routing import format_routing
from .runs import ReportRun, gather_runs, pareto_front
from .svg import chart_svg
from .training import training_csv, training_svg

__all__ = ["ReportRun", "ReportSummary", "bit_offsets_svg", "chart_svg", "format_bit_map", "format_routing",
           "gather_runs", "pareto_front", "training_csv", "training_svg", "write_report"]
