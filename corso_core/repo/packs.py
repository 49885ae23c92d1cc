"""Pack blobs: many encrypted chunks in one object, with an encrypted header at the end.

Layout (see docs/format.md):

    entry 0 || entry 1 || ... || sealed header || header length (u32, little-endian)

Each entry is `seal(keys.data, compress(chunk), associated=chunk ID)`, sealed straight into the
pack's buffer. The header lists (chunk ID, entry length) in order, so offsets are the running
sum; it is sealed with the metadata key and bound to the pack's kind and name. Readers fetch
the header with one suffix-range GET; the index normally makes even that unnecessary.
"""

from __future__ import annotations

import mmap
import struct
from collections.abc import Iterator
from typing import NamedTuple

from corso_core.errors import Corrupted
from corso_core.repo import compression, names
from corso_core.repo.crypto import (
    OVERHEAD,
    Keys,
    metadata_associated_data,
    seal,
    seal_into,
    unseal,
)
from corso_core.storage.interface import BlobStorage

#: Packs are closed once they reach this size: few requests per GB, little memory per pack.
TARGET_PACK_SIZE = 16 * 1024 * 1024
#: A pack buffer's size: the target, plus the largest chunk allowed, plus room for a header.
#: It is address space only: pages are backed by memory once written.
PACK_BUFFER_SIZE = TARGET_PACK_SIZE + compression.MAX_CHUNK_SIZE + 1024 * 1024
_MAGIC = b"CPK1"
_ENTRY = struct.Struct("<32sI")
_TRAILER = struct.Struct("<I")
#: What one suffix GET asks for when the entry count is unknown (repair, verify without index).
_HEADER_GUESS = 64 * 1024


#: A chunk's plaintext: bytes, or a view into its decrypted payload (compression.decompress).
Plaintext = bytes | memoryview


class PackEntry(NamedTuple):
    chunk_id: bytes
    offset: int
    length: int


def open_chunk(keys: Keys, chunk_id: bytes, entry: bytes | memoryview) -> Plaintext:
    """The chunk's plaintext; Corrupted naming the chunk if anything fails to authenticate."""
    what = f"chunk {chunk_id.hex()}"
    return compression.decompress(unseal(keys.data, entry, chunk_id, what), what)


def _header_associated_data(kind: str, name: str) -> bytes:
    return metadata_associated_data(f"{kind}-pack-header", name)


def header_size(entries: int) -> int:
    """Bytes of sealed header plus trailer for a pack of `entries` chunks."""
    return len(_MAGIC) + entries * _ENTRY.size + OVERHEAD + _TRAILER.size


class PackWriter:
    """Collects sealed entries of one pack in one buffer until it is full, then gives the blob.

    The buffer (from a BufferPool, buffers.py) becomes the blob itself: no second copy of the
    pack is made. The entries are kept as the header lists them, 36 bytes each, from which
    `entries` derives their offsets: the store keeps a stored pack's writer until an index blob
    lists it, and a PackEntry per chunk took ~160 bytes (200,000 small files: 31 MiB).
    """

    def __init__(self, kind: str, buffer: mmap.mmap | bytearray) -> None:
        self.kind = kind
        self.name = names.new_pack_name()
        self.buffer: mmap.mmap | bytearray | None = buffer  # None once given up
        self.size = 0
        self._header = bytearray(_MAGIC)  # the header's plaintext, an entry at a time

    def entries(self) -> Iterator[PackEntry]:
        """The entries, in pack order."""
        offset = 0
        for chunk_id, length in _ENTRY.iter_unpack(memoryview(self._header)[len(_MAGIC) :]):
            yield PackEntry(chunk_id, offset, length)
            offset += length

    def _room(self, length: int) -> memoryview:
        """The next `length` bytes of the buffer, grown if needed (only a header larger than
        the pool expects, or a test's small buffer)."""
        end = self.size + length
        if end > len(self.buffer):
            grown = bytearray(self.buffer[: self.size])
            grown.extend(bytes(end - self.size))
            self.buffer = grown
        return memoryview(self.buffer)[self.size : end]

    def _append(self, data: bytes) -> None:
        self._room(len(data))[:] = data
        self.size += len(data)

    def add(self, chunk_id: bytes, sealed: bytes) -> PackEntry:
        """An entry sealed already (maintenance copies entries from pack to pack)."""
        entry = PackEntry(chunk_id, self.size, len(sealed))
        self._header += _ENTRY.pack(chunk_id, entry.length)
        self._append(sealed)
        return entry

    def add_chunk(self, keys: Keys, chunk_id: bytes, payload: bytes) -> PackEntry:
        """Seal a chunk's payload (compression.compress's) straight into the pack."""
        with self._room(len(payload) + OVERHEAD) as room:
            length = seal_into(keys.data, payload, chunk_id, room)
        entry = PackEntry(chunk_id, self.size, length)
        self._header += _ENTRY.pack(chunk_id, length)
        self.size += length
        return entry

    def give_up_buffer(self) -> mmap.mmap | bytearray:
        """The buffer, for re-use once the blob is stored: the writer keeps only its entries."""
        buffer, self.buffer = self.buffer, None
        return buffer

    def full(self) -> bool:
        return self.size >= TARGET_PACK_SIZE

    def finish(self, keys: Keys) -> memoryview:
        """The whole pack blob: a view of the buffer, valid until the buffer is re-used."""
        header = seal(keys.metadata, self._header, _header_associated_data(self.kind, self.name))
        self._append(header)
        self._append(_TRAILER.pack(len(header)))
        return memoryview(self.buffer)[: self.size]


def decode_header(keys: Keys, kind: str, name: str, tail: bytes, *,
                  whole_blob: bool) -> list[PackEntry] | int:
    """The entries from a pack's last bytes, or how many last bytes are needed if `tail` is short.

    With `whole_blob` the tail is the entire pack, and its size is checked against the entries.
    Anything malformed or unauthenticated raises Corrupted naming the pack.
    """
    what = f"{kind} pack {name}"
    if len(tail) < _TRAILER.size:
        raise Corrupted(f"{what} is corrupted: {len(tail)} bytes is too short for a pack")
    (sealed_size,) = _TRAILER.unpack_from(tail, len(tail) - _TRAILER.size)
    needed = sealed_size + _TRAILER.size
    if needed > len(tail):
        if whole_blob:
            raise Corrupted(f"{what} is corrupted: header length {sealed_size} exceeds the pack")
        return needed
    sealed = memoryview(tail)[len(tail) - needed : len(tail) - _TRAILER.size]
    plain = unseal(keys.metadata, sealed, _header_associated_data(kind, name), f"{what} header")
    body = len(plain) - len(_MAGIC)
    if not plain.startswith(_MAGIC) or body % _ENTRY.size:
        raise Corrupted(f"{what} is corrupted: malformed header")
    entries, offset = [], 0
    for chunk_id, length in _ENTRY.iter_unpack(memoryview(plain)[len(_MAGIC) :]):
        entries.append(PackEntry(chunk_id, offset, length))
        offset += length
    if whole_blob and offset + needed != len(tail):
        raise Corrupted(f"{what} is corrupted: entries and header do not add up to its size")
    return entries


def read_header(storage: BlobStorage, keys: Keys, kind: str, name: str,
                entries_hint: int | None = None) -> list[PackEntry]:
    """A pack's entries from its header: one suffix-range GET when the hint is right, else two."""
    key = names.key(kind, name)
    want = header_size(entries_hint) if entries_hint is not None else _HEADER_GUESS
    for _attempt in range(2):
        tail = storage.get_tail(key, want)
        result = decode_header(keys, kind, name, tail, whole_blob=len(tail) < want)
        if not isinstance(result, int):
            return result
        want = result
    raise Corrupted(f"{kind} pack {name} is corrupted: its header length is inconsistent")
