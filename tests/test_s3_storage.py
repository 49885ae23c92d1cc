"""S3Storage on a real S3 server (SeaweedFS): the core's contract, and what only S3 has."""

from __future__ import annotations

import os
import threading
import time
import tracemalloc
from concurrent.futures import ThreadPoolExecutor

import pytest
from botocore.awsrequest import AWSResponse
from s3_servers import with_small_parts
from urllib3.connectionpool import HTTPConnectionPool
from urllib3.response import HTTPResponse

from corso_core.api import AlreadyExists, BlobStorageContract, RepositoryError
from corso_core.repo.repository import init_or_open, open_repository
from corso_s3.factory import open_storage
from corso_s3.storage import MIN_PART_SIZE

SMALL_PART = MIN_PART_SIZE  # the smallest part S3 allows keeps multipart tests small


@pytest.fixture
def s3_storage(seaweedfs, s3_prefix):
    storage = with_small_parts(open_storage(seaweedfs.values(s3_prefix)))
    yield storage
    storage.close()


class TestS3Contract(BlobStorageContract):
    #: Past the part size: the large-blob checks go through multipart uploads.
    large_blob_size = 2 * SMALL_PART + 1234

    @pytest.fixture
    def storage(self, s3_storage):
        yield s3_storage


def test_large_blob_is_uploaded_in_parts(s3_storage):
    data = os.urandom(2 * SMALL_PART + 1)
    s3_storage.put("data/big", data)
    requests = s3_storage.counts.as_dict()["requests"]
    assert requests["MULTIPART"] == 1 + 3 + 1  # create, three parts, complete
    assert "PUT" not in requests
    assert s3_storage.get("data/big", SMALL_PART - 2, 4) == data[SMALL_PART - 2 : SMALL_PART + 2]


KILLED = "data/ab/ab" + "0" * 30  # a pack's key: an upload a killed backup left


def test_cleanup_aborts_only_stale_uploads_of_its_own_prefix(s3_storage, seaweedfs):
    admin = seaweedfs.admin()
    mine = admin.create_multipart_upload(Bucket=seaweedfs.bucket,
                                         Key=s3_storage.prefix + KILLED)
    other = admin.create_multipart_upload(Bucket=seaweedfs.bucket, Key="elsewhere/data/x")
    try:
        assert s3_storage.cleanup(24 * 3600) == 0  # just started: maybe another host's, alive
        assert s3_storage.cleanup(0) == 1
        left = admin.list_multipart_uploads(Bucket=seaweedfs.bucket).get("Uploads", [])
        assert mine["UploadId"] not in {u["UploadId"] for u in left}
        assert other["UploadId"] in {u["UploadId"] for u in left}
    finally:
        admin.abort_multipart_upload(Bucket=seaweedfs.bucket, Key="elsewhere/data/x",
                                     UploadId=other["UploadId"])


def test_only_own_keys_are_listed(seaweedfs, s3_storage):
    admin = seaweedfs.admin()
    admin.put_object(Bucket=seaweedfs.bucket, Key=s3_storage.prefix + "data/no spaces!", Body=b"")
    sibling = s3_storage.prefix.rstrip("/") + "-sibling/data/x"  # shares the text prefix
    admin.put_object(Bucket=seaweedfs.bucket, Key=sibling, Body=b"")
    s3_storage.put("data/mine", b"m")
    assert [b.key for b in s3_storage.list()] == ["data/mine"]


def test_request_counts_match_the_servers(s3_storage, seaweedfs_process):
    bucket = s3_storage.bucket
    before = seaweedfs_process.request_counts(bucket)
    for i in range(3):
        s3_storage.put(f"data/c{i}", b"abc")
    s3_storage.get("data/c0")
    s3_storage.get_tail("data/c1", 2)
    s3_storage.stat("data/c2")
    list(s3_storage.list("data/"))
    s3_storage.delete("data/c0")
    server = seaweedfs_process.request_counts(bucket) - before
    ours = s3_storage.counts.as_dict()
    # SeaweedFS counts HEAD as GET. Ours has the bucket's region, asked when the storage
    # opened (before `before`). Both have two GETs of the first put: the Object Lock record,
    # and, as there is none (no repository here), whether the bucket has Object Lock.
    assert ours["requests"] == {"PUT": 3, "GET": 5, "HEAD": 1, "LIST": 1, "DELETE": 1}
    assert dict(server) == {"PUT": 3, "GET": 5, "LIST": 1, "DELETE": 1}
    assert ours["bytes_up"] == 9 and ours["bytes_down"] == 3 + 2


def test_a_multipart_upload_never_copies_the_blob(s3_storage):
    data = os.urandom(3 * SMALL_PART)
    s3_storage.put("warm-up", b"")  # load botocore's lazily loaded parts first
    tracemalloc.start()
    try:
        s3_storage.put("data/big", data)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < SMALL_PART  # not a single part's copy, let alone the blob's


def test_without_conditional_writes_create_falls_back_to_check_then_put(s3_storage):
    def refuse_if_none_match(request, **kwargs):
        if "If-None-Match" in request.headers:
            xml = b"<Error><Code>NotImplemented</Code><Message>no</Message></Error>"
            return AWSResponse(request.url, 501, {}, type("Raw", (), {
                "stream": lambda self, **kw: iter([xml])})())
        return None

    s3_storage.client.meta.events.register("before-send.s3.PutObject", refuse_if_none_match)
    s3_storage.put_new("format", b"one")
    assert s3_storage.atomic_create is False
    with pytest.raises(AlreadyExists):
        s3_storage.put_new("format", b"two")
    assert s3_storage.get("format") == b"one"


def test_concurrent_inits_of_one_prefix_have_exactly_one_winner(seaweedfs, s3_prefix):
    """Each init is its own process in real life: its own storage, its own passphrase."""
    barrier = threading.Barrier(6)

    def init(i: int):
        storage = open_storage(seaweedfs.values(s3_prefix))
        barrier.wait()
        try:
            repository, created = init_or_open(storage, f"passphrase {i}")
            return "created" if created else "opened", repository.repository_id
        except RepositoryError as e:
            return "refused", str(e)
        finally:
            storage.close()

    with ThreadPoolExecutor(6) as pool:
        outcomes = list(pool.map(init, range(6)))
    winners = [detail for outcome, detail in outcomes if outcome == "created"]
    assert len(winners) == 1
    assert [o for o, _ in outcomes].count("refused") == 5
    stored = open_storage(seaweedfs.values(s3_prefix))
    winner = next(i for i, (o, _) in enumerate(outcomes) if o == "created")
    assert open_repository(stored, f"passphrase {winner}").repository_id == winners[0]


def test_cleanup_at_the_bucket_root_leaves_others_uploads_alone(seaweedfs):
    """A repository at the root of a bucket others use too: maintenance aborted their
    uploads ('notes.txt', 'other/big-upload.bin') as it does a killed backup's (found by an
    exploratory test). Only uploads of the repository's own kinds of blob go."""
    admin = seaweedfs.admin()
    bucket = f"shared-{os.getpid()}-{time.monotonic_ns() % 10**6}"
    admin.create_bucket(Bucket=bucket)
    storage = open_storage(seaweedfs.values("", bucket=bucket))
    try:
        uploads = {key: admin.create_multipart_upload(Bucket=bucket, Key=key)["UploadId"]
                   for key in ("notes.txt", "other/big-upload.bin", "data/x", KILLED)}
        assert storage.cleanup(0) == 1
        left = {u["Key"] for u in admin.list_multipart_uploads(Bucket=bucket)["Uploads"]}
        assert left == set(uploads) - {KILLED}
        for key in left:
            admin.abort_multipart_upload(Bucket=bucket, Key=key, UploadId=uploads[key])
    finally:
        storage.close()


def test_a_range_is_received_into_the_buffer_from_the_socket_on_a_kept_connection(
        s3_storage, monkeypatch):
    """get_into reads the response straight into the caller's buffer (urllib3's own read
    makes new bytes and copies them), and gives the connection back for the next request."""
    data = os.urandom(3 * 1024 * 1024)
    s3_storage.put("data/ab/pack", data)
    buffer = memoryview(bytearray(len(data)))
    assert s3_storage.get_into("data/ab/pack", 0, buffer) == len(data)  # a connection in
    urllib3_reads, connections = [], []
    read, new_connection = HTTPResponse.read, HTTPConnectionPool._new_conn
    monkeypatch.setattr(HTTPResponse, "read", lambda self, *args, **kwargs: (
        urllib3_reads.append(1), read(self, *args, **kwargs))[1])
    monkeypatch.setattr(HTTPConnectionPool, "_new_conn", lambda self: (
        connections.append(1), new_connection(self))[1])
    for offset in (0, 1000, 2_000_000):
        buffer[:] = bytes(len(buffer))
        assert s3_storage.get_into("data/ab/pack", offset, buffer) == len(data) - offset
        assert buffer[: len(data) - offset] == data[offset:]
    assert urllib3_reads == []
    assert connections == []  # each request found the one before it's connection in the pool
    assert s3_storage.get("data/ab/pack", 5, 10) == data[5:15]  # and so does any other
    assert urllib3_reads and connections == []


def test_a_range_is_received_into_the_buffer_over_tls_as_well(seaweedfs_tls, s3_prefix):
    storage = open_storage(seaweedfs_tls.values(s3_prefix))
    data = os.urandom(5 * 1024 * 1024 + 17)
    buffer = memoryview(bytearray(len(data)))
    try:
        storage.put("data/ab/pack", data)
        assert storage.get_into("data/ab/pack", 0, buffer) == len(data)
        assert buffer == data
        assert storage.get_into("data/ab/pack", 4096, buffer[:1000]) == 1000
        assert buffer[:1000] == data[4096:5096]
        assert storage.get("data/ab/pack", 7, 3) == data[7:10]  # the connection still serves
    finally:
        storage.close()
