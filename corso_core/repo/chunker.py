"""Content-defined chunking parameters; cut points are part of the repository format."""

from __future__ import annotations

import functools
import mmap
import os
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from typing import BinaryIO

from corso_core.errors import CorsoError, UnsupportedFormat

#: Test-only: a smaller average chunk size (bytes) for new repositories, recorded in the format
#: blob like any other setting. Never set it for real backups.
TEST_CHUNK_SIZE_ENV = "CORSO_TEST_CHUNK_SIZE"

#: The recorded `seed` of a keyed chunker: its gear seed is Keys.chunker_seed, derived from the
#: master key, so cut points (which blob sizes reflect) follow from the content only for
#: whoever holds the key.
KEYED_SEED = "keyed-v1"


@dataclass(frozen=True)
class ChunkerParams:
    """The chunker settings the format blob records (in plaintext: no secret among them)."""

    algorithm: str
    min_size: int
    avg_size: int
    max_size: int
    #: How the gear seed is chosen: KEYED_SEED, or None (repositories made before keyed
    #: chunking, whose blob has no such field): seed 0, pyfastcdc's reference gear table.
    seed: str | None = None

    @classmethod
    def for_new_repository(cls) -> ChunkerParams:
        avg = int(os.environ.get(TEST_CHUNK_SIZE_ENV) or 1024 * 1024)
        return cls(algorithm="fastcdc-2020", min_size=avg // 4, avg_size=avg, max_size=avg * 4,
                   seed=KEYED_SEED)

    def as_dict(self) -> dict:
        """As recorded: without `seed` when there is none, as the blob was written then."""
        return {k: v for k, v in asdict(self).items() if k != "seed" or v is not None}

    def chunker(self, keyed_seed: int) -> Chunker:
        """What cuts in a repository whose master key gives `keyed_seed` (Keys.chunker_seed)."""
        return Chunker(self, keyed_seed if self.seed == KEYED_SEED else 0)


@dataclass(frozen=True)
class Chunker:
    """Recorded parameters and the gear seed they call for: what cut points depend on.

    The seed is secret in a keyed repository: it is never recorded, logged or shown.
    """

    params: ChunkerParams
    seed: int = field(default=0, repr=False)


#: Bytes read from a file per buffer, as a multiple of the maximum chunk size. Each buffer is a
#: fresh object, so a yielded chunk stays valid for as long as its consumer holds it, and memory
#: is bounded by the chunks in flight, never by the file's size.
_BUFFER_CHUNKS = 2
#: chunk_file reads into memory at offsets that are multiples of this, for lengths that are,
#: from file offsets that are (but at the end of a file): what a file read directly from the
#: disk (O_DIRECT: sources/files/direct_reads.py) asks of a read. A new_read_buffer is a memory
#: map, so its start is aligned too.
READ_ALIGNMENT = 4096


class ChunkerMissing(CorsoError):
    """pyfastcdc's compiled extension is not installed: chunking would be ~100x slower."""


@functools.lru_cache(maxsize=4)
def _fastcdc(chunker: Chunker):
    """A FastCDC instance from the compiled extension, never the pure-Python fallback.

    Made once per chunker (it computes its gear tables) and shared: cutting only reads it.
    The seed is XORed into every entry of the gear table (pyfastcdc 0.3.1, both
    implementations alike; the compiled one takes 0 <= seed < 2**63).
    """
    params = chunker.params
    if params.algorithm != "fastcdc-2020":
        raise UnsupportedFormat(f"unknown chunker algorithm {params.algorithm!r}")
    try:
        from pyfastcdc.cy import FastCDC
    except ImportError:
        raise ChunkerMissing(
            "pyfastcdc's compiled extension (pyfastcdc.cy) is missing; reinstall pyfastcdc==0.3.1"
            " from a wheel for this platform"
        ) from None
    return FastCDC(params.avg_size, min_size=params.min_size, max_size=params.max_size,
                   seed=chunker.seed)


def _read_into(f: BinaryIO, view: memoryview) -> int:
    """Fill `view` from `f` (short reads repeated); the byte count, less only at end of file."""
    filled = 0
    while filled < len(view):
        n = f.readinto(view[filled:])
        if not n:
            break
        filled += n
    return filled


def _size_hint(f: BinaryIO) -> int | None:
    """Bytes left in `f` if it is a regular file, so small files get small buffers."""
    try:
        return os.fstat(f.fileno()).st_size - f.tell()
    except (AttributeError, OSError, ValueError):
        return None


def _block(chunker: Chunker) -> int:
    """Bytes chunked per buffer, at most."""
    return max(_BUFFER_CHUNKS * chunker.params.max_size, 1024 * 1024)


def read_buffer_size(chunker: Chunker) -> int:
    """The size of the buffer chunk_file reads into: a block, and room to align its reads."""
    return _block(chunker) + 2 * READ_ALIGNMENT


def _aligned(n: int, unit: int) -> int:
    return -(-n // unit) * unit


def new_read_buffer(chunker: Chunker) -> mmap.mmap:
    """A buffer for chunk_file to re-use, file after file.

    An anonymous map, not a bytearray (which Python zeroes, making all of it resident): its
    pages take memory only once read into, so a thread that reads only small files keeps a
    small buffer.
    """
    return mmap.mmap(-1, read_buffer_size(chunker), flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)


def chunk_file(chunker: Chunker, f: BinaryIO, buffer: bytearray | mmap.mmap | None = None,
               size: int | None = None) -> Iterator[memoryview]:
    """Content-defined chunks of `f`, in order; together exactly the file's bytes.

    Cut points equal those of chunking the whole file in one buffer: a chunk is only cut where
    at least `max_size` bytes follow it in the buffer, or at the end of the file. Each chunk
    stays valid after the next is produced (another thread may still be hashing it), unless
    `buffer` (see new_read_buffer) is given: it is then read into and re-used, so each chunk
    is valid only until the next is requested. Re-use spares a fresh, zeroed, page-faulted
    buffer per file, all of it done holding the GIL. `size`, the bytes the file should hold
    (as its reader found them), spares asking the file.

    A file of at most `min_size` bytes is one chunk: it is yielded without running the chunker.
    """
    cdc = _fastcdc(chunker)
    params = chunker.params
    block = _block(chunker)
    if buffer is not None and len(buffer) < read_buffer_size(chunker):
        raise ValueError(f"read buffer of {len(buffer)} bytes, "
                         f"{read_buffer_size(chunker)} needed")
    left = _size_hint(f) if size is None else size
    # Only a buffer given is aligned: a new one is a bytearray, a fresh one for each block.
    unit = READ_ALIGNMENT if buffer is not None else 1
    carry = memoryview(b"")
    while True:
        # One byte more than the file should have left: a short read then proves the end.
        want = block if left is None else max(min(block, len(carry) + left + 1), len(carry) + 1)
        # The carry goes just before the aligned place the read begins at (READ_ALIGNMENT).
        start, ask = _aligned(len(carry), unit), _aligned(want - len(carry), unit)
        space = memoryview(bytearray(start + ask) if buffer is None else buffer)
        space[start - len(carry) : start] = carry
        got = _read_into(f, space[start : start + ask])
        filled = len(carry) + got
        at_end = filled < want
        if left is not None:
            # a file that grew past what it should hold is read on at full blocks
            left = left - got if left > got else None
        view = space[start - len(carry) : start + got]
        if at_end and filled <= params.min_size:
            if filled:
                yield view
            return
        consumed = 0
        for chunk in cdc.cut_buf(view):
            if not at_end and filled - chunk.offset < params.max_size:
                break  # this cut only saw a truncated window: redo it in the next buffer
            yield chunk.data
            consumed = chunk.offset + chunk.length
        if at_end:
            return
        carry = view[consumed:]
