"""A cold start made shorter: the files commands imported before, asked of the disk at once.

After a reboot, or a long idle, much of a command's start is Python waiting for the disk, one
module file at a time: an S3 restore imports ~440 files (44 MB: Python's, corso's, botocore's,
the native libraries). So the console script (cli/launch.py), before it imports the rest of
corso (only the malloc-arena setting comes first), begins a thread that hints to the kernel
(posix_fadvise WILLNEED) every file noted as imported by the commands that completed before
(this command's note first): the disk reads them while the imports run, instead of one at a
time as each is imported. Cold S3 restore of 1 GiB in 15,000 files: the fetch began 0.79 s
after the start instead of 0.86 (medians of 7, in turns); the peak memory of a short command
is unchanged. Warm, it changes nothing but a thread.

Tried and left out: also importing the backend's client library (botocore) on a thread beside
the CLI's imports. It saved ~0.04 s more, but raised the peak memory of an unchanged S3
re-backup by 3.5 MB alone and 7.5 MB with the hints (11 MB in a bench run, above restic's),
presumably as a second thread's imports allocate from a second malloc arena.

When a command completes, the files it imported are noted in RECORD (in the cache root) under
its command words ("restore files"); a note is rewritten only when its files change, and the
KEPT_NOTES latest are kept. A missing, stale or damaged note, or a file gone since, costs only
the time it would have saved.
"""

from __future__ import annotations

import os
import sys
import threading

from corso_core.cache_root import read_root_file, write_root_file

#: The notes, in the cache root: {command words: [file, …]}, the latest first.
RECORD = "warm-start.json"
#: Notes kept: every start reads them all (~35 KB each).
KEPT_NOTES = 6
#: Flags that ask for help: a help imports little, and its note would shrink the command's.
SKIPPING_FLAGS = ("--help", "-h")
#: Leading words of a command line that name its command.
COMMAND_WORDS = 3

_command: str | None = None  # this run's command words, once `begin` has found them
_record: dict = {}  # RECORD as `begin` read it


def command_words(argv: list[str]) -> str | None:
    """The words naming the command (those before its first flag), or None when the command
    line gives none first or names a flag in SKIPPING_FLAGS."""
    if any(arg.partition("=")[0] in SKIPPING_FLAGS for arg in argv):
        return None
    words = []
    for arg in argv[:COMMAND_WORDS]:
        if arg.startswith("-"):
            break
        words.append(arg)
    return " ".join(words) or None


def begin(argv: list[str]) -> None:
    """Hint the files the notes name (this command line's first) on a thread of its own."""
    global _command, _record
    _command = command_words(argv)
    if _command is None:
        return
    record = read_root_file(RECORD)
    _record = record if isinstance(record, dict) else {}
    notes = [note for note in (_record.get(_command), *_record.values()) if _is_note(note)]
    files = list(dict.fromkeys(path for note in notes for path in note))
    if files:
        threading.Thread(target=_hint, args=(files,), name="corso-warm-start",
                         daemon=True).start()


def _is_note(note: object) -> bool:
    return isinstance(note, list) and all(isinstance(path, str) for path in note)


def _hint(files: list[str]) -> None:
    for path in files:
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except OSError:
            continue
        try:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_WILLNEED)
        except OSError:
            pass
        finally:
            os.close(fd)


def remember() -> None:
    """Note the files this command imported, for the next runs, once it has completed; nothing
    unless `begin` found its command words (the console script, not a test calling main())."""
    if _command is None:
        return
    try:
        files = _module_files()
    except Exception:  # an odd module in sys.modules: no note, and no error for a done command
        return
    noted = _record.get(_command)
    if _is_note(noted) and set(noted) == set(files):  # the same files in another order
        return
    others = [(words, note) for words, note in _record.items() if words != _command]
    write_root_file(RECORD, dict([(_command, files), *others][:KEPT_NOTES]))


def _module_files() -> list[str]:
    """The file each imported module was loaded from (its bytecode where it has one), in the
    order they were imported."""
    files = []
    for module in list(sys.modules.values()):
        spec = getattr(module, "__spec__", None)
        if not getattr(spec, "has_location", False):  # built in, frozen, or no module at all
            continue
        cached = spec.cached
        files.append(cached if cached and os.path.exists(cached) else spec.origin)
    return files
