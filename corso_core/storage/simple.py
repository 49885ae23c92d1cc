"""`SimpleBlobStorage`: the whole `BlobStorage` interface from four primitives.

For backends over a store that answers each call with one request (a dict, a directory, a
key-value service). A backend writes `_put`, `_get`, `_list` and `_delete`; this class counts
every call in `counts` (so a backend has no counting code) and derives the rest: `stat`,
`get_tail` and `get_into` from the primitives, create-only puts as check-then-write. A backend
overrides `_stat`, `_get_tail`, `_get_into` or `_create` where its store does better in one
request, atomically, or without a copy.

A backend whose one call can be several requests (retries, multipart uploads: corso-s3)
implements `BlobStorage` itself and counts in its request layer.
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Iterable, Iterator
from contextlib import contextmanager

from corso_core.errors import AlreadyExists, NotFound
from corso_core.storage.interface import BlobInfo, BlobStorage, Bytes, copied_into


class SimpleBlobStorage(BlobStorage):
    """A `BlobStorage` that counts each call as one request of its kind."""

    def __init__(self, location: str) -> None:
        super().__init__()
        self._location = location

    def location(self) -> str:
        return self._location

    # --- what a backend writes ----------------------------------------------------------------

    @abstractmethod
    def _put(self, key: str, data: Bytes) -> None:
        """Store `data` under `key`, replacing any blob there; no reader sees a partial blob."""

    @abstractmethod
    def _get(self, key: str, offset: int, length: int | None) -> bytes:
        """`length` bytes from `offset` (all of the rest if None). A missing blob raises
        NotFound, or KeyError(key) as a dict does."""

    @abstractmethod
    def _list(self, prefix: str) -> Iterable[BlobInfo]:
        """Every blob whose key starts with `prefix`."""

    @abstractmethod
    def _delete(self, key: str) -> None:
        """Remove the blob; a blob that is not there is not an error."""

    # --- defaults a backend may replace -------------------------------------------------------

    def _create(self, key: str, data: Bytes) -> None:
        """Check, then write: a concurrent writer of the same key can slip in between, so
        `atomic_create` stays False unless a backend overrides this with an atomic create."""
        try:
            self._stat(key)
        except NotFound:
            self._put(key, data)
            return
        raise AlreadyExists(f"{self.location()}/{key}: already exists")

    def _stat(self, key: str) -> BlobInfo:
        for info in self._list(key):
            if info.key == key:
                return info
        raise NotFound(f"{self.location()}/{key}: not found")

    def _get_tail(self, key: str, length: int) -> bytes:
        return self._get(key, max(0, self._stat(key).size - length), None)

    def _get_into(self, key: str, offset: int, buffer: memoryview) -> int:
        return copied_into(buffer, self._get(key, offset, len(buffer)))

    # --- the interface, counted ---------------------------------------------------------------

    def put(self, key: str, data: Bytes) -> None:
        self._put(key, data)
        self.counts.count("PUT", up=len(data))

    def put_new(self, key: str, data: Bytes) -> None:
        super().put_new(key, data)
        self.counts.count("PUT", up=len(data))

    def get(self, key: str, offset: int = 0, length: int | None = None) -> bytes:
        with self._missing_is_not_found(key):
            data = self._get(key, offset, length)
        self.counts.count("GET", down=len(data))
        return data

    def get_into(self, key: str, offset: int, buffer: memoryview) -> int:
        with self._missing_is_not_found(key):
            received = self._get_into(key, offset, buffer)
        self.counts.count("GET", down=received)
        return received

    def get_tail(self, key: str, length: int) -> bytes:
        with self._missing_is_not_found(key):
            data = self._get_tail(key, length)
        self.counts.count("GET", down=len(data))
        return data

    def stat(self, key: str) -> BlobInfo:
        with self._missing_is_not_found(key):
            info = self._stat(key)
        self.counts.count("HEAD")
        return info

    def list(self, prefix: str = "") -> Iterator[BlobInfo]:
        self.counts.count("LIST")
        return iter(self._list(prefix))

    def delete(self, key: str) -> None:
        self._delete(key)
        self.counts.count("DELETE")

    @contextmanager
    def _missing_is_not_found(self, key: str) -> Iterator[None]:
        """A dict's KeyError for `key`, reported as the NotFound every caller expects."""
        try:
            yield
        except KeyError as e:
            if e.args != (key,):
                raise
            raise NotFound(f"{self.location()}/{key}: not found") from None
