"""What a restore killed outright leaves in its destination, and the next restore's removal of it.

A restore that is stopped (Ctrl-C, SIGTERM, a full disk) puts what it finished in place and
removes its staging directories itself (writer.py); whatever it must leave there, it says
where. One killed outright (SIGKILL, the OOM killer, a crash) cannot: each staging directory
it had made in an existing directory stays there, holding what it had built, under a name
nobody else uses (".corso-restore-RANDOM-staging").

So a restore lists, in a file at the top of its destination (".corso-restore-RANDOM-
staging-list"), each staging directory it makes: where, and which directory it is (device and
inode), and holds a lock on that list (flock) for as long as it runs; at its end it removes the
list, whatever it left. A later restore into the same destination looks for lists whose lock
nobody holds: their restores were killed, so it removes the staging directories they list,
then the list. A list still locked belongs to a restore that is running, and is left alone.

Whoever else may rename entries in the destination (a shared directory) must not be able to
make that removal take anything else: a list is read only if it is a regular file of this
user that begins with this module's header; every directory on the way to a listed one is
opened without following a symlink; the staging directory must be the very one listed (device
and inode) and hold only its restore's temp names, and it is emptied through the descriptor
checked, so a directory renamed onto its
name meanwhile is never entered (only the final rmdir goes by name, and fails on one not
empty).
"""

from __future__ import annotations

import errno
import fcntl
import logging
import os
import re
import stat
from collections.abc import Callable

log = logging.getLogger(__name__)

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_LIST = re.compile(rb"(\.corso-restore-[0-9a-f]{16}-)staging-list")
_HEADER = b"corso restore staging list 1\n"
#: One record: device, inode, then the path of the directory holding the staging directory
#: (names joined by "/", none for the destination itself), ended by NUL: names hold neither.
_RECORD = re.compile(rb"([0-9]+) ([0-9]+) (.*)", re.DOTALL)
#: A name the restore took with an empty directory for one it built apart: "R", device, inode,
#: the path of that directory.
_RESERVED = re.compile(rb"R ([0-9]+) ([0-9]+) (.+)", re.DOTALL)
#: A staging directory about to be made: "P", the path of the directory it goes in. Killed
#: before its own record, the restore leaves it empty (nothing goes in before the record).
_PENDING = re.compile(rb"P (.*)", re.DOTALL)

Path = tuple[bytes, ...]


class StagingList:
    """This restore's list of its staging directories, made with the first of them."""

    def __init__(self, root_fd: int, temp_prefix: bytes) -> None:
        self._root_fd = root_fd
        self._name = temp_prefix + b"staging-list"
        self._fd: int | None = None
        self._unlisted = False  # no list could be made here: staging is not listed

    def add_pending(self, parent: Path) -> None:
        """Note, before it is made, the staging directory about to be made in `parent`."""
        self._write(b"P %s\0" % b"/".join(parent))

    def add(self, parent: Path, staging_fd: int) -> None:
        """Note the staging directory just made in `parent` (open as `staging_fd`). Where no
        list can be kept (the top of the destination is not writable, a filesystem without
        flock), the restore goes on unlisted: what it leaves if killed stays."""
        st = os.fstat(staging_fd)
        self._write(b"%d %d %s\0" % (st.st_dev, st.st_ino, b"/".join(parent)))

    def add_reserved(self, path: Path, reserved_fd: int) -> None:
        """Note the empty directory that holds the name `path` for one built apart: left by
        a killed restore, a later one would enter it as an existing directory and keep its
        0700 and its mtime."""
        st = os.fstat(reserved_fd)
        self._write(b"R %d %d %s\0" % (st.st_dev, st.st_ino, b"/".join(path)))

    def _write(self, record: bytes) -> None:
        if self._unlisted:
            return
        try:
            if self._fd is None:
                self._fd = self._create()
            os.write(self._fd, record)
        except OSError as e:
            log.debug("staging directories not listed in %r: %s", self._name, e)
            self.close()
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
                    os.write(fd, _HEADER)
                    return fd
            except BaseException:
                os.close(fd)
                _unlink(self._name, self._root_fd)
                raise
            os.close(fd)

    def close(self) -> None:
        """Drop the list: a restore that gets here has put in place, removed, or said where
        it left, all it made; nothing of it is for a later restore to remove."""
        if self._fd is not None:
            _unlink(self._name, self._root_fd)
            os.close(self._fd)
            self._fd = None


def remove_leftovers(root_fd: int, say: Callable[[Path, str], None]) -> None:
    """Remove what the restores killed in this destination left, telling `say(path,
    message)` about each staging directory removed or not. Never raises: a restore goes on
    whatever it finds here."""
    try:
        entries = os.listdir(root_fd)
    except OSError:
        return  # not listable: the restore says so where it needs to be
    for entry in entries:
        found = _LIST.fullmatch(os.fsencode(entry))
        if found:
            try:
                _remove_listed(root_fd, found.group(0), found.group(1), say)
            except OSError as e:
                log.debug("leftovers of %r not removed: %s", found.group(0), e)


def _remove_listed(root_fd: int, name: bytes, prefix: bytes, say) -> None:
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
        if not os.fstat(fd).st_nlink:
            return  # another restore removed it while this one waited
        listed = b"".join(iter(lambda: os.read(fd, 1 << 16), b""))
        if not listed.startswith(_HEADER):
            return  # not a list (a file renamed to its name), or one killed as it began
        records = list(dict.fromkeys(listed[len(_HEADER):].split(b"\0")[:-1]))
        for record in records:  # the staging directories first: what they held is gone then
            if parsed := _RECORD.fullmatch(record):
                identity = (int(parsed.group(1)), int(parsed.group(2)))
                _remove_one(root_fd, parsed.group(3), prefix, identity, say)
        for record in records:
            if parsed := _RESERVED.fullmatch(record):
                identity = (int(parsed.group(1)), int(parsed.group(2)))
                _remove_empty(root_fd, tuple(parsed.group(3).split(b"/")), identity, say)
            elif parsed := _PENDING.fullmatch(record):
                where = tuple(parsed.group(1).split(b"/")) if parsed.group(1) else ()
                _remove_empty(root_fd, (*where, prefix + b"staging"), None, say)
        _unlink(name, root_fd)
    finally:
        os.close(fd)


def _remove_one(root_fd: int, parent: bytes, prefix: bytes, identity: tuple[int, int],
                say) -> None:
    path, staging = tuple(parent.split(b"/")) if parent else (), prefix + b"staging"
    try:
        _remove_staging(root_fd, path, prefix, identity)
    except FileNotFoundError:
        return
    except OSError as e:
        say((*path, staging), f"left by an interrupted restore, not removed: {e.strerror or e}")
        return
    say((*path, staging), "removed: left by an interrupted restore")


def _remove_empty(root_fd: int, path: Path, identity: tuple[int, int] | None, say) -> None:
    """Remove the empty directory a killed restore left at `path` (a name it held, a staging
    directory it made last), if it is still that very directory (when known) and empty
    (rmdir fails on one that is not)."""
    try:
        parent_fd = _open_below(root_fd, path[:-1])
        try:
            fd = os.open(path[-1], _DIR_FLAGS, dir_fd=parent_fd)
            try:
                if identity not in (None, _identity(fd)) or os.listdir(fd):
                    return  # put in place since, or filled: not a leftover
            finally:
                os.close(fd)
            os.rmdir(path[-1], dir_fd=parent_fd)
        finally:
            os.close(parent_fd)
    except OSError:
        return  # gone, or not what was listed: nothing to say
    say(path, "removed: left empty by an interrupted restore")


def _open_below(root_fd: int, path: Path) -> int:
    """The directory at `path` below the destination, reached without following a symlink."""
    parent_fd = os.dup(root_fd)
    try:
        for name in path:
            if name in (b"", b".", b"..") or b"/" in name:
                raise OSError(errno.EINVAL, "not a path below the destination")
            fd = os.open(name, _DIR_FLAGS, dir_fd=parent_fd)
            os.close(parent_fd)
            parent_fd = fd
    except BaseException:
        os.close(parent_fd)
        raise
    return parent_fd


def _identity(fd: int) -> tuple[int, int]:
    st = os.fstat(fd)
    return st.st_dev, st.st_ino


def _remove_staging(root_fd: int, path: Path, prefix: bytes, identity: tuple[int, int]) -> None:
    """Remove the staging directory of the restore whose temp names begin with `prefix`, in
    the directory at `path` below the destination, if it is the directory `identity` names
    and holds only that restore's temp names (an inode number can be used again), reached and
    emptied without following a symlink."""
    staging = prefix + b"staging"
    own = re.compile(re.escape(prefix) + rb"[0-9]+")
    parent_fd = _open_below(root_fd, path)
    try:
        fd = os.open(staging, _DIR_FLAGS, dir_fd=parent_fd)
        try:
            if _identity(fd) != identity or not all(
                    own.fullmatch(os.fsencode(n)) for n in os.listdir(fd)):
                raise OSError(errno.ESTALE, "not the staging directory listed")
            _empty(fd)
        finally:
            os.close(fd)
        os.rmdir(staging, dir_fd=parent_fd)
    finally:
        os.close(parent_fd)


def _empty(fd: int) -> None:
    """Remove everything in the directory open as `fd` (this user's own: a restore made it,
    so its directories are made writable first, as a finished 0555 one is not)."""
    for name in map(os.fsencode, os.listdir(fd)):
        if stat.S_ISDIR(os.stat(name, dir_fd=fd, follow_symlinks=False).st_mode):
            sub = os.open(name, _DIR_FLAGS, dir_fd=fd)
            try:
                os.fchmod(sub, stat.S_IRWXU)
                _empty(sub)
            finally:
                os.close(sub)
            os.rmdir(name, dir_fd=fd)
        else:
            os.unlink(name, dir_fd=fd)


def _unlink(name: bytes, dir_fd: int) -> None:
    try:
        os.unlink(name, dir_fd=dir_fd)
    except OSError as e:  # a list left behind is read again, and is harmless
        log.debug("%r not removed: %s", name, e)
