"""The union of index blobs as upkeep needs it, compact enough for millions of chunks.

Upkeep asks two questions of the index: where is this chunk (all its copies), and what does
this pack hold. Dicts of bytes keys answered both at ~480 bytes a chunk (0.5 GB at a million
chunks); here the first copy of each chunk sits in the data layer's ChunkIndex (one bytearray,
~65-95 bytes a chunk), each pack's entries in a bytearray of fixed 40-byte records, and only
the rare further copies of a chunk (two backups that wrote it at once) in a dict.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from corso_core.repo.index import ChunkIndex, IndexEntry, Location
from corso_core.repo.plans import Plan

PackRef = tuple[str, str]  # (kind, name)
_RECORD = struct.Struct("<32sII")  # chunk ID, offset, length


class ChunkMap:
    """Where every chunk is, and what every pack holds according to the index."""

    def __init__(self) -> None:
        self._first = ChunkIndex()
        self._more: dict[bytes, list[Location]] = {}
        self._packs: dict[PackRef, bytearray] = {}

    @classmethod
    def of(cls, entry_lists: Iterable[Sequence[IndexEntry]]) -> ChunkMap:
        union = cls()
        union.update(entry_lists)
        return union

    def update(self, entry_lists: Iterable[Sequence[IndexEntry]]) -> None:
        for entries in entry_lists:
            for chunk_id, location in entries:
                self.add(chunk_id, location)

    def add(self, chunk_id: bytes, location: Location) -> None:
        """Record a copy of the chunk; a copy in a pack already recorded is ignored."""
        ref = (location.kind, location.pack)
        if not self._first.add(chunk_id, location):
            if ref in {(known.kind, known.pack) for known in self.locations(chunk_id)}:
                return
            self._more.setdefault(chunk_id, []).append(location)
        records = self._packs.setdefault(ref, bytearray())
        records += _RECORD.pack(chunk_id, location.offset, location.length)

    def __contains__(self, chunk_id: bytes) -> bool:
        return chunk_id in self._first

    def locations(self, chunk_id: bytes) -> list[Location]:
        """Every copy of the chunk, the first indexed first; [] if it is not indexed."""
        first = self._first.get(chunk_id)
        return [] if first is None else [first, *self._more.get(chunk_id, ())]

    def pack_refs(self) -> Iterable[PackRef]:
        return self._packs.keys()

    def has_pack(self, ref: PackRef) -> bool:
        return ref in self._packs

    def pack_entries(self, ref: PackRef) -> dict[bytes, tuple[int, int]]:
        """chunk ID -> (offset, length) of the pack's indexed entries ({} if none)."""
        return {chunk_id: (offset, length)
                for chunk_id, offset, length in _RECORD.iter_unpack(self._packs.get(ref, b""))}

    def index_entries(self, ref: PackRef) -> list[IndexEntry]:
        return [IndexEntry(chunk_id, Location(*ref, offset, length))
                for chunk_id, (offset, length) in self.pack_entries(ref).items()]


@dataclass
class Readable:
    """Where backups may be read from: the index, and the entries deletion plans took out of
    it (readable until the plan is finished: docs/format.md, "Maintenance"). Two maps, so the
    large one, the index, is never copied."""

    index: ChunkMap
    planned: ChunkMap

    @classmethod
    def of(cls, index: ChunkMap, plans: dict[str, Plan]) -> Readable:
        return cls(index, ChunkMap.of(plan.entries for plan in plans.values()))

    def locations(self, chunk_id: bytes) -> list[Location]:
        return self.index.locations(chunk_id) + self.planned.locations(chunk_id)

    def packs(self) -> set[PackRef]:
        return set(self.index.pack_refs()) | set(self.planned.pack_refs())

    def entries(self, ref: PackRef) -> dict[bytes, tuple[int, int]]:
        return {**self.planned.pack_entries(ref), **self.index.pack_entries(ref)}
