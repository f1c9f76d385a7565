"""Progress off a terminal: plain lines with stage, step/total, elapsed, ETA and status; none for short loops."""

from __future__ import annotations

import itertools

from srq.utils import progress


def test_log_lines_every_tenth_but_not_within_five_seconds(monkeypatch, capsys):
    clock = itertools.count(0.0, 2.0)  # every step takes 2 s
    monkeypatch.setattr(progress.time, "monotonic", lambda: next(clock))
    losses = []
    for i in progress.progress_bar(range(20), total=20, description="fine-tuning", status=lambda: f"loss {losses[-1]}"):
        losses.append(i / 10)
    lines = capsys.readouterr().err.splitlines()
    # a tenth is 2 steps (4 s) but lines are ≥ 5 s apart: every third step, and the end
    assert lines[0] == "fine-tuning: 3/20 (15%), 6s elapsed, eta 34s, loss 0.2"
    assert lines[-1] == "fine-tuning: 20/20 (100%), 40s elapsed, loss 1.9"
    assert len(lines) == 7


def test_long_silences_are_broken_every_30_seconds_and_resumed_loops_count_from_their_start(monkeypatch, capsys):
    clock = itertools.count(0.0, 31.0)
    monkeypatch.setattr(progress.time, "monotonic", lambda: next(clock))
    list(progress.progress_bar(range(3), total=1000, completed=500, description="bit allocation (a)"))
    lines = capsys.readouterr().err.splitlines()
    assert lines == ["bit allocation (a): 501/1000 (50%), 31s elapsed, eta 4h17m49s",
                     "bit allocation (a): 502/1000 (50%), 1m02s elapsed, eta 4h17m18s",
                     "bit allocation (a): 503/1000 (50%), 1m33s elapsed, eta 4h16m47s"]


def test_short_loops_print_nothing_and_disabled_bars_never_do(capsys):
    list(progress.progress_bar(range(50), total=50, description="quick"))
    list(progress.progress_bar(range(5), total=5, description="off", enabled=False))
    assert capsys.readouterr().err == ""
