"""Test-only: a process that SIGKILLs itself at a chosen write, for crash tests of whole
commands (`CORSO_TEST_KILL_AFTER_WRITES=N`: the process dies as it starts write N+1, after N
puts, create-only puts and deletes have completed). Nothing runs after the kill: no finally
block, no cleanup thread, exactly as when the machine loses power or the OOM killer strikes.
"""

from __future__ import annotations

import os
import signal
import threading

from corso_core.storage.interface import BlobInfo, BlobStorage, Bytes

KILL_AFTER_WRITES_ENV = "CORSO_TEST_KILL_AFTER_WRITES"


class KillAfterWrites(BlobStorage):
    """Wraps a storage; every write counts, and the one past the limit kills the process."""

    def __init__(self, inner: BlobStorage, writes: int) -> None:
        super().__init__()
        self.inner = inner
        self.counts = inner.counts
        self.atomic_create = inner.atomic_create
        self._writes_left = writes
        self._lock = threading.Lock()

    def _write(self) -> None:
        with self._lock:
            if self._writes_left <= 0:
                os.kill(os.getpid(), signal.SIGKILL)
            self._writes_left -= 1

    def put(self, key: str, data: Bytes) -> None:
        self._write()
        self.inner.put(key, data)

    def _create(self, key: str, data: Bytes) -> None:
        self._write()
        self.inner.put_new(key, data)

    def delete(self, key: str) -> None:
        self._write()
        self.inner.delete(key)

    def location(self) -> str:
        return self.inner.location()

    @property
    def local_root(self) -> str | None:
        return self.inner.local_root

    def get(self, key: str, offset: int = 0, length: int | None = None) -> bytes:
        return self.inner.get(key, offset, length)

    def read_ahead(self, key: str, offset: int, length: int) -> None:
        self.inner.read_ahead(key, offset, length)

    def get_tail(self, key: str, length: int) -> bytes:
        return self.inner.get_tail(key, length)

    def stat(self, key: str) -> BlobInfo:
        return self.inner.stat(key)

    def list(self, prefix: str = ""):
        return self.inner.list(prefix)

    def retained_until(self, key: str) -> float | None:
        return self.inner.retained_until(key)

    def extend_retention(self, key: str) -> bool:
        self._write()
        return self.inner.extend_retention(key)

    def cleanup(self, older_than_seconds: float) -> int:
        return self.inner.cleanup(older_than_seconds)

    def close(self) -> None:
        self.inner.close()


def with_kill_switch(storage: BlobStorage) -> BlobStorage:
    """The storage, wrapped when the test-only environment variable asks for it."""
    writes = os.environ.get(KILL_AFTER_WRITES_ENV)
    return storage if not writes else KillAfterWrites(storage, int(writes))
