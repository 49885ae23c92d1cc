"""Backup then restore through the engine: byte- and metadata-identical trees, incremental
reuse without reading, the change-detection traps, dedup after an insert, and the layout of
two paths with one base name."""

from __future__ import annotations

import dataclasses
import errno
import gc
import os
import shutil
import subprocess
import threading
import time
import weakref
from pathlib import Path

import pytest
from trees import TEST_CHUNK, snapshot, write_tree

from corso_core import plugins
from corso_core.engine import restore as restore_engine
from corso_core.engine.backup import BackupOptions, run_backup
from corso_core.engine.browse import TreeLoader, walk_entries
from corso_core.engine.progress import Problems, Progress
from corso_core.engine.restore import _Restore, run_restore
from corso_core.engine.tree import Entry, encode_tree
from corso_core.errors import UsageError
from corso_core.repo import names
from corso_core.repo.index import decode_index, encode_index
from corso_core.repo.manifests import load_manifest, save_manifest
from corso_core.repo.repository import init_repository
from corso_core.repo.store import ChunkStore
from corso_core.sources.files import FILES
from corso_core.sources.files.reader import FileContent, FilesReader
from corso_core.sources.files.writer import FilesWriter
from corso_core.sources.source import DIR, FILE, SYMLINK, Metadata, SourceWriter


def backup(repository, *paths, **options):
    problems = Problems()
    result = run_backup(repository, FILES, {"path": sorted(map(str, paths)), "exclude": ()},
                        BackupOptions(**options), problems)
    return result


def restore(repository, backup_id, destination, globs=(), collisions="skip"):
    problems = Problems()
    stats = run_restore(repository, FILES, {"destination": str(destination)}, backup_id,
                        list(globs), collisions, problems)
    return stats, problems


def count_opens(monkeypatch) -> list:
    """Record every file the files source opens for content (the real open still runs)."""
    opened = []
    original = FileContent.__init__

    def spy(self, fd, meta):
        opened.append(meta.inode)
        original(self, fd, meta)

    monkeypatch.setattr(FileContent, "__init__", spy)
    return opened


def test_tricky_tree_restores_byte_and_metadata_identical(repository, tricky_tree, tmp_path):
    result = backup(repository, tricky_tree)
    assert result.problems.errors == [] and not result.manifest["incomplete"]
    stats, problems = restore(repository, result.backup_id, tmp_path / "out")
    assert problems.errors == []
    restored = tmp_path / "out" / "tricky"
    assert snapshot(restored) == snapshot(tricky_tree)
    assert os.stat(restored).st_mode == os.stat(tricky_tree).st_mode
    assert stats.hard_links == 1


def test_restoring_again_under_skip_skips_hard_links_too(repository, tricky_tree, tmp_path):
    result = backup(repository, tricky_tree)
    first, _ = restore(repository, result.backup_id, tmp_path / "out")
    before = snapshot(tmp_path / "out")
    again, problems = restore(repository, result.backup_id, tmp_path / "out")
    assert problems.errors == [] and again.hard_links == again.files == 0
    assert again.skipped == first.files + first.hard_links + first.symlinks
    assert snapshot(tmp_path / "out") == before


@pytest.mark.parametrize("in_the_way", ["the-first-name", "its-directory"])
def test_a_hard_link_whose_first_name_is_kept_as_is_comes_back_as_a_file(
        repository, tmp_path, in_the_way):
    (tmp_path / "hl" / "a-dir").mkdir(parents=True)
    (tmp_path / "hl" / "z").mkdir()
    (tmp_path / "hl" / "a-dir" / "a").write_bytes(b"linked content")
    os.link(tmp_path / "hl" / "a-dir" / "a", tmp_path / "hl" / "z" / "b")
    result = backup(repository, tmp_path / "hl")
    out = tmp_path / "out" / "hl"
    if in_the_way == "the-first-name":
        (out / "a-dir").mkdir(parents=True)
        (out / "a-dir" / "a").write_bytes(b"yours")
    else:
        out.mkdir(parents=True)
        (out / "a-dir").write_bytes(b"a file where the backup has a directory")
    stats, problems = restore(repository, result.backup_id, tmp_path / "out")
    assert problems.errors == [] and (stats.files, stats.hard_links) == (1, 0)
    assert (out / "z" / "b").read_bytes() == b"linked content"
    kept = out / "a-dir" / "a" if in_the_way == "the-first-name" else out / "a-dir"
    assert kept.read_bytes() in (b"yours", b"a file where the backup has a directory")


def test_tricky_tree_round_trip_on_seaweedfs(seaweedfs, s3_prefix, small_chunks, tricky_tree,
                                             tmp_path):
    storage = plugins.backend("s3").open(seaweedfs.values(s3_prefix))
    try:
        repository = init_repository(storage, "pw")
        result = backup(repository, tricky_tree)
        assert storage.counts.requests["PUT"] >= 3  # data and tree packs, index, manifest
        stats, problems = restore(repository, result.backup_id, tmp_path / "out")
        assert problems.errors == [] and stats.hard_links == 1
        assert snapshot(tmp_path / "out" / "tricky") == snapshot(tricky_tree)
    finally:
        storage.close()


def test_unchanged_rebackup_reads_no_file_content(repository, tricky_tree, monkeypatch):
    time.sleep(1.1)  # past the "recent" window, so the first backup's metadata is trusted
    first = backup(repository, tricky_tree)
    opened = count_opens(monkeypatch)
    second = backup(repository, tricky_tree)
    assert opened == []
    assert second.stats.bytes_read == 0
    assert second.stats.files_new == second.stats.files_changed == 0
    assert second.stats.files_unchanged == first.stats.files_new
    assert second.stats.bytes_added == 0  # same trees, same chunks
    assert second.manifest["root"] == first.manifest["root"]
    assert second.manifest["parent"] == first.backup_id


def count_tree_encodings(monkeypatch) -> list:
    """Record each directory tree the backup encodes (the real encoding still runs)."""
    import corso_core.engine.backup as engine

    encoded = []
    original = engine.encode_tree

    def spy(entries):
        encoded.append(sorted(e.name for e in entries))
        return original(entries)

    monkeypatch.setattr(engine, "encode_tree", spy)
    return encoded


def test_only_the_trees_on_a_changed_files_path_are_encoded_again(repository, tmp_path,
                                                                   monkeypatch):
    tree = tmp_path / "t"
    for d in ("a/b/c", "x/y", "z"):
        (tree / d).mkdir(parents=True)
        (tree / d / "f").write_bytes(d.encode())
    time.sleep(1.1)  # past the "recent" window
    first = backup(repository, tree)
    encoded = count_tree_encodings(monkeypatch)
    assert backup(repository, tree).manifest["root"] == first.manifest["root"]
    assert encoded == []  # nothing changed: every directory keeps its tree, none is encoded
    (tree / "a" / "b" / "f2").write_bytes(b"new")
    changed = backup(repository, tree)
    # b itself, then a, t and the backup's root: the directories above the new file
    assert encoded == [[b"c", b"f2"], [b"b"], [b"a", b"x", b"z"], [b"t"]]
    stats, problems = restore(repository, changed.backup_id, tmp_path / "out")
    assert problems.errors == []
    assert snapshot(tmp_path / "out" / "t") == snapshot(tree)


def _same_size_rewrite(path, data):
    st = os.stat(path)
    with open(path, "r+b") as f:
        f.write(data)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert os.stat(path).st_mtime_ns == st.st_mtime_ns and os.stat(path).st_size == st.st_size


def test_same_size_rewrite_with_mtime_reset_is_caught_by_ctime(repository, tmp_path):
    tree = tmp_path / "t"
    tree.mkdir()
    (tree / "f").write_bytes(b"original content")
    time.sleep(1.1)
    backup(repository, tree)
    _same_size_rewrite(tree / "f", b"ORIGINAL")
    second = backup(repository, tree)
    assert second.stats.files_changed == 1
    restore(repository, second.backup_id, tmp_path / "out")
    assert (tmp_path / "out" / "t" / "f").read_bytes() == b"ORIGINAL content"


def test_a_file_read_within_a_second_of_its_change_is_read_again(repository, tmp_path):
    """Even with --ignore-ctime, an entry recorded as 'recent' is never trusted."""
    tree = tmp_path / "t"
    tree.mkdir()
    (tree / "f").write_bytes(b"original content")
    first = backup(repository, tree, ignore_ctime=True)
    _same_size_rewrite(tree / "f", b"ORIGINAL")
    second = backup(repository, tree, ignore_ctime=True)
    assert first.stats.files_new == 1 and second.stats.files_changed == 1
    restore(repository, second.backup_id, tmp_path / "out")
    assert (tmp_path / "out" / "t" / "f").read_bytes() == b"ORIGINAL content"


def test_a_new_inode_means_changed_unless_inodes_are_ignored(repository, tmp_path,
                                                            monkeypatch):
    tree = tmp_path / "t"
    tree.mkdir()
    f = tree / "f"
    f.write_bytes(b"content")
    time.sleep(1.1)
    backup(repository, tree, ignore_ctime=True)

    def same_file_new_inode():
        st = os.stat(f)
        (tree / "new").write_bytes(b"content")  # created while f exists: another inode
        os.utime(tree / "new", ns=(st.st_atime_ns, st.st_mtime_ns))
        os.replace(tree / "new", f)
        assert os.stat(f).st_ino != st.st_ino

    opened = count_opens(monkeypatch)
    same_file_new_inode()
    lenient = backup(repository, tree, ignore_ctime=True, ignore_inode=True)
    assert opened == [] and lenient.stats.files_unchanged == 1
    same_file_new_inode()
    strict = backup(repository, tree, ignore_ctime=True)
    # Read again (another inode), and found as it was: not what a user calls changed.
    assert len(opened) == 1 and strict.stats.files_unchanged == 1


def test_a_file_read_again_only_because_it_was_recent_counts_as_unchanged(
        repository, tmp_path, monkeypatch):
    """Said "changed" before, with nothing changed (an exploratory test session's report)."""
    tree = tmp_path / "t"
    tree.mkdir()
    (tree / "f").write_bytes(b"content")
    first = backup(repository, tree)  # within a second of its write: recorded as recent
    opened = count_opens(monkeypatch)
    second = backup(repository, tree)
    assert first.stats.files_new == 1 and len(opened) == 1
    assert (second.stats.files_changed, second.stats.files_unchanged) == (0, 1)
    os.chmod(tree / "f", 0o600)  # a mode is what a user calls a change, content or not
    time.sleep(1.1)
    third = backup(repository, tree)
    assert (third.stats.files_changed, third.stats.files_unchanged) == (1, 0)


def test_insert_in_a_large_file_adds_only_the_chunks_around_it(repository, tmp_path):
    tree = tmp_path / "t"
    tree.mkdir()
    data = os.urandom(TEST_CHUNK * 64)
    (tree / "large").write_bytes(data)
    first = backup(repository, tree)
    middle = len(data) // 2
    (tree / "large").write_bytes(data[:middle] + b"inserted bytes" + data[middle:])
    second = backup(repository, tree)
    assert first.stats.bytes_added > len(data)
    # the chunks around the insert (at most two maximal chunks) plus the tree, never the file
    assert second.stats.bytes_added < 2 * 4 * TEST_CHUNK + 4096
    restore(repository, second.backup_id, tmp_path / "out")
    assert (tmp_path / "out" / "t" / "large").read_bytes() == (tree / "large").read_bytes()


def test_two_paths_with_one_base_name_are_laid_out_side_by_side(repository, tmp_path):
    for parent, text in (("a", b"from a"), ("b", b"from b")):
        (tmp_path / parent / "data").mkdir(parents=True)
        (tmp_path / parent / "data" / "f").write_bytes(text)
    result = backup(repository, tmp_path / "b" / "data", tmp_path / "a" / "data")
    restore(repository, result.backup_id, tmp_path / "out")
    assert sorted(os.listdir(tmp_path / "out")) == ["data", "data~2"]
    assert (tmp_path / "out" / "data" / "f").read_bytes() == b"from a"
    assert (tmp_path / "out" / "data~2" / "f").read_bytes() == b"from b"


@pytest.mark.parametrize("glob", ["tricky/sub/deeper", "tricky/sub/deeper/"])
def test_restore_of_a_subset_by_glob(repository, tricky_tree, tmp_path, glob):
    """"dir/" (as a shell completes it) means the directory: it matched nothing before."""
    result = backup(repository, tricky_tree)
    restore(repository, result.backup_id, tmp_path / "out", globs=[glob])
    out = tmp_path / "out" / "tricky"
    assert sorted(os.listdir(out)) == ["sub"]
    assert sorted(os.listdir(out / "sub")) == ["deeper"]
    assert (out / "sub" / "deeper" / "large.bin").read_bytes() == \
        open(os.path.join(tricky_tree, "sub", "deeper", "large.bin"), "rb").read()


def test_a_restore_turns_the_cycle_collector_back_on_even_when_it_fails(repository, tmp_path):
    result = backup(repository, write_tree(tmp_path / "t", {"f": b"data"}))
    restore(repository, result.backup_id, tmp_path / "out")
    assert gc.isenabled()
    with pytest.raises(UsageError, match="nothing in backup"):
        restore(repository, result.backup_id, tmp_path / "out2", globs=["no/such/path"])
    assert gc.isenabled()


def test_a_restores_plan_and_trees_are_freed_before_the_cycle_collector_resumes(
        repository, tricky_tree, tmp_path, monkeypatch):
    """Freed by reference counting, with no cycle among them: else the collector's first pass
    after the restore scans them all (15 ms for 15,000 files), or keeps them until it runs."""
    result = backup(repository, tricky_tree)
    made = []
    planned = restore_engine.plan_restore

    def plan_restore(trees, root, globs):
        plan = planned(trees, root, globs)
        made.extend([weakref.ref(plan), weakref.ref(trees)])
        return plan

    alive_when_resumed = []

    class Collector:  # the engine's gc module, recording what lives when it turns back on
        isenabled, disable = staticmethod(gc.isenabled), staticmethod(gc.disable)

        @staticmethod
        def enable():
            alive_when_resumed.extend(ref() is not None for ref in made)
            gc.enable()

    monkeypatch.setattr(restore_engine, "plan_restore", plan_restore)
    monkeypatch.setattr(restore_engine, "gc", Collector)
    restore(repository, result.backup_id, tmp_path / "out")
    assert alive_when_resumed == [False, False]


@pytest.mark.parametrize("collisions", ["skip", "copy", "replace"])
def test_restore_into_a_non_empty_destination(repository, tmp_path, collisions):
    tree = write_tree(tmp_path / "t", {"f": b"backed up", "new": b"only in backup"})
    result = backup(repository, tree)
    out = write_tree(tmp_path / "out" / "t", {"f": b"already there", "mine": b"user's file"})
    stats, problems = restore(repository, result.backup_id, tmp_path / "out",
                              collisions=collisions)
    assert problems.errors == []
    assert (out / "mine").read_bytes() == b"user's file"
    assert (out / "new").read_bytes() == b"only in backup"
    expected_f = {"skip": b"already there", "copy": b"already there",
                  "replace": b"backed up"}[collisions]
    assert (out / "f").read_bytes() == expected_f
    assert os.path.exists(out / "f.restored") == (collisions == "copy")
    if collisions == "copy":
        assert (out / "f.restored").read_bytes() == b"backed up"
    assert not [n for n in os.listdir(out) if n.startswith(".corso-restore-")]


def _three_files_the_first_damaged(repository, tmp_path):
    """A backup of t/a, t/b and t/c whose only data pack has a byte of a's chunk flipped;
    the tree backed up and the backup's ID."""
    tree = tmp_path / "t"
    tree.mkdir()
    for name in ("a", "b", "c"):
        (tree / name).write_bytes(os.urandom(1000))
    result = backup(repository, tree)
    [pack] = [p for p in (tmp_path / "repo" / "data").rglob("*") if p.is_file()]
    damaged = bytearray(pack.read_bytes())
    damaged[40] ^= 0xFF  # inside the first chunk of the only data pack
    pack.write_bytes(bytes(damaged))
    return tree, result.backup_id


def test_a_corrupted_chunk_is_reported_with_its_file_and_nothing_is_written_from_it(
        repository, tmp_path):
    tree, backup_id = _three_files_the_first_damaged(repository, tmp_path)
    stats, problems = restore(repository, backup_id, tmp_path / "out")
    [error] = problems.errors
    bad = error.split(": ", 1)[0]  # where the file would be, as the writer's messages say
    assert bad in [f"{tmp_path}/out/t/{name}" for name in "abc"]
    assert "not restored" in error and "corrupted" in error
    restored = sorted(os.listdir(tmp_path / "out" / "t"))  # no temp file left either
    assert len(restored) == 2 and os.path.basename(bad) not in restored
    for name in restored:
        assert (tmp_path / "out" / "t" / name).read_bytes() == (tree / name).read_bytes()


def test_a_file_written_in_part_when_its_last_chunk_fails_leaves_nothing_behind(
        repository, tmp_path):
    """Restored into an existing directory (its temp files staged apart), the file is
    dropped once, and the staging directory goes as well."""
    (tmp_path / "t").mkdir()
    (tmp_path / "t" / "big").write_bytes(os.urandom(TEST_CHUNK * 8))
    (tmp_path / "t" / "small").write_bytes(b"fine")
    backup_id = backup(repository, tmp_path / "t").backup_id
    entries = [e for blob in repository.storage.list("index/")
               for e in decode_index(repository.keys, names.parse_key(names.INDEX, blob.key),
                                     repository.storage.get(blob.key))
               if e.location.kind == names.DATA_PACK]
    last = max((e for e in entries if e.location.length > 1000),  # not small's few bytes
               key=lambda e: e.location.offset)  # big's last chunk
    pack = tmp_path / "repo" / names.key(names.DATA_PACK, last.location.pack)
    damaged = bytearray(pack.read_bytes())
    damaged[last.location.offset + 20] ^= 0xFF
    pack.write_bytes(bytes(damaged))
    (tmp_path / "out" / "t").mkdir(parents=True)
    stats, problems = restore(repository, backup_id, tmp_path / "out")
    [error] = problems.errors
    assert error.startswith(f"{tmp_path}/out/t/big: not restored: ") and "corrupted" in error
    assert os.listdir(tmp_path / "out" / "t") == ["small"] and stats.files == 1


def test_a_write_that_fails_while_files_are_retried_one_by_one_names_its_file(
        repository, tmp_path, monkeypatch):
    """After a corrupted chunk, unfinished files are fetched again one by one: a file whose
    write then fails (an I/O error) is reported and dropped, and the others still come back."""
    tree, backup_id = _three_files_the_first_damaged(repository, tmp_path)
    write = FilesWriter.write

    def io_error_for_c(self, pending, offset, data):
        if pending.path[-1] == b"c":
            raise OSError(errno.EIO, os.strerror(errno.EIO))
        return write(self, pending, offset, data)

    monkeypatch.setattr(FilesWriter, "write", io_error_for_c)
    stats, problems = restore(repository, backup_id, tmp_path / "out")
    bad_a, bad_c = sorted(problems.errors)
    assert bad_a.startswith(f"{tmp_path}/out/t/a: not restored: ") and "corrupted" in bad_a
    assert bad_c == f"{tmp_path}/out/t/c: not restored: Input/output error"
    assert os.listdir(tmp_path / "out" / "t") == ["b"] and stats.files == 1


def _backup_with_trees(repository, files: list[Entry]) -> str:
    """A backup of one directory holding `files`, written as its trees say, however wrong
    (what someone holding the key could write)."""
    with ChunkStore(repository) as store:
        subtree = encode_tree(files)
        subtree_id = store.chunk_id(subtree)
        store.put(subtree_id, subtree, "tree")
        root = encode_tree([Entry(b"t", Metadata(DIR, mode=0o755), subtree=subtree_id)])
        root_id = store.chunk_id(root)
        store.put(root_id, root, "tree")
    return save_manifest(repository, {
        "time": "2026-01-01T00:00:00+00:00", "host": "h", "user": "u", "source": "files",
        "paths": ["/t"], "tags": {}, "root": root_id.hex(), "parent": None,
        "incomplete": False, "stats": {}})


@pytest.mark.parametrize("cached", [True, False], ids=["cached", "not-cached"])
def test_a_walk_fetches_ahead_only_the_trees_not_cached(repository, tmp_path, cached):
    """A cached tree chunk is read in microseconds: the walk reads it itself (on a pool,
    threads contending for the GIL made it slower). Others are fetched ahead (S3 latency)."""
    tree = tmp_path / "t"
    for i in range(5):
        write_tree(tree / f"d{i}", {"f": b"x%d" % i})
    backup_id = backup(repository, tree).backup_id
    if not cached:  # no cache at all: a file in its place
        shutil.rmtree(os.environ["CORSO_CACHE_DIR"])
        Path(os.environ["CORSO_CACHE_DIR"]).write_text("")
    root = bytes.fromhex(load_manifest(repository, backup_id)["root"])
    with ChunkStore(repository, read_only=True) as store:
        trees = TreeLoader(store)
        fetched_ahead = []
        submit = trees.pool.submit
        trees.pool.submit = lambda call, chunk_id: (fetched_ahead.append(chunk_id),
                                                    submit(call, chunk_id))[1]
        try:
            paths = [b"/".join(path) for path, _ in walk_entries(trees, root)]
        finally:
            trees.close()
    assert sorted(paths) == [b"t", *sorted(b"t/d%d%s" % (i, end) for i in range(5)
                                           for end in (b"", b"/f"))]
    assert len(fetched_ahead) == (0 if cached else 6)  # t and t/d0 to t/d4


@pytest.mark.parametrize("collisions", ["skip", "copy", "replace"])
@pytest.mark.parametrize("existing", [False, True], ids=["made", "existing"])
def test_a_name_a_damaged_tree_lists_twice_is_restored_once(repository, tmp_path, existing,
                                                           collisions):
    """Only a tree written so (by someone holding the key) lists a name twice: the first entry
    is restored, the second reported, whatever the policy, in a directory made or there."""
    with ChunkStore(repository) as store:
        ids = {data: store.chunk_id(data) for data in (b"first", b"second")}
        for data, chunk_id in ids.items():
            store.put(chunk_id, data)
    meta = Metadata(FILE, mode=0o644, mtime_ns=10**18)
    link = Metadata(SYMLINK, mode=0o777, mtime_ns=10**18)
    backup_id = _backup_with_trees(repository, [
        Entry(b"x", meta._replace(size=5), [(ids[b"first"], 5)]),
        Entry(b"x", meta._replace(size=6), [(ids[b"second"], 6)]),
        Entry(b"y", link._replace(target=b"good")),
        Entry(b"y", link._replace(target=b"a\0b")),  # refused before any system call
    ])
    out = tmp_path / "out"
    if existing:
        (out / "t").mkdir(parents=True)
    stats, problems = restore(repository, backup_id, out, collisions=collisions)
    assert sorted(os.listdir(out / "t")) == ["x", "y"]
    assert (out / "t" / "x").read_bytes() == b"first"
    assert os.readlink(out / "t" / "y") == "good"
    assert problems.errors == [f"{out}/t/{name}: not restored: its directory lists the name "
                               "twice (a damaged tree)" for name in "xy"]
    assert (stats.files, stats.symlinks) == (1, 1)


def test_a_name_listed_twice_outside_the_selection_is_not_reported(repository, tmp_path):
    with ChunkStore(repository) as store:
        ids = {data: store.chunk_id(data) for data in (b"first", b"other", b"keep!")}
        for data, chunk_id in ids.items():
            store.put(chunk_id, data)
    meta = Metadata(FILE, mode=0o644, mtime_ns=10**18, size=5)
    backup_id = _backup_with_trees(repository, [
        Entry(b"keep", meta, [(ids[b"keep!"], 5)]),
        Entry(b"x", meta, [(ids[b"first"], 5)]),
        Entry(b"x", meta, [(ids[b"other"], 5)]),
    ])
    stats, problems = restore(repository, backup_id, tmp_path / "out", globs=["t/keep"])
    assert os.listdir(tmp_path / "out" / "t") == ["keep"]
    assert problems.errors == [] and stats.files == 1


def _files_with_an_early_writer(base: type):
    """The files source with a writer as a plugin wrote it before SourceWriter gained its
    optional methods (write_file, shown): FilesWriter's required methods alone."""

    class Writer(base):
        def __init__(self, values, collisions, report):
            self.inner = FilesWriter(os.fsencode(values["destination"]), collisions, report)

    for name in ("make_dir", "make_symlink", "start_file", "write", "finish_file",
                 "discard_file", "link", "finish_dir", "close"):
        setattr(Writer, name, lambda self, *args, _name=name: getattr(self.inner, _name)(*args))
    return dataclasses.replace(FILES, open_writer=Writer)


@pytest.mark.parametrize("base", [object, SourceWriter], ids=["plain", "subclass"])
def test_a_writer_without_write_file_still_restores_every_file(repository, tmp_path, base):
    """SourceWriter.write_file came later: a plugin's writer from before it gets a file of
    one chunk through write and finish_file, as any other."""
    tree = write_tree(tmp_path / "t", {"small": b"one chunk", "big": os.urandom(5 * TEST_CHUNK)})
    backup_id = backup(repository, tree).backup_id
    (tmp_path / "out").mkdir()
    problems = Problems()
    stats = run_restore(repository, _files_with_an_early_writer(base),
                        {"destination": str(tmp_path / "out")}, backup_id, [], "skip", problems)
    assert problems.errors == [] and stats.files == 2
    assert snapshot(tmp_path / "out" / "t") == snapshot(tree)


@pytest.mark.parametrize("base", [object, SourceWriter], ids=["plain", "subclass"])
def test_a_writer_without_shown_has_its_items_named_by_their_path_in_the_backup(
        repository, tmp_path, base):
    _, backup_id = _three_files_the_first_damaged(repository, tmp_path)
    (tmp_path / "out").mkdir()
    problems = Problems()
    run_restore(repository, _files_with_an_early_writer(base),
                {"destination": str(tmp_path / "out")}, backup_id, [], "skip", problems)
    [error] = problems.errors
    assert error.split(": ", 1)[0] in ("t/a", "t/b", "t/c") and "corrupted" in error


def test_a_file_whose_tree_misstates_its_chunk_sizes_is_not_restored(repository, tmp_path):
    with ChunkStore(repository) as store:
        ids = {}
        for data in (b"A" * 100, b"B" * 50, b"C" * 20):
            ids[data[:1]] = store.chunk_id(data)
            store.put(ids[data[:1]], data)
    meta = Metadata(FILE, mode=0o644, mtime_ns=10**18)
    backup_id = _backup_with_trees(repository, [
        Entry(b"chunk-too-long", meta._replace(size=5), [(ids[b"A"], 5)]),
        Entry(b"size-disagrees", meta._replace(size=999), [(ids[b"B"], 50)]),
        Entry(b"sound", meta._replace(size=20), [(ids[b"C"], 20)]),
    ])
    stats, problems = restore(repository, backup_id, tmp_path / "out")
    assert sorted(problems.errors) == [
        f"{tmp_path}/out/t/chunk-too-long: not restored: chunk {ids[b'A'].hex()} has 100 "
        "bytes, the tree says 5",
        f"{tmp_path}/out/t/size-disagrees: not restored: its chunks do not add up to its size "
        "(a damaged tree)"]
    assert os.listdir(tmp_path / "out" / "t") == ["sound"] and stats.files == 1


def test_values_no_system_call_takes_fail_their_own_item_only(repository, tmp_path):
    with ChunkStore(repository) as store:
        chunk = store.chunk_id(b"content")
        store.put(chunk, b"content")
    meta = Metadata(FILE, mode=0o644, size=7, mtime_ns=10**18)
    backup_id = _backup_with_trees(repository, [
        Entry(b"huge-mode", meta._replace(mode=2**40), [(chunk, 7)]),
        Entry(b"huge-mtime", meta._replace(mtime_ns=10**30), [(chunk, 7)]),
        Entry(b"n" * 300, meta, [(chunk, 7)]),
        Entry(b"nul-target", Metadata(SYMLINK, mode=0o777, target=b"a\0b")),
        # made, then refused its owner (as root): the temp link must go too
        Entry(b"huge-owner", Metadata(SYMLINK, mode=0o777, uid=2**40, target=b"x")),
        Entry(b"sound", meta, [(chunk, 7)]),
    ])
    stats, problems = restore(repository, backup_id, tmp_path / "out")
    failed = sorted(os.path.basename(e.split(": ", 1)[0]) for e in problems.errors)
    as_root = os.geteuid() == 0  # owners are restored as root only
    assert failed == sorted(["huge-mode", "huge-mtime", "n" * 300, "nul-target",
                             *["huge-owner"] * as_root])
    assert sorted(os.listdir(tmp_path / "out" / "t")) == sorted(
        ["sound", *["huge-owner"] * (not as_root)])
    assert stats.files == 1


class _GrowsWhileRead:
    """A file object that appends to its file on the first read: a writer racing the backup."""

    def __init__(self, file, path):
        self.file, self.path, self.grown = file, path, False

    def readinto(self, buffer):
        if not self.grown:
            self.grown = True
            with open(self.path, "ab") as f:
                f.write(b"appended while the backup read the file")
        return self.file.readinto(buffer)

    def __getattr__(self, name):  # fileno, close: the real file's
        return getattr(self.file, name)


class _RacedReader(FilesReader):
    def open(self, node):
        content = super().open(node)
        if content is not None and node.name == b"busy":
            content.file = _GrowsWhileRead(content.file, node.handle)
        return content


def test_a_file_that_changes_while_read_is_reported_and_left_out(repository, tmp_path):
    tree = tmp_path / "t"
    tree.mkdir()
    (tree / "busy").write_bytes(os.urandom(50_000))
    (tree / "calm").write_bytes(b"y" * 5000)
    raced = dataclasses.replace(
        FILES, open_reader=lambda values, report: _RacedReader(
            [os.fsencode(p) for p in values["path"]], [], report))
    problems = Problems()
    result = run_backup(repository, raced, {"path": [str(tree)], "exclude": ()},
                        BackupOptions(), problems)
    [error] = problems.errors
    assert error.endswith("busy: changed while being read (size)")
    assert result.manifest["incomplete"] and result.stats.errors == 1
    # Its chunks were stored before the change showed: they count in what the backup added
    # (they did not, and a 120 MB file's chunks were said to be 217 bytes).
    assert result.stats.bytes_added > 50_000
    restore(repository, result.backup_id, tmp_path / "out")
    assert os.listdir(tmp_path / "out" / "t") == ["calm"]


def test_files_whose_chunks_left_the_index_are_read_again(repository, tmp_path, monkeypatch):
    """The previous backup's trees are still indexed, its file's chunk is not: the file is
    unchanged on disk, yet read and stored again."""
    tree = tmp_path / "t"
    tree.mkdir()
    (tree / "f").write_bytes(os.urandom(5000))
    time.sleep(1.1)
    backup(repository, tree)
    for blob in list(repository.storage.list("index/")):  # as if maintenance dropped the data
        name = names.parse_key(names.INDEX, blob.key)
        kept = [e for e in decode_index(repository.keys, name, repository.storage.get(blob.key))
                if e.location.kind != names.DATA_PACK]
        repository.storage.put(blob.key, encode_index(repository.keys, name, kept))
    shutil.rmtree(tmp_path / "cache")
    opened = count_opens(monkeypatch)
    second = backup(repository, tree)
    assert len(opened) == 1 and second.stats.bytes_read == 5000
    restore(repository, second.backup_id, tmp_path / "out")
    assert (tmp_path / "out" / "t" / "f").read_bytes() == (tree / "f").read_bytes()


def test_copy_mode_never_loses_a_file_whose_name_a_copy_would_take(repository, tmp_path):
    tree = write_tree(tmp_path / "t", {"f": b"one", "f.restored": b"two"})
    result = backup(repository, tree)
    out = write_tree(tmp_path / "out" / "t", {"f": b"mine"})
    stats, problems = restore(repository, result.backup_id, tmp_path / "out", collisions="copy")
    assert problems.errors == []
    assert sorted(p.read_bytes() for p in out.iterdir()) == [b"mine", b"one", b"two"]
    assert (out / "f").read_bytes() == b"mine"


def test_a_tree_deeper_than_pythons_default_recursion_limit(repository, tmp_path):
    deepest = os.fsencode(tmp_path / "t") + b"/a" * 1100
    os.makedirs(deepest)
    with open(deepest + b"/f", "wb") as f:
        f.write(b"deep")
    try:
        result = backup(repository, tmp_path / "t")
        stats, problems = restore(repository, result.backup_id, tmp_path / "out")
        assert problems.errors == [] and stats.dirs == 1101
        restored = os.fsencode(tmp_path / "out" / "t") + b"/a" * 1100 + b"/f"
        assert open(restored, "rb").read() == b"deep"
    finally:
        # Python 3.11's shutil.rmtree recurses per level: pytest's own clean-up of old temp
        # dirs would hit RecursionError on this tree in a later run, so remove it here.
        subprocess.run(["rm", "-rf", tmp_path / "t", tmp_path / "out"], check=True)


class _Recorder(Progress):
    wants_total = True

    def __init__(self):
        self.total, self.files, self.nbytes = None, 0, 0
        self.lock = threading.Lock()

    def set_total(self, total_bytes):
        self.total = total_bytes

    def start(self, total_bytes):
        self.total = total_bytes

    def advance(self, files=0, nbytes=0):
        with self.lock:
            self.files, self.nbytes = self.files + files, self.nbytes + nbytes


def test_progress_reaches_the_total_it_announces(repository, tricky_tree, tmp_path):
    inodes = {os.lstat(os.path.join(d, f)).st_ino: os.lstat(os.path.join(d, f)).st_size
              for d, _, fs in os.walk(tricky_tree) for f in fs
              if not os.path.islink(os.path.join(d, f))}
    size = sum(inodes.values())  # a hard-linked file is read, and counted, once
    seen = _Recorder()
    result = run_backup(repository, FILES, {"path": [tricky_tree], "exclude": ()},
                        BackupOptions(), Problems(), seen)
    deadline = time.monotonic() + 30
    while seen.total is None and time.monotonic() < deadline:
        time.sleep(0.01)  # the sizing thread may finish after a backup this small
    assert seen.total == seen.nbytes == size
    assert seen.files == result.stats.files_new == 16
    restored = _Recorder()
    run_restore(repository, FILES, {"destination": str(tmp_path / "out")}, result.backup_id,
                [], "skip", Problems(), restored)
    assert restored.nbytes == restored.total == size and restored.files == 15


def test_a_single_file_and_a_symlink_as_paths(repository, tmp_path):
    (tmp_path / "file.txt").write_bytes(b"alone")
    os.symlink("file.txt", tmp_path / "link")
    result = backup(repository, tmp_path / "file.txt", tmp_path / "link")
    restore(repository, result.backup_id, tmp_path / "out")
    assert (tmp_path / "out" / "file.txt").read_bytes() == b"alone"
    assert os.readlink(tmp_path / "out" / "link") == "file.txt"


def test_chunks_removed_during_a_backup_are_stored_again_before_its_manifest(repository,
                                                                              tmp_path):
    tree = tmp_path / "t"
    tree.mkdir()
    (tree / "kept").write_bytes(os.urandom(5000))
    (tree / "later").write_bytes(os.urandom(5000))
    time.sleep(1.1)
    backup(repository, tree)
    old_blobs = [b.key for b in repository.storage.list("")
                 if b.key.startswith(("index/", "data/", "tree/"))]
    (tree / "later").write_bytes(os.urandom(5000))  # read (not reused) by the next backup
    removed = []

    class MaintenanceMeanwhile(FilesReader):
        def open(self, node):  # while the backup runs, after it loaded the index
            if not removed:
                for key in old_blobs:  # the first backup's packs and index, as maintenance
                    repository.storage.delete(key)  # would if that backup were deleted
                removed.extend(old_blobs)
            return super().open(node)

    raced = dataclasses.replace(FILES, open_reader=lambda values, report: MaintenanceMeanwhile(
        [os.fsencode(p) for p in values["path"]], [], report))
    result = run_backup(repository, raced, {"path": [str(tree)], "exclude": ()},
                        BackupOptions(), Problems())
    assert removed and result.stats.bytes_read == 10000  # the second pass read "kept" again
    stats, problems = restore(repository, result.backup_id, tmp_path / "out")
    assert problems.errors == []
    assert snapshot(tmp_path / "out" / "t") == snapshot(tree)


def test_the_walk_lists_only_a_few_subdirectories_ahead(repository, tmp_path, monkeypatch):
    import corso_core.engine.backup as engine

    tree = tmp_path / "t"
    for n in range(30):
        (tree / f"d{n:02}").mkdir(parents=True)
        (tree / f"d{n:02}" / "f").write_bytes(b"%d" % n)
    monkeypatch.setattr(engine, "LOOK_AHEAD", 3)
    listed: list[bytes] = []
    lead: list[int] = []  # directories listed but not yet walked, each time the walk moves on
    children, file = FilesReader.children, engine._Backup._file

    def listing(self, node):
        listed.append(node.name)
        return children(self, node)

    def walked(self, node, old):
        lead.append(len(listed) - int(os.path.basename(os.path.dirname(node.handle))[1:]) - 1)
        return file(self, node, old)

    monkeypatch.setattr(FilesReader, "children", listing)
    monkeypatch.setattr(engine._Backup, "_file", walked)
    result = backup(repository, tree)
    assert result.stats.files_new == 30
    # The next LOOK_AHEAD, and t itself (listed by the check that it can be read at all)
    assert len(lead) == 30 and max(lead) <= 3 + 1


def test_a_path_given_is_listed_once(repository, tmp_path, monkeypatch):
    """The check that the paths given can be read at all listed the first directory, and the
    walk listed it again: as long again for a large one."""
    tree = write_tree(tmp_path / "t", {"f": b"x"})
    write_tree(tree / "sub", {"g": b"y"})
    other = write_tree(tmp_path / "u", {"h": b"z"})  # not listed by the check: t can be read
    listed: list[bytes] = []
    children = FilesReader.children

    def listing(self, node):
        listed.append(node.handle)
        return children(self, node)

    monkeypatch.setattr(FilesReader, "children", listing)
    result = backup(repository, tree, other)
    assert result.stats.files_new == 3
    assert sorted(listed) == [os.fsencode(p) for p in (tree, tree / "sub", other)]


def test_a_reader_opens_files_ahead_and_closes_them_all_when_it_fails(repository, tmp_path,
                                                                      monkeypatch):
    import corso_core.engine.backup as engine

    tree = tmp_path / "t"
    tree.mkdir()
    for n in range(12):
        (tree / f"f{n:02}").write_bytes(b"small %d" % n)
    monkeypatch.setattr(engine, "OPEN_AHEAD", 3)
    opened: list[FileContent] = []
    lead: list[int] = []  # files opened but not yet read, each time a file's reading starts
    open_file, read_file = FilesReader.open, engine._Backup._read_file

    def opening(self, node):
        content = open_file(self, node)
        opened.append(content)
        return content

    def reading(self, node, content, *rest):
        lead.append(len(opened) - 1 - opened.index(content))
        return read_file(self, node, content, *rest)

    monkeypatch.setattr(FilesReader, "open", opening)
    monkeypatch.setattr(engine._Backup, "_read_file", reading)
    assert backup(repository, tree).stats.files_new == 12
    assert max(lead) == 3 and lead[-1] == 0  # three ahead; the batch's last one on its own
    assert all(content.file.closed for content in opened)

    opened.clear()
    store_content = engine._Backup._store_content

    def failing(self, content, *rest):
        if content is opened[1]:
            raise RuntimeError("a reader failed")
        return store_content(self, content, *rest)

    monkeypatch.setattr(engine._Backup, "_store_content", failing)
    other = tmp_path / "other"
    shutil.copytree(tree, other)  # new paths: every file is read
    with pytest.raises(RuntimeError, match="a reader failed"):
        backup(repository, other)
    assert len(opened) == 5 and all(content.file.closed for content in opened)


@pytest.mark.parametrize("tiny", [True, False])
def test_batches_of_tiny_files_are_read_one_at_a_time(repository, tmp_path, monkeypatch,
                                                      tiny):
    """Two readers reading tiny files at once only pass the GIL back and forth (a backup of
    200,000 such files: 10.5 s against 14.6): a batch of them waits for the other to finish.
    Larger ones (a threshold lowered below these files here) are read two at a time."""
    import corso_core.engine.backup as engine

    assert engine.SMALL_READERS == 2
    tree = tmp_path / "t"
    tree.mkdir()
    for n in range(24):
        (tree / f"f{n:02}").write_bytes(b"%03d" % n * 30)  # 90 bytes
    monkeypatch.setattr(engine, "BATCH_FILES", 3)
    if not tiny:
        monkeypatch.setattr(engine, "TINY_FILE_BYTES", 50)
    reading_now, most, lock = [0], [0], threading.Lock()
    read_file = engine._Backup._read_file

    def reading(self, *args):
        with lock:
            reading_now[0] += 1
            most[0] = max(most[0], reading_now[0])
        time.sleep(0.01)  # time for the other reader to come in, if it may
        try:
            return read_file(self, *args)
        finally:
            with lock:
                reading_now[0] -= 1

    monkeypatch.setattr(engine._Backup, "_read_file", reading)
    assert backup(repository, tree).stats.files_new == 24
    assert most[0] == (1 if tiny else 2)


def test_the_walk_does_not_ask_a_read_out_batchs_future_about_each_file(repository, tmp_path,
                                                                        monkeypatch):
    """Each question to a Future takes its lock, on the walk's thread: once a reader marked
    its batch read out, the walk asks the files themselves."""
    from concurrent.futures import Future

    tree = tmp_path / "t"
    tree.mkdir()
    for n in range(40):
        (tree / f"f{n:02}").write_bytes(b"small %d" % n)
    asked = []
    for name in ("done", "exception", "result"):
        real = getattr(Future, name)
        monkeypatch.setattr(Future, name, lambda self, *a, _real=real, **k: asked.append(1)
                            or _real(self, *a, **k))
    assert backup(repository, tree).stats.files_new == 40
    assert len(asked) < 40  # the listings' and the packers' Futures; not three per file


def test_a_batch_of_small_files_is_stored_in_one_call(repository, tmp_path, monkeypatch):
    tree = tmp_path / "t"
    tree.mkdir()
    for n in range(10):
        (tree / f"f{n}").write_bytes(b"small file number %d\n" % n * 20)
    calls = []
    put_many = ChunkStore.put_many

    def recording(self, chunks, kind="data"):
        calls.append((kind, len(chunks)))
        return put_many(self, chunks, kind)

    monkeypatch.setattr(ChunkStore, "put_many", recording)
    result = backup(repository, tree)
    assert result.stats.files_new == 10
    assert [call for call in calls if call[0] == "data"] == [("data", 10)]
    stats, problems = restore(repository, result.backup_id, tmp_path / "out")
    assert problems.errors == [] and snapshot(tmp_path / "out" / "t") == snapshot(tree)


def test_small_files_after_many_large_ones_are_read_while_those_wait(repository, tmp_path,
                                                                     monkeypatch):
    import corso_core.engine.backup as engine

    tree = tmp_path / "t"
    (tree / "a-large").mkdir(parents=True)
    (tree / "b-small").mkdir()
    for n in range(engine.BATCHES_IN_FLIGHT + 4):  # more than the small-file lane queues
        (tree / "a-large" / f"f{n:02}").write_bytes(os.urandom(TEST_CHUNK * 2))
    (tree / "b-small" / "s").write_bytes(b"small")
    small_read = threading.Event()
    waited: list[bool] = []  # each large file: whether the small one was read meanwhile
    read_file = engine._Backup._read_file

    def reading(self, node, content, *rest):
        if content.meta.size < self.chunker.params.min_size:
            small_read.set()
        else:
            waited.append(small_read.wait(10))
        return read_file(self, node, content, *rest)

    monkeypatch.setattr(engine._Backup, "_read_file", reading)
    result = backup(repository, tree)
    assert result.stats.files_new == engine.BATCHES_IN_FLIGHT + 5
    assert waited and all(waited)  # the walk went on past the queued large files


@pytest.mark.parametrize("stop", [KeyboardInterrupt, lambda: OSError(errno.EIO, "I/O error")],
                         ids=["ctrl-c", "a-failure"])
def test_a_restore_stopped_half_way_then_run_again_gives_every_directory_its_metadata(
        repository, tmp_path, monkeypatch, stop):
    """Stopped by Ctrl-C, a restore left its directories at 0700 with the time of the stop;
    the second run the README recommends (skip) entered them, kept that, and said 0 failed.
    A failure (not a full disk) did too, after the first fix (a review)."""
    source = tmp_path / "src"
    for i in range(6):
        sub = source / f"d{i}" / "inner"
        sub.mkdir(parents=True)
        (sub / "f").write_bytes(os.urandom(3 * TEST_CHUNK) + bytes([i]))
        (source / f"d{i}" / "g").write_bytes(b"small %d" % i)
        os.utime(sub, ns=(1_000_000_000 * (i + 1),) * 2)
        os.chmod(source / f"d{i}", 0o750)
        os.utime(source / f"d{i}", ns=(2_000_000_000 * (i + 1),) * 2)
    backup_id = backup(repository, source).backup_id
    delivered, real_deliver = [0], _Restore._deliver

    def stop_after_three(self, chunk_id, data):
        delivered[0] += 1
        if delivered[0] > 3:
            raise stop()
        return real_deliver(self, chunk_id, data)

    monkeypatch.setattr(_Restore, "_deliver", stop_after_three)
    with pytest.raises((KeyboardInterrupt, OSError)):
        restore(repository, backup_id, tmp_path / "out")
    monkeypatch.undo()
    stopped = snapshot(tmp_path / "out" / "src")
    assert sum(row[0] == 0o100000 for row in stopped.values()) < 12  # stopped half-way
    for i in range(6):  # every directory made has its metadata already
        assert stopped[b"d%d" % i][1:5:3] == (0o750, 2_000_000_000 * (i + 1))

    stats, problems = restore(repository, backup_id, tmp_path / "out")
    assert problems.errors == [] and stats.files > 0
    assert snapshot(tmp_path / "out" / "src") == snapshot(source)


def test_a_chunk_that_goes_to_several_places_is_written_to_each(repository, tmp_path):
    """A chunk's places: one kept as a tuple, more as a list (_Restore.uses)."""
    tree = tmp_path / "t"
    tree.mkdir()
    content = os.urandom(TEST_CHUNK * 3)
    for name in ("one", "two", "three", "four"):  # each chunk in four places
        (tree / name).write_bytes(content)
    result = backup(repository, tree)
    stats, problems = restore(repository, result.backup_id, tmp_path / "out")
    assert problems.errors == [] and stats.files == 4
    assert snapshot(tmp_path / "out" / "t") == snapshot(tree)
