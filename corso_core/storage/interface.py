"""The blob-storage interface: what a backend must do, and nothing about what the blobs mean.

A repository is a flat namespace of immutable-ish blobs addressed by key ("data/ab/abcd…").
Backends only move bytes; encryption, packing and indexing live above them. Keys use `/` as a
separator, never start or end with it and never contain `//` (S3-compatible stores that map
keys to file paths mangle those).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Collection, Iterator
from dataclasses import dataclass, field
from typing import Any

from corso_core.errors import AlreadyExists

Bytes = bytes | bytearray | memoryview


@dataclass(frozen=True)
class BlobInfo:
    """What the storage says about one blob.

    `mtime` is the storage's own clock (seconds since the epoch), never the client's: safety
    windows in maintenance compare these against each other, not against local time.
    """

    key: str
    size: int
    mtime: float


@dataclass
class RequestCounts:
    """Requests and bytes by kind, so users see what a command cost on metered storage."""

    requests: dict[str, int] = field(default_factory=dict)
    bytes_up: int = 0
    bytes_down: int = 0

    def count(self, kind: str, up: int = 0, down: int = 0) -> None:
        self.requests[kind] = self.requests.get(kind, 0) + 1
        self.bytes_up += up
        self.bytes_down += down

    def as_dict(self) -> dict:
        return {
            "requests": dict(sorted(self.requests.items())),
            "bytes_up": self.bytes_up,
            "bytes_down": self.bytes_down,
        }


def copied_into(buffer: memoryview, data: bytes) -> int:
    """`data` (at most `buffer`'s length, as a read of that many gives) copied to the start of
    `buffer`; its length: `get_into` done with a read that returned new bytes."""
    buffer[: len(data)] = data
    return len(data)


class BlobStorage(ABC):
    """Blobs by key. Implementations map their own errors to `corso_core.errors` exceptions.

    Methods may be called from several threads at once. A backend whose calls are one request
    each subclasses `SimpleBlobStorage` (storage/simple.py), which counts them and supplies
    defaults; one that counts its own requests (corso-s3) implements this class directly.
    """

    #: Whether `put_new` is atomic against a concurrent writer of the same key (the filesystem:
    #: yes, through os.link; S3: yes where the store honours If-None-Match).
    atomic_create: bool = False
    #: Writes a writer should keep in flight. Object storage overlaps requests (each one's
    #: latency, not the bandwidth, bounds a single stream); a local disk gains nothing from a
    #: second, and every write in flight holds a pack buffer (~17 MiB) in memory.
    concurrent_writes: int = 3
    #: Bytes a reader asks for in one request, at most. Object storage charges and waits per
    #: request: a whole pack (16-20 MiB) in one. Every byte of a read is held in memory while
    #: its chunks are handed on, so where requests are cheap (a local disk) reads are smaller.
    largest_read: int = 24 * 1024 * 1024

    def __init__(self) -> None:
        self.counts = RequestCounts()

    @property
    def local_root(self) -> str | None:
        """The directory on this machine that holds the blobs, if there is one (the filesystem
        backend's root); None for remote storage (this default). A backup leaves that directory
        out when its source reaches it: it would store the repository in itself, growing it by
        every earlier backup each time, and read packs as they are being written. A restore
        queues fewer small chunks ahead from it, as reads there cost little (small_chunks.py)."""
        return None

    @abstractmethod
    def location(self) -> str:
        """Where the blobs live, for messages: a path or s3://bucket/prefix."""

    @abstractmethod
    def put(self, key: str, data: Bytes) -> None:
        """Store `data` under `key`, replacing any blob there; no reader sees a partial blob."""

    @abstractmethod
    def _create(self, key: str, data: Bytes) -> None:
        """Store `data` under `key` only if no blob is there; else raise AlreadyExists."""

    def put_new(self, key: str, data: Bytes) -> None:
        """Create-only put.

        A blob already there with the same bytes counts as success: that is what a retry after a
        lost response finds, and it is not a conflict. Different bytes raise AlreadyExists.
        """
        try:
            self._create(key, data)
        except AlreadyExists:
            if self.get(key) != bytes(data):
                raise

    @abstractmethod
    def get(self, key: str, offset: int = 0, length: int | None = None) -> bytes:
        """The blob's bytes: whole, or `length` bytes from `offset` (fewer at the end)."""

    def get_into(self, key: str, offset: int, buffer: memoryview) -> int:
        """Bytes of the blob from `offset` into `buffer`, as many as it has room for (fewer at
        the blob's end); how many. For readers that re-use their buffers (a restore's ranges):
        a backend that receives straight into the buffer saves a copy, and the memory and page
        faults of new bytes. This default copies what `get` returns."""
        return copied_into(buffer, self.get(key, offset, len(buffer)))

    @abstractmethod
    def get_tail(self, key: str, length: int) -> bytes:
        """The last `length` bytes of the blob (the whole blob if it is shorter): one request."""

    def read_ahead(self, key: str, offset: int, length: int) -> None:  # noqa: B027
        """A hint: `length` bytes from `offset` will be read soon. A local disk starts reading
        them into the page cache meanwhile; storage where that buys nothing ignores it (this
        do-nothing default)."""

    @abstractmethod
    def stat(self, key: str) -> BlobInfo:
        """Size and storage mtime of one blob; NotFound if it is absent."""

    @abstractmethod
    def list(self, prefix: str = "") -> Iterator[BlobInfo]:
        """Every blob whose key starts with `prefix`, in no particular order."""

    @abstractmethod
    def delete(self, key: str) -> None:
        """Remove the blob. Deleting a blob that is not there is not an error."""

    def retained_until(self, key: str) -> float | None:
        """When the blob's write protection (S3 Object Lock retention) ends, on the storage's
        clock; None if it has none. Maintenance deletes a pack only once this has passed."""
        return None

    def extend_retention(self, key: str) -> bool:
        """Protect the blob again for the repository's retention period, from now, if the
        repository asked for that (S3's --extend-retention); whether it did. Maintenance calls
        it for the blobs the backups use, so they stay protected while in use."""
        return False

    def check_new_location(self, repository_keys: Collection[str]) -> None:  # noqa: B027
        """Called by `repo init` before it creates a repository: raise UsageError, naming the
        location, if it holds something other than a corso repository (one of
        `repository_keys` present means a repository, which init then finds). Backends that
        cannot tell keep this do-nothing default."""

    def cleanup(self, older_than_seconds: float) -> int:
        """Remove leftovers of interrupted writes older than the given age; returns how many.

        Backends whose writes leave nothing behind (no temp files, no multipart uploads) keep
        this default.
        """
        return 0

    def discovered_settings(self) -> dict[str, Any]:
        """Connection settings the storage found out as it opened (an S3 bucket's region), by
        option name: `repo init` and `repo connect` save them with the connection, so later
        commands open without asking again. Backends that find out nothing keep this default."""
        return {}

    def close(self) -> None:  # noqa: B027 (optional hook with a do-nothing default)
        """Release connections and other resources."""
