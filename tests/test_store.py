import logging
import mmap
import os
import random
import shutil
import threading
import time
import tracemalloc
from concurrent.futures import ThreadPoolExecutor
from types import SimpleNamespace

import pytest
from datalayer import make_repository

from corso_core.errors import Corrupted, StorageError
from corso_core.repo import names
from corso_core.repo.chunker import Chunker, ChunkerParams, chunk_file
from corso_core.repo.index import decode_index
from corso_core.repo.manifests import list_manifests, load_manifest, save_manifest
from corso_core.repo.packs import read_header
from corso_core.repo.read_ahead import ReadAhead
from corso_core.repo.sessions import SessionRecord, list_sessions
from corso_core.repo.small_chunks import SMALL_CHUNK, pays_off
from corso_core.repo.store import ChunkStore
from corso_core.storage.filesystem import FilesystemStorage

DEFAULT_CHUNKER = Chunker(ChunkerParams("fastcdc-2020", 256 * 1024, 1024 * 1024,
                                        4 * 1024 * 1024))


@pytest.fixture
def small_packs(monkeypatch):
    """Packs of ~16 KiB and a checkpoint every 2 packs, so little data makes many blobs."""
    monkeypatch.setattr("corso_core.repo.packs.TARGET_PACK_SIZE", 16 * 1024)
    monkeypatch.setattr("corso_core.repo.store.CHECKPOINT_PACKS", 2)


def chunks(count: int, size: int = 3000, seed: int = 7) -> list[bytes]:
    rng = random.Random(seed)
    return [rng.randbytes(size) for _ in range(count)]


def put_all(store: ChunkStore, datas, kind="data") -> list[bytes]:
    ids = [store.chunk_id(d) for d in datas]
    for chunk_id, data in zip(ids, datas, strict=True):
        store.put(chunk_id, data, kind)
    return ids


def get_all(store: ChunkStore, ids) -> dict[bytes, bytes]:
    """What get_many delivers, each ID once."""
    got: dict[bytes, bytes] = {}
    lock = threading.Lock()

    def deliver(chunk_id: bytes, data: bytes) -> None:
        with lock:
            assert chunk_id not in got, "delivered twice"
            got[chunk_id] = data

    store.get_many(ids, deliver)
    return got


def keys_of(storage, kind) -> list[str]:
    return [i.key for i in storage.list(names.prefix(kind))]


def index_entries(repo, key: str):
    return decode_index(repo.keys, names.parse_key("index", key), repo.storage.get(key))


def two_sessions(repo) -> tuple[bytes, bytes, bytes, bytes]:
    """One chunk stored by each of two sessions, so each has its own index blob."""
    (first,), (second,) = chunks(1, seed=1), chunks(1, seed=2)
    ids = []
    for data in (first, second):
        with ChunkStore(repo) as store:
            ids += put_all(store, [data])
    return first, ids[0], second, ids[1]


def gets(storage) -> int:
    return storage.counts.requests.get("GET", 0)


def test_put_get_dedup_and_separate_tree_packs(tmp_path):
    repo = make_repository(tmp_path)
    with ChunkStore(repo) as store:
        data, tree = b"file content " * 500, b"a directory tree"
        data_id, tree_id = store.chunk_id(data), store.chunk_id(tree)
        assert len(data_id) == 32 and not store.has(data_id)
        assert 0 < store.put(data_id, memoryview(data)) < len(data)  # compressed
        assert store.has(data_id) and store.put(data_id, data) == 0
        assert store.put(tree_id, tree, kind="tree") > 0
        store.flush()
        assert store.get(data_id) == data and store.get(tree_id) == tree
        stats = store.stats
        assert (stats.chunks_new, stats.chunks_dedup, stats.packs_written) == (2, 1, 2)
    (data_pack,), (tree_pack,) = keys_of(repo.storage, "data"), keys_of(repo.storage, "tree")
    data_name = names.parse_key("data", data_pack)
    tree_name = names.parse_key("tree", tree_pack)
    assert [e.chunk_id for e in read_header(repo.storage, repo.keys, "data", data_name)] == [
        data_id]
    assert [e.chunk_id for e in read_header(repo.storage, repo.keys, "tree", tree_name)] == [
        tree_id]


def test_put_many_stores_each_new_chunk_once_and_counts_the_rest_as_deduplicated(tmp_path):
    repo = make_repository(tmp_path)
    old, new, text = chunks(1, seed=1)[0], chunks(1, seed=2)[0], b"compressible " * 300
    with ChunkStore(repo) as store:
        old_id, new_id, text_id = (store.chunk_id(d) for d in (old, new, text))
        assert store.put(old_id, old) > 0
        added = store.put_many([(new_id, new), (old_id, old), (text_id, memoryview(text)),
                                (new_id, new)])
        assert added[0] > len(new) and added[1] == 0 and 0 < added[2] < len(text)
        assert added[3] == 0  # the same chunk twice in one call is stored once
        assert (store.stats.chunks_new, store.stats.chunks_dedup) == (3, 2)
        store.flush()
    with ChunkStore(repo, read_only=True) as store:
        assert get_all(store, [old_id, new_id, text_id]) == {old_id: old, new_id: new,
                                                               text_id: text}
    [pack] = keys_of(repo.storage, "data")
    entries = read_header(repo.storage, repo.keys, "data", names.parse_key("data", pack))
    assert [e.chunk_id for e in entries] == [old_id, new_id, text_id]


def test_a_chunk_put_in_this_session_reads_back_before_any_flush(tmp_path):
    repo = make_repository(tmp_path)
    with ChunkStore(repo) as store:
        (tree_id,) = put_all(store, [b"a tree just written"], kind="tree")
        assert keys_of(repo.storage, "tree") == []  # still in the open pack
        assert store.get(tree_id) == b"a tree just written"
        assert len(keys_of(repo.storage, "tree")) == 1


def test_chunks_put_in_this_session_are_delivered_by_get_many_before_any_flush(tmp_path):
    """get_many locates most chunks in the index at once; one whose pack is still open is
    stored first, as get() does."""
    repo = make_repository(tmp_path)
    with ChunkStore(repo) as store:
        stored = put_all(store, chunks(3, seed=1))
        store.flush()
        datas = chunks(3, seed=2)
        fresh = put_all(store, datas)
        assert keys_of(repo.storage, "data") and store.stats.packs_written == 1
        got = get_all(store, [*stored, *fresh])
        assert [got[chunk_id] for chunk_id in fresh] == datas and len(got) == 6


def test_chunk_ids_are_keyed_blake3(tmp_path):
    import blake3

    repo = make_repository(tmp_path)
    with ChunkStore(repo) as store:
        assert store.chunk_id(b"x") == blake3.blake3(b"x", key=repo.keys.chunk_id).digest()
        assert store.chunk_id(b"x") != blake3.blake3(b"x").digest()
        assert ChunkStore(make_repository(tmp_path / "other")).chunk_id(b"x") != \
            store.chunk_id(b"x")


def test_packs_and_index_checkpoints_stream_out_before_flush(tmp_path, small_packs):
    repo = make_repository(tmp_path)
    store = ChunkStore(repo)
    put_all(store, chunks(150))  # ~450 KB of random data: ~28 packs
    # Back-pressure lets at most 3 packs be in flight: the rest are stored and indexed.
    assert len(keys_of(repo.storage, "data")) >= 20
    assert len(keys_of(repo.storage, "index")) >= 9
    assert len(keys_of(repo.storage, names.MANIFEST)) == 0
    store.close()
    assert store.stats.packs_written == len(keys_of(repo.storage, "data"))


def test_a_session_holds_little_per_small_chunk_until_an_index_blob_lists_it(tmp_path):
    """Small files make many chunks per pack, each held from its put until an index blob
    lists it. An entry object per chunk in the pack, then an IndexEntry and a Location, then a
    bytes object per index row took ~675 bytes each at the peak (a backup of 200,000 files
    of 20-100 bytes peaked at 215 MB; 139 MB once compact)."""
    repo = make_repository(tmp_path)
    datas = [os.urandom(40) for _ in range(20_000)]
    with ChunkStore(repo) as store:
        pairs = [(store.chunk_id(data), data) for data in datas]
        tracemalloc.start()
        try:
            before = tracemalloc.get_traced_memory()[0]
            for start in range(0, len(pairs), 100):  # in batches, as the engine puts them
                store.put_many(pairs[start : start + 100])
            store.flush()
            peak = tracemalloc.get_traced_memory()[1] - before
        finally:
            tracemalloc.stop()
        assert store.stats.chunks_new == len(datas) and store.stats.index_blobs_written == 1
    assert peak / len(datas) < 450  # 325 here; the index's own growth is most of it
    (index_key,) = keys_of(repo.storage, names.INDEX)
    listed = decode_index(repo.keys, names.parse_key(names.INDEX, index_key),
                          repo.storage.get(index_key))
    assert {entry.chunk_id for entry in listed} == {chunk_id for chunk_id, _ in pairs}


def test_reopening_reads_the_index_from_the_cache(tmp_path, small_packs):
    repo = make_repository(tmp_path / "repo")
    with ChunkStore(repo) as store:
        ids = put_all(store, chunks(30))
    indexes = len(keys_of(repo.storage, "index"))
    before = gets(repo.storage)
    with ChunkStore(repo) as store:
        assert gets(repo.storage) == before  # every index blob came from the cache
        assert all(store.has(i) for i in ids)
    shutil.rmtree(os.environ["CORSO_CACHE_DIR"])  # deleting the cache only costs downloads
    before = gets(repo.storage)
    with ChunkStore(repo) as store:
        assert gets(repo.storage) - before == indexes
        assert all(store.has(i) for i in ids)
    cached = tmp_path / "corso-cache" / "test-repository" / keys_of(repo.storage, "index")[0]
    cached.write_bytes(cached.read_bytes()[:-1])  # a damaged cached copy is fetched again
    with ChunkStore(repo) as store:
        assert all(store.has(i) for i in ids) and store.get(ids[0]) == chunks(30)[0]


def test_get_many_reads_each_pack_in_few_ranges(tmp_path, small_packs):
    repo = make_repository(tmp_path)
    datas = chunks(60)
    with ChunkStore(repo) as store:
        ids = put_all(store, datas)
    packs = len(keys_of(repo.storage, "data"))
    with ChunkStore(repo) as store:
        before = gets(repo.storage)
        got = get_all(store, ids + ids[:5])
        assert gets(repo.storage) - before == packs
    assert got == dict(zip(ids, datas, strict=True))


def two_large_packs(tmp_path, monkeypatch) -> tuple:
    """(repository, chunks, their IDs): 40 chunks of 300 KiB in two packs of ~6 MiB."""
    monkeypatch.setattr("corso_core.repo.packs.TARGET_PACK_SIZE", 6 * 1024 * 1024)
    repo = make_repository(tmp_path)
    datas = chunks(40, size=300 * 1024)
    with ChunkStore(repo) as store:
        ids = put_all(store, datas)
    assert len(keys_of(repo.storage, "data")) == 2
    return repo, datas, ids


def test_a_full_read_of_large_packs_is_one_get_per_pack(tmp_path, monkeypatch):
    """Packs of ~6 MiB, under the storage's largest_read: each is read with one request."""
    repo, datas, ids = two_large_packs(tmp_path, monkeypatch)
    packs = 2
    with ChunkStore(repo, read_only=True) as store:
        before = gets(repo.storage)
        got = get_all(store, ids)
        assert gets(repo.storage) - before == packs
    assert got == dict(zip(ids, datas, strict=True))


def test_get_many_hints_the_ranges_it_reads_to_the_storage(tmp_path, monkeypatch):
    repo, datas, ids = two_large_packs(tmp_path, monkeypatch)
    monkeypatch.setattr(repo.storage, "largest_read", 2 * 1024 * 1024)
    hinted, read = [], []
    monkeypatch.setattr(repo.storage, "read_ahead", lambda *where: hinted.append(where))
    get_into = repo.storage.get_into  # how a restore reads data ranges (re-used buffers)
    monkeypatch.setattr(repo.storage, "get_into", lambda key, offset, buffer: (
        read.append((key, offset, len(buffer))), get_into(key, offset, buffer))[1])
    with ChunkStore(repo, read_only=True) as store:
        got = get_all(store, ids)
    assert got == dict(zip(ids, datas, strict=True))
    data_reads = [r for r in read if r[0].startswith("data/")]
    _wait_until(lambda: len(hinted) == len(data_reads))  # its thread may lag
    assert len(hinted) >= 6 and sorted(hinted) == sorted(data_reads)


def test_read_ahead_stays_its_lead_ahead_of_what_was_read(monkeypatch):
    monkeypatch.setattr("corso_core.repo.read_ahead.LEAD_BYTES", 300)
    hinted = []

    class Storage:
        def read_ahead(self, key, offset, length):
            hinted.append(offset)

    ahead = ReadAhead(Storage(), [("k", offset, 100) for offset in range(0, 1000, 100)])
    _wait_until(lambda: len(hinted) == 3)
    time.sleep(0.05)
    assert hinted == [0, 100, 200]  # 300 bytes ahead of nothing read: it waits
    ahead.was_read(100)
    _wait_until(lambda: len(hinted) == 4)
    ahead.was_read(500)
    _wait_until(lambda: len(hinted) == 9)
    ahead.stop()
    time.sleep(0.05)
    assert hinted == list(range(0, 900, 100))


def _wait_until(predicate, timeout=10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.002)


def test_a_pack_larger_than_the_range_cap_is_read_in_capped_ranges(tmp_path, monkeypatch):
    repo, datas, ids = two_large_packs(tmp_path, monkeypatch)
    monkeypatch.setattr(repo.storage, "largest_read", 2 * 1024 * 1024)
    packs = 2
    with ChunkStore(repo, read_only=True) as store:
        lengths = []
        read = repo.storage.get_into
        monkeypatch.setattr(repo.storage, "get_into", lambda key, offset, buffer: (
            lengths.append(len(buffer)), read(key, offset, buffer))[1])
        got = get_all(store, ids)
    assert got == dict(zip(ids, datas, strict=True))
    assert len(lengths) >= 3 * packs and max(lengths) <= 2 * 1024 * 1024


def counting_buffers(monkeypatch) -> list[mmap.mmap]:
    """Every buffer a BufferPool makes from here on."""
    made = []

    class CountedMap(mmap.mmap):
        def __new__(cls, *args):
            made.append(super().__new__(cls, *args))
            return made[-1]

    monkeypatch.setattr("corso_core.repo.buffers.mmap", SimpleNamespace(mmap=CountedMap))
    return made


def test_ranges_are_received_into_two_buffers_used_again_and_again(tmp_path, monkeypatch):
    """And what was delivered from a buffer stays as it was when the buffer takes the next
    range: the chunks are compared only at the end."""
    repo, datas, ids = two_large_packs(tmp_path, monkeypatch)
    monkeypatch.setattr(repo.storage, "largest_read", 1024 * 1024)
    made = counting_buffers(monkeypatch)
    ranges = []
    get_into = repo.storage.get_into
    monkeypatch.setattr(repo.storage, "get_into", lambda key, offset, buffer: (
        ranges.append(buffer.obj), get_into(key, offset, buffer))[1])
    with ChunkStore(repo, read_only=True) as store:
        assert get_all(store, ids) == dict(zip(ids, datas, strict=True))
    assert len(ranges) >= 10 and len(made) <= 2
    assert {id(buffer) for buffer in ranges} <= {id(buffer) for buffer in made}


def test_get_many_skips_large_gaps_only_in_sparsely_needed_packs(tmp_path, small_packs,
                                                                monkeypatch):
    monkeypatch.setattr("corso_core.repo.store.RANGE_GAP", 0)
    repo = make_repository(tmp_path)
    datas = chunks(60)
    with ChunkStore(repo) as store:
        ids = put_all(store, datas)
    packs = len(keys_of(repo.storage, "data"))
    with ChunkStore(repo, read_only=True) as store:
        before = gets(repo.storage)
        assert len(get_all(store, ids[::2])) == 30  # half of each pack: one range
        assert gets(repo.storage) - before == packs
        ends = [(entries[0].chunk_id, entries[-1].chunk_id) for entries in (
            read_header(repo.storage, repo.keys, "data", names.parse_key("data", key))
            for key in keys_of(repo.storage, "data"))]
        assert all(len({first, last}) == 2 for first, last in ends)
        wanted = [chunk_id for pair in ends for chunk_id in pair]
        before = gets(repo.storage)
        got = get_all(store, wanted)  # a pack's first and last chunk: two ranges
        assert gets(repo.storage) - before == 2 * packs
    assert got == {i: datas[ids.index(i)] for i in wanted}


def test_get_many_stops_on_a_failing_delivery_and_raises_its_error(tmp_path, small_packs):
    repo = make_repository(tmp_path)
    with ChunkStore(repo) as store:
        ids = put_all(store, chunks(60))
    delivered = []

    def deliver(chunk_id: bytes, data: bytes) -> None:
        delivered.append(chunk_id)
        if len(delivered) == 3:
            raise OSError("disk full")

    with ChunkStore(repo, read_only=True) as store, pytest.raises(OSError, match="disk full"):
        store.get_many(ids, deliver)
    assert 3 <= len(delivered) < len(ids) // 2  # the other thread stops at its next chunk


def test_get_many_checks_every_id_before_reading(tmp_path):
    repo = make_repository(tmp_path)
    with ChunkStore(repo) as store:
        ids = put_all(store, chunks(3))
        store.flush()
        before = gets(repo.storage)
        with pytest.raises(Corrupted, match=f"chunk {'ab' * 32} is missing"):
            get_all(store, ids + [bytes.fromhex("ab" * 32)])
        assert gets(repo.storage) == before


def the_pack(repo, kind="data") -> tuple[str, str]:
    (key,) = keys_of(repo.storage, kind)
    return key, names.parse_key(kind, key)


def test_a_flipped_byte_is_corrupted_naming_the_chunk(tmp_path):
    repo = make_repository(tmp_path)
    datas = chunks(3)
    with ChunkStore(repo) as store:
        ids = put_all(store, datas)
    key, name = the_pack(repo)
    entries = read_header(repo.storage, repo.keys, "data", name)
    blob = bytearray(repo.storage.get(key))
    blob[entries[1].offset + 20] ^= 0x40
    repo.storage.put(key, bytes(blob))
    with ChunkStore(repo) as store:
        with pytest.raises(Corrupted, match=f"chunk {ids[1].hex()} is corrupted"):
            store.get(ids[1])
        with pytest.raises(Corrupted, match=f"chunk {ids[1].hex()} is corrupted"):
            get_all(store, ids)
        assert store.get(ids[0]) == datas[0] and store.get(ids[2]) == datas[2]


def test_swapped_truncated_or_missing_packs_are_detected(tmp_path):
    repo = make_repository(tmp_path)
    with ChunkStore(repo) as store:
        first = put_all(store, chunks(2, seed=1))
        store.flush()
        second = put_all(store, chunks(2, seed=2))

    def pack_holding(chunk_id) -> str:
        return next(k for k in keys_of(repo.storage, "data")
                    if chunk_id in [e.chunk_id for e in read_header(
                        repo.storage, repo.keys, "data", names.parse_key("data", k))])

    key_a, key_b = pack_holding(first[0]), pack_holding(second[0])
    blob_a, blob_b = repo.storage.get(key_a), repo.storage.get(key_b)
    repo.storage.put(key_a, blob_b)
    repo.storage.put(key_b, blob_a)
    with ChunkStore(repo) as store:
        for chunk_id in first + second:
            with pytest.raises(Corrupted, match=f"chunk {chunk_id.hex()} is corrupted"):
                store.get(chunk_id)
    repo.storage.put(key_a, blob_a[:100])
    repo.storage.delete(key_b)
    with ChunkStore(repo) as store:
        with pytest.raises(Corrupted, match=f"chunk {first[1].hex()} is corrupted"):
            store.get(first[1])
        with pytest.raises(Corrupted, match=f"pack .* holding chunk {second[0].hex()} is missing"):
            get_all(store, second)


def test_a_lost_pack_makes_the_index_be_read_again_once_not_once_a_chunk(tmp_path,
                                                                       monkeypatch):
    """A pack gone makes a reader read the index again (maintenance may have moved its
    chunks), once: a restore from a repository that lost a pack reloaded it for every file
    it then tried one by one (6,000 files: 47 s instead of 0.4)."""
    repo = make_repository(tmp_path)
    with ChunkStore(repo) as store:
        ids = put_all(store, chunks(20))
    [pack] = keys_of(repo.storage, "data")
    repo.storage.delete(pack)
    loads = []
    load_index = ChunkStore._load_index
    monkeypatch.setattr(ChunkStore, "_load_index",
                        lambda self, *a: loads.append(1) or load_index(self, *a))
    with ChunkStore(repo, read_only=True) as store:
        with pytest.raises(Corrupted, match="is missing"):
            get_all(store, ids)
        for chunk_id in ids:
            with pytest.raises(Corrupted, match="is missing"):
                store.get(chunk_id)
    assert len(loads) == 2  # opening the store, then once for the lost pack


@pytest.mark.parametrize("size", [3000, 70_000], ids=["small-chunk-lane", "two-readers"])
def test_another_failure_beside_a_lost_pack_is_raised_not_retried_over(tmp_path, size):
    """One range's pack gone and another range's delivery failing (a full disk): the retry
    for the pack delivered again the chunk whose delivery had failed, and hid the error."""
    assert pays_off([size]) == (size < SMALL_CHUNK)  # both ways of reading are tried
    repo = make_repository(tmp_path)
    with ChunkStore(repo) as store:
        first = put_all(store, chunks(2, size, seed=1))
        store.flush()
        second = put_all(store, chunks(2, size, seed=2))
    lost = next(k for k in keys_of(repo.storage, "data")
                if first[0] in [e.chunk_id for e in read_header(
                    repo.storage, repo.keys, "data", names.parse_key("data", k))])
    repo.storage.delete(lost)
    fetching, offered = threading.Event(), []

    def deliver(chunk_id: bytes, data: bytes) -> None:
        offered.append(chunk_id)
        assert fetching.wait(10)  # the lost pack's read began: its failure comes too
        raise OSError(28, "No space left on device")

    real_fetch = ChunkStore._fetch_range

    def fetch(self, piece, buffers=None):
        if names.key(piece.kind, piece.pack) == lost:
            fetching.set()
            deadline = time.monotonic() + 10
            while not offered and time.monotonic() < deadline:
                time.sleep(0.001)
        return real_fetch(self, piece, buffers)

    with ChunkStore(repo, read_only=True) as store:
        store._fetch_range = fetch.__get__(store)
        with pytest.raises(OSError, match="No space left"):
            store.get_many(second + first, deliver)
    assert len(offered) == 1  # not offered again by a retry for the lost pack


def test_tree_chunks_come_from_the_local_cache(tmp_path):
    repo = make_repository(tmp_path / "repo")
    with ChunkStore(repo) as store:
        tree_ids = put_all(store, [b"tree one", b"tree two"], kind="tree")
    with ChunkStore(repo) as store:
        before = gets(repo.storage)
        assert store.get(tree_ids[0]) == b"tree one"
        assert gets(repo.storage) == before
    key, _ = the_pack(repo, "tree")
    cached = tmp_path / "corso-cache" / "test-repository" / key
    cached.write_bytes(b"\0" * len(cached.read_bytes()))  # damaged cache: downloaded again
    with ChunkStore(repo) as store:
        assert store.get(tree_ids[1]) == b"tree two"
        before = gets(repo.storage)
        assert store.get(tree_ids[0]) == b"tree one"
        assert gets(repo.storage) == before


def test_an_interrupted_get_many_starts_no_more_ranges(tmp_path, small_packs, monkeypatch):
    """Ctrl-C reaches the main thread while it waits for the readers: the ranges not yet
    started are dropped, so a restore stops instead of writing everything first."""
    repo = make_repository(tmp_path)
    with ChunkStore(repo) as store:
        ids = put_all(store, chunks(60, size=6000))
    delivered = []

    def slow_deliver(chunk_id, data):
        time.sleep(0.01)
        delivered.append(chunk_id)

    def interrupted_wait(futures, return_when):
        time.sleep(0.05)
        raise KeyboardInterrupt

    monkeypatch.setattr("corso_core.repo.store.wait", interrupted_wait)
    with ChunkStore(repo, read_only=True) as store, pytest.raises(KeyboardInterrupt):
        store.get_many(ids, slow_deliver)
    assert 0 < len(delivered) < len(ids) // 2


def test_concurrent_puts_store_each_chunk_once(tmp_path, small_packs):
    repo = make_repository(tmp_path)
    datas = chunks(80)
    with ChunkStore(repo) as store:
        ids = [store.chunk_id(d) for d in datas]
        threads = [threading.Thread(target=put_all, args=(store, datas)) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        store.flush()
        assert (store.stats.chunks_new, store.stats.chunks_dedup) == (80, 240)
    indexed = [e.chunk_id for key in keys_of(repo.storage, "index")
               for e in index_entries(repo, key)]
    assert sorted(indexed) == sorted(ids)
    with ChunkStore(repo) as store:
        assert get_all(store, ids) == dict(zip(ids, datas, strict=True))


def test_find_missing_sees_chunks_removed_since_the_index_was_loaded(tmp_path):
    repo = make_repository(tmp_path)
    old, old_id, kept, kept_id = two_sessions(repo)
    backup = ChunkStore(repo)  # deduplicates against both
    assert backup.put(old_id, old) == 0 and backup.put(kept_id, kept) == 0
    loads = []
    load_index = backup._load_index
    backup._load_index = lambda *args: loads.append(args) or load_index(*args)
    assert backup.find_missing([old_id, kept_id]) == set()
    assert loads == []  # every index blob is still listed: nothing removed, nothing reloaded
    # Maintenance, meanwhile, drops the old chunk: its pack and the index blob listing it.
    for key in keys_of(repo.storage, "index"):
        entries = index_entries(repo, key)
        if entries[0].chunk_id == old_id:
            repo.storage.delete(key)
            repo.storage.delete(names.key("data", entries[0].location.pack))
    assert backup.find_missing([old_id, kept_id]) == {old_id}
    assert len(loads) == 1
    assert backup.put(old_id, old) > 0  # stored again
    backup.close()
    with ChunkStore(repo) as store:
        assert store.get(old_id) == old and store.get(kept_id) == kept


def test_a_damaged_index_blob_is_left_out_naming_it(tmp_path, caplog):
    repo = make_repository(tmp_path)
    first, first_id, second, second_id = two_sessions(repo)
    damaged = next(k for k in keys_of(repo.storage, "index")
                   if index_entries(repo, k)[0].chunk_id == first_id)
    repo.storage.put(damaged, repo.storage.get(damaged)[:-1])
    shutil.rmtree(os.environ["CORSO_CACHE_DIR"])
    with caplog.at_level(logging.WARNING), ChunkStore(repo) as store:
        assert f"index {names.parse_key('index', damaged)} is corrupted" in caplog.text
        assert store.get(second_id) == second  # what other indexes list still reads
        with pytest.raises(Corrupted, match=f"chunk {first_id.hex()} is missing"):
            store.get(first_id)
        assert store.put(first_id, first) > 0  # a backup stores it again


def test_foreign_keys_in_the_bucket_are_ignored(tmp_path):
    repo = make_repository(tmp_path)
    for stray in ["index/notes.txt", "data/zz/thing", "backups/README", "sessions/x"]:
        repo.storage.put(stray, b"not ours")
    with ChunkStore(repo) as store:
        put_all(store, chunks(2))
    assert list_manifests(repo) == []
    assert list_sessions(repo) == []


def test_a_session_record_is_refreshed_while_the_store_is_open(tmp_path):
    repo = make_repository(tmp_path)
    store = ChunkStore(repo)
    (session,) = list_sessions(repo)
    assert session.pid == os.getpid() and session.seen > 0
    store.close()
    assert list_sessions(repo) == []
    record = SessionRecord(repo, refresh_seconds=0.05)
    record.start()
    key = names.key("session", record.session_id)
    first = repo.storage.stat(key).mtime
    time.sleep(0.3)
    assert repo.storage.stat(key).mtime > first
    record.close()
    assert list_sessions(repo) == []
    other = SessionRecord(repo)
    other.start()
    forged = names.key("session", names.new_short_id())
    repo.storage.put(forged, repo.storage.get(names.key("session", other.session_id)))
    with pytest.raises(Corrupted, match=f"session record {names.parse_key('session', forged)}"):
        list_sessions(repo)  # a record copied under another name does not pass as that session
    repo.storage.delete(forged)
    other.close()


class SimulatedCrash(Exception):
    pass


class CrashingStorage(FilesystemStorage):
    """Fails every write from the n-th on, as a killed process would stop writing."""

    def __init__(self, root: str, writes_before_crash: int) -> None:
        super().__init__(root)
        self.writes_left = writes_before_crash

    def _write(self) -> None:
        if self.writes_left <= 0:
            raise SimulatedCrash()
        self.writes_left -= 1

    def put(self, key, data):
        self._write()
        super().put(key, data)

    def _create(self, key, data):
        self._write()
        super()._create(key, data)

    def delete(self, key):
        self._write()
        super().delete(key)


def backup(repo, datas: list[bytes]) -> str:
    """What the engine does: chunks, a tree chunk, flush, then the manifest, last."""
    store = ChunkStore(repo)
    try:
        ids = put_all(store, datas)
        tree = b"".join(ids)
        tree_id = store.chunk_id(tree)
        store.put(tree_id, tree, kind="tree")
        store.flush()
        return save_manifest(repo, {"time": time.time(), "tree": tree_id.hex()})
    finally:
        store.close()


def assert_valid(repo) -> None:
    """Every index entry points into a stored pack whose header lists it."""
    for key in keys_of(repo.storage, "index"):
        for chunk_id, location in index_entries(repo, key):
            header = read_header(repo.storage, repo.keys, location.kind, location.pack)
            assert (chunk_id, location.offset, location.length) in header


def restore(repo, backup_id) -> list[bytes]:
    manifest = load_manifest(repo, backup_id)
    with ChunkStore(repo) as store:
        tree = store.get(bytes.fromhex(manifest["tree"]))
        ids = [tree[i : i + 32] for i in range(0, len(tree), 32)]
        return [store.get(i) for i in ids]


def test_a_backup_interrupted_at_any_write_leaves_the_repository_valid(tmp_path, small_packs):
    base = tmp_path / "base"
    first_data, second_data = chunks(8, seed=1), chunks(8, seed=1)[:4] + chunks(30, seed=2)
    base_repo = make_repository(base)
    first = backup(base_repo, first_data)
    keys = base_repo.keys
    crashes = 0
    for n in range(100):
        root = tmp_path / f"crash-{n}"
        shutil.copytree(base, root)
        repo = make_repository(root, CrashingStorage(str(root), n))
        object.__setattr__(repo, "keys", keys)
        try:
            backup(repo, second_data)
        except SimulatedCrash:
            crashes += 1
        else:
            break
        clean = make_repository(root)
        object.__setattr__(clean, "keys", keys)
        assert_valid(clean)
        ids = [m["id"] for m in list_manifests(clean)]
        assert first in ids and restore(clean, first) == first_data
        for finished in set(ids) - {first}:  # the crash came after the manifest (session end)
            assert restore(clean, finished) == second_data
        # The next backup succeeds and re-uses what the interrupted one stored.
        again = backup(clean, second_data)
        assert restore(clean, again) == second_data
    assert crashes >= 12  # session, ~13 packs, checkpoints, index, manifest: each a crash point


class RefusingWrites(FilesystemStorage):
    """Refuses the writes `refuse(kind, how many of that kind were tried before)` picks."""

    def __init__(self, root: str, refuse) -> None:
        super().__init__(root)
        self.refuse = refuse
        self.tried: dict[str, int] = {}

    def _create(self, key, data):
        kind = key.split("/")[0]
        before, self.tried[kind] = self.tried.get(kind, 0), self.tried.get(kind, 0) + 1
        if self.refuse(kind, before):
            raise StorageError(f"writing {key}: No space left on device")
        super()._create(key, data)


@pytest.mark.parametrize("refuse, checkpoints", [
    (lambda kind, n: kind == names.DATA_PACK and n >= 3, True),  # a full disk; an index fits
    (lambda kind, n: kind == names.INDEX and n == 0, True),  # a checkpoint's index, once
    (lambda kind, n: kind == names.INDEX and n == 0, False),  # the final flush's, once
], ids=["full-disk", "refused-checkpoint", "refused-flush"])
def test_a_backup_stopped_by_a_failed_write_indexes_the_packs_it_stored(
        tmp_path, small_packs, monkeypatch, refuse, checkpoints):
    """The next backup, once space is freed, re-uses them (it stored them all again, and so
    failed again on the same disk)."""
    if not checkpoints:
        monkeypatch.setattr("corso_core.repo.store.CHECKPOINT_PACKS", 1000)
    repo = make_repository(tmp_path, RefusingWrites(str(tmp_path), refuse))
    with pytest.raises(StorageError, match="No space"):
        backup(repo, chunks(30))
    clean = make_repository(tmp_path)
    object.__setattr__(clean, "keys", repo.keys)
    assert_valid(clean)
    stored = keys_of(clean.storage, names.DATA_PACK)
    indexed = {location.pack for key in keys_of(clean.storage, "index")
               for _, location in index_entries(clean, key)}
    assert len(stored) >= 2 and {key.rsplit("/", 1)[1] for key in stored} <= indexed


def resident_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def peak_while_storing(repo, path) -> int:
    """Peak growth of resident memory while chunking a file and storing its chunks from two
    threads, with at most 8 chunks in flight (as the engine does). Resident memory, not
    Python's allocations: pack buffers are memory maps, which tracemalloc does not see."""
    slots = threading.BoundedSemaphore(8)
    done = threading.Event()
    baseline = peak = resident_bytes()

    def put(chunk) -> None:
        try:
            store.put(store.chunk_id(chunk), chunk)
        finally:
            slots.release()

    def sample() -> None:
        nonlocal peak
        while not done.wait(0.002):
            peak = max(peak, resident_bytes())

    sampler = threading.Thread(target=sample)
    sampler.start()
    try:
        with ChunkStore(repo) as store, ThreadPoolExecutor(2) as pool, open(path, "rb") as f:
            futures = []
            for chunk in chunk_file(DEFAULT_CHUNKER, f):
                slots.acquire()
                futures.append(pool.submit(put, chunk))
            for future in futures:
                future.result()
    finally:
        done.set()
        sampler.join()
    assert store.stats.bytes_new == os.path.getsize(path)
    return peak - baseline


def test_memory_does_not_grow_with_the_data(tmp_path, monkeypatch):
    # 2 MiB packs, so the data below is many times what the design may hold in memory.
    monkeypatch.setattr("corso_core.repo.packs.TARGET_PACK_SIZE", 2 * 1024 * 1024)
    small, large = tmp_path / "small", tmp_path / "large"
    small.write_bytes(os.urandom(32 * 1024 * 1024))
    with open(large, "wb") as f:
        for _ in range(24):
            f.write(os.urandom(8 * 1024 * 1024))  # nothing deduplicates
    peak_small = peak_while_storing(make_repository(tmp_path / "a"), small)
    peak_large = peak_while_storing(make_repository(tmp_path / "b"), large)
    # By design: concurrent_writes + 1 pack buffers and the 8 MiB chunker buffers that the chunks
    # in flight point into, whatever the size of the data (192 MiB in 96 packs here: keeping
    # one pack or chunk buffer too many per pack would show as hundreds of MiB).
    assert peak_large < 110 * 1024 * 1024
    assert peak_large < peak_small + 48 * 1024 * 1024


def test_the_data_layer_on_s3(seaweedfs, s3_prefix, tmp_path, small_packs):
    from corso_s3.factory import open_storage

    repo = make_repository(tmp_path, open_storage(seaweedfs.values(s3_prefix)))
    datas = chunks(40)
    with ChunkStore(repo) as store:
        ids = put_all(store, datas)
        tree_id = put_all(store, [b"a tree"], kind="tree")[0]
    backup_id = save_manifest(repo, {"tree": tree_id.hex()})
    assert_valid(repo)  # every pack header read with one suffix GET
    shutil.rmtree(os.environ["CORSO_CACHE_DIR"])
    with ChunkStore(repo) as store:
        assert get_all(store, ids) == dict(zip(ids, datas, strict=True))
        assert store.get(bytes.fromhex(load_manifest(repo, backup_id)["tree"])) == b"a tree"
    key = next(k for k in keys_of(repo.storage, "data")
               if ids[0] in [e.chunk_id for e in read_header(
                   repo.storage, repo.keys, "data", names.parse_key("data", k))])
    entry = next(e for e in read_header(repo.storage, repo.keys, "data",
                                        names.parse_key("data", key)) if e.chunk_id == ids[0])
    blob = bytearray(repo.storage.get(key))
    blob[entry.offset + entry.length - 1] ^= 1
    repo.storage.put(key, bytes(blob))
    with ChunkStore(repo) as store:
        with pytest.raises(Corrupted, match=f"chunk {ids[0].hex()} is corrupted"):
            store.get(ids[0])
    repo.storage.close()


class SlowPackWrites(FilesystemStorage):
    """Pack writes take 20 ms; records the most that were ever in progress at once."""

    def __init__(self, root: str, concurrent_writes: int) -> None:
        super().__init__(root)
        self.concurrent_writes = concurrent_writes
        self.writing = self.most = 0
        self._counting = threading.Lock()

    def _create(self, key: str, data) -> None:
        if not key.startswith(names.prefix(names.DATA_PACK)):
            return super()._create(key, data)
        with self._counting:
            self.writing += 1
            self.most = max(self.most, self.writing)
        try:
            time.sleep(0.02)
            super()._create(key, data)
        finally:
            with self._counting:
                self.writing -= 1


@pytest.mark.parametrize("concurrent_writes", [1, 2])
def test_uploads_in_flight_never_exceed_the_storages_concurrent_writes(tmp_path, small_packs,
                                                                       concurrent_writes):
    storage = SlowPackWrites(str(tmp_path / "repo"), concurrent_writes)
    repo = make_repository(tmp_path, storage)
    datas = chunks(120)
    with ChunkStore(repo) as store:
        ids = put_all(store, datas)
    assert storage.most == concurrent_writes  # reached, and never passed
    with ChunkStore(repo) as store:
        assert get_all(store, ids) == dict(zip(ids, datas, strict=True))


def test_object_storage_reads_a_whole_default_pack_in_one_request():
    from corso_core.repo.packs import TARGET_PACK_SIZE
    from corso_core.storage.interface import BlobStorage

    largest_pack = TARGET_PACK_SIZE + DEFAULT_CHUNKER.params.max_size + 64 * 1024  # + its header
    assert BlobStorage.largest_read >= largest_pack  # S3 keeps the default
    assert FilesystemStorage.largest_read < TARGET_PACK_SIZE  # local reads trade requests for RSS
