"""The built-in "files" source: directory trees on a local filesystem.

It registers through the `register_sources` hook from the entry point in pyproject.toml,
exactly as a third-party source plugin would.
"""

from __future__ import annotations

import contextlib
import os
import stat

import click

from corso_core.errors import UsageError
from corso_core.hookspecs import hookimpl
from corso_core.sources.files.destination_lock import made_missing
from corso_core.sources.files.inodes import warm_up
from corso_core.sources.files.reader import FilesReader
from corso_core.sources.files.repository_guard import repository_around
from corso_core.sources.files.writer import FilesWriter
from corso_core.sources.source import Source


def _absolute(value: str) -> str:
    """The absolute path `value` names, ".." taken as the kernel takes it: the parent of where
    the path so far leads, symlinks followed (os.path.abspath drops a name and its "..", so
    `link/sub/..` named the symlink `link`, not the directory it points to). Where the two
    agree, abspath's (so a path keeps matching its previous backups'). OSError as the kernel
    gives it for a path it cannot follow (a dangling link, a file, a loop before a "..")."""
    path = os.path.abspath(value)
    parts = value.split("/")
    if ".." not in parts:
        return path
    meant = os.lstat(value)
    try:
        if os.path.samestat(os.lstat(path), meant):
            return path
    except OSError:
        pass
    last = len(parts) - 1 - parts[::-1].index("..")
    resolved = os.path.realpath("/".join(parts[: last + 1]) or "/", strict=True)
    return os.path.abspath(os.path.join(resolved, *parts[last + 1 :]))


def _existing_paths(ctx, param, values: tuple[str, ...]) -> list[str]:
    """Absolute, normalised paths; a missing or unreadable one is bad input, caught before
    anything runs. As in POSIX, a trailing "/" (or "/.") names a directory: given so, a
    symlink to a directory stands for the directory, and keeps the "/" (the reader's lstat
    then follows it) while its name in the backup stays the link's."""
    paths = []
    for value in values:
        if not value:
            raise click.BadParameter("a path must not be empty (use . for this directory)")
        try:
            path = _absolute(value)
            os.lstat(path)
        except FileNotFoundError:
            raise click.BadParameter(f"{value}: no such file or directory") from None
        except OSError as e:
            raise click.BadParameter(f"{value}: cannot be read: {e.strerror}") from None
        if value.endswith(("/", "/.")) and path != "/":
            if not os.path.isdir(path):
                raise click.BadParameter(f"{value}: not a directory")
            if os.path.islink(path):
                path += "/"
        if path in paths:
            raise click.BadParameter(f"{value} is given twice")
        paths.append(path)
    return sorted(paths)


def _destination(ctx, param, value: str) -> str:
    if not value:
        raise click.BadParameter("must not be empty (use . for this directory)")
    return value


def _reader(values, report) -> FilesReader:
    return FilesReader([os.fsencode(p) for p in values["path"]],
                       [os.fsencode(g) for g in values["exclude"]], report,
                       one_file_system=values.get("one_file_system", False))


def _writer(values, collisions, report) -> FilesWriter:
    destination = os.path.abspath(values["destination"])
    if os.path.lexists(destination) and not os.path.isdir(destination):
        raise UsageError(f"destination {destination} exists and is not a directory")
    if repository := repository_around(destination):
        raise UsageError(f"destination {destination} is inside the corso repository at "
                         f"{repository}: restore elsewhere")
    with contextlib.ExitStack() as held:
        try:
            if not os.path.lexists(destination):
                # Made under the locks of the directories above it, held until the writer
                # holds its own (destination_lock.py)
                held.enter_context(made_missing(os.fsencode(destination)))
            st = os.stat(destination)
        except OSError as e:
            raise UsageError(f"cannot create destination {destination}: {e.strerror}") from None
        if not os.access(destination, os.W_OK | os.X_OK, effective_ids=True):
            why = ("on a read-only filesystem" if os.statvfs(destination).f_flag & os.ST_RDONLY
                   else f"mode {stat.S_IMODE(st.st_mode):04o}, owner uid {st.st_uid}")
            raise UsageError(f"destination {destination} is not writable by you ({why})")
        return FilesWriter(os.fsencode(destination), collisions, report)


FILES = Source(
    name="files",
    description="files and directories on this machine",
    backup_options=[
        click.Option(["--path"], multiple=True, required=True, callback=_existing_paths,
                     help="File or directory to back up (repeatable). Each lands at the top "
                          "of the backup under its base name; clashes become NAME~2, NAME~3."),
        click.Option(["--exclude"], multiple=True, metavar="GLOB",
                     help="Leave out entries whose name or absolute path matches (repeatable); "
                          "never a --path itself."),
        click.Option(["--one-file-system", "-x"], is_flag=True,
                     help="Do not enter directories on other filesystems than the paths' "
                          "(mount points are kept, empty): /proc, /sys, network mounts."),
    ],
    restore_options=[
        click.Option(["--destination"], required=True, callback=_destination,
                     help="Directory to restore into (created if missing)."),
    ],
    open_reader=_reader,
    open_writer=_writer,
    describe=lambda values: list(values["path"]),
    warm_up=warm_up,
)


@hookimpl
def register_sources(register):
    register(FILES)
