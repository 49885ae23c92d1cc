"""The contract every storage backend must meet, published for plugin authors.

Subclass `BlobStorageContract` in a test module and give it a `storage` fixture that yields an
empty `BlobStorage`; pytest then runs every check below against your backend::

    class TestMyBackend(BlobStorageContract):
        @pytest.fixture
        def storage(self, tmp_path):
            yield MyStorage(tmp_path)

The built-in filesystem backend and corso-s3 run exactly this suite.
"""

from __future__ import annotations

import os
import threading

import pytest

from corso_core.errors import AlreadyExists, NotFound


class BlobStorageContract:
    #: Size of the "large" blob; S3 backends raise it past their multipart threshold.
    large_blob_size = 3 * 1024 * 1024
    #: How many keys the listing test writes; past 1,000 proves that S3 listing pages.
    many_keys = 1100

    def test_put_then_get_returns_the_same_bytes(self, storage):
        storage.put("a/one", b"hello world")
        assert storage.get("a/one") == b"hello world"

    def test_empty_blob_round_trips(self, storage):
        storage.put("empty", b"")
        assert storage.get("empty") == b""
        assert storage.stat("empty").size == 0

    def test_large_blob_round_trips(self, storage):
        data = os.urandom(self.large_blob_size)
        storage.put("big", memoryview(data))
        assert storage.get("big") == data
        assert storage.stat("big").size == len(data)

    def test_put_replaces_existing_blob(self, storage):
        storage.put("k", b"old")
        storage.put("k", b"new contents")
        assert storage.get("k") == b"new contents"

    def test_get_range_and_tail(self, storage):
        storage.put("r", bytes(range(100)))
        assert storage.get("r", 10, 5) == bytes(range(10, 15))
        assert storage.get("r", 95, 50) == bytes(range(95, 100))
        assert storage.get("r", 90) == bytes(range(90, 100))
        assert storage.get_tail("r", 3) == bytes([97, 98, 99])
        assert storage.get_tail("r", 500) == bytes(range(100))

    def test_get_into_fills_the_callers_buffer(self, storage):
        data = os.urandom(300_000)
        storage.put("r", data)
        buffer = memoryview(bytearray(b"\xee" * 200_000))
        assert storage.get_into("r", 1000, buffer[:150_000]) == 150_000
        assert buffer[:150_000] == data[1000:151_000]
        assert buffer[150_000:] == b"\xee" * 50_000  # nothing past what it was given
        assert storage.get_into("r", 250_000, buffer) == 50_000  # fewer at the blob's end
        assert buffer[:50_000] == data[250_000:]
        assert storage.get_into("r", 300_000, buffer) == 0  # wholly past the end
        storage.put("empty", b"")
        assert storage.get_into("empty", 0, buffer[:10]) == 0
        with pytest.raises(NotFound):
            storage.get_into("nope", 0, buffer[:10])

    def test_read_ahead_is_only_a_hint(self, storage):
        storage.put("r", bytes(range(100)))
        storage.read_ahead("r", 10, 50)
        storage.read_ahead("r", 90, 500)  # past the end
        storage.read_ahead("nope", 0, 10)  # a hint for a blob that is not there: no error
        assert storage.get("r", 10, 5) == bytes(range(10, 15))

    def test_missing_blob_raises_not_found(self, storage):
        for call in (
            lambda: storage.get("nope"),
            lambda: storage.get("nope", 1, 2),
            lambda: storage.get_tail("nope", 4),
            lambda: storage.stat("nope"),
        ):
            with pytest.raises(NotFound):
                call()

    def test_put_new_creates_once(self, storage):
        storage.put_new("format", b"first")
        with pytest.raises(AlreadyExists):
            storage.put_new("format", b"second")
        assert storage.get("format") == b"first"

    def test_put_new_retry_with_same_bytes_succeeds(self, storage):
        storage.put_new("format", b"same")
        storage.put_new("format", b"same")  # a retry after a lost response
        assert storage.get("format") == b"same"

    def test_concurrent_put_new(self, storage):
        """Exactly one winner where `atomic_create` is promised; else at least one, and the
        blob stored is one writer's whole."""
        winners, losers = [], []
        barrier = threading.Barrier(8)

        def racer(i: int) -> None:
            barrier.wait()
            try:
                storage.put_new("race", f"writer {i}".encode())
                winners.append(i)
            except AlreadyExists:
                losers.append(i)

        threads = [threading.Thread(target=racer, args=(i,)) for i in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert winners and len(winners) + len(losers) == 8
        if storage.atomic_create:
            assert len(winners) == 1
        assert storage.get("race") in {f"writer {i}".encode() for i in winners}

    def test_stat_gives_size_and_storage_mtime(self, storage):
        storage.put("s1", b"12345")
        first = storage.stat("s1")
        storage.put("s2", b"123")
        second = storage.stat("s2")
        assert (first.key, first.size) == ("s1", 5)
        assert second.size == 3
        assert second.mtime >= first.mtime - 1  # storage clocks may round to the second
        assert first.mtime > 1_600_000_000

    def test_list_by_prefix(self, storage):
        storage.put("data/ab/ab01", b"x")
        storage.put("data/ab/ab02", b"yy")
        storage.put("data/cd/cd01", b"zzz")
        storage.put("index/i1", b"i")
        listed = {b.key: b.size for b in storage.list("data/")}
        assert listed == {"data/ab/ab01": 1, "data/ab/ab02": 2, "data/cd/cd01": 3}
        assert {b.key for b in storage.list("data/a")} == {"data/ab/ab01", "data/ab/ab02"}
        assert {b.key for b in storage.list()} == set(listed) | {"index/i1"}
        assert list(storage.list("nothing/")) == []

    def test_list_returns_every_key_past_a_page(self, storage):
        keys = {f"many/k{i:05d}" for i in range(self.many_keys)}
        for key in keys:
            storage.put(key, b"")
        assert {b.key for b in storage.list("many/")} == keys

    def test_delete_removes_and_is_idempotent(self, storage):
        storage.put("d", b"bye")
        storage.delete("d")
        with pytest.raises(NotFound):
            storage.get("d")
        storage.delete("d")
        assert list(storage.list("d")) == []

    def test_no_reader_sees_a_partial_blob(self, storage):
        old, new = b"o" * self.large_blob_size, b"n" * self.large_blob_size
        storage.put("atomic", old)
        seen: list[bytes] = []
        done = threading.Event()

        def reader() -> None:
            while not done.is_set():
                seen.append(storage.get("atomic"))

        t = threading.Thread(target=reader)
        t.start()
        try:
            storage.put("atomic", new)
        finally:
            done.set()
            t.join()
        assert seen and all(s in (old, new) for s in seen)
        assert storage.get("atomic") == new

    def test_requests_are_counted(self, storage):
        storage.put("c", b"abc")
        storage.get("c")
        counts = storage.counts.as_dict()
        assert counts["requests"]["PUT"] >= 1
        assert counts["requests"]["GET"] >= 1
        assert counts["bytes_up"] >= 3 and counts["bytes_down"] >= 3
