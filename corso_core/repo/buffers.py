"""Large buffers kept for re-use: the packs a backup fills, the ranges a restore receives.

Each is an anonymous memory map. A map costs memory only for the pages written (a small pack
stays small, however large the buffer), and going back to the OS when closed it never leaves
the C allocator holding freed 20 MiB blocks across threads. Re-use saves the page faults of
fresh memory: a restore receiving every range into new bytes faulted in 66,000 pages (0.1 s of
system time) and its peak memory rose and fell with where the allocator found room.
"""

from __future__ import annotations

import mmap
import threading


class BufferPool:
    """Buffers of one size: `take` one (a kept one, else a new map), `give` it back when done
    with it; at most `keep` are kept, the rest closed."""

    def __init__(self, size: int, keep: int) -> None:
        self.size, self._keep = size, keep
        self._free: list[mmap.mmap] = []
        self._lock = threading.Lock()

    def take(self) -> mmap.mmap:
        with self._lock:
            if self._free:
                return self._free.pop()
        return mmap.mmap(-1, self.size)

    def give(self, buffer: object) -> None:
        """Keep a buffer of this pool for the next `take`. Anything else (a pack buffer that
        had to grow, bytes read another way) is left to the garbage collector."""
        if not isinstance(buffer, mmap.mmap) or len(buffer) != self.size:
            return
        with self._lock:
            if len(self._free) < self._keep:
                self._free.append(buffer)
                return
        try:
            buffer.close()
        except BufferError:  # a view of it is still alive: it closes when that goes
            pass
