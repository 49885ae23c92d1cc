"""Helpers for the repository data-layer tests: a repository on a directory, small sizes."""

from __future__ import annotations

import os

from corso_core.repo.chunker import Chunker, ChunkerParams
from corso_core.repo.crypto import Keys
from corso_core.repo.repository import Repository
from corso_core.storage.filesystem import FilesystemStorage

#: A small chunk size (as CORSO_TEST_CHUNK_SIZE would record it), so tests move little data.
SMALL_CHUNKER = Chunker(ChunkerParams("fastcdc-2020", min_size=1024, avg_size=4096,
                                      max_size=16384))


def make_repository(path, storage=None) -> Repository:
    """A repository as `open_repository` would give, without the format blob and its KDF."""
    return Repository(storage or FilesystemStorage(str(path)), Keys.derive(os.urandom(32)),
                      "test-repository", 1, SMALL_CHUNKER)


def all_keys(storage) -> set[str]:
    return {info.key for info in storage.list("")}
