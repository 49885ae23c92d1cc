"""Progress on stderr with rich: files, bytes, rate, and an ETA once the total is known, on one
line that fits the terminal (cli/progress_line.py).

Shown only when stderr is a terminal and neither --hide-progress nor --json was given; rich is
imported only then (it costs every other command start-up time for nothing).
"""

from __future__ import annotations

from corso_core.cli import output, stopping
from corso_core.engine.progress import Progress


class TerminalProgress(Progress):
    wants_total = True

    def __init__(self, verb: str) -> None:
        self.verb = verb
        self.bar = None
        self.task = None

    @stopping.finished_first  # cut short, rich's console may keep all it writes from then on
    def start(self, total_bytes: int | None) -> None:
        from rich.console import Console

        from corso_core.cli.progress_line import FittedProgress

        self.bar = FittedProgress(self.verb, Console(stderr=True))
        self.task = self.bar.add_task(self.verb, total=total_bytes, files=0, transferred=0)
        self.bar.start()
        output.progress_shown_on(self.bar.console)

    def set_total(self, total_bytes: int) -> None:
        if self.bar is not None:
            self.bar.update(self.task, total=total_bytes)

    def advance(self, files: int = 0, nbytes: int = 0, unread: bool = False) -> None:
        if self.bar is not None:
            task = self.bar.tasks[0]
            self.bar.update(self.task, advance=nbytes, files=task.fields["files"] + files,
                            transferred=task.fields["transferred"] + (0 if unread else nbytes))

    @stopping.finished_first  # a second Ctrl-C would leave its line, and the cursor hidden
    def stop(self) -> None:
        if self.bar is not None:
            output.progress_shown_on(None)
            try:
                self.bar.stop()
            except OSError:  # the terminal is gone (a hangup): nothing left to show it on
                pass


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
