"""Tree encoding: every name and field survives, equal directories encode to equal bytes, and
damage is reported as corruption naming the tree."""

import pytest

from corso_core.engine.tree import Entry, decode_tree, encode_tree
from corso_core.errors import Corrupted
from corso_core.sources.source import DIR, FILE, SYMLINK, Metadata

ENTRIES = [
    Entry(b"\xff\xfe not utf-8\n", Metadata(FILE, mode=0o4755, uid=1000, gid=1001, size=3,
                                            mtime_ns=1_234_567_890_123_456_789, ctime_ns=5,
                                            inode=77, dev=3, nlink=2),
          chunks=[(bytes(range(32)), 1), (b"\x01" * 32, 2)], recent=True),
    Entry("snow ☃".encode(), Metadata(DIR, mode=0o1777), subtree=b"\x02" * 32),
    Entry(b"link", Metadata(SYMLINK, mode=0o777, target=b"../\xfe/x")),
    Entry(b"empty", Metadata(FILE)),
]


def test_entries_round_trip_exactly_and_sorted_by_name_bytes():
    decoded = decode_tree(encode_tree(ENTRIES), b"t")
    assert decoded == sorted(ENTRIES, key=lambda e: e.name)


def test_encoding_does_not_depend_on_entry_order():
    assert encode_tree(ENTRIES) == encode_tree(list(reversed(ENTRIES)))


def test_readable_names_stay_readable_in_the_encoding():
    data = encode_tree(ENTRIES)
    assert "snow ☃".encode() in data and b'"name_b64"' in data


@pytest.mark.parametrize("damage", [b"not json", b'{"v":2,"entries":[]}',
                                    b'{"v":1,"entries":[{"type":"fifo"}]}',
                                    b'{"v":1,"entries":[{"type":"file","name":"x"}]}'])
def test_a_tree_that_does_not_decode_is_corrupted_and_named(damage):
    with pytest.raises(Corrupted, match="tree 7474"):
        decode_tree(damage, b"tt")
