"""Fixtures of the backup/restore tests: a small-chunk repository and the tricky tree."""

from __future__ import annotations

import os

import pytest
from trees import TEST_CHUNK, build_tricky_tree

from corso_core.repo.chunker import TEST_CHUNK_SIZE_ENV
from corso_core.repo.repository import init_repository
from corso_core.storage.filesystem import FilesystemStorage


@pytest.fixture
def small_chunks(tmp_path, monkeypatch):
    """New repositories chunk at TEST_CHUNK bytes; the cache lives in the test's directory."""
    monkeypatch.setenv(TEST_CHUNK_SIZE_ENV, str(TEST_CHUNK))
    monkeypatch.setenv("CORSO_CACHE_DIR", str(tmp_path / "cache"))


@pytest.fixture
def repository(tmp_path, small_chunks):
    """A fresh filesystem repository (cheap KDF, small chunks)."""
    storage = FilesystemStorage(str(tmp_path / "repo"))
    yield init_repository(storage, "engine test passphrase")
    storage.close()


@pytest.fixture
def tricky_tree(tmp_path) -> str:
    """The tricky tree (see trees.build_tricky_tree) under tmp_path/tricky."""
    return os.fsdecode(build_tricky_tree(str(tmp_path / "tricky")))
