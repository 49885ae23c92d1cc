"""The small-chunk lane of ChunkStore.get_many (repo/small_chunks.py)."""

import itertools
import threading

import pytest
from datalayer import make_repository
from test_store import chunks, get_all, put_all

from corso_core.repo import names
from corso_core.repo.packs import read_header
from corso_core.repo.small_chunks import SMALL_CHUNK, SmallChunkLane, pays_off
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

    def fetch(self, piece):
        if next(calls) < 2:
            both.wait()  # the second range's read has begun before the first one's ends
        return real_fetch(self, piece)

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

    def fetch(self, piece):
        if names.key(piece.kind, piece.pack) == last and not failed:
            failed.append(piece.pack)
            started.set()
            raise PackGone("gone for now", names.key(piece.kind, piece.pack))
        return real_fetch(self, piece)

    with ChunkStore(repo, read_only=True) as store:
        store._fetch_range = fetch.__get__(store)
        store.get_many(ids, deliver)
    assert failed and got == dict(zip(ids, chunks(200, 3000), strict=True))


@pytest.fixture(autouse=True)
def _no_leftover_threads():
    yield
    assert not [t for t in threading.enumerate() if t.name == "corso-small-chunks"]
