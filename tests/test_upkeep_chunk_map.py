"""The upkeep index (ChunkMap): every copy of a chunk is found, each pack's entries are kept,
and it stays compact: well under the ~480 bytes a chunk its dicts took (0.5 GB a million)."""

from __future__ import annotations

import gc
import os
import tracemalloc

from corso_core.repo import names
from corso_core.repo.index import IndexEntry, Location, encode_index
from corso_core.upkeep import inventory
from corso_core.upkeep.chunk_map import ChunkMap, Readable
from corso_core.upkeep.inventory import list_blobs, load_index

DATA, TREE = names.DATA_PACK, names.TREE_PACK
PACK_A, PACK_B = "a" * 32, "b" * 32


def test_every_copy_of_a_chunk_and_every_entry_of_a_pack():
    chunk, other = b"\x01" * 32, b"\x02" * 32
    union = ChunkMap.of([
        [IndexEntry(chunk, Location(DATA, PACK_A, 0, 10)),
         IndexEntry(other, Location(DATA, PACK_A, 10, 20))],
        # a second index blob: the same entry again (ignored), and a copy in another pack
        [IndexEntry(chunk, Location(DATA, PACK_A, 0, 10)),
         IndexEntry(chunk, Location(TREE, PACK_B, 5, 10))],
    ])
    assert union.locations(chunk) == [Location(DATA, PACK_A, 0, 10), Location(TREE, PACK_B, 5, 10)]
    assert union.locations(b"\x03" * 32) == [] and b"\x03" * 32 not in union and other in union
    assert sorted(union.pack_refs()) == [(DATA, PACK_A), (TREE, PACK_B)]
    assert union.pack_entries((DATA, PACK_A)) == {chunk: (0, 10), other: (10, 20)}
    assert union.index_entries((TREE, PACK_B)) == [IndexEntry(chunk, Location(TREE, PACK_B, 5,
                                                                                10))]
    assert union.pack_entries((DATA, PACK_B)) == {} and not union.has_pack((DATA, PACK_B))

    planned = ChunkMap.of([[IndexEntry(other, Location(DATA, PACK_B, 0, 20))]])
    readable = Readable(union, planned)
    assert readable.locations(other) == [Location(DATA, PACK_A, 10, 20),
                                         Location(DATA, PACK_B, 0, 20)]
    assert readable.packs() == {(DATA, PACK_A), (TREE, PACK_B), (DATA, PACK_B)}
    assert readable.entries((DATA, PACK_B)) == {other: (0, 20)}


def entries(count: int, per_pack: int = 250) -> list[IndexEntry]:
    return [IndexEntry(os.urandom(32), Location(DATA, (i // per_pack).to_bytes(16, "big").hex(),
                                                (i % per_pack) * 4000, 4000))
            for i in range(count)]


def test_bytes_per_chunk_stay_small():
    """Measured as what stays allocated once the decoded entries are gone: ~125 B a chunk
    (the dicts it replaced: ~480)."""
    count = 20_000
    gc.collect()
    tracemalloc.start()
    try:
        blobs = [entries(count // 2), entries(count // 2)]
        union = ChunkMap.of(blobs)
        del blobs
        gc.collect()
        held, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert sum(len(union.pack_entries(ref)) for ref in union.pack_refs()) == count
    assert held / count < 160, held / count


def test_load_index_folds_blobs_in_batches_and_names_their_packs(repository, monkeypatch):
    """load_index reads index blobs a batch at a time into one map, keeping which packs each
    blob lists; a damaged blob is named, the others still read."""
    monkeypatch.setattr(inventory, "INDEX_BATCH_BYTES", 1)  # one blob a batch
    blobs = {names.index_name(names.new_short_id(), 0): entries(3),
             names.index_name(names.new_short_id(), 0): entries(2, per_pack=1)}
    for name, blob in blobs.items():
        repository.storage.put_new(names.key(names.INDEX, name),
                                   encode_index(repository.keys, name, blob))
    damaged_name = names.index_name(names.new_short_id(), 0)
    repository.storage.put_new(names.key(names.INDEX, damaged_name), b"not sealed")
    listing = list_blobs(repository.storage, (names.INDEX,))[names.INDEX]
    union, packs_by_blob, damaged = load_index(repository, listing)
    assert list(damaged) == [damaged_name]
    for name, blob in blobs.items():
        assert packs_by_blob[name] == {(DATA, e.location.pack) for e in blob}
        for chunk_id, location in blob:
            assert union.locations(chunk_id) == [location]
