"""What a plugin registers to add a backup source: its name, its flags, a reader and a writer.

A source turns *its* world (a directory tree, a mailbox, …) into a tree of nodes with metadata
and content streams, and writes such a tree back. The engine does everything else: chunking,
deduplication, encryption, trees and manifests. A source never sees packs, chunks or keys.
"""

from __future__ import annotations

import errno
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, BinaryIO, NamedTuple, Protocol

import click

FILE, DIR, SYMLINK = "file", "dir", "symlink"


#: What writing one item may raise: OSError, or for a value no system call takes (a mode or
#: an owner out of range, a NUL in a symlink target: a damaged tree) OverflowError or
#: ValueError. Each is that item's failure, reported; the restore goes on.
ITEM_ERRORS = (OSError, OverflowError, ValueError)
#: But for a full destination, which would fail every item after it the same way: a writer
#: raises that OSError (naming the item) instead of reporting it, and the restore stops.
_NO_SPACE = {errno.ENOSPC, errno.EDQUOT}


def no_space(error: BaseException) -> bool:
    """Whether `error` says the destination is full (no space left, or the quota reached)."""
    return isinstance(error, OSError) and error.errno in _NO_SPACE


def reason(error: Exception) -> str:
    """What to say of one of ITEM_ERRORS."""
    return error.strerror if isinstance(error, OSError) and error.strerror else str(error)


class Metadata(NamedTuple):
    """What a backup records about one node besides its content.

    Names and symlink targets are bytes: whatever the filesystem allows, UTF-8 or not.
    `ctime_ns`, `inode`, `dev` and `nlink` serve change detection and hard links, and a
    directory's `dev` and `inode` (this machine's st_dev and st_ino) let a backup leave out the
    repository it writes to; a source without such notions leaves them 0.

    A named tuple, not a dataclass: a backup builds one per item listed and per item of the
    previous backup's trees, and a tuple is built 4x faster (0.26 against 1.2 us).
    """

    kind: str  # FILE, DIR or SYMLINK
    mode: int = 0o644  # permission bits, including setuid/setgid/sticky
    uid: int = 0
    gid: int = 0
    size: int = 0
    mtime_ns: int = 0
    ctime_ns: int = 0
    inode: int = 0
    dev: int = 0
    nlink: int = 1
    target: bytes = b""  # symlinks only


@dataclass(frozen=True)
class Node:
    """One item as the reader found it; `handle` is the reader's own (a path, an API id)."""

    name: bytes
    meta: Metadata
    handle: Any = None


class Content(Protocol):
    """An open content stream; `changed()` says, after reading, whether it moved underneath.

    `meta` is the node's metadata as of the moment it was opened (what the backup records).
    The engine reads `file` into page-aligned memory, 4096 bytes or a multiple at a time, from
    offsets that are multiples too (repo/chunker.py): a source may open it for direct I/O, as
    the files source does (sources/files/direct_reads.py).
    """

    file: BinaryIO
    meta: Metadata

    def changed(self) -> str | None:
        """None if the item is as it was when listed, else why it is not (for the report)."""

    def close(self) -> None: ...


class Report(Protocol):
    """Where a reader or writer tells about one item; the run goes on with the rest."""

    def warning(self, path: bytes, message: str) -> None:
        """Something left out on purpose (a socket, a FIFO); the run is still complete."""

    def error(self, path: bytes, message: str) -> None:
        """Something that should have been copied and was not; the run ends "incomplete"."""


class SourceReader(Protocol):
    def roots(self) -> list[Node]:
        """The top-level nodes of the backup, with distinct names."""

    def children(self, node: Node) -> list[Node]:
        """A directory's nodes sorted by name; unreadable ones are reported and left out."""

    def open(self, node: Node) -> Content | None:
        """The content of a FILE node, or None after reporting why it cannot be read.

        The engine opens a few files ahead of the one it reads (and closes each), so a
        source may start fetching a file's content here."""


class SourceWriter(Protocol):
    """Writes a restored tree; paths are tuples of name components below the destination.

    The methods that make an item say how it went, for the restore's counts: True if it was
    made (under another name too), None if the collision policy left it out on purpose,
    False if it could not be made, after reporting why as an error.
    """

    def make_dir(self, path: tuple[bytes, ...], meta: Metadata) -> bool | None:
        """Create (or reuse) a directory: True, None or False; nothing goes below it unless
        True."""

    def make_symlink(self, path: tuple[bytes, ...], meta: Metadata) -> bool | None: ...

    def start_file(self, path: tuple[bytes, ...], meta: Metadata) -> Any:
        """Begin a file: a handle for `write` and `finish_file`, or None or False as above."""

    def write(self, handle: Any, offset: int, data: bytes) -> None: ...

    def write_file(self, handle: Any, data: bytes) -> bool | None:
        """A file's whole content at once (a file of one chunk): what `write` then
        `finish_file` do, raising and returning as they do, in fewer steps if it can.
        Optional: a writer without it gets those two calls."""
        self.write(handle, 0, data)
        return self.finish_file(handle)

    def finish_file(self, handle: Any) -> bool | None:
        """Make the fully written file visible under its name, with its metadata: True, or
        None or False if it did not get its name."""

    def discard_file(self, handle: Any) -> None:
        """Drop a file whose content could not be restored; nothing partial stays visible."""

    def link(self, path: tuple[bytes, ...], existing: tuple[bytes, ...]) -> bool | None:
        """Make `path` a hard link to the already restored `existing`: True, None or False."""

    def finish_dir(self, path: tuple[bytes, ...], meta: Metadata) -> None:
        """Apply a directory's metadata, once everything inside it is written."""

    def shown(self, path: tuple[bytes, ...]) -> bytes:
        """How messages name an item: where it is restored, as the writer's own messages
        name it (the files source: its path in the destination), so that the engine's (a
        corrupted chunk) agree with them. Optional: without it, the path below the
        destination."""
        return b"/".join(path)

    def close(self) -> None: ...


@dataclass(frozen=True)
class Source:
    """A backup source as the CLI and the engine see it.

    - `backup_options` / `restore_options`: click options of ``backup create NAME`` and
      ``restore NAME`` (the engine adds the generic ones: --tag, --backup, --path, …).
    - `open_reader(values, report)`: the reader for one backup, from the option values.
    - `open_writer(values, collisions, report)`: the writer for one restore.
    - `describe(values)`: the list of what is backed up, recorded in the manifest as "paths"
      (also how a backup finds the previous backup of the same thing).
    - `warm_up(values)`, optional: called by ``backup create NAME`` before the repository
      opens, to begin work that needs no repository and makes the backup faster (the files
      source has the kernel read its paths' inodes); returns a function that ends it, called
      once the backup is over, however it ended.
    """

    name: str
    description: str
    backup_options: Sequence[click.Option]
    restore_options: Sequence[click.Option]
    open_reader: Callable[[Mapping[str, Any], Report], SourceReader]
    open_writer: Callable[[Mapping[str, Any], str, Report], SourceWriter]
    describe: Callable[[Mapping[str, Any]], list[str]]
    collisions: Sequence[str] = field(default=("skip", "copy", "replace"))
    warm_up: Callable[[Mapping[str, Any]], Callable[[], None]] | None = None
