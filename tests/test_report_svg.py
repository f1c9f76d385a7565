"""The dependency-free SVG charts: round tick values and a legend whose entries do not overlap."""

import re

import pytest

from srq.report import chart_svg
from srq.report.svg import nice_ticks


@pytest.mark.parametrize("lo, hi, ticks", [(-1, 1, [-1, -0.5, 0, 0.5, 1]), (0, 0.743, [0, 0.2, 0.4, 0.6, 0.8]),
                                           (-0.0289, 1, [-0.25, 0, 0.25, 0.5, 0.75, 1]),
                                           (0, 33269, [0, 10000, 20000, 30000, 40000]), (0, 3, [0, 1, 2, 3])])
def test_nice_ticks_are_round_and_cover_the_range(lo, hi, ticks):
    assert nice_ticks(lo, hi) == pytest.approx(ticks)


def test_flat_data_still_gets_an_axis():
    ticks = nice_ticks(5.0, 5.0)
    assert ticks[0] <= 5.0 < ticks[-1]


def test_chart_ticks_and_legend():
    names = {"single-layer output MSE (÷ max)": [0.1, 1.0], "GBA sensitivity": [-0.03, 0.7]}
    svg = chart_svg(["a", "b"], names, "t", kind="lines")
    labels = re.findall(r'text-anchor="end">([^<]+)</text>', svg)
    assert labels == ["-0.25", "0", "0.25", "0.5", "0.75", "1"]
    legend_x = [float(x) for x in re.findall(r'<rect x="([\d.]+)" y="26" width="10"', svg)]
    # the second entry starts after the first
    assert legend_x[1] - legend_x[0] > 6 * len("single-layer output MSE (÷ max)")
