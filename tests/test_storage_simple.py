"""SimpleBlobStorage: what it adds to a backend's four primitives."""

import pytest

from corso_core.errors import NotFound
from corso_core.storage.interface import BlobInfo
from corso_core.storage.simple import SimpleBlobStorage


class DictStorage(SimpleBlobStorage):
    """The smallest backend: a dict; `buggy` makes `_get` look up the wrong key."""

    def __init__(self, buggy: bool = False) -> None:
        super().__init__(location="dict://test")
        self.blobs: dict[str, bytes] = {}
        self.buggy = buggy

    def _put(self, key, data):
        self.blobs[key] = bytes(data)

    def _get(self, key, offset, length):
        return self.blobs[key.upper() if self.buggy else key][offset:][:length]

    def _list(self, prefix):
        return [BlobInfo(k, len(v), 0.0) for k, v in self.blobs.items() if k.startswith(prefix)]

    def _delete(self, key):
        self.blobs.pop(key, None)


def test_a_missing_key_is_not_found_naming_the_location():
    with pytest.raises(NotFound, match="dict://test/nope"):
        DictStorage().get("nope")


def test_a_key_error_about_another_key_is_a_bug_not_a_missing_blob():
    storage = DictStorage(buggy=True)
    storage.put("a", b"x")
    with pytest.raises(KeyError, match="'A'"):
        storage.get("a")


def test_defaults_built_from_the_primitives():
    storage = DictStorage()
    storage.put("k", b"0123456789")
    assert storage.get_tail("k", 3) == b"789"
    assert storage.stat("k").size == 10
    storage.put_new("new", b"n")
    assert storage.atomic_create is False  # check-then-write: a concurrent writer can slip in
    assert storage.counts.as_dict()["requests"] == {"GET": 1, "HEAD": 1, "PUT": 2}
