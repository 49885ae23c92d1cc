"""One restore at a time into a directory and all that is below it.

Two restores into one destination at once undo each other's work: the second enters as an
existing directory the empty one the first made to hold a name while it builds that directory
apart (writer.py), and fills it, so the first cannot move what it built onto the name and
leaves a whole copy in its staging directory, the directory keeping the 0700 it was made with.
Two into nested destinations (D and D/sub) do the same below D/sub. So a restore holds, for as
long as it runs, an exclusive lock (flock) on its destination directory and a shared one on
each directory above it, up to "/": a second restore into the same directory, or into one
below or above it, is refused before it writes anything, while restores side by side (into
D/a and D/b) share D's lock. A refusal names the process holding the lock: flock is
anyone's, and a program that is not a restore may hold one. The locks are on the directories
themselves: nothing is left in them, and they go with the process however it ends. The
directories above are reached by "..", never through a symlink: they are those the restore
writes below, whatever path named the destination.

A missing destination is made under a shared lock on the nearest directory above it and on
each one above that, and each missing one above it is locked (shared) as soon as it is made,
before anything is made in it (made_missing); all kept until the restore holds its own. So
a restore refused for one running into a directory above has made nothing in that one's
tree, while restores into missing directories side by side still run together: nothing is
held exclusively (an exclusive hold on the nearest directory would wait for every restore
running below it).

A directory whose flock fails (some FUSE filesystems) is not locked, and one above that cannot
be opened (not readable by this user, so a restore into it is someone else's) ends the climb;
the restore goes on as it did before there were locks.
"""

from __future__ import annotations

import fcntl
import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager

from corso_core.errors import CorsoError

log = logging.getLogger(__name__)

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC
_PATH_FLAGS = os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC  # for a dir_fd only: no read needed


class DestinationLock:
    """Locks for a restore into `destination` (as shown), each taken at once: CorsoError if
    a restore holds it."""

    def __init__(self, destination: bytes) -> None:
        self._destination = os.fsdecode(destination)
        self._fds: list[int] = []

    def take(self, root_fd: int) -> None:
        """The restore's own: on the destination, open as `root_fd`, and each one above."""
        self._climb(os.open(".", _DIR_FLAGS, dir_fd=root_fd), fcntl.LOCK_EX)

    def make_missing(self) -> None:
        """Make the missing destination and the missing directories above it (as os.makedirs
        does), each one above locked shared as made, and the existing ones above them locked
        first. OSError as the kernel gives it, a symlink made meanwhile never followed."""
        nearest, missing = os.fsencode(self._destination), []
        while True:
            nearest, name = os.path.split(nearest)
            missing.insert(0, name)
            try:
                fd = os.open(nearest, _DIR_FLAGS)
                break
            except OSError:
                if nearest == b"/":
                    raise
        self._climb(fd, fcntl.LOCK_SH)
        for name in missing[:-1]:
            _mkdir(name, 0o777, fd)
            fd = self._enter(name, fd)
        _mkdir(missing[-1], 0o700, fd)  # the writer locks it

    def _enter(self, name: bytes, fd: int) -> int:
        """The directory `name` in the one open as `fd`, locked shared; one this user cannot
        read (only write and search) is not locked, as in _climb."""
        try:
            below = os.open(name, _DIR_FLAGS | os.O_NOFOLLOW, dir_fd=fd)
        except PermissionError:
            below = os.open(name, _PATH_FLAGS | os.O_NOFOLLOW, dir_fd=fd)
            self._fds.append(below)
            return below
        self._fds.append(below)
        self._lock(below, fcntl.LOCK_SH)
        return below

    def _climb(self, fd: int, mode: int) -> None:
        """Lock the directory open as `fd` (taken over) with `mode`, then each one above it,
        shared."""
        self._fds.append(fd)
        try:
            self._lock(fd, mode)
            while True:
                try:
                    above = os.open("..", _DIR_FLAGS, dir_fd=fd)
                except OSError as e:
                    log.debug("the restore into %s locks no directory further up: %s",
                              self._destination, e)
                    return
                if os.path.samestat(os.fstat(above), os.fstat(fd)):  # "/": its own ".."
                    os.close(above)
                    return
                self._fds.append(above)
                fd = above
                self._lock(fd, fcntl.LOCK_SH)
        except BaseException:
            self.release()
            raise

    def _lock(self, fd: int, mode: int) -> None:
        try:
            fcntl.flock(fd, mode | fcntl.LOCK_NB)
        except BlockingIOError:
            raise CorsoError(self._refusal(fd, mode)) from None
        except OSError as e:
            log.debug("a directory of the restore into %s is not locked: %s",
                      self._destination, e)

    def _refusal(self, fd: int, mode: int) -> str:
        if mode == fcntl.LOCK_EX:
            return (f"another restore into {self._destination} is running, or one into a "
                    f"directory in it: wait for it to end{_holder(fd)}")
        try:
            where = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:  # no /proc
            where = "a directory above it"
        return (f"another restore into {where} is running, and {self._destination} is in "
                f"it: wait for it to end{_holder(fd)}")

    def release(self) -> None:
        for fd in self._fds:
            os.close(fd)
        self._fds.clear()


def _holder(fd: int) -> str:
    """Which process holds the flock on the directory open as `fd`, as /proc/locks tells:
    another program may lock a directory too, and its name then says so. Its name only
    (/proc/PID/comm), never its command line, which may hold another command's passphrase;
    nothing where that cannot be told (no /proc, the holder in another PID namespace)."""
    st = os.fstat(fd)
    device = f"{os.major(st.st_dev):02x}:{os.minor(st.st_dev):02x}:{st.st_ino}"
    try:
        with open("/proc/locks", encoding="ascii", errors="replace") as locks:
            for line in locks:
                # "1: FLOCK  ADVISORY  WRITE 1234 fe:00:5431332 0 EOF" (waiters: "1: -> FLOCK")
                fields = line.split()
                if len(fields) > 5 and fields[1] == "FLOCK" and fields[5] == device:
                    pid = int(fields[4])
                    break
            else:
                return ""
        if pid <= 0:  # a holder this PID namespace cannot see
            return ""
        with open(f"/proc/{pid}/comm", encoding="utf-8", errors="replace") as comm:
            name = comm.read().strip()
    except (OSError, ValueError):
        return ""
    shown = "".join(c if c.isprintable() else "?" for c in name)
    return f" (process {pid}, {shown}, holds its lock)"


def _mkdir(name: bytes, mode: int, dir_fd: int) -> None:
    try:
        os.mkdir(name, mode, dir_fd=dir_fd)
    except FileExistsError:  # made meanwhile: by another restore side by side, maybe
        pass


@contextmanager
def made_missing(destination: bytes) -> Iterator[None]:
    """Make the missing `destination` (DestinationLock.make_missing); meanwhile, no restore
    runs into a directory above it or above the directories made (CorsoError at once if one
    does)."""
    lock = DestinationLock(destination)
    try:
        lock.make_missing()
        yield
    finally:
        lock.release()
