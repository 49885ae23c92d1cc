"""Faults on the wire: the contract still holds when 10 % of S3 requests fail transiently.

Faults are injected through botocore's `before-send` event, so the request is never sent
and the fault looks to botocore exactly like a server or network failure: 500 InternalError,
503 SlowDown (throttling), a connection closed mid-request, a read timeout.
"""

from __future__ import annotations

import base64
import http.client
import os
import random
import threading

import pytest
from botocore.awsrequest import AWSResponse
from botocore.exceptions import ConnectionClosedError, ReadTimeoutError, ResponseStreamingError
from botocore.httpchecksum import StreamingChecksumBody
from s3_servers import with_small_parts

from corso_core.api import BlobStorageContract, NotFound, RequestCounts, StorageError
from corso_s3.body import BufferReader
from corso_s3.factory import open_storage
from corso_s3.storage import MIN_PART_SIZE, RESUMES

FAULT_RATE = 0.10


class _Body:
    def __init__(self, data: bytes) -> None:
        self.data = data

    def stream(self, **kwargs):
        yield self.data


def _error(url: str, status: int, code: str) -> AWSResponse:
    xml = f"<?xml version='1.0'?><Error><Code>{code}</Code><Message>injected</Message></Error>"
    return AWSResponse(url, status, {}, _Body(xml.encode()))


class FaultInjector:
    """Fails a share of the requests of one operation (all by default), seeded.

    `fatal` makes every fault a non-retryable 403, to see what a failed upload leaves.
    """

    def __init__(self, rate: float, seed: int = 4, only: str = "*", fatal: bool = False) -> None:
        self.rate = rate
        self.only = only
        self.fatal = fatal
        self.random = random.Random(seed)
        self.lock = threading.Lock()
        self.injected = 0

    def attach(self, client) -> None:
        client.meta.events.register(f"before-send.s3.{self.only}", self)

    def __call__(self, request, **kwargs):
        with self.lock:
            roll = self.random.random()
            if roll >= self.rate:
                return None
            self.injected += 1
            kind = self.random.random()
        if self.fatal:
            return _error(request.url, 403, "AccessDenied")
        if kind < 0.03:
            return _error(request.url, 503, "SlowDown")
        if kind < 0.15:
            raise ConnectionClosedError(endpoint_url=request.url)
        if kind < 0.25:
            raise ReadTimeoutError(endpoint_url=request.url)
        return _error(request.url, 500, "InternalError")


@pytest.fixture
def faulty_storage(seaweedfs, s3_prefix):
    storage = with_small_parts(open_storage(seaweedfs.values(s3_prefix)))
    injector = FaultInjector(FAULT_RATE)
    injector.attach(storage.client)
    storage.injector = injector
    yield storage
    storage.close()


class TestS3ContractUnderFaults(BlobStorageContract):
    large_blob_size = MIN_PART_SIZE + 1234

    @pytest.fixture
    def storage(self, faulty_storage):
        yield faulty_storage


def test_faults_are_injected_retried_and_counted(faulty_storage):
    faulty_storage.put("warm-up", b"")  # the first write also reads the Object Lock record
    faulty_storage.counts = RequestCounts()
    faulty_storage.injector.injected = 0
    for i in range(100):
        faulty_storage.put(f"k/{i:03d}", str(i).encode())
    assert all(faulty_storage.get(f"k/{i:03d}") == str(i).encode() for i in range(100))
    injected = faulty_storage.injector.injected
    assert injected >= 5  # 200 requests at 10 %
    requests = faulty_storage.counts.as_dict()["requests"]
    # Every attempt is counted (metered stores bill failed attempts too).
    assert requests["PUT"] + requests["GET"] == 200 + injected


def test_multipart_under_faults_leaves_no_upload_behind(faulty_storage, seaweedfs):
    blobs = {f"data/b{i}": bytes([i]) * (MIN_PART_SIZE + 10) for i in range(3)}
    for key, data in blobs.items():
        faulty_storage.put(key, data)
    assert all(faulty_storage.get(key) == data for key, data in blobs.items())
    uploads = seaweedfs.admin().list_multipart_uploads(
        Bucket=seaweedfs.bucket, Prefix=faulty_storage.prefix)
    assert uploads.get("Uploads", []) == []


def test_a_failed_multipart_upload_is_aborted_and_invisible(seaweedfs, s3_prefix):
    storage = with_small_parts(open_storage(seaweedfs.values(s3_prefix)))
    FaultInjector(1.0, only="UploadPart", fatal=True).attach(storage.client)
    with pytest.raises(StorageError, match="UploadPart"):
        storage.put("data/big", bytes(MIN_PART_SIZE + 1))
    assert list(storage.list()) == []
    uploads = seaweedfs.admin().list_multipart_uploads(Bucket=seaweedfs.bucket, Prefix=s3_prefix)
    assert uploads.get("Uploads", []) == []


class _CutBody:
    """A response body that breaks off, as a reset connection does, after `after` bytes."""

    def __init__(self, body, after: int) -> None:
        self.body = body
        self.left = after

    def read(self, amt=None):
        if self.left <= 0:
            raise ResponseStreamingError(error="Connection reset by peer (injected)")
        data = self.body.read(min(amt or self.left, self.left))
        self.left -= len(data)
        return data

    def close(self) -> None:
        self.body.close()


@pytest.mark.parametrize("cuts", [1, RESUMES + 1])
def test_a_body_cut_off_half_way_is_read_on_from_where_it_broke(seaweedfs, s3_prefix, cuts):
    """botocore retries a request that got no answer, not an answer cut off: the bytes not
    received yet are asked for again, RESUMES times at most."""
    storage = open_storage(seaweedfs.values(s3_prefix))
    data = os.urandom(3 * 1024 * 1024)
    storage.put("data/ab/pack", data)
    cut = []

    def cut_off(parsed, model, **kwargs):
        if model.name == "GetObject" and len(cut) < cuts:
            cut.append(1)
            parsed["Body"] = _CutBody(parsed["Body"], after=300_000)

    storage.client.meta.events.register("after-call.s3.GetObject", cut_off)
    gets = storage.counts.requests.get("GET", 0)
    try:
        if cuts > RESUMES:
            with pytest.raises(StorageError, match=f"broke off {RESUMES + 1} times"):
                storage.get("data/ab/pack", 1000, 2_000_000)
            return
        assert storage.get_tail("data/ab/pack", 500_000) == data[-500_000:]
        assert storage.get("data/ab/pack", 1000, 2_000_000) == data[1000:2_001_000]
        assert storage.get("data/ab/pack") == data
        assert storage.counts.requests["GET"] - gets == 3 + 1  # and one for the rest
    finally:
        storage.close()


def test_a_whole_object_get_still_validates_the_response_checksum(seaweedfs, s3_prefix):
    """botocore checks GetObject's x-amz-checksum-* (response_checksum_validation
    when_supported) only when the body is read to its end: a read that finds nothing."""
    storage = open_storage(seaweedfs.values(s3_prefix))
    storage.put("data/ab/pack", os.urandom(100_000))
    checked = []

    def expect_another_checksum(parsed, model, **kwargs):
        body = parsed["Body"]
        checked.append(isinstance(body, StreamingChecksumBody))
        body._expected = base64.b64encode(b"\0\0\0\0").decode()  # as a damaged body gives

    storage.client.meta.events.register("after-call.s3.GetObject", expect_another_checksum)
    try:
        with pytest.raises(StorageError, match="checksum"):
            storage.get("data/ab/pack")
    finally:
        storage.close()
    assert checked == [True]


def test_a_resume_refused_as_an_invalid_range_is_one_storage_error(seaweedfs, s3_prefix):
    """The object shrinks (is rewritten) between the cut and the resume: the resume's GET
    answers InvalidRange, _get_object returns None."""
    storage = open_storage(seaweedfs.values(s3_prefix))
    data = os.urandom(1_000_000)
    storage.put("format", data)
    cut = []

    def cut_off(parsed, model, **kwargs):
        if not cut:
            cut.append(1)
            parsed["Body"] = _CutBody(parsed["Body"], after=600_000)
            storage.put("format", b"short")  # rewritten meanwhile (update-passphrase)

    storage.client.meta.events.register("after-call.s3.GetObject", cut_off)
    try:
        with pytest.raises(StorageError):
            storage.get("format")
    finally:
        storage.close()


def test_a_resume_answered_with_another_range_is_not_spliced(seaweedfs, s3_prefix):
    """A resume answered with something else than the bytes asked for (a proxy that ignores
    Range and answers 200 with the whole object) is appended as if it were the rest."""
    storage = open_storage(seaweedfs.values(s3_prefix))
    data = os.urandom(1_000_000)
    storage.put("data/ab/pack", data)
    calls = []

    def cut_off(parsed, model, **kwargs):
        calls.append(1)
        if len(calls) == 1:
            parsed["Body"] = _CutBody(parsed["Body"], after=600_000)

    def drop_range(params, model, **kwargs):
        if calls:  # the resume: as a Range-ignoring proxy would
            params.pop("Range", None)

    storage.client.meta.events.register("after-call.s3.GetObject", cut_off)
    storage.client.meta.events.register("provide-client-params.s3.GetObject", drop_range)
    try:
        try:
            got = storage.get("data/ab/pack")
        except StorageError:
            return  # refused: fine
        assert got == data
    finally:
        storage.close()


@pytest.mark.parametrize("after", [0, 1, 4095, 300_000])
def test_ranges_cut_off_anywhere_come_back_exact_and_counted(seaweedfs, s3_prefix, after):
    storage = open_storage(seaweedfs.values(s3_prefix))
    data = os.urandom(500_000)
    storage.put("data/ab/pack", data)
    storage.put("data/ab/empty", b"")
    cases = [
        (lambda: storage.get("data/ab/pack"), data),
        (lambda: storage.get("data/ab/pack", 1000, 400_000), data[1000:401_000]),
        (lambda: storage.get("data/ab/pack", 450_000, 100_000), data[450_000:]),  # past the end
        (lambda: storage.get("data/ab/pack", 600_000, 10), b""),  # wholly past the end
        (lambda: storage.get("data/ab/pack", 100_000), data[100_000:]),
        (lambda: storage.get_tail("data/ab/pack", 350_000), data[-350_000:]),
        (lambda: storage.get_tail("data/ab/pack", 900_000), data),
        (lambda: storage.get("data/ab/empty"), b""),
        (lambda: storage.get_tail("data/ab/empty", 10), b""),
    ]
    cut = []

    def cut_off(parsed, model, **kwargs):
        if not cut and "Body" in parsed:
            cut.append(1)
            parsed["Body"] = _CutBody(parsed["Body"], after=after)

    storage.client.meta.events.register("after-call.s3.GetObject", cut_off)
    try:
        for call, want in cases:
            cut.clear()
            gets = storage.counts.requests.get("GET", 0)
            down = storage.counts.bytes_down
            got = call()
            assert got == want
            assert storage.counts.bytes_down - down == len(want)
            resumed = 1 if (want and len(want) > after) else 0
            assert storage.counts.requests["GET"] - gets == 1 + resumed, (len(want), after)
    finally:
        storage.close()


def test_an_upload_over_plain_http_is_not_hashed_but_carries_a_crc32(seaweedfs, s3_prefix):
    """No SHA-256 pass over the body (UNSIGNED-PAYLOAD) even without TLS; the body's CRC32
    goes as a signed header, for the server to check."""
    storage = open_storage(seaweedfs.values(s3_prefix))
    assert storage.client.meta.endpoint_url.startswith("http://")
    sent = []  # the PutObject requests as they go out, signed
    storage.client.meta.events.register("before-send.s3.PutObject",
                                        lambda request, **_: sent.append(request))
    data = os.urandom(3_000_000)
    try:
        storage.put("data/ab/pack", data)
        assert storage.get("data/ab/pack") == data
    finally:
        storage.close()
    [request] = sent
    assert request.headers["x-amz-content-sha256"] == b"UNSIGNED-PAYLOAD"
    signed = request.headers["Authorization"].decode().split("SignedHeaders=")[1].split(",")[0]
    assert "x-amz-checksum-crc32" in signed.split(";")
    assert "x-amz-checksum-crc32" in request.headers


def test_an_upload_reads_its_body_once_in_views_of_the_callers_buffer(seaweedfs, s3_prefix,
                                                                     monkeypatch):
    """Its CRC32 comes with the body (corso_s3/body.py), so botocore does not read the body
    to compute one: each upload's bytes are read once, to be sent, as views of the buffer
    given to put, never copies; a part of a multipart upload too. The server checks each
    checksum: a wrong one would have refused the upload."""
    storage = with_small_parts(open_storage(seaweedfs.values(s3_prefix)))
    reads = []
    read = BufferReader.read

    def noted(self, size=-1):
        chunk = read(self, size)
        reads.append(chunk)
        return chunk

    monkeypatch.setattr(BufferReader, "read", noted)
    small, large = bytearray(os.urandom(3_000_000)), bytearray(os.urandom(MIN_PART_SIZE + 1234))
    try:
        for data in (small, large):
            reads.clear()
            storage.put("data/ab/pack", data)
            assert sum(len(chunk) for chunk in reads) == len(data)
            assert all(isinstance(chunk, memoryview) and chunk.obj is data for chunk in reads)
            assert storage.get("data/ab/pack") == data
    finally:
        storage.close()


def test_a_body_changed_on_the_way_is_refused_and_not_stored(seaweedfs, s3_prefix):
    """What the payload hash would have caught, the CRC32 catches: the server refuses a body
    that differs from the one the request was signed for."""
    storage = open_storage(seaweedfs.values(s3_prefix))
    data = os.urandom(3_000_000)
    changed = bytearray(data)
    changed[1_500_000] ^= 1

    def change_on_the_way(request, **_):
        request.body = bytes(changed)

    storage.client.meta.events.register("before-send.s3.PutObject", change_on_the_way)
    try:
        with pytest.raises(StorageError, match="BadDigest"):
            storage.put("data/ab/pack", data)
        with pytest.raises(NotFound):
            storage.stat("data/ab/pack")
    finally:
        storage.close()


@pytest.mark.parametrize("after", [0, 4095, 300_000])
@pytest.mark.parametrize("how", ["reset", "ended"])
def test_a_range_received_into_a_buffer_is_read_on_from_where_its_connection_broke(
        seaweedfs, s3_prefix, monkeypatch, after, how):
    """The same resume for get_into, whose reads go to the socket beneath botocore's body:
    after a reset connection, or one that ended before the length the answer gave."""
    storage = open_storage(seaweedfs.values(s3_prefix))
    data = os.urandom(500_000)
    storage.put("data/ab/pack", data)
    receive, left, cut = http.client.HTTPResponse.readinto, [after], []

    def cut_off(self, buffer):
        if cut:
            return receive(self, buffer)
        if not left[0]:
            cut.append(1)
            if how == "ended":
                return 0
            raise ConnectionResetError("Connection reset by peer (injected)")
        got = receive(self, memoryview(buffer)[: left[0]])
        left[0] -= got
        return got

    monkeypatch.setattr(http.client.HTTPResponse, "readinto", cut_off)
    buffer = memoryview(bytearray(450_000))
    gets = storage.counts.requests.get("GET", 0)
    try:
        assert storage.get_into("data/ab/pack", 1000, buffer) == 450_000
    finally:
        storage.close()
    assert buffer == data[1000:451_000]
    assert cut and storage.counts.requests["GET"] - gets == 2
    assert storage.counts.bytes_down == 450_000


def test_a_range_answered_with_other_bytes_is_not_received_into_the_buffer(seaweedfs,
                                                                          s3_prefix):
    """A server or proxy that ignores Range answers with the whole object: refused, not
    placed at the buffer's start as if it were the range."""
    storage = open_storage(seaweedfs.values(s3_prefix))
    storage.put("data/ab/pack", os.urandom(100_000))

    def drop_range(params, **kwargs):
        params.pop("Range", None)

    storage.client.meta.events.register("provide-client-params.s3.GetObject", drop_range)
    buffer = memoryview(bytearray(1000))
    try:
        with pytest.raises(StorageError, match="not the range asked for"):
            storage.get_into("data/ab/pack", 5000, buffer)
    finally:
        storage.close()
    assert buffer == bytes(1000)
