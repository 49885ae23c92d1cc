"""Keyed chunking through the engine and the CLI: a repository cuts files and split trees with
the seed its master key gives, two keys cut the same data differently, another process cuts
the same points (a backup after it adds nothing), and a repository made before keyed chunking
still cuts with seed 0, as the chunks it holds were cut."""

from __future__ import annotations

import io
import json
import random
import time

import pytest
from cli_fixtures import run_subprocess
from datalayer import SMALL_CHUNKER
from pyfastcdc.cy import FastCDC
from test_chunker import fixed_input, sizes
from unkeyed_repository import PASSPHRASE, put_unkeyed_repository

from corso_core.engine.backup import BackupOptions, run_backup
from corso_core.engine.browse import TreeLoader, walk_entries
from corso_core.engine.progress import Problems
from corso_core.engine.tree import Entry
from corso_core.repo.crypto import Keys
from corso_core.repo.manifests import load_manifest
from corso_core.repo.repository import init_repository, open_repository
from corso_core.repo.store import ChunkStore
from corso_core.sources.files import FILES
from corso_core.sources.source import FILE
from corso_core.storage.filesystem import FilesystemStorage


def backup(repository, path) -> str:
    return run_backup(repository, FILES, {"path": [str(path)], "exclude": ()}, BackupOptions(),
                      Problems()).backup_id


def entries(repository, store: ChunkStore, backup_id) -> dict[bytes, Entry]:
    """Every entry of the backup by its path (b"a/b")."""
    root = bytes.fromhex(load_manifest(repository, backup_id)["root"])
    trees = TreeLoader(store)
    try:
        return {b"/".join(path): entry for path, entry in walk_entries(trees, root)}
    finally:
        trees.close()


def file_cuts(repository, backup_id, path: bytes) -> list[int]:
    with ChunkStore(repository, read_only=True) as store:
        entry = entries(repository, store, backup_id)[path]
    assert entry.meta.kind == FILE
    return [length for _, length in entry.chunks]


def cuts_with_seed(repository, data: bytes, seed: int) -> list[int]:
    """Cut points as docs/format.md tells a reader to find them: pyfastcdc with the seed."""
    p = repository.chunker.params
    return [c.length for c in FastCDC(p.avg_size, min_size=p.min_size, max_size=p.max_size,
                                      seed=seed).cut_buf(data)]


def test_two_repositories_cut_one_file_each_with_its_own_key(tmp_path, small_chunks):
    data = fixed_input(1024 * 1024)
    (tmp_path / "f").write_bytes(data)
    cuts = []
    for name in ("one", "two"):
        repository = init_repository(FilesystemStorage(str(tmp_path / name)), "pw")
        found = file_cuts(repository, backup(repository, tmp_path / "f"), b"f")
        seed = Keys.derive(repository.master_key).chunker_seed
        assert found == cuts_with_seed(repository, data, seed) != cuts_with_seed(
            repository, data, 0)
        cuts.append(found)
    assert cuts[0] != cuts[1]


def test_a_split_tree_is_cut_with_the_repositorys_key(tmp_path, small_chunks):
    """A directory whose tree outgrows the chunker's maximum (64 KiB here) is cut into pieces
    by the same keyed chunker as file content."""
    repository = init_repository(FilesystemStorage(str(tmp_path / "repo")), "pw")
    big = tmp_path / "t" / "big"
    big.mkdir(parents=True)
    for i in range(1500):
        (big / f"file {i:05}").write_text(f"{i}\n")
    backup_id = backup(repository, tmp_path / "t")
    with ChunkStore(repository, read_only=True) as store:
        listing = json.loads(store.get(entries(repository, store, backup_id)[b"t/big"].subtree))
        document = b"".join(store.get(bytes.fromhex(piece)) for piece, _ in listing["chunks"])
    assert listing["v"] == 2 and len(listing["chunks"]) > 4
    seed = Keys.derive(repository.master_key).chunker_seed
    assert [length for _, length in listing["chunks"]] == cuts_with_seed(
        repository, document, seed) != cuts_with_seed(repository, document, 0)


def test_a_repository_made_before_keyed_chunking_cuts_with_seed_0(tmp_path):
    storage = FilesystemStorage(str(tmp_path / "repo"))
    put_unkeyed_repository(storage)
    data = fixed_input(64 * 1024)
    (tmp_path / "f").write_bytes(data)
    repository = open_repository(storage, PASSPHRASE)
    assert repository.chunker == SMALL_CHUNKER  # its sizes, seed 0
    assert file_cuts(repository, backup(repository, tmp_path / "f"), b"f") == sizes(
        SMALL_CHUNKER, io.BytesIO(data))  # pinned in test_chunker


@pytest.mark.parametrize("made", ["keyed", "before-keyed-chunking"])
def test_another_process_cuts_the_same_points_and_adds_nothing(tmp_path, small_chunks, made):
    """Each command derives the seed again from the master key: a backup in a new process,
    with no earlier backup to trust, reads every file again and stores nothing new."""
    repo = tmp_path / "repo"
    if made == "keyed":
        env, command = {"CORSO_PASSPHRASE": "pw"}, "init"
    else:
        put_unkeyed_repository(FilesystemStorage(str(repo)))
        env, command = {"CORSO_PASSPHRASE": PASSPHRASE}, "connect"
    assert run_subprocess("repo", command, "filesystem", "--path", str(repo), env=env).code == 0
    data = tmp_path / "data"
    data.mkdir()
    for i in range(3):
        (data / f"f{i}").write_bytes(random.Random(i).randbytes(300_000))
    time.sleep(1.1)  # no file is "recent" (mtime within a second of being read) in either run

    def create() -> dict:
        result = run_subprocess("backup", "create", "files", "--path", str(data), "--json",
                                env=env)
        assert result.code == 0, result
        return json.loads(result.out)

    first = create()
    assert first["stats"]["chunks_new"] > 20
    deleted = run_subprocess("backup", "delete", "files", "--backups", first["id"], env=env)
    assert deleted.code == 0, deleted
    second = create()["stats"]
    assert second["files_new"] == 3 and second["bytes_read"] == first["stats"]["bytes_total"]
    assert (second["bytes_added"], second["chunks_new"]) == (0, 0), second
