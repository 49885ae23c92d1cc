"""Long run (make soak): four writers on one S3Storage, 20 % of requests failing transiently.

Afterwards the storage holds exactly what the writers left, every blob whole, and no multipart
upload is left behind.
"""

from __future__ import annotations

import os
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest
from s3_servers import with_small_parts
from test_s3_faults import FaultInjector

from corso_s3.factory import open_storage
from corso_s3.storage import MIN_PART_SIZE

pytestmark = pytest.mark.soak


def test_concurrent_writers_under_heavy_faults(seaweedfs, s3_prefix):
    storage = with_small_parts(open_storage(seaweedfs.values(s3_prefix)))
    FaultInjector(0.20, seed=7).attach(storage.client)
    expected: dict[str, bytes] = {}
    guard = threading.Lock()

    def writer(n: int) -> None:
        for i in range(300):
            key = f"data/w{n}/{i:04d}"
            data = os.urandom(MIN_PART_SIZE + 7) if i % 100 == 0 else os.urandom(i)
            storage.put(key, data)
            if i % 3 == 0:
                storage.delete(key)
            else:
                assert storage.get(key) == data
                with guard:
                    expected[key] = data

    with ThreadPoolExecutor(4) as pool:
        for done in [pool.submit(writer, n) for n in range(4)]:
            done.result()  # a writer's failure fails the test
    assert {b.key: b.size for b in storage.list("data/")} == {
        k: len(v) for k, v in expected.items()}
    assert all(storage.get(k) == v for k, v in expected.items())
    uploads = seaweedfs.admin().list_multipart_uploads(Bucket=seaweedfs.bucket, Prefix=s3_prefix)
    assert uploads.get("Uploads", []) == []
