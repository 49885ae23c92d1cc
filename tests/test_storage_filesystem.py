"""The filesystem backend: the shared contract, plus what only a filesystem can show."""

import os
import stat
import time

import pytest

from corso_core.errors import AlreadyExists
from corso_core.storage.filesystem import FilesystemStorage
from corso_core.testing import BlobStorageContract


class TestFilesystemContract(BlobStorageContract):
    @pytest.fixture
    def storage(self, tmp_path):
        yield FilesystemStorage(str(tmp_path / "repo"))


def test_directories_are_0700_and_files_0600(tmp_path):
    storage = FilesystemStorage(str(tmp_path / "repo"))
    storage.put("data/ab/blob", b"x")
    storage.put_new("format", b"y")
    for rel in ("", "data", "data/ab"):
        assert stat.S_IMODE(os.stat(tmp_path / "repo" / rel).st_mode) == 0o700
    for rel in ("data/ab/blob", "format"):
        assert stat.S_IMODE(os.stat(tmp_path / "repo" / rel).st_mode) == 0o600


def test_put_new_never_overwrites_even_when_the_race_is_lost(tmp_path):
    storage = FilesystemStorage(str(tmp_path / "repo"))
    storage.put_new("k", b"first")
    with pytest.raises(AlreadyExists):
        storage._create("k", b"first")  # the raw create fails; only put_new forgives a retry
    assert storage.get("k") == b"first"
    assert [n for n in os.listdir(tmp_path / "repo") if n.startswith(".")] == []


def test_keys_cannot_escape_the_root(tmp_path):
    storage = FilesystemStorage(str(tmp_path / "repo"))
    for bad in ("../evil", "/abs", "a//b", "a/", ".hidden", "a/../b"):
        with pytest.raises(ValueError):
            storage.put(bad, b"x")
    assert not (tmp_path / "evil").exists()


def test_cleanup_removes_only_old_temp_files(tmp_path):
    storage = FilesystemStorage(str(tmp_path / "repo"))
    storage.put("data/blob", b"x")
    old = tmp_path / "repo" / "data" / ".blob.tmp-aaaaaa"
    fresh = tmp_path / "repo" / "data" / ".blob.tmp-bbbbbb"
    old.write_bytes(b"partial")
    fresh.write_bytes(b"partial")
    long_ago = time.time() - 3 * 86400
    os.utime(old, (long_ago, long_ago))
    assert storage.cleanup(86400) == 1
    assert not old.exists() and fresh.exists()
    assert [b.key for b in storage.list()] == ["data/blob"]
