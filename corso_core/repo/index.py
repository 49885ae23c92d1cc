"""Where each chunk is: index blobs in the repository, and their compact union in memory.

Index blobs are immutable. A backup session writes one every few packs (a checkpoint) and one
when it flushes, each listing only the packs it uploaded since the previous one; the index of
the repository is the union of all index blobs (a chunk found in several packs may be read
from any of them). Maintenance may merge blobs into one, since union is all that matters.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Iterator
from operator import itemgetter
from typing import NamedTuple

from corso_core.errors import Corrupted
from corso_core.repo import names
from corso_core.repo.crypto import OVERHEAD, Keys, metadata_associated_data, seal_into, unseal

_MAGIC = b"CIX1"
_COUNT = struct.Struct("<I")
_PACK = struct.Struct("<B16s")
_ENTRY = struct.Struct("<32sIII")
_PACK_NUMBER = struct.Struct("<32xI8x")  # an entry's pack number alone
_KIND_CODES = {names.DATA_PACK: 0, names.TREE_PACK: 1}
#: Bytes per entry and fixed bytes of an index blob: its size bounds its entry count.
INDEX_ENTRY_SIZE = _ENTRY.size
INDEX_OVERHEAD = len(_MAGIC) + _COUNT.size + OVERHEAD
_KINDS = {code: kind for kind, code in _KIND_CODES.items()}


class Location(NamedTuple):
    """A chunk's sealed entry: which pack, and the byte range inside it."""

    kind: str
    pack: str
    offset: int
    length: int


class IndexEntry(NamedTuple):
    chunk_id: bytes
    location: Location


def pack_index_entries(kind: str, pack: str,
                       entries: Iterable[tuple[bytes, int, int]]) -> Iterator[IndexEntry]:
    """The index entries of a pack's (chunk ID, offset, length) entries."""
    for chunk_id, offset, length in entries:
        yield IndexEntry(chunk_id, Location(kind, pack, offset, length))


def encode_index(keys: Keys, name: str, entries: Iterable[IndexEntry]) -> bytearray:
    """The sealed index blob called `name`, bound to that name.

    The rows go into one buffer, sealed into another: 200,000 entries (a backup of as many
    small files) took 33 MiB more as a bytes object per row and copies of the whole."""
    packs: dict[tuple[str, str], int] = {}
    rows = bytearray()
    for chunk_id, (kind, pack, offset, length) in entries:
        ref = packs.setdefault((kind, pack), len(packs))
        rows += _ENTRY.pack(chunk_id, ref, offset, length)
    pack_table = b"".join(_PACK.pack(_KIND_CODES[k], bytes.fromhex(p)) for k, p in packs)
    plain = bytearray(_MAGIC + _COUNT.pack(len(packs)) + pack_table)
    plain += rows
    del rows
    blob = bytearray(len(plain) + OVERHEAD)
    seal_into(keys.metadata, plain, metadata_associated_data(names.INDEX, name),
              memoryview(blob))
    return blob


class IndexRows(NamedTuple):
    """An index blob read but not decoded: its pack table and its raw entry rows, checked.

    Loading the repository's index inserts the rows as they are (`ChunkIndex.add_rows`): a
    million entries decoded into Python objects first took 2 s more.
    """

    packs: list[tuple[str, str]]  # (kind, pack name), as the rows' pack numbers refer to them
    rows: memoryview  # INDEX_ENTRY_SIZE bytes each: chunk ID, pack number, offset, length


def read_index(keys: Keys, name: str, blob: bytes) -> IndexRows:
    """Open an index blob; Corrupted naming it if it fails authentication or its layout (a
    short or unknown pack table, an entry naming a pack the table does not hold) is wrong."""
    what = f"index {name}"
    plain = memoryview(unseal(keys.metadata, blob, metadata_associated_data(names.INDEX, name),
                              what))
    head = len(_MAGIC) + _COUNT.size
    if len(plain) < head or plain[: len(_MAGIC)] != _MAGIC:
        raise Corrupted(f"{what} is corrupted: not an index")
    (pack_count,) = _COUNT.unpack_from(plain, len(_MAGIC))
    rows_start = head + pack_count * _PACK.size
    if rows_start > len(plain) or (len(plain) - rows_start) % _ENTRY.size:
        raise Corrupted(f"{what} is corrupted: truncated")
    packs = []
    for code, raw_name in _PACK.iter_unpack(plain[head:rows_start]):
        if code not in _KINDS:
            raise Corrupted(f"{what} is corrupted: unknown pack kind {code}")
        packs.append((_KINDS[code], raw_name.hex()))
    rows = plain[rows_start:]
    highest = max(map(itemgetter(0), _PACK_NUMBER.iter_unpack(rows)), default=-1)
    if highest >= pack_count:
        raise Corrupted(f"{what} is corrupted: entry refers to pack {highest} of {pack_count}")
    return IndexRows(packs, rows)


def decode_index(keys: Keys, name: str, blob: bytes) -> list[IndexEntry]:
    """The entries of an index blob; Corrupted naming it if it fails authentication or decoding."""
    packs, rows = read_index(keys, name, blob)
    return [IndexEntry(chunk_id, Location(*packs[ref], offset, length))
            for chunk_id, ref, offset, length in _ENTRY.iter_unpack(rows)]


class ChunkIndex:
    """chunk ID → Location for every chunk of the repository, in about 63–94 bytes per chunk.

    A dict of bytes keys would take ~200 bytes per chunk; instead all entries live in one
    bytearray as an open-addressing hash table (linear probing) of fixed 44-byte slots:
    ID (32) | pack reference + 1 (u32, 0 = empty) | offset (u32) | length (u32).
    Pack names are stored once, in a side table. Not thread-safe: the ChunkStore locks.
    """

    _SLOT = 44
    _MAX_LOAD = 0.7
    _GROWTH = 1.5

    def __init__(self, capacity: int = 1024) -> None:
        self._packs: list[tuple[str, str]] = []
        self._pack_refs: dict[tuple[str, str], int] = {}
        self._count = 0
        self._allocate(capacity)

    def _allocate(self, capacity: int) -> None:
        self._capacity = capacity
        self._table = bytearray(capacity * self._SLOT)
        # The u32 fields of slot i are words 11*i + 8 (pack ref), + 9 (offset), + 10 (length).
        self._words = memoryview(self._table).cast("I")
        self._limit = int(capacity * self._MAX_LOAD)

    def __len__(self) -> int:
        return self._count

    def memory_bytes(self) -> int:
        """Bytes used by the table (pack names are ~100 bytes per pack, a few per GiB)."""
        return len(self._table)

    def reserve(self, count: int) -> None:
        """Room for `count` entries in all: loading many index blobs then resizes at most once."""
        if count > self._limit:
            self._resize(int(count / self._MAX_LOAD) + 1)

    def _probe(self, chunk_id: bytes) -> tuple[int, bool]:
        """(slot, found): the chunk's slot, or the empty slot where it would go."""
        table, words, capacity = self._table, self._words, self._capacity
        slot = hash(chunk_id) % capacity
        while True:
            if words[slot * 11 + 8] == 0:
                return slot, False
            if table.startswith(chunk_id, slot * 44):  # compares in place, no slice copied
                return slot, True
            slot += 1
            if slot == capacity:
                slot = 0

    def __contains__(self, chunk_id: bytes) -> bool:
        return self._probe(chunk_id)[1]

    def get(self, chunk_id: bytes) -> Location | None:
        slot, found = self._probe(chunk_id)
        if not found:
            return None
        words = self._words
        word = slot * 11 + 8
        return Location(*self._packs[words[word] - 1], words[word + 1], words[word + 2])

    def by_pack(self, chunk_ids: Iterable[bytes],
                ) -> tuple[dict[tuple[str, str], list[tuple[bytes, int, int]]], list[bytes]]:
        """get() of many chunks at once: their (chunk ID, offset, length) by (kind, pack), the
        packs in the order their first chunk came, and the IDs not found. No Location is made
        for each (a restore's 15,000 chunks were located in 25 ms, most of its ranges' plan)."""
        probe, words, packs = self._probe, self._words, self._packs
        grouped: dict[int, list[tuple[bytes, int, int]]] = {}
        missing = []
        for chunk_id in chunk_ids:
            slot, found = probe(chunk_id)
            if not found:
                missing.append(chunk_id)
                continue
            word = slot * 11 + 8
            entry = (chunk_id, words[word + 1], words[word + 2])
            entries = grouped.get(words[word])
            if entries is None:
                grouped[words[word]] = [entry]
            else:
                entries.append(entry)
        return {packs[ref - 1]: entries for ref, entries in grouped.items()}, missing

    def add(self, chunk_id: bytes, location: Location) -> bool:
        """Record where a chunk is; False (and no change) if it is already known elsewhere."""
        if len(chunk_id) != 32:
            raise ValueError("chunk IDs are 32 bytes")
        slot, found = self._probe(chunk_id)
        if found:
            return False
        self._write(slot, chunk_id, self._pack_ref(location.kind, location.pack) + 1,
                    location.offset, location.length)
        self._count += 1
        if self._count > self._limit:
            self._resize(int(self._capacity * self._GROWTH))
        return True

    def add_rows(self, index: IndexRows) -> None:
        """Record every entry of a read index blob, as `add` would one by one."""
        refs = [self._pack_ref(kind, pack) + 1 for kind, pack in index.packs]
        self.reserve(self._count + len(index.rows) // _ENTRY.size)
        for chunk_id, ref, offset, length in _ENTRY.iter_unpack(index.rows):
            slot, found = self._probe(chunk_id)
            if not found:
                self._write(slot, chunk_id, refs[ref], offset, length)
                self._count += 1

    def _pack_ref(self, kind: str, pack: str) -> int:
        ref = self._pack_refs.get((kind, pack))
        if ref is None:
            ref = self._pack_refs[kind, pack] = len(self._packs)
            self._packs.append((kind, pack))
        return ref

    def _write(self, slot: int, chunk_id: bytes, ref: int, offset: int, length: int) -> None:
        base = slot * 44
        self._table[base : base + 32] = chunk_id
        word = slot * 11 + 8
        words = self._words
        words[word], words[word + 1], words[word + 2] = ref, offset, length

    def _resize(self, capacity: int) -> None:
        old_table, old_words, old_capacity = self._table, self._words, self._capacity
        self._allocate(capacity)
        for slot in range(old_capacity):
            word = slot * 11 + 8
            ref = old_words[word]
            if ref:
                chunk_id = bytes(old_table[slot * 44 : slot * 44 + 32])
                new_slot, _ = self._probe(chunk_id)
                self._write(new_slot, chunk_id, ref, old_words[word + 1], old_words[word + 2])
        old_words.release()

    def packs(self) -> list[tuple[str, str]]:
        """(kind, name) of every pack an entry is in."""
        return list(self._packs)

    def entries(self) -> Iterator[IndexEntry]:
        """Every entry, in no particular order."""
        for slot in range(self._capacity):
            word = slot * 11 + 8
            ref = self._words[word]
            if ref:
                location = Location(*self._packs[ref - 1], self._words[word + 1],
                                    self._words[word + 2])
                yield IndexEntry(bytes(self._table[slot * 44 : slot * 44 + 32]), location)
