"""Progress bars (rich) that switch off cleanly for library use and non-terminals."""

from __future__ import annotations

from typing import Iterable, Iterator, TypeVar

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

T = TypeVar("T")

__all__ = ["progress_bar"]


def progress_bar(items: Iterable[T], total: int | None = None, description: str = "",
                 enabled: bool = True) -> Iterator[T]:
    """Yield ``items`` while drawing a transient progress bar on stderr (when ``enabled``)."""
    if not enabled:
        yield from items
        return
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
               TextColumn("eta"), TimeRemainingColumn())
    with Progress(*columns, transient=True, console=Console(stderr=True)) as bar:
        task = bar.add_task(description, total=total)
        for item in items:
            yield item
            bar.advance(task)
