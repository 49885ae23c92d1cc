"""Progress on stderr with rich: files, bytes, rate, and an ETA once the total is known.

Shown only when stderr is a terminal and neither --hide-progress nor --json was given; rich is
imported only then (it costs every other command start-up time for nothing).
"""

from __future__ import annotations

from corso_core.cli import output
from corso_core.engine.progress import Progress, counted


class TerminalProgress(Progress):
    wants_total = True

    def __init__(self, verb: str) -> None:
        self.verb = verb
        self.bar = None
        self.task = None

    def start(self, total_bytes: int | None) -> None:
        from rich.console import Console
        from rich.progress import Progress as RichBar

        self.bar = RichBar(*columns(self.verb), console=Console(stderr=True), transient=True)
        self.task = self.bar.add_task(self.verb, total=total_bytes, files=0)
        self.bar.start()
        output.progress_shown_on(self.bar.console)

    def set_total(self, total_bytes: int) -> None:
        if self.bar is not None:
            self.bar.update(self.task, total=total_bytes)

    def advance(self, files: int = 0, nbytes: int = 0) -> None:
        if self.bar is not None:
            task = self.bar.tasks[0]
            self.bar.update(self.task, advance=nbytes, files=task.fields["files"] + files)

    def stop(self) -> None:
        if self.bar is not None:
            output.progress_shown_on(None)
            try:
                self.bar.stop()
            except OSError:  # the terminal is gone (a hangup): nothing left to show it on
                pass


def columns(verb: str) -> list:
    """Files, bar, bytes done and total, rate, elapsed, ETA; sizes in the summary's units
    (KiB, MiB: rich's own byte columns said MB, the summary that follows MiB)."""
    from rich.progress import (
        BarColumn,
        DownloadColumn,
        ProgressColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )
    from rich.text import Text

    class Files(ProgressColumn):
        def render(self, task) -> Text:
            return Text(f"{verb} {counted(task.fields['files'], 'file')}")

    class Rate(ProgressColumn):
        def render(self, task) -> Text:
            shown = f"{human_bytes(task.speed)}/s" if task.speed is not None else "?"
            return Text(shown, style="progress.data.speed")

    return [Files(), BarColumn(),
            DownloadColumn(binary_units=True), Rate(), TimeElapsedColumn(),
            TimeRemainingColumn()]


def progress_for(verb: str) -> Progress:
    """A progress display if the user sees one, else the engine's silent default."""
    return TerminalProgress(verb) if output.flags().show_progress else Progress()


def human_bytes(n: float) -> str:
    size, unit = float(n), "B"
    for bigger in ("KiB", "MiB", "GiB", "TiB"):
        if size < 1024:
            break
        size, unit = size / 1024, bigger
    return f"{size:.0f} B" if unit == "B" else f"{size:.1f} {unit}"
