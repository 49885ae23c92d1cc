"""What a restore killed outright leaves in its destination, and the next restore's removal of it.

A restore that is stopped (Ctrl-C, SIGTERM, a full disk) puts what it finished in place and
removes its staging directories itself (writer.py). One killed outright (SIGKILL, the OOM
killer, a crash) cannot: each staging directory it had made in an existing directory stays
there, holding what it had built, under a name nobody else uses (".corso-restore-RANDOM-staging").

So a restore lists, in a file at the top of its destination (".corso-restore-RANDOM-staging-list"),
every directory where it makes a staging directory, before making it, and holds a lock on
that list (flock) for as long as it runs. A later restore into the same destination looks for
lists whose lock nobody holds: their restores are gone, so it removes what they list, then
the list. A list still locked belongs to a restore that is running, and is left alone.

Only lists that are regular files of this user are read. Every directory on the way to a
listed one is opened without following a symlink, and the staging directory is removed
without following any (shutil.rmtree's descriptor-based walk): a list can only have a
staging directory of its own restore removed, below the destination.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import logging
import os
import re
import shutil
import stat
from collections.abc import Callable

log = logging.getLogger(__name__)

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_LIST = re.compile(rb"(\.corso-restore-[0-9a-f]{16}-)staging-list")


def list_name(temp_prefix: bytes) -> bytes:
    return temp_prefix + b"staging-list"


class StagingList:
    """This restore's list of the directories holding its staging directories (paths below
    the destination, names joined by "/", each ended by NUL: names hold neither)."""

    def __init__(self, root_fd: int, temp_prefix: bytes) -> None:
        self._root_fd = root_fd
        self._name = list_name(temp_prefix)
        self._fd: int | None = None
        self._unlisted = False  # no list could be made here: staging is not listed

    def add(self, parent: tuple[bytes, ...]) -> None:
        """Note `parent` before its staging directory is made (a restore killed in between
        lists one that is not there, which is harmless). Where no list can be kept (the top
        of the destination is not writable, a filesystem without flock), the restore goes on
        as before lists: what it leaves if killed stays."""
        if self._unlisted:
            return
        try:
            if self._fd is None:
                self._fd = self._create()
            os.write(self._fd, b"/".join(parent) + b"\0")
        except OSError as e:
            log.debug("staging directories not listed in %r: %s", self._name, e)
            self.close(all_removed=True)
            self._unlisted = True

    def _create(self) -> int:
        """The list, created and locked. Another restore may open it in between, take the
        lock first, find it empty and remove it: then it is made again."""
        while True:
            fd = os.open(self._name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND
                         | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600, dir_fd=self._root_fd)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)
                if os.fstat(fd).st_nlink:
                    return fd
            except BaseException:
                os.close(fd)
                with contextlib.suppress(OSError):
                    os.unlink(self._name, dir_fd=self._root_fd)
                raise
            os.close(fd)

    def close(self, all_removed: bool) -> None:
        """Drop the list once its staging directories are gone; with one left (not empty:
        said), keep it for the next restore, which removes what it lists."""
        if self._fd is None:
            return
        try:
            if all_removed:
                os.unlink(self._name, dir_fd=self._root_fd)
        finally:
            os.close(self._fd)
            self._fd = None


def remove_leftovers(root_fd: int, say: Callable[[tuple[bytes, ...], str], None]) -> None:
    """Remove what the restores killed in this destination left, telling `say(path,
    message)` about each staging directory removed or not."""
    try:
        entries = os.listdir(root_fd)
    except OSError:
        return  # not listable: the restore says so where it needs to be
    for entry in entries:
        found = _LIST.fullmatch(os.fsencode(entry))
        if found:
            _remove_listed(root_fd, found.group(0), found.group(1) + b"staging", say)


def _remove_listed(root_fd: int, name: bytes, staging: bytes, say) -> None:
    try:
        fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC,
                     dir_fd=root_fd)
    except OSError:
        return  # gone meanwhile (another restore removed it), or not ours to read
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or st.st_uid != os.geteuid():
            return  # not a list this user's restore made
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            return  # its restore is running (or locks do not work here: leave it)
        listed = b"".join(iter(lambda: os.read(fd, 1 << 16), b""))
        left = False
        for parent in dict.fromkeys(listed.split(b"\0")[:-1]):
            path = tuple(parent.split(b"/")) if parent else ()
            try:
                _remove_staging(root_fd, path, staging)
            except FileNotFoundError:
                continue
            except OSError as e:
                left = True
                say((*path, staging), f"left by an interrupted restore, not removed: "
                                      f"{e.strerror or e}")
                continue
            say((*path, staging), "removed: left by an interrupted restore")
        if not left:
            os.unlink(name, dir_fd=root_fd)
    finally:
        os.close(fd)


def _remove_staging(root_fd: int, path: tuple[bytes, ...], staging: bytes) -> None:
    """Remove `staging` in the directory at `path` below the destination, reached and walked
    without following a symlink."""
    fd = os.dup(root_fd)
    try:
        for name in path:
            if name in (b"", b".", b"..") or b"/" in name:
                raise OSError(errno.EINVAL, "not a path below the destination")
            parent_fd, fd = fd, os.open(name, _DIR_FLAGS, dir_fd=fd)
            os.close(parent_fd)
        shutil.rmtree(staging, dir_fd=fd)
    finally:
        os.close(fd)
