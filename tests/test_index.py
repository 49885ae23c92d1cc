import os
import random
import re

import pytest

from corso_core.errors import Corrupted
from corso_core.repo import names
from corso_core.repo.crypto import Keys, metadata_associated_data, seal
from corso_core.repo.index import (
    ChunkIndex,
    IndexEntry,
    Location,
    decode_index,
    encode_index,
    read_index,
)

KEYS = Keys.derive(b"k" * 32)
FILESYSTEM_KEY_RULE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*(/[A-Za-z0-9][A-Za-z0-9._-]*)*")


def random_entries(count: int, seed: int = 1) -> list[IndexEntry]:
    rng = random.Random(seed)
    packs = [names.new_pack_name() for _ in range(max(1, count // 16))]
    return [IndexEntry(rng.randbytes(32),
                       Location(rng.choice(names.PACK_KINDS), rng.choice(packs),
                                rng.randrange(2**31), rng.randrange(1, 2**24)))
            for _ in range(count)]


def test_index_agrees_with_a_dict_through_many_resizes():
    entries = random_entries(20000)
    index = ChunkIndex(capacity=8)
    for chunk_id, location in entries:
        assert index.add(chunk_id, location)
    assert len(index) == len(entries)
    for chunk_id, location in entries:
        assert chunk_id in index and index.get(chunk_id) == location
    absent = os.urandom(32)
    assert absent not in index and index.get(absent) is None
    assert sorted(index.entries()) == sorted(entries)


def test_by_pack_groups_what_get_finds_in_the_order_its_packs_come_and_names_the_rest():
    entries = random_entries(5000)
    index = ChunkIndex(capacity=8)
    for chunk_id, location in entries:
        index.add(chunk_id, location)
    absent = [os.urandom(32) for _ in range(3)]
    asked = [chunk_id for chunk_id, _ in entries[::2]] + absent
    random.Random(2).shuffle(asked)
    grouped, missing = index.by_pack(asked)
    assert sorted(missing) == sorted(absent)
    expected: dict = {}
    for chunk_id in asked:
        if (at := index.get(chunk_id)) is not None:
            expected.setdefault((at.kind, at.pack), []).append((chunk_id, at.offset, at.length))
    assert list(grouped.items()) == list(expected.items())  # packs and entries in asked order


def test_the_first_location_of_a_chunk_wins():
    index = ChunkIndex()
    first, second = Location("data", "a" * 32, 0, 10), Location("data", "b" * 32, 5, 10)
    assert index.add(b"x" * 32, first)
    assert not index.add(b"x" * 32, second)
    assert index.get(b"x" * 32) == first and len(index) == 1


def test_adding_a_blob_s_rows_is_adding_its_entries_one_by_one():
    """add_rows (the index loader's path) against add: the same entries, the same locations,
    a chunk already known (from an earlier blob or earlier in the same blob) kept where it was
    first found, and the table grown as needed from a tiny start."""
    earlier, entries = random_entries(300, seed=2), random_entries(3000, seed=3)
    moved = [IndexEntry(chunk_id, Location("data", "c" * 32, 1, 2))
             for chunk_id, _ in earlier[:100] + entries[:100]]
    blobs = [encode_index(KEYS, "first", earlier), encode_index(KEYS, "second", entries + moved)]
    one_by_one, by_rows = ChunkIndex(capacity=8), ChunkIndex(capacity=8)
    for name, blob in zip(["first", "second"], blobs, strict=True):
        for chunk_id, location in decode_index(KEYS, name, blob):
            one_by_one.add(chunk_id, location)
        by_rows.add_rows(read_index(KEYS, name, blob))
    assert len(by_rows) == len(one_by_one) == 3300
    assert sorted(by_rows.entries()) == sorted(one_by_one.entries()) == sorted(earlier + entries)


def test_index_takes_at_most_100_bytes_per_chunk():
    index = ChunkIndex()
    for chunk_id, location in random_entries(50_000):
        index.add(chunk_id, location)
    assert index.memory_bytes() / len(index) <= 100


def test_index_blob_round_trips_and_binds_its_name():
    entries = random_entries(50)
    name = names.index_name("0123456789abcdef", 3)
    blob = encode_index(KEYS, name, entries)
    assert decode_index(KEYS, name, blob) == entries
    with pytest.raises(Corrupted, match="index 0123456789abcdef.000004 is corrupted"):
        decode_index(KEYS, names.index_name("0123456789abcdef", 4), blob)
    flipped = blob[:-1] + bytes([blob[-1] ^ 1])
    with pytest.raises(Corrupted, match=f"index {name} is corrupted"):
        decode_index(KEYS, name, flipped)


@pytest.mark.parametrize("plain", [b"", b"CIX1", b"XXXX\0\0\0\0", b"CIX1\x05\0\0\0",
                                   b"CIX1\x01\0\0\0\x09" + b"p" * 16,
                                   b"CIX1\x00\0\0\0" + b"e" * 44,
                                   b"CIX1\x01\0\0\0\x00" + b"p" * 16 + b"e" * 43])
def test_a_malformed_authentic_index_is_corrupted(plain):
    blob = seal(KEYS.metadata, plain, metadata_associated_data(names.INDEX, "n"))
    with pytest.raises(Corrupted, match="index n is corrupted"):
        decode_index(KEYS, "n", blob)


def test_key_names_follow_the_scheme_and_ignore_foreign_keys():
    pack, short = names.new_pack_name(), names.new_short_id()
    keys = {
        names.DATA_PACK: names.key(names.DATA_PACK, pack),
        names.TREE_PACK: names.key(names.TREE_PACK, pack),
        names.INDEX: names.key(names.INDEX, names.index_name(short, 12)),
        names.MANIFEST: names.key(names.MANIFEST, short),
        names.SESSION: names.key(names.SESSION, short),
    }
    for kind, key in keys.items():
        assert FILESYSTEM_KEY_RULE.fullmatch(key) and "//" not in key
        assert key.startswith(names.prefix(kind))
        assert names.parse_key(kind, key) is not None
        others = [k for k in names.PACK_KINDS + (names.INDEX, names.MANIFEST, names.SESSION)
                  if k != kind]
        assert all(names.parse_key(other, key) is None for other in others)
    assert keys[names.DATA_PACK] == f"data/{pack[:2]}/{pack}"
    for foreign in [f"data/00/{pack}", "data/ab/notours", "backups/x", "index/../x",
                    "format", f"backups/{short}/extra"]:
        assert all(names.parse_key(kind, foreign) is None for kind in keys)
    with pytest.raises(ValueError):
        names.key(names.MANIFEST, "../escape")
