"""A cold start made shorter: what a command loaded last time, asked for at once, on threads.

After a reboot, or a long idle, much of a command's start is Python waiting for the disk, one
module file at a time: an S3 restore imports ~440 files (44 MB: Python's, corso's, botocore's,
the native libraries). So the console script (cli/launch.py) begins two threads:
- one hints to the kernel (posix_fadvise WILLNEED) every file noted as imported by the commands
  that ran before (this command's first), so the disk reads them while the first imports run;
- one imports the modules the connected backend names in `StorageBackend.preload` (botocore
  for S3: ~0.2 s cold), beside the CLI's own imports, so that the waits of the two overlap.
Cold S3 restore of 1 GiB in 15,000 files: the fetch began 0.80 s after the start instead of
0.88 (medians of 7, in turns); tried apart, the hints alone saved 0.06 s, the imports alone
0.06, both 0.10. Warm, it changes nothing.

When a command completes, what it imported is noted in RECORD (in the cache root) under its
command words ("restore files"), with the backend it opened (repo init and connect count) and
that backend's `preload`; a note is rewritten only when that changes, and the KEPT_NOTES
latest are kept. The preload noted by any
command on the connection's backend is imported: the first backup after `repo init` has it
too. A missing, stale or damaged note, or a file or module gone since, costs only the time it
would have saved.

Only modules that import nothing of corso may be preloaded (two threads importing modules that
import each other can deadlock), and the storage is opened only once the imports are done
(`wait`), so the backend's own imports never run beside them.
"""

from __future__ import annotations

import importlib
import os
import sys
import threading

#: The note, in the cache root: {command words: {"backend", "preload", "files"}}.
RECORD = "warm-start.json"
#: Flags that change which config is read, or ask for help (which imports little).
SKIPPING_FLAGS = ("--config-file", "--help", "-h")
#: Leading words of a command line that name its command.
COMMAND_WORDS = 3
#: Notes kept, the latest first: every start reads them all (~35 KB each).
KEPT_NOTES = 6

_command: str | None = None  # this run's command words, once `begin` has found them
_record: dict = {}  # RECORD as `begin` read it
_opened: tuple[str, tuple[str, ...]] = ("", ())  # the backend opened, and its preload
_importing: threading.Thread | None = None


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
    """Hint the files and import the preload the notes give for this command line, on
    threads."""
    global _command, _record, _importing
    _command = command_words(argv)
    if _command is None:
        return
    from corso_core import config
    from corso_core.errors import CorsoError
    from corso_core.repo.cache import read_root_file

    record = read_root_file(RECORD)
    _record = record if isinstance(record, dict) else {}
    notes = [note for note in map(_noted, [_record.get(_command), *_record.values()]) if note]
    if not notes:
        return
    files = list(dict.fromkeys(path for note in notes for path in note["files"]))
    threading.Thread(target=_hint, args=(files,), name="corso-warm-files", daemon=True).start()
    try:
        backend = config.load(config.config_path()).backend
    except CorsoError:
        return  # not connected, or a broken config: the command says so
    preload = list(dict.fromkeys(name for note in notes if note["backend"] == backend
                                 for name in note["preload"]))
    if preload:
        _importing = threading.Thread(target=_import, args=(preload,),
                                      name="corso-warm-imports", daemon=True)
        _importing.start()


def _noted(noted: object) -> dict | None:
    """A command's note, if it has the shape `remember` gives it."""
    if not (isinstance(noted, dict) and isinstance(noted.get("backend"), str)
            and all(isinstance(noted.get(key), list) and
                    all(isinstance(item, str) for item in noted[key])
                    for key in ("preload", "files"))):
        return None
    return noted


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


def _import(modules: list[str]) -> None:
    for name in modules:
        try:
            importlib.import_module(name)
        except Exception:  # the command imports it again itself, and reports what fails
            continue


def wait() -> None:
    """Return once the preload is imported (or failed): before a backend opens its storage."""
    global _importing
    importing, _importing = _importing, None
    if importing is not None:
        importing.join()


def opened(backend: str, preload: tuple[str, ...]) -> None:
    """The command opened a storage of `backend`, whose StorageBackend names `preload`."""
    global _opened
    _opened = (backend, tuple(preload))


def remember() -> None:
    """Note what this command imported, for its next run, once it has completed; nothing
    unless `begin` found its command words (the console script, not a test calling main())."""
    if _command is None:
        return
    from corso_core.repo.cache import write_root_file

    backend, preload = _opened
    try:
        note = {"backend": backend, "preload": list(preload), "files": _module_files()}
    except Exception:  # an odd module in sys.modules: no note, and no error for a done command
        return
    if not _says_the_same(_noted(_record.get(_command)), note):
        others = [(words, kept) for words, kept in _record.items() if words != _command]
        write_root_file(RECORD, dict([(_command, note), *others][:KEPT_NOTES]))


def _says_the_same(noted: dict | None, note: dict) -> bool:
    """Whether the note already there says what `note` says: the same files in another order
    (the threads interleave imports differently from run to run) are no news."""
    return noted is not None and (noted["backend"], noted["preload"], set(noted["files"])) == (
        note["backend"], note["preload"], set(note["files"]))


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
