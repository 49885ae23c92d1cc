"""What the engine tells whoever shows progress, and the problems it collects on the way.

The engine never prints: the CLI passes a `Progress` (rich on a terminal) and a `notify`
callable for problems; tests pass nothing.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable


class Progress:
    """Does nothing; the CLI's progress bar overrides these. Called from several threads."""

    #: Whether a total is worth computing (a backup then sizes its sources beside its work).
    wants_total = False

    def start(self, total_bytes: int | None) -> None:
        """Work begins; the total is None when it is not known yet (backup)."""

    def set_total(self, total_bytes: int) -> None:
        """The total became known."""

    def advance(self, files: int = 0, nbytes: int = 0, unread: bool = False) -> None:
        """Files finished and bytes processed since the last call; `unread`: done without
        being read (an unchanged file's), so they count towards the total but not the rate."""

    def stop(self) -> None:
        """Work is over (successfully or not), or start() was stopped part-way (Ctrl-C)."""


def counted(n: int, noun: str) -> str:
    """`n` and the noun, in the singular for one: "1 file", "2 files", "0 files"."""
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def shown(path: bytes) -> str:
    """A path for a one-line message: undecodable bytes and control characters escaped."""
    text = os.fsdecode(path)
    return text if text.isprintable() else repr(text)[1:-1]


class Problems:
    """The `Report` a source's reader or writer gets: counts problems and passes them on."""

    def __init__(self, notify: Callable[[str, str], None] | None = None) -> None:
        """`notify(kind, line)` as each problem comes: kind "error" (an item not copied) or
        "warning" (left out on purpose)."""
        self.errors: list[str] = []
        self.warnings: list[str] = []
        self._notify = notify
        self._lock = threading.Lock()
        self._seen: set[str] = set()

    def _add(self, into: list[str], kind: str, path: bytes, message: str) -> None:
        line = f"{shown(path)}: {message}"
        with self._lock:
            if line in self._seen:
                return  # a backup's second pass meets the same problems again
            self._seen.add(line)
            into.append(line)
        if self._notify:
            self._notify(kind, line)

    def warning(self, path: bytes, message: str) -> None:
        self._add(self.warnings, "warning", path, message)

    def error(self, path: bytes, message: str) -> None:
        self._add(self.errors, "error", path, message)
