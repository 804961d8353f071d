"""Rich rendering of progress: the :class:`detkit.progress.Progress` the CLI passes."""

from __future__ import annotations

from typing import Optional

from rich.measure import Measurement
from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn,
                           TimeElapsedColumn, TimeRemainingColumn)

from rich.table import Table
from rich.text import Text

from detkit.cli.app import console as stdout_console
from detkit.cli.app import err_console
from detkit.progress import Progress as ProgressSink


class RichProgress(ProgressSink):
    """Bars on stderr (one at a time, removed when done) and lines that stay.

    Use as a context manager: the display stops on exit, also after an error.
    """

    def __init__(self, console=err_console):
        self.console = console
        self._bars: Optional[Progress] = None
        self._task = None

    def __enter__(self) -> "RichProgress":
        return self

    def __exit__(self, *exc) -> None:
        self.finish()
        if self._bars is not None:
            self._bars.stop()
            self._bars = None

    def start(self, description: str, total: Optional[int]) -> None:
        self.finish()
        if self._bars is None:
            self._bars = Progress(
                TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                TimeElapsedColumn(), TimeRemainingColumn(), TextColumn("{task.fields[text]}"),
                console=self.console, transient=True,
                # Off a terminal the bars show nothing, and Rich's stop() would print an
                # empty line there: no display at all.
                disable=not self.console.is_interactive)
            self._bars.start()
        self._task = self._bars.add_task(description, total=total, text="")

    def update(self, done: int, text: str = "") -> None:
        if self._task is not None:
            self._bars.update(self._task, completed=done, text=text)

    def finish(self) -> None:
        if self._task is not None:
            self._bars.remove_task(self._task)
            self._task = None

    def note(self, line: str) -> None:
        self.console.print(line, highlight=False, soft_wrap=True, markup=False)


def text_table(data) -> Table:
    """A Rich table of a :class:`detkit.doctor.tables.TextTable`-like value (title,
    columns, rows of strings, caption): first column left, the others right; every text
    is plain, never markup."""
    table = Table(title=Text(data.title) if data.title else None, title_justify="left",
                  min_width=len(data.title),
                  caption=None if data.caption is None else Text(data.caption))
    for index, column in enumerate(data.columns):
        table.add_column(column, justify="left" if index == 0 else "right")
    for row in data.rows:
        table.add_row(*(Text(cell) for cell in row))
    return table


def fits(console, table) -> bool:
    """Whether ``table`` at its natural width (not squeezed) fits ``console``."""
    unbounded = console.options.update(max_width=1 << 16)
    return Measurement.get(console, unbounded, table).maximum <= console.width


def print_line(line: str, console=None) -> None:
    """One line on stdout as written (no markup, no highlighting, no wrapping)."""
    (console or stdout_console).print(line, highlight=False, soft_wrap=True, markup=False)
