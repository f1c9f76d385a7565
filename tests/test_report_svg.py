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


def test_training_log_as_csv_and_svg():
    import xml.etree.ElementTree as ET

    from srq.report import training_csv, training_svg

    log = [{"step": s, "loss": 1.0 / s, "lr": 1e-4, "psnr": 30.0 + s / 100 if s % 50 == 0 else None, "step_ms": 900.0}
           for s in range(1, 151)]
    lines = training_csv(log).splitlines()
    assert lines[0] == "step,loss,lr,psnr,step_ms" and len(lines) == 151
    assert lines[1] == "1,1.0,0.0001,,900.0" and lines[50].split(",")[3] == "30.5"
    root = ET.fromstring(training_svg(log, "run: training"))
    texts = [t.text for t in root.iter("{http://www.w3.org/2000/svg}text")]
    assert "loss" in texts and "validation PSNR (dB)" in texts
    assert len(list(root.iter("{http://www.w3.org/2000/svg}circle"))) == 3  # the validated steps
    assert "not measured" in training_svg([{**r, "psnr": None} for r in log], "t")


def test_versus_plot_draws_every_valid_pair_and_the_identity_line():
    import xml.etree.ElementTree as ET

    from srq.report.plots import versus_svg

    svg = versus_svg({"a": [(1.0, 2.0), (0.5, 0.4)], "b": [(2.0, 1.0), (-1.0, 3.0), (float("nan"), 1.0)]},
                     "t", "x", "y", log=True)
    root = ET.fromstring(svg)  # well-formed
    ns = "{http://www.w3.org/2000/svg}"
    assert len(root.findall(f"{ns}circle")) == 3  # the negative and the NaN pair are left out on log axes
    assert any(e.get("stroke-dasharray") for e in root.findall(f"{ns}line"))  # y = x
    linear = ET.fromstring(versus_svg({"b": [(-1.0, 3.0)]}, "t", "x", "y"))
    assert len(linear.findall(f"{ns}circle")) == 1
    assert "no points" in versus_svg({}, "t", "x", "y")
