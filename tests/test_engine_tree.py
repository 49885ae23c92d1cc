"""Tree encoding: every name and field survives, equal directories encode to equal bytes, a
tree too large for one chunk is split, and damage is reported as corruption naming the tree."""

import hashlib

import pytest

from corso_core.engine.tree import Entry, encode_tree, read_tree, tree_chunks
from corso_core.errors import Corrupted
from corso_core.repo.chunker import Chunker, ChunkerParams
from corso_core.sources.source import DIR, FILE, SYMLINK, Metadata

SMALL_CHUNKS = Chunker(ChunkerParams("fastcdc-2020", min_size=1024, avg_size=4096,
                                     max_size=16384))

ENTRIES = [
    Entry(b"\xff\xfe not utf-8\n", Metadata(FILE, mode=0o4755, uid=1000, gid=1001, size=3,
                                            mtime_ns=1_234_567_890_123_456_789, ctime_ns=5,
                                            inode=77, dev=3, nlink=2),
          chunks=[(bytes(range(32)), 1), (b"\x01" * 32, 2)], recent=True),
    Entry("snow ☃".encode(), Metadata(DIR, mode=0o1777), subtree=b"\x02" * 32),
    Entry(b"link", Metadata(SYMLINK, mode=0o777, target=b"../\xfe/x")),
    Entry(b"empty", Metadata(FILE)),
]


def decode(data: bytes, tree_id: bytes = b"t") -> list[Entry]:
    """The entries of one tree chunk, read as the engine reads trees."""
    return read_tree(tree_id, {tree_id: data}.__getitem__).entries


def chunk_id(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


def many_files(count: int, skip: int | None = None) -> list[Entry]:
    return [Entry(b"file %06d" % i, Metadata(FILE, size=5, mtime_ns=i),
                  chunks=[(chunk_id(b"%d" % i), 5)]) for i in range(count) if i != skip]


def test_entries_round_trip_exactly_and_sorted_by_name_bytes():
    decoded = decode(encode_tree(ENTRIES))
    assert decoded == sorted(ENTRIES, key=lambda e: e.name)


def test_encoding_does_not_depend_on_entry_order():
    assert encode_tree(ENTRIES) == encode_tree(list(reversed(ENTRIES)))


#: Every kind of record: ENTRIES and a symlink whose target is UTF-8.
EVERY_KIND = [*ENTRIES, Entry(b"readable link", Metadata(SYMLINK, target=b"to/here"))]


def test_a_tree_encodes_to_the_bytes_of_its_format():
    """Every kind of record, as docs/format.md lays them out: an unchanged directory must
    encode to the chunk stored last time, by any corso."""
    assert encode_tree(EVERY_KIND).decode() == (
        '{"entries":['
        '["file","empty",420,0,0,0,0,0,0,0,1,[],0],'
        '["symlink","link",511,0,0,0,0,0,0,0,1,["Li4v/i94"],0],'
        '["symlink","readable link",420,0,0,0,0,0,0,0,1,"to/here",0],'
        '["dir","snow ☃",1023,0,0,0,0,0,0,0,1,"' + "02" * 32 + '",0],'
        '["file",["//4gbm90IHV0Zi04Cg=="],2541,1000,1001,3,1234567890123456789,5,77,3,2,'
        '[["' + bytes(range(32)).hex() + '",1],["' + "01" * 32 + '",2]],1]'
        '],"v":3}')


#: EVERY_KIND as corso wrote trees before version 3 (sha256 7b41250d…, pinned in d2f9836).
VERSION_1_TREE = (
    '{"entries":[{"chunks":[],"ctime_ns":0,"dev":0,"gid":0,"inode":0,"mode":420,"mtime_ns":0,'
    '"name":"empty","nlink":1,"size":0,"type":"file","uid":0},{"ctime_ns":0,"dev":0,"gid":0,'
    '"inode":0,"mode":511,"mtime_ns":0,"name":"link","nlink":1,"size":0,"target_b64":'
    '"Li4v/i94","type":"symlink","uid":0},{"ctime_ns":0,"dev":0,"gid":0,"inode":0,"mode":420,'
    '"mtime_ns":0,"name":"readable link","nlink":1,"size":0,"target":"to/here","type":'
    '"symlink","uid":0},{"ctime_ns":0,"dev":0,"gid":0,"inode":0,"mode":1023,"mtime_ns":0,'
    '"name":"snow ☃","nlink":1,"size":0,"tree":"' + "02" * 32 + '","type":"dir","uid":0},'
    '{"chunks":[["' + bytes(range(32)).hex() + '",1],["' + "01" * 32 + '",2]],"ctime_ns":5,'
    '"dev":3,"gid":1001,"inode":77,"mode":2541,"mtime_ns":1234567890123456789,"name_b64":'
    '"//4gbm90IHV0Zi04Cg==","nlink":2,"recent":true,"size":3,"type":"file","uid":1000}],"v":1}'
).encode()


def test_trees_written_before_version_3_read_as_they_were_written():
    assert hashlib.sha256(VERSION_1_TREE).hexdigest() == (
        "7b41250d3157f9f99ed92de282348ee9a9ec09fe40be6a1dd9ff2c91a74604e3")
    assert decode(VERSION_1_TREE) == sorted(EVERY_KIND, key=lambda e: e.name)


def test_readable_names_stay_readable_in_the_encoding():
    data = encode_tree(ENTRIES)
    assert "snow ☃".encode() in data and b'["//4gbm90IHV0Zi04Cg=="]' in data


@pytest.mark.parametrize("damage", [b"not json", b'{"v":2,"entries":[]}',
                                    b'{"v":4,"entries":[]}',
                                    b'{"v":1,"entries":[{"type":"fifo"}]}',
                                    b'{"v":1,"entries":[{"type":"file","name":"x"}]}',
                                    b'{"v":3,"entries":[["fifo","x",0,0,0,0,0,0,0,0,1,[],0]]}',
                                    b'{"v":3,"entries":[["file","x",0,0,0,0,0,0,0,0,1,[]]]}',
                                    b'{"v":3,"entries":[["dir","x",0,0,0,0,0,0,0,0,1,[],0]]}',
                                    b'{"v":3,"entries":[["file",["x","y"],0,0,0,0,0,0,0,0,1,'
                                    b'[],0]]}',
                                    b'{"v":3,"entries":[["file","x","0o644",0,0,0,0,0,0,0,1,'
                                    b'[],0]]}'])
def test_a_tree_that_does_not_decode_is_corrupted_and_named(damage):
    with pytest.raises(Corrupted, match="tree 7474"):
        decode(damage, b"tt")


def test_a_tree_within_the_chunk_size_is_one_chunk():
    document = encode_tree(ENTRIES)
    assert tree_chunks(document, SMALL_CHUNKS, chunk_id) == [(chunk_id(document), document)]


def test_a_larger_tree_is_split_by_the_chunker_and_read_whole():
    """No chunk outgrows the chunker's maximum (the limit every chunk has is 16 MiB: a
    directory of ~70,000 files did not fit); the tree's own chunk, last, lists the pieces."""
    entries = many_files(2000)
    document = encode_tree(entries)
    chunks = tree_chunks(document, SMALL_CHUNKS, chunk_id)
    assert len(document) > 10 * SMALL_CHUNKS.params.max_size
    assert all(len(data) <= SMALL_CHUNKS.params.max_size for _, data in chunks)
    assert all(chunk == chunk_id(data) for chunk, data in chunks)
    *pieces, (tree_id, _) = chunks
    assert b"".join(data for _, data in pieces) == document
    tree = read_tree(tree_id, dict(chunks).__getitem__)
    assert tree.entries == entries and tree.pieces == [piece for piece, _ in pieces]


def test_a_change_in_a_split_tree_stores_only_the_pieces_around_it():
    before = {piece for piece, _ in tree_chunks(encode_tree(many_files(2000)), SMALL_CHUNKS,
                                                chunk_id)}
    after = tree_chunks(encode_tree(many_files(2000, skip=1000)), SMALL_CHUNKS, chunk_id)
    new = [piece for piece, _ in after if piece not in before]
    assert 2 <= len(new) <= 4  # the piece(s) around the change, and the list of pieces
    assert len(after) > 20


@pytest.mark.parametrize("damage", ["short piece", "nested split", "missing piece"])
def test_a_split_tree_that_does_not_add_up_is_corrupted_and_named(damage):
    chunks = dict(tree_chunks(encode_tree(many_files(500)), SMALL_CHUNKS, chunk_id))
    *pieces, tree_id = chunks
    if damage == "short piece":
        chunks[pieces[1]] = chunks[pieces[1]][:-1]
    elif damage == "nested split":  # a split tree whose pieces are another split tree
        chunks[pieces[0]], chunks[tree_id] = chunks[tree_id], (
            b'{"chunks":[["%s",%d]],"v":2}' % (pieces[0].hex().encode(), len(chunks[tree_id])))

    def get(chunk: bytes) -> bytes:
        if damage == "missing piece" and chunk == pieces[2]:
            raise Corrupted(f"chunk {chunk.hex()} is missing from the index")
        return chunks[chunk]

    with pytest.raises(Corrupted, match=f"{tree_id.hex()[:8]}|{pieces[2].hex()[:8]}"):
        read_tree(tree_id, get)
