"""One restore at a time into a destination.

Two restores into one destination at once undo each other's work: the second enters as an
existing directory the empty one the first made to hold a name while it builds that directory
apart (writer.py), and fills it, so the first cannot move what it built onto the name and
leaves a whole copy in its staging directory, the directory keeping the 0700 it was made with.
So a restore holds a lock (flock) on ".corso-restore.lock" at the top of its destination for as
long as it runs, and a second one is refused before it writes anything. The lock goes with the
process, however it ends: the file a killed restore leaves is taken by the next restore, which
removes it at its end.

A filesystem whose flock fails (some FUSE ones) keeps no lock: the restore goes on as it did
before there was one.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import logging
import os
import stat

from corso_core.errors import CorsoError

log = logging.getLogger(__name__)

NAME = b".corso-restore.lock"
_FLAGS = os.O_RDONLY | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
#: What flock answers where the filesystem keeps no locks.
_NO_LOCKS = {errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOTSUP, errno.EINVAL, errno.ENOSYS}


class DestinationLock:
    """The lock on the destination open as `root_fd` (shown as `destination`), taken at once:
    CorsoError if another restore holds it."""

    def __init__(self, root_fd: int, destination: bytes) -> None:
        self._root_fd = root_fd
        self._fd: int | None = None
        shown = os.path.join(os.fsdecode(destination), os.fsdecode(NAME))
        try:
            self._fd = self._take()
        except BlockingIOError:
            raise CorsoError(f"another restore into {os.fsdecode(destination)} is running (it "
                             f"holds {shown}): wait for it to end") from None
        except OSError as e:
            raise CorsoError(f"cannot lock the destination with {shown}: "
                             f"{e.strerror or e}") from None

    def _take(self) -> int | None:
        """The lock file, opened (made if missing) and locked; None, the file removed, where
        the filesystem keeps no locks. One its restore removed between this one's open and its
        lock is no lock: it is opened again."""
        while True:
            fd = os.open(NAME, _FLAGS, 0o600, dir_fd=self._root_fd)
            try:
                if not stat.S_ISREG(os.fstat(fd).st_mode):
                    raise OSError(errno.EEXIST, "not a regular file")
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except OSError as e:
                    if e.errno not in _NO_LOCKS:
                        raise
                    log.debug("restore not locked with %r: %s", NAME, e)
                    with contextlib.suppress(OSError):
                        os.unlink(NAME, dir_fd=self._root_fd)
                    os.close(fd)
                    return None
                if os.fstat(fd).st_nlink:
                    return fd
            except BaseException:
                os.close(fd)
                raise
            os.close(fd)

    def release(self) -> None:
        """Remove the lock file (if it is still the one locked), then let the lock go: in that
        order, so a restore that opened it meanwhile finds it removed once it gets it."""
        if self._fd is None:
            return
        try:
            named = os.stat(NAME, dir_fd=self._root_fd, follow_symlinks=False)
            held = os.fstat(self._fd)
            if (named.st_dev, named.st_ino) == (held.st_dev, held.st_ino):
                os.unlink(NAME, dir_fd=self._root_fd)
        except OSError as e:  # left behind, it is taken and removed by the next restore
            log.debug("%r not removed: %s", NAME, e)
        os.close(self._fd)
        self._fd = None
