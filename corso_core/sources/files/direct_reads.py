"""How the files source reads a file: a large one that is not in the page cache straight from
the disk (O_DIRECT, DirectFile), any other through the page cache (RegularFile).

Read through the page cache, every byte costs the kernel a copy into the reader's memory, and
the pages it filled stay cached, pushing out what the user had there. In a first backup that
copy was the largest single cost (perf: 17 % of its CPU, 1 GiB of files, cold cache), more
than chunking. Read directly, the disk writes into the engine's buffer and nothing is copied:
the benchmark's first backup took 4.11 against 4.43 s, and 5.56 against 6.37 s of CPU
(medians of 6 runs each, in turns).

Direct reads ask for aligned memory, offsets and lengths, and the engine's chunker reads that
way (repo/chunker.py). A read that is not aligned fails with EINVAL (a read into memory that
is not aligned, or after a short read mid-file): the file is then read through the page cache
from there on, as it is where the filesystem refuses direct I/O (setting O_DIRECT fails).

A file whose first page is in the page cache (just written, or read before) is read through it,
from memory. Asking (a read that does not wait, RWF_NOWAIT) has the kernel read in the first
few pages of a file that has none cached: some 32 KiB more of each large file.
"""

from __future__ import annotations

import errno
import fcntl
import io
import os

#: Files up to this size are read through the page cache: the kernel reads them in as they are
#: opened, ahead of their turn (reader.READ_IN_ON_OPEN), and a direct read would wait for each.
DIRECT_MIN = 1024 * 1024
_PROBE = 4096


class DirectFile(io.FileIO):
    """A file open with O_DIRECT, read through the page cache once a read is refused; `read`
    and `readall` (which read into memory of their own, never aligned) read through it."""

    def readinto(self, buffer) -> int | None:
        try:
            return super().readinto(buffer)
        except OSError as e:
            if e.errno != errno.EINVAL:
                raise
        self._through_the_page_cache()
        return super().readinto(buffer)

    def read(self, size: int = -1) -> bytes | None:
        self._through_the_page_cache()
        return super().read(size)

    def readall(self) -> bytes:
        self._through_the_page_cache()
        return super().readall()

    def _through_the_page_cache(self) -> None:
        fd = self.fileno()
        fcntl.fcntl(fd, fcntl.F_SETFL, fcntl.fcntl(fd, fcntl.F_GETFL) & ~os.O_DIRECT)


class RegularFile(io.RawIOBase):
    """The regular file `fd`, of `size` bytes when opened, read through the page cache.

    Lighter than io.FileIO, which has the descriptor fstat-ed once more as it is made. And a
    read that comes short exactly at `size` is taken for the end (the next read returns 0
    without asking the system): the one that would only have found nothing is not made. A file
    that grew meanwhile is caught by the fstat after reading (FileContent.changed), and a read
    short of `size` (a network filesystem's) is read on as ever. Per small file in a backup,
    two system calls fewer, each a chance for another thread to take the GIL.
    """

    def __init__(self, fd: int, size: int) -> None:
        super().__init__()
        self._fd, self._size, self._position, self._ended = fd, size, 0, False

    def readable(self) -> bool:
        return True

    def fileno(self) -> int:
        return self._fd

    def readinto(self, buffer) -> int:
        if self._ended:
            return 0
        n = os.readv(self._fd, [buffer])
        self._position += n
        self._ended = n < len(buffer) and self._position == self._size
        return n

    def close(self) -> None:
        if not self.closed:
            super().close()
            os.close(self._fd)


def open_for_reading(fd: int, size: int) -> io.RawIOBase:
    """An unbuffered file object for the regular file `fd` (of `size` bytes), reading directly
    from the disk where that helps and the system allows it."""
    if size > DIRECT_MIN and hasattr(os, "O_DIRECT") and not _starts_cached(fd):
        # O_NONBLOCK off: it kept a FIFO from blocking the open of what is known by now to be a
        # regular file, and some kernels answer a direct read that would wait with EAGAIN.
        flags = fcntl.fcntl(fd, fcntl.F_GETFL) & ~os.O_NONBLOCK
        try:
            fcntl.fcntl(fd, fcntl.F_SETFL, flags | os.O_DIRECT)
        except OSError:  # EINVAL: a filesystem without direct I/O; read as usual
            pass
        else:
            return DirectFile(fd, "rb")
    return RegularFile(fd, size)


def _starts_cached(fd: int) -> bool:
    """Whether the file's first page is in the page cache: read without waiting for the disk
    (RWF_NOWAIT), or asked of a system that cannot tell."""
    try:
        os.preadv(fd, [bytearray(_PROBE)], 0, os.RWF_NOWAIT)
    except BlockingIOError:
        return False
    except (OSError, AttributeError):
        return True
    return True
