"""S3Storage on a real S3 server (SeaweedFS): the core's contract, and what only S3 has."""

from __future__ import annotations

import os

import pytest

from corso_core.api import BlobStorageContract
from corso_s3.factory import open_storage
from corso_s3.storage import MIN_PART_SIZE

SMALL_PART = MIN_PART_SIZE  # the smallest part S3 allows keeps multipart tests small


@pytest.fixture
def s3_storage(seaweedfs, s3_prefix):
    storage = open_storage(seaweedfs.values(s3_prefix))
    storage.part_size = SMALL_PART
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
