"""A local cache of immutable blobs, so a second backup or a list does not download them again.

It keeps index blobs, tree packs and manifests exactly as stored, still encrypted: what is read
from it is authenticated like anything read from the repository, and a damaged or stale copy
only costs a download. It also keeps the format blob, whose KDF lets a command derive its key
before it opens the storage (cli/connection.py, format.DerivedKey). It lives under
`$CORSO_CACHE_DIR` (else the platformdirs user cache dir) in a directory per repository ID;
deleting it is always safe.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Callable
from typing import TYPE_CHECKING, TypeVar

from corso_core.cache_root import cache_root
from corso_core.errors import Corrupted, StorageError, UsageError

if TYPE_CHECKING:
    from corso_core.storage.interface import BlobStorage

_REPOSITORY_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
log = logging.getLogger(__name__)
T = TypeVar("T")


def cache_directory(repository_id: str, root: str | None = None) -> str:
    """Where a repository's cache is, whether it exists or not."""
    return os.path.join(cache_root(root), repository_id)


def read_cached(repository_id: str, key: str) -> bytes | None:
    """A blob's cached copy, read where BlobCache keeps it (as the filesystem backend lays
    out a key) but without loading that backend and the CLI libraries it brings (click,
    pluggy): the console script reads the cached format blob before they load, so that the
    key's derivation overlaps them (cli/cached_key.py). None if it is not there or unreadable."""
    if not _REPOSITORY_ID.fullmatch(repository_id):
        return None
    try:
        with open(os.path.join(cache_directory(repository_id), *key.split("/")), "rb") as f:
            return f.read()
    except (OSError, ValueError):
        return None


#: The cache directories whose failure this process has reported.
_REPORTED_FAILURES: set[str] = set()


class BlobCache:
    """Blobs by storage key under <cache root>/<repository id>/, written atomically.

    The filesystem backend already writes blobs atomically under a directory: the cache is one.
    Any failure of the cache itself (disk full, read-only) makes it a no-op, and is logged once
    per directory and process (a command makes several BlobCaches for one directory).
    """

    def __init__(self, repository_id: str, root: str | None = None) -> None:
        if not _REPOSITORY_ID.fullmatch(repository_id):
            raise ValueError(f"invalid repository ID {repository_id!r}")
        from corso_core.storage.filesystem import FilesystemStorage  # see read_cached

        self.directory = cache_directory(repository_id, root)
        self._enabled = True
        try:
            self._blobs = FilesystemStorage(self.directory)
        except UsageError:  # a file where the directory should be
            self._failed(StorageError(f"{self.directory} is a file, not a directory"))

    @property
    def enabled(self) -> bool:
        return self._enabled

    def _failed(self, error: StorageError) -> None:
        if self._enabled and self.directory not in _REPORTED_FAILURES:
            _REPORTED_FAILURES.add(self.directory)
            log.warning("local cache %s disabled: %s", self.directory, error)
        self._enabled = False

    def get(self, key: str, offset: int = 0, length: int | None = None) -> bytes | None:
        if not self._enabled:
            return None
        try:
            return self._blobs.get(key, offset, length)
        except StorageError:
            return None

    def has(self, key: str) -> bool:
        """Whether the blob is here (reading it then costs no request)."""
        if not self._enabled:
            return False
        try:
            self._blobs.stat(key)
        except StorageError:
            return False
        return True

    def put(self, key: str, data: bytes) -> None:
        if self._enabled:
            try:
                self._blobs.put(key, data)
            except StorageError as e:
                self._failed(e)

    def discard(self, key: str) -> None:
        if not self._enabled:
            return
        try:
            self._blobs.delete(key)
        except StorageError as e:
            self._failed(e)

    def keys(self, prefix: str) -> set[str]:
        if not self._enabled:
            return set()
        try:
            return {info.key for info in self._blobs.list(prefix)}
        except StorageError:
            return set()

    def fetch(self, storage: BlobStorage, key: str, decode: Callable[[bytes], T]) -> T:
        """decode(the cached copy), else decode(the stored blob), which is then cached.

        A cached copy that fails to decode is dropped and the blob downloaded again: only a
        blob that fails as stored is reported as Corrupted.
        """
        cached = self.get(key)
        if cached is not None:
            try:
                return decode(cached)
            except Corrupted:
                log.info("cached copy of %s is damaged; downloading it again", key)
                self.discard(key)
        blob = storage.get(key)
        value = decode(blob)
        self.put(key, blob)
        return value
