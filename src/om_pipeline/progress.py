"""Progress for long work: a rich bar on a terminal; nothing on `--quiet` or in CI logs
(non-TTY), where a bar would only add noise."""
from __future__ import annotations

import sys
from typing import Iterable, Iterator, Sized, TypeVar

T = TypeVar("T")


def progress(items: Iterable[T], description: str, *, quiet: bool = False, total: int | None = None) -> Iterator[T]:
    if quiet or not sys.stderr.isatty():
        yield from items
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    count = total if total is not None else (len(items) if isinstance(items, Sized) else None)
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    with Progress(*columns, transient=True) as bar:
        task = bar.add_task(description, total=count)
        for item in items:
            yield item
            bar.advance(task)
