"""A restore never writes into a corso repository on the filesystem (one holding a `format`
or `format-copy` blob, either: the other may be the damaged one): `--collisions replace` would
overwrite its blobs with a backup's files, the format blobs among them, and lose every backup
it holds. The connected repository or any other."""

from __future__ import annotations

import os

from corso_core.repo.format import MAGIC

_FORMAT_BLOBS = (b"format", b"format-copy")
_READ_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC


def holds_repository(dir_fd: int) -> bool:
    """Whether the directory open at `dir_fd` holds a corso format blob."""
    return any(_is_format_blob(dir_fd, name) for name in _FORMAT_BLOBS)


def _is_format_blob(dir_fd: int, name: bytes) -> bool:
    try:
        fd = os.open(name, _READ_FLAGS, dir_fd=dir_fd)
    except OSError:
        return False
    try:
        return os.read(fd, len(MAGIC)) == MAGIC
    except OSError:
        return False
    finally:
        os.close(fd)


def repository_around(path: str) -> str | None:
    """The repository directory that is `path` or one of its existing ancestors, if any."""
    directory = os.path.realpath(path)
    while True:
        try:
            fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except OSError:
            fd = None  # not there yet (made by the restore), or not ours to look into
        if fd is not None:
            try:
                if holds_repository(fd):
                    return directory
            finally:
                os.close(fd)
        parent = os.path.dirname(directory)
        if parent == directory:
            return None
        directory = parent
