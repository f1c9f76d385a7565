"""Progress of long loops, on a terminal and off it.

On a terminal: a transient rich bar on stderr. Off a terminal (logs, CI, ``nohup``): a plain line on stderr
whenever another 10 % is done or 30 s have passed since the last line, and at the end, e.g.
``fine-tuning: 50/100 (50%), 1m02s elapsed, eta 1m02s, loss 0.0123`` — but never two lines within 5 s (the
last line excepted), so a loop that takes less than 5 s prints nothing. Library calls pass ``enabled=False``.
"""

from __future__ import annotations

import sys
import time
from typing import Callable, Iterable, Iterator, TypeVar

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

T = TypeVar("T")

__all__ = ["progress_bar", "LOG_SECONDS"]

LOG_SECONDS = 30.0  # off a terminal: the longest silence between two lines
QUIET_SECONDS = 5.0  # ... and the shortest


def progress_bar(items: Iterable[T], total: int | None = None, description: str = "", enabled: bool = True,
                 status: Callable[[], str] | None = None, completed: int = 0) -> Iterator[T]:
    """Yield ``items`` while showing progress on stderr (when ``enabled``).

    ``total``: steps in the whole loop; ``completed``: steps done before ``items`` (a resumed loop);
    ``status()``: short text shown with the progress (e.g. the current loss), read after each step.
    """
    if not enabled:
        yield from items
        return
    console = Console(stderr=True)
    if console.is_terminal:
        yield from _rich_bar(items, total, description, status, completed, console)
    else:
        yield from _log_lines(items, total, description, status, completed)


def _rich_bar(items: Iterable[T], total: int | None, description: str, status: Callable[[], str] | None,
              completed: int, console: Console) -> Iterator[T]:
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
               TextColumn("eta"), TimeRemainingColumn(), TextColumn("{task.fields[status]}"))
    with Progress(*columns, transient=True, console=console) as bar:
        task = bar.add_task(description, total=total, completed=completed, status="")
        for item in items:
            yield item
            bar.update(task, advance=1, status=status() if status else "")


def _clock(seconds: float) -> str:
    seconds = int(round(seconds))
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}h{m:02d}m{s:02d}s" if h else f"{m}m{s:02d}s" if m else f"{s}s"


def _log_lines(items: Iterable[T], total: int | None, description: str, status: Callable[[], str] | None,
               completed: int) -> Iterator[T]:
    start = last = time.monotonic()
    done = completed
    tenth = (total or 0) / 10
    next_mark = (int(done / tenth) + 1) * tenth if tenth else None
    for item in items:
        yield item
        done += 1
        now = time.monotonic()
        finished = total is not None and done >= total
        marked = finished or (next_mark is not None and done >= next_mark)
        if now - last >= LOG_SECONDS or (marked and now - last >= QUIET_SECONDS) \
                or (finished and now - start >= QUIET_SECONDS):
            parts = [f"{description}: {done}/{total}" if total else f"{description}: {done}"]
            if total:
                parts[0] += f" ({100 * done // total}%)"
            parts.append(f"{_clock(now - start)} elapsed")
            if total and not finished and done > completed:
                parts.append(f"eta {_clock((now - start) / (done - completed) * (total - done))}")
            text = status() if status else ""
            if text:
                parts.append(text)
            print(", ".join(parts), file=sys.stderr, flush=True)
            last = now
            while next_mark is not None and done >= next_mark:
                next_mark += tenth
