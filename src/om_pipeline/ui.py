"""What ompipe prints. Plain lines that read well in a CI log; rich only adds colour on a TTY."""
from __future__ import annotations

import sys
from typing import Iterable

from rich.console import Console
from rich.table import Table

STYLE = {"RUN": "bold cyan", "CACHED": "green", "SKIPPED": "dim", "FAILED": "bold red"}


class Printer:
    def __init__(self, quiet: bool = False):
        self.quiet = quiet
        # CI logs are not terminals: keep rows on one line instead of wrapping at 80 columns.
        width = None if sys.stdout.isatty() else 160
        self.console = Console(highlight=False, soft_wrap=True, width=width)
        self.errors = Console(stderr=True, highlight=False, soft_wrap=True)

    def info(self, text: str) -> None:
        if not self.quiet:
            self.console.print(text, markup=False)

    def stage_line(self, key: str, action: str, reason: str, commands: list[str] = ()) -> None:
        if self.quiet:
            return
        self.console.print(f"[{STYLE.get(action, '')}]{action:<7}[/] {key:<28} {reason}", markup=True)
        for command in commands:
            self.console.print(f"        $ {command}", markup=False)

    def table(self, rows: Iterable) -> None:
        table = Table(title=None, show_edge=False, pad_edge=False)
        for column in ("stage", "status", "time", "note"):
            table.add_column(column)
        for row in rows:
            seconds = "" if row.seconds is None else f"{row.seconds:.1f}s"
            table.add_row(row.key, f"[{STYLE.get(row.status, '')}]{row.status}[/]", seconds, row.note)
        self.console.print(table)

    def error(self, text: str) -> None:
        self.errors.print(text, markup=False)
