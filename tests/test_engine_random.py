"""Random trees and random edits (hypothesis): a restore always equals the source, and a backup
after an edit stores exactly the chunks the edit created, no more (dedup measured, not
assumed). A few examples in `make test`; many under the "soak" marker (`make soak`)."""

from __future__ import annotations

import os
import random
import tempfile

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from trees import TEST_CHUNK, snapshot

from corso_core.engine.backup import BackupOptions, run_backup
from corso_core.engine.restore import run_restore
from corso_core.repo.chunker import chunk_file
from corso_core.repo.repository import init_repository
from corso_core.repo.store import ChunkStore
from corso_core.sources.files import FILES
from corso_core.storage.filesystem import FilesystemStorage

NAME_PARTS = [b"a", b"b", b"c d", b"\xff", "é".encode(), b"n\nl", b"."]
names = st.lists(st.sampled_from(NAME_PARTS), min_size=1, max_size=3).map(b"".join).filter(
    lambda n: n not in (b".", b".."))
contents = st.tuples(st.integers(0, 2**32), st.integers(0, 12 * TEST_CHUNK))
trees = st.dictionaries(names, st.recursive(
    contents, lambda inner: st.dictionaries(names, inner, max_size=4), max_leaves=12),
    max_size=5)
edits = st.lists(st.tuples(st.sampled_from(["insert", "delete", "add", "same-size"]),
                           st.integers(0, 1000), st.integers(0, 2**32)), max_size=4)


def content(seed_and_size) -> bytes:
    seed, size = seed_and_size
    return random.Random(seed).randbytes(size)


def materialize(root: bytes, tree: dict) -> None:
    os.mkdir(root)
    for name, value in tree.items():
        path = os.path.join(root, name)
        if isinstance(value, dict):
            materialize(path, value)
        else:
            with open(path, "wb") as f:
                f.write(content(value))


def files_under(root: bytes) -> list[bytes]:
    return sorted(os.path.join(d, f) for d, _, fs in os.walk(root) for f in fs)


def apply_edit(root: bytes, kind: str, pick: int, seed: int) -> None:
    files = files_under(root)
    rng = random.Random(seed)
    if kind == "add" or not files:
        with open(os.path.join(root, b"new-%d" % seed), "wb") as f:
            f.write(rng.randbytes(rng.randrange(3 * TEST_CHUNK)))
        return
    path = files[pick % len(files)]
    data = open(path, "rb").read()
    if kind == "delete":
        os.unlink(path)
    elif kind == "insert":
        at = rng.randrange(len(data) + 1)
        open(path, "wb").write(data[:at] + rng.randbytes(rng.randrange(1, 100)) + data[at:])
    elif data:  # same size, mtime put back: only ctime (or the "recent" mark) can tell
        st_ = os.stat(path)
        at = rng.randrange(len(data))
        with open(path, "r+b") as f:
            f.seek(at)
            f.write(bytes([data[at] ^ 0xFF]))
        os.utime(path, ns=(st_.st_atime_ns, st_.st_mtime_ns))


def data_chunk_ids(store: ChunkStore, chunker, root: bytes) -> set[bytes]:
    ids = set()
    for path in files_under(root):
        with open(path, "rb") as f:
            ids.update(store.chunk_id(piece) for piece in chunk_file(chunker, f))
    return ids


def check(tree: dict, edit_list: list) -> None:
    with tempfile.TemporaryDirectory() as work:
        w = os.fsencode(work)
        src = os.path.join(w, b"src")
        materialize(src, tree)
        storage = FilesystemStorage(os.path.join(work, "repo"))
        repository = init_repository(storage, "pw")
        values = {"path": [os.fsdecode(src)], "exclude": ()}
        first = run_backup(repository, FILES, values, BackupOptions())
        before = snapshot(src)
        store = ChunkStore(repository)
        old_ids = data_chunk_ids(store, repository.chunker, src)
        for kind, pick, seed in edit_list:
            apply_edit(src, kind, pick, seed)
        new_ids = data_chunk_ids(store, repository.chunker, src)
        store.close()
        second = run_backup(repository, FILES, values, BackupOptions())
        for result, expected, out in ((first, before, b"out1"), (second, snapshot(src), b"out2")):
            run_restore(repository, FILES, {"destination": os.path.join(w, out)},
                        result.backup_id, [], "skip")
            assert snapshot(os.path.join(w, out, b"src")) == expected
        dirs = 1 + sum(len(ds) for _, ds, _ in os.walk(src))
        created = len(new_ids - old_ids)
        assert created <= second.stats.chunks_new <= created + dirs + 1  # + changed trees
        storage.close()


SETTINGS = dict(deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                      HealthCheck.function_scoped_fixture])


@settings(max_examples=5, **SETTINGS)
@given(trees, edits)
def test_random_trees_and_edits(small_chunks, tree, edit_list):
    check(tree, edit_list)


@pytest.mark.soak
@settings(max_examples=300, **SETTINGS)
@given(trees, edits)
def test_random_trees_and_edits_soak(small_chunks, tree, edit_list):
    check(tree, edit_list)
