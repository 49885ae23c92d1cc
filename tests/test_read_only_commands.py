"""Commands that only read a repository (restore, backup details) write nothing to it, so they
work with read-only credentials: no session record, no index or pack."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from test_backup_cli import connected, create  # noqa: F401 (connected is a fixture)
from test_engine_roundtrip import backup, restore
from trees import snapshot

from corso_core.errors import PermissionDenied
from corso_core.repo.repository import open_repository
from corso_core.repo.store import ChunkStore
from corso_core.storage.filesystem import FilesystemStorage


class ReadOnlyStorage(FilesystemStorage):
    """What read-only credentials give: reads work, every write is refused."""

    def put(self, key, data):
        raise PermissionDenied(f"writing {key}: permission denied")

    def put_new(self, key, data):
        raise PermissionDenied(f"writing {key}: permission denied")

    def delete(self, key):
        raise PermissionDenied(f"deleting {key}: permission denied")


def test_restore_with_read_only_access(repository, tricky_tree, tmp_path):
    backup_id = backup(repository, tricky_tree).backup_id
    read_only = open_repository(ReadOnlyStorage(repository.storage.root),
                                "engine test passphrase")
    stats, problems = restore(read_only, backup_id, tmp_path / "out")
    assert problems.errors == [] and stats.errors == 0
    assert snapshot(tmp_path / "out" / "tricky") == snapshot(tricky_tree)


def test_read_only_store_refuses_put(repository):
    store = ChunkStore(repository, read_only=True)
    try:
        with pytest.raises(ValueError, match="read-only"):
            store.put(store.chunk_id(b"x"), b"x")
    finally:
        store.close()


def repository_state(root: Path) -> dict:
    """Every path's bytes and mtime, directories included: a blob written and deleted again
    (a session record) still changes its directory's mtime."""
    return {str(p): (p.read_bytes() if p.is_file() else None, p.stat().st_mtime_ns)
            for p in sorted(root.rglob("*"))}


def test_details_and_restore_write_nothing(connected, corso, tricky_tree, tmp_path):  # noqa: F811
    backup_id = create(corso, "--path", tricky_tree)
    before = repository_state(connected)
    details = corso("backup", "details", "files", "--backup", backup_id, "--json")
    assert details.code == 0 and len(json.loads(details.out)) > 10
    restored = corso("restore", "files", "--backup", backup_id,
                     "--destination", str(tmp_path / "out"))
    assert restored.code == 0, restored
    assert repository_state(connected) == before
