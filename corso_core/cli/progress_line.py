"""The progress display's one line, fitted to its terminal at every refresh (rich redraws it
ten times a second): the bar takes the room the other fields leave, and fields are left out,
the least needed first, until the line fits, the width read anew each time so that a resized
terminal is followed.

rich wrapped a line too long for the terminal onto several, each field broken across them
("backi…", "up 8", "files"); and drawn wider than the terminal (COLUMNS left at a former
width, which rich prefers to the terminal's own), the line was wrapped by the terminal behind
rich's back, so that each refresh left one behind. Imported only when progress is shown (rich
costs every other command start-up time).
"""

from __future__ import annotations

import os
from collections.abc import Iterable

from rich.console import Console
from rich.measure import Measurement
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    ProgressColumn,
    Task,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Column, Table
from rich.text import Text

from corso_core.cli.progress import human_bytes
from corso_core.engine.progress import counted

#: The bar's width: what the other fields leave, up to the most; with less than the least, it
#: is left out.
BAR_WIDTH_MOST = 40
BAR_WIDTH_LEAST = 10


class Files(ProgressColumn):
    """`backing up 3 files`; cut with an ellipsis when even it alone is too wide."""

    def __init__(self, verb: str) -> None:
        super().__init__(table_column=Column(no_wrap=True, overflow="ellipsis"))
        self.verb = verb

    def render(self, task: Task) -> Text:
        return Text(f"{self.verb} {counted(task.fields['files'], 'file')}")


class Rate(ProgressColumn):
    """The bytes read or written a second so far, as the backup's summary says it: rich's own
    speed counted an unchanged file's bytes, never read, and a re-backup showed 340 GiB/s."""

    def render(self, task: Task) -> Text:
        transferred, elapsed = task.fields["transferred"], task.elapsed
        shown = f"{human_bytes(transferred / elapsed)}/s" if transferred and elapsed else "?"
        return Text(shown, style="progress.data.speed")


def columns(verb: str) -> list[ProgressColumn]:
    """Files, bar, bytes done and total, rate, elapsed, ETA; sizes in the summary's units
    (KiB, MiB: rich's own byte columns said MB, the summary that follows MiB)."""
    return [Files(verb), BarColumn(bar_width=BAR_WIDTH_MOST), DownloadColumn(binary_units=True),
            Rate(), TimeElapsedColumn(), TimeRemainingColumn()]


class FittedProgress(Progress):
    """rich's Progress on one line that fits (see the module's docstring)."""

    def __init__(self, verb: str, console: Console) -> None:
        fields = columns(verb)
        _, self.bar, done, rate, elapsed, eta = fields
        #: Left out one more at a time until the line fits: the estimates first (they change at
        #: every refresh), then the elapsed time, the bar (the bytes say as much), the bytes.
        self.least_needed_first = (eta, rate, elapsed, self.bar, done)
        self.terminal = console  # the table is made once before rich's own `console` is set
        super().__init__(*fields, console=console, transient=True)

    def make_tasks_table(self, tasks: Iterable[Task]) -> Table:
        width = self._width()
        rows = [task for task in tasks if task.visible]
        cells = {column: [column(task) for task in rows] for column in self.columns
                 if column is not self.bar}
        widths = {column: max((Measurement.get(self.terminal, self.terminal.options, cell).maximum
                               for cell in shown), default=0)
                  for column, shown in cells.items()}
        for left_out in range(len(self.least_needed_first) + 1):
            kept = [column for column in self.columns
                    if column not in self.least_needed_first[:left_out]]
            room = width - sum(widths.get(column, 0) for column in kept) - (len(kept) - 1)
            if room >= (BAR_WIDTH_LEAST if self.bar in kept else 0):
                break
        if self.bar in kept:  # (rich makes one table at a time, under its lock)
            self.bar.bar_width = min(BAR_WIDTH_MOST, room)
            cells[self.bar] = [self.bar(task) for task in rows]
        table = Table.grid(*(column.get_table_column().copy() for column in kept), padding=(0, 1))
        if room < 0:  # the files alone are too wide: cut to the terminal
            table.width = width
        for row in range(len(rows)):
            table.add_row(*(cells[column][row] for column in kept))
        return table

    def _width(self) -> int:
        """The terminal's own width, at most: rich's may be COLUMNS, left at a former one."""
        try:
            own = os.get_terminal_size(self.terminal.file.fileno()).columns
        except (OSError, ValueError):  # not a terminal: a test's, or one gone
            return self.terminal.width
        return min(self.terminal.width, own)
