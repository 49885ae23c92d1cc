"""The small-chunk lane of ChunkStore.get_many (repo/small_chunks.py)."""

import itertools
import threading
import time

import pytest
from datalayer import make_repository
from test_store import chunks, counting_buffers, get_all, put_all

from corso_core.errors import Corrupted
from corso_core.repo import names
from corso_core.repo.packs import read_header
from corso_core.repo.small_chunks import (
    BATCHES_QUEUED,
    BATCHES_QUEUED_REMOTE,
    SMALL_CHUNK,
    SmallChunkLane,
    pays_off,
)
from corso_core.repo.store import ChunkStore, PackGone


def test_the_lane_is_used_where_small_chunks_give_it_work_enough():
    assert pays_off([3000] * 100)
    assert pays_off([3000] * 15_000 + [1 << 20] * 920)  # 15,000 small files beside 920 MiB
    assert not pays_off([3000] * 100 + [1 << 20] * 920)  # a few: two readers on the rest
    assert not pays_off([1 << 20] * 10)
    assert not pays_off([])


def test_small_chunks_go_to_the_lane_and_large_ones_stay_with_the_reader(tmp_path):
    repo = make_repository(tmp_path)
    small, large = chunks(300, 3000, seed=1), chunks(3, SMALL_CHUNK + 1000, seed=2)
    with ChunkStore(repo) as store:
        ids = put_all(store, small + large)
    threads: dict[bytes, str] = {}

    def deliver(chunk_id, data):
        threads[chunk_id] = threading.current_thread().name

    with ChunkStore(repo, read_only=True) as store:
        assert get_all(store, ids) == dict(zip(ids, small + large, strict=True))
        store.get_many(ids, deliver)
    assert {threads[i] for i in ids[:300]} == {"corso-small-chunks"}
    assert all(threads[i].startswith("corso-read") for i in ids[300:])


def test_the_one_reader_fetches_the_next_range_while_it_opens_one(tmp_path, monkeypatch):
    """Two readers had two requests going; the lane's one reader keeps a second one going
    too, so that on object storage it does not wait, idle, for each range."""
    monkeypatch.setattr("corso_core.repo.packs.TARGET_PACK_SIZE", 16 * 1024)
    repo = make_repository(tmp_path)
    datas = chunks(60, 3000)
    with ChunkStore(repo) as store:
        ids = put_all(store, datas)
    both, calls = threading.Barrier(2, timeout=10), itertools.count()
    real_fetch = ChunkStore._fetch_range

    def fetch(self, piece, buffers=None):
        if next(calls) < 2:
            both.wait()  # the second range's read has begun before the first one's ends
        return real_fetch(self, piece, buffers)

    with ChunkStore(repo, read_only=True) as store:
        store._fetch_range = fetch.__get__(store)
        assert get_all(store, ids) == dict(zip(ids, datas, strict=True))
    assert next(calls) > 2


def test_a_stopped_lane_drops_what_it_has_not_delivered_and_names_it():
    stop, delivered = threading.Event(), []

    def deliver(chunk_id, data):
        delivered.append(chunk_id)
        stop.set()  # a failure elsewhere, say

    lane = SmallChunkLane(lambda chunk_id, sealed: sealed, deliver, stop)
    ids = [bytes([n]) * 32 for n in range(5)]
    for chunk_id in ids[:3]:
        lane.add(chunk_id, memoryview(b"x"))
    lane.hand_over()
    for chunk_id in ids[3:]:
        lane.add(chunk_id, memoryview(b"x"))  # never handed over
    lane.close()
    assert delivered == ids[:1]
    assert sorted(lane.dropped) == ids[1:]
    assert lane.error is None


def test_a_failure_in_the_lane_is_kept_and_stops_the_rest():
    stop = threading.Event()

    def deliver(chunk_id, data):
        raise OSError(28, "No space left on device")

    lane = SmallChunkLane(lambda chunk_id, sealed: sealed, deliver, stop)
    for n in range(3):
        lane.add(bytes([n]) * 32, memoryview(b"x"))
    lane.finish()
    assert isinstance(lane.error, OSError) and stop.is_set()
    assert len(lane.dropped) == 2


def test_a_pack_found_gone_reads_again_what_the_lane_had_not_delivered(tmp_path,
                                                                      monkeypatch):
    """The reader meets a pack gone while the lane still holds chunks of earlier ranges: those
    are dropped, read again with the rest after the index is reloaded, and none twice."""
    monkeypatch.setattr("corso_core.repo.packs.TARGET_PACK_SIZE", 64 * 1024)
    repo = make_repository(tmp_path)
    with ChunkStore(repo) as store:
        ids = put_all(store, chunks(200, 3000))
    packs = [info.key for info in repo.storage.list(names.prefix("data"))]
    assert len(packs) >= 3
    last = next(key for key in packs if ids[-1] in [e.chunk_id for e in read_header(
        repo.storage, repo.keys, "data", names.parse_key("data", key))])
    got, started = {}, threading.Event()

    def deliver(chunk_id, data):
        assert chunk_id not in got, "delivered twice"
        started.wait(10)  # the lane waits until the reader has met the pack gone
        got[chunk_id] = data

    real_fetch = ChunkStore._fetch_range
    failed = []

    def fetch(self, piece, buffers=None):
        if names.key(piece.kind, piece.pack) == last and not failed:
            failed.append(piece.pack)
            started.set()
            raise PackGone("gone for now", names.key(piece.kind, piece.pack))
        return real_fetch(self, piece, buffers)

    with ChunkStore(repo, read_only=True) as store:
        store._fetch_range = fetch.__get__(store)
        store.get_many(ids, deliver)
    assert failed and got == dict(zip(ids, chunks(200, 3000), strict=True))


@pytest.fixture(autouse=True)
def _no_leftover_threads():
    yield
    assert not [t for t in threading.enumerate() if t.name == "corso-small-chunks"]


@pytest.fixture
def small_chunk_repository(tmp_path, monkeypatch):
    """Small chunks in several packs: get_many reads them with one reader and the lane."""
    monkeypatch.setattr("corso_core.repo.packs.TARGET_PACK_SIZE", 16 * 1024)
    repo = make_repository(tmp_path)
    datas = chunks(60, 3000, seed=5)
    with ChunkStore(repo) as store:
        ids = put_all(store, datas)
    return repo, ids, dict(zip(ids, datas, strict=True))


def counting_fetches(store: ChunkStore,
                     then: int = 1) -> tuple[list[tuple[str, int]], threading.Event]:
    """Each range fetched (pack, start), and an Event set once `then` fetches have begun."""
    fetched, begun = [], threading.Event()
    real_fetch = ChunkStore._fetch_range

    def fetch(self, piece, buffers=None):
        fetched.append((piece.pack, piece.start))
        if len(fetched) == then:
            begun.set()
        return real_fetch(self, piece, buffers)

    store._fetch_range = fetch.__get__(store)
    return fetched, begun


def test_a_prefetch_sends_the_first_two_requests_before_get_many_which_takes_them_over(
        small_chunk_repository):
    repo, ids, expected = small_chunk_repository
    with ChunkStore(repo, read_only=True) as store:
        fetched, begun = counting_fetches(store, then=2)
        store.prefetch(ids + ids[:5])  # as a restore's plan gives them: a chunk may recur
        assert begun.wait(10)  # before get_many is called
        assert fetched == [(piece.pack, piece.start)
                           for piece in store._prefetched.fetcher.ranges[:2]]
        assert get_all(store, list(reversed(ids))) == expected  # the same IDs, in any order
    assert len(fetched) > 2
    assert len(fetched) == len(set(fetched))  # no range read twice


def test_get_many_of_other_ids_drops_the_prefetch_and_reads_its_own(small_chunk_repository):
    """As when the collision policy leaves files alone: fewer chunks than the plan's."""
    repo, ids, expected = small_chunk_repository
    with ChunkStore(repo, read_only=True) as store:
        _, begun = counting_fetches(store)
        store.prefetch(ids)
        assert begun.wait(10)
        assert store._prefetched is not None
        wanted = ids[10:40]
        assert get_all(store, wanted) == {i: expected[i] for i in wanted}
        assert store._prefetched is None


def test_close_ends_a_prefetch_never_taken_over(small_chunk_repository):
    repo, ids, _ = small_chunk_repository
    store = ChunkStore(repo, read_only=True)
    store.prefetch(ids)
    store.close()
    assert not [t for t in threading.enumerate() if t.name.startswith("corso-fetch")]


def test_a_prefetch_of_a_chunk_the_index_lacks_leaves_the_error_to_get_many(
        small_chunk_repository):
    repo, ids, _ = small_chunk_repository
    missing = b"\x01" * 32
    with ChunkStore(repo, read_only=True) as store:
        store.prefetch([missing, *ids])  # no error here: the restore has not begun writing
        assert store._prefetched is None
        with pytest.raises(Corrupted, match="missing from the repository index"):
            get_all(store, [missing, *ids])


def test_the_lane_reader_receives_its_ranges_into_two_buffers(small_chunk_repository,
                                                              monkeypatch):
    repo, ids, expected = small_chunk_repository
    made = counting_buffers(monkeypatch)
    with ChunkStore(repo, read_only=True) as store:
        fetched, _ = counting_fetches(store)
        store.prefetch(ids)
        assert get_all(store, ids) == expected
    assert len(fetched) >= 10 and 1 <= len(made) <= 2


def test_the_reader_waits_while_the_lanes_queue_is_full():
    """Memory stays bounded: with `queued` batches waiting, handing over one more waits."""
    stop, release, delivering = threading.Event(), threading.Event(), threading.Event()

    def deliver(chunk_id, data):
        delivering.set()
        assert release.wait(10)

    lane = SmallChunkLane(lambda chunk_id, sealed: sealed, deliver, stop, queued=2)
    handed = []

    def reader():
        for n in range(5):
            lane.add(bytes([n]) * 32, memoryview(b"x"))
            lane.hand_over()
            handed.append(n)

    thread = threading.Thread(target=reader)
    thread.start()
    assert delivering.wait(10)
    time.sleep(0.2)
    assert handed == [0, 1, 2]  # one batch being delivered, two waiting: the fourth waits
    release.set()
    thread.join(10)
    lane.finish()
    assert handed == [0, 1, 2, 3, 4] and lane.error is None


@pytest.mark.parametrize("remote", [False, True])
def test_from_remote_storage_the_lane_gets_the_deeper_queue(small_chunk_repository,
                                                            monkeypatch, remote):
    repo, ids, expected = small_chunk_repository
    if remote:
        monkeypatch.setattr(type(repo.storage), "local_root", property(lambda self: None))
    depths = []

    class Recorded(SmallChunkLane):
        def __init__(self, *args):
            depths.append(args[-1])
            super().__init__(*args)

    monkeypatch.setattr("corso_core.repo.store.SmallChunkLane", Recorded)
    with ChunkStore(repo, read_only=True) as store:
        assert get_all(store, ids) == expected
    assert depths == [BATCHES_QUEUED_REMOTE if remote else BATCHES_QUEUED]
    assert BATCHES_QUEUED_REMOTE > BATCHES_QUEUED
