"""Restore: plan from the backup's trees, fetch the chunks pack by pack, write through the source.

1. Plan: walk the trees of the selected part of the backup; note each file's chunks and where
   they go (chunk ID -> [(file, offset)]). Hard-linked files after the first become links.
   The store begins fetching the first of those chunks (ChunkStore.prefetch) while step 2 runs.
2. Create directories and symlinks; check every file's name against the collision policy (the
   writer creates it under a temporary name on its first write).
3. Fetch every needed chunk once with `ChunkStore.get_many` (grouped per pack, bounded
   memory) and write it at each of its offsets on the reader thread that decrypted it; a file
   is finished, and only then visible, when its last chunk is written.
4. If a chunk fails authentication, each unfinished file is retried chunk by chunk; a file
   whose chunk is corrupted is reported with the chunk and discarded: nothing is written from
   data that failed authentication.
5. Hard links, then directory metadata deepest first (so writing inside does not undo mtimes),
   also when the restore stops early.

A full destination (ENOSPC, EDQUOT) would fail every item after the first the same way: the
restore stops there, fetching nothing more, drops its unfinished files and still gives the
directories it made their metadata; a re-run once space is freed completes it.
"""

from __future__ import annotations

import gc
import os
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from corso_core.engine.browse import Globs, TreeLoader
from corso_core.engine.progress import Problems, Progress, shown
from corso_core.engine.tree import Entry, contains_itself
from corso_core.errors import Corrupted, Incomplete, UsageError
from corso_core.repo.manifests import load_manifest
from corso_core.repo.store import ChunkStore
from corso_core.sources.source import (
    DIR,
    FILE,
    ITEM_ERRORS,
    Source,
    SourceWriter,
    no_space,
    reason,
)

Path = tuple[bytes, ...]


@dataclass
class RestoreStats:
    """Items made, by kind; `skipped`: left out by the collision policy; `errors`: problems
    reported as errors, chiefly items that could not be restored."""

    files: int = 0
    dirs: int = 0
    symlinks: int = 0
    hard_links: int = 0
    skipped: int = 0
    bytes_written: int = 0
    errors: int = 0
    duration_s: float = 0.0


@dataclass(slots=True)
class _File:
    path: Path
    entry: Entry
    handle: Any = None
    missing: int = 0  # chunk writes still to come
    done: bool = False  # finished, or failed and discarded


#: Where a chunk goes: the file, the offset there, and the size its tree gives.
_Use = tuple[_File, int, int]


@dataclass
class _Plan:
    dirs: list[tuple[Path, Entry]] = field(default_factory=list)  # deepest first, to finish
    # dirs, files, symlinks, in pre-order; emptied by _Restore.create once it made them
    ops: list[tuple[Path, Entry]] = field(default_factory=list)
    links: list[tuple[Path, Entry]] = field(default_factory=list)  # a hard link's later names
    total_bytes: int = 0
    unmatched: list[str] = field(default_factory=list)  # globs that selected nothing
    named_again: list[Path] = field(default_factory=list)  # a damaged tree's second entries

    def chunk_ids(self) -> Iterator[bytes]:
        """The chunks of the files to restore, in the order `create` asks for them (before it:
        it empties `ops`)."""
        for _, entry in self.ops:
            if entry.meta.kind == FILE:
                for chunk_id, _ in entry.chunks:
                    yield chunk_id


def plan_restore(trees: TreeLoader, root: bytes, globs: list[str]) -> _Plan:
    """What to restore: everything, or the entries matching a glob and all that is below them."""
    planner = _Planner(trees, Globs(globs))
    planner.visit(root, (), False)
    plan = planner.plan
    plan.unmatched = planner.selection.unmatched()
    plan.dirs.sort(key=lambda item: len(item[0]), reverse=True)  # deepest first, for finishing
    return plan


class _Planner:
    """plan_restore's walk, a method: a nested function that calls itself is a reference cycle,
    which would keep the trees and the plan for the cyclic collector (paused in a restore)."""

    def __init__(self, trees: TreeLoader, selection: Globs) -> None:
        self.trees = trees
        self.selection = selection
        self.plan = _Plan()
        self.first_link: set[tuple[int, int]] = set()
        self.above: set[bytes] = set()  # the trees being visited: one met again contains itself

    def visit(self, tree_id: bytes, parent: Path, chosen: bool) -> bool:
        plan, selection, above = self.plan, self.selection, self.above
        found = False
        above.add(tree_id)
        names: set[bytes] = set()
        for entry in self.trees.entries(tree_id):
            path = parent + (entry.name,)
            # Below a chosen entry, globs are tried only until each has matched once.
            here = selection.match(path, only_unmatched=chosen) or chosen
            if entry.name in names:  # only a damaged tree: not written over the first
                if here:
                    plan.named_again.append(path)
                continue
            names.add(entry.name)
            if entry.meta.kind == DIR:
                if entry.subtree in above:
                    raise contains_itself(entry.subtree)
                at = len(plan.ops)
                plan.ops.append((path, entry))
                if self.visit(entry.subtree, path, here) or here:
                    plan.dirs.append((path, entry))
                    found = True
                else:
                    del plan.ops[at:]
                continue
            if not here:
                continue
            found = True
            key = (entry.meta.dev, entry.meta.inode)
            if entry.meta.kind == FILE and entry.meta.nlink > 1 and key in self.first_link:
                plan.links.append((path, entry))
                continue
            if entry.meta.kind == FILE and entry.meta.nlink > 1:
                self.first_link.add(key)
            plan.total_bytes += entry.meta.size
            plan.ops.append((path, entry))
        above.discard(tree_id)  # the same tree may well be met again beside this one
        return found


class _Restore:
    def __init__(self, store: ChunkStore, writer: SourceWriter, problems: Problems,
                 progress: Progress) -> None:
        self.store = store
        self.writer = writer
        self.problems = problems
        self.progress = progress
        self.stats = RestoreStats()
        self.files: list[_File] = []
        # chunk ID -> (file, offset, size the tree gives): where it goes, or a list of those
        # for a chunk that goes to several places (most go to one: a list of one took ~90
        # bytes more per file, in a restore that holds every file's record at once)
        self.uses: dict[bytes, _Use | list[_Use]] = {}
        self.restored_links: dict[tuple[int, int], Path] = {}
        self.skipped_links: set[tuple[int, int]] = set()  # first files "skip" left alone
        self.started_links: set[tuple[int, int]] = set()  # hard links with a file started
        self.stand_ins: set[Path] = set()  # later names restored as files (see create)
        self.left_out: set[Path] = set()  # directories not made: nothing below them is tried
        self.lock = threading.Lock()  # files' counts, stats and links, across reader threads
        # Writers made before SourceWriter.write_file get a file of one chunk as any other.
        self.write_file = getattr(writer, "write_file", None)
        # Optional too: how the writer's messages name an item (SourceWriter.shown).
        self.shown = getattr(writer, "shown", None) or partial(SourceWriter.shown, writer)

    def _below_left_out(self, path: Path) -> bool:
        return bool(self.left_out) and any(path[:i] in self.left_out for i in range(1, len(path)))

    def create(self, plan: _Plan) -> None:
        for path, entry in plan.ops:
            if self._below_left_out(path):
                continue
            kind = entry.meta.kind
            if kind == FILE:
                self._start(path, entry)
                continue
            if kind == DIR:
                made = self.writer.make_dir(path, entry.meta)
                self.stats.dirs += made is True
                if not made:
                    self.left_out.add(path)
            else:
                made = self.writer.make_symlink(path, entry.meta)
                self.stats.symlinks += made is True
            self.stats.skipped += made is None  # False: failed, the writer reported why
        # Done with: the files' records live on in self.files, the rest of the entries go.
        plan.ops.clear()
        # A hard link whose first name was not started (the policy kept what is there, or it
        # failed): its next name is restored as a file, from its own data, and the rest link
        # to that one.
        for path, entry in plan.links:
            key = (entry.meta.dev, entry.meta.inode)
            if key not in self.started_links and not self._below_left_out(path):
                self.stand_ins.add(path)
                plan.total_bytes += entry.meta.size  # written once more: progress says so
                self.progress.set_total(plan.total_bytes)
                self._start(path, entry)

    def _start(self, path: Path, entry: Entry) -> None:
        handle = self.writer.start_file(path, entry.meta)
        if handle is None or handle is False:
            if handle is None:  # False: failed, the writer reported why
                self._skipped(entry.meta)
            return
        if sum(size for _, size in entry.chunks) != entry.meta.size:
            self.problems.error(self.shown(path), "not restored: its chunks do not add up "
                                                  "to its size (a damaged tree)")
            self.writer.discard_file(handle)
            return
        file = _File(path, entry, handle, missing=len(entry.chunks))
        self.files.append(file)
        if entry.meta.nlink > 1:
            self.started_links.add((entry.meta.dev, entry.meta.inode))
        offset, uses = 0, self.uses
        for chunk_id, size in entry.chunks:
            use = (file, offset, size)
            found = uses.setdefault(chunk_id, use)
            if found is not use:
                if type(found) is tuple:
                    uses[chunk_id] = [found, use]
                else:
                    found.append(use)
            offset += size
        if not entry.chunks:
            self._finish(file)

    def _finish(self, file: _File) -> None:
        self._finished(file, self.writer.finish_file(file.handle))

    def _finished(self, file: _File, placed: bool | None, nbytes: int = 0) -> None:
        """Count a file finished (and `nbytes` written last, in one call to progress)."""
        meta = file.entry.meta
        with self.lock:
            file.done = True
            if placed is True:
                self.stats.files += 1
                self.stats.bytes_written += meta.size
                if meta.nlink > 1:
                    self.restored_links[(meta.dev, meta.inode)] = file.path
            elif placed is None:  # the name was taken meanwhile ("skip")
                self._skipped(meta)
        self.progress.advance(files=1, nbytes=nbytes)

    def _skipped(self, meta) -> None:
        """The collision policy left a file alone. Its other hard links: left alone too when
        the name was taken only as the file was placed (their data was not fetched); from
        the start, the next name stands in for it (see create)."""
        self.stats.skipped += 1
        if meta.nlink > 1:
            self.skipped_links.add((meta.dev, meta.inode))

    def _write(self, file: _File, offset: int, data: bytes) -> None:
        """Write one chunk; the thread writing a file's last chunk finishes it (a file of one
        chunk, most of them, in one call)."""
        if file.done:
            return  # failed earlier
        whole = len(file.entry.chunks) == 1 and self.write_file is not None
        try:
            if whole:
                placed = self.write_file(file.handle, data)
            else:
                self.writer.write(file.handle, offset, data)
        except ITEM_ERRORS as e:
            if no_space(e):
                raise
            self._fail(file, reason(e))
            return
        if whole:
            self._finished(file, placed, len(data))
            return
        self.progress.advance(nbytes=len(data))
        with self.lock:
            file.missing -= 1
            last = file.missing == 0
        if last:
            self._finish(file)

    def _fail(self, file: _File, why: str) -> None:
        """Report a file that cannot be restored and drop what was written of it."""
        with self.lock:
            if file.done:
                return  # the other thread failed on it too, and said so
            file.done = True
        self.problems.error(self.shown(file.path), f"not restored: {why}")
        self.writer.discard_file(file.handle)

    def _deliver(self, chunk_id: bytes, data: bytes) -> None:
        found = self.uses.pop(chunk_id)
        for file, offset, size in (found,) if type(found) is tuple else found:
            if len(data) == size:
                self._write(file, offset, data)
            else:
                self._fail(file, _wrong_size(chunk_id, data, size))

    def fetch(self) -> None:
        """Fetch every chunk once and write it wherever it goes.

        The store's reader threads write each chunk as they decrypt it: no hand-off per chunk
        (Futures and GIL ping-pong cost 73 futex calls per small file when writer threads
        took the chunks), and two threads share the writing. A file whose chunks lie in
        several packs may be written by both at once, at different offsets.
        """
        try:
            self.store.get_many(list(self.uses), self._deliver)
        except Corrupted:
            self._retry_one_by_one()

    def _retry_one_by_one(self) -> None:
        """After a failed batch: each unfinished file on its own, so the bad ones are named."""
        for file in self.files:
            if file.done:
                continue
            offset = 0
            try:
                for chunk_id, size in file.entry.chunks:
                    data = self.store.get(chunk_id)
                    if why := _wrong_size(chunk_id, data, size):
                        raise Corrupted(why)
                    self.writer.write(file.handle, offset, data)
                    offset += size
            except (Corrupted, *ITEM_ERRORS) as e:
                if no_space(e):
                    raise
                self._fail(file, str(e) if isinstance(e, Corrupted) else reason(e))
                continue
            self._finish(file)

    def link(self, plan: _Plan) -> None:
        for path, entry in plan.links:
            if path in self.stand_ins or self._below_left_out(path):
                continue
            key = (entry.meta.dev, entry.meta.inode)
            existing = self.restored_links.get(key)
            if existing is None and key in self.skipped_links:
                self.stats.skipped += 1
                continue
            if existing is None:
                self.problems.error(self.shown(path),
                                    "not restored: the file it is a hard link of was not")
                continue
            made = self.writer.link(path, existing)
            self.stats.hard_links += made is True
            self.stats.skipped += made is None

    def finish_dirs(self, plan: _Plan) -> None:
        for path, entry in plan.dirs:
            self.writer.finish_dir(path, entry.meta)

    def discard_unfinished(self) -> None:
        for file in self.files:
            if not file.done:
                file.done = True
                self.writer.discard_file(file.handle)


def _wrong_size(chunk_id: bytes, data: bytes, size: int) -> str | None:
    """Why a chunk cannot go where the tree puts it (a damaged tree): not the size it gives."""
    if len(data) != size:
        return f"chunk {chunk_id.hex()} has {len(data)} bytes, the tree says {size}"
    return None


@contextmanager
def _cycle_collector_paused() -> Iterator[None]:
    """A restore's objects (trees, plan, files) live until its end and hold no reference cycles:
    the cyclic collector would only scan them again and again (7 % of the CPU of a 15,000-file
    restore). Reference counting still frees everything else as usual, and them at the end:
    they must be gone before the collector resumes (see run_restore)."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def run_restore(repository, source: Source, values: dict, backup_id: str, globs: list[str],
                collisions: str, problems: Problems | None = None,
                progress: Progress | None = None) -> RestoreStats:
    """Restore a backup (or the parts matching `globs`) through the source's writer."""
    problems = problems or Problems()
    progress = progress or Progress()
    started = time.monotonic()
    manifest = load_manifest(repository, backup_id)
    if manifest.get("source") != source.name:
        raise UsageError(f"backup {backup_id} is a {manifest.get('source')} backup, "
                         f"not {source.name}")
    with _cycle_collector_paused():
        # Its trees, plan and files are freed as it returns, before the collector resumes,
        # whose first collection would otherwise scan every one of them (15 ms for 15,000).
        stats, full = _restore(repository, source, values, backup_id,
                               bytes.fromhex(manifest["root"]), globs, collisions, problems,
                               progress)
    if full is not None:
        where = f" ({shown(full.filename)})" if full.filename else ""
        raise Incomplete(f"restore of backup {backup_id} stopped: "
                         f"{os.strerror(full.errno).lower()}"
                         f"{where}; free some space and run it again (the default "
                         "--collisions skip keeps what was restored)")
    stats.errors = len(problems.errors)
    stats.duration_s = round(time.monotonic() - started, 3)
    return stats


def _restore(repository, source: Source, values: dict, backup_id: str, root: bytes,
             globs: list[str], collisions: str, problems: Problems,
             progress: Progress) -> tuple[RestoreStats, OSError | None]:
    """run_restore's work: its stats, and the error of a full destination, which stopped it."""
    store = ChunkStore(repository, read_only=True)
    try:
        trees = TreeLoader(store)
        try:
            plan = plan_restore(trees, root, globs)
        finally:
            trees.close()
        if plan.unmatched:  # before anything is written
            raise UsageError(f"nothing in backup {backup_id} matches "
                             f"{', '.join(plan.unmatched)}")
        writer = source.open_writer(values, collisions, problems)
        restore = _Restore(store, writer, problems, progress)
        for path in plan.named_again:
            problems.error(restore.shown(path), "not restored: its directory lists the "
                                                "name twice (a damaged tree)")
        full = None
        try:
            progress.start(plan.total_bytes)
            try:
                store.prefetch(plan.chunk_ids())  # the first request goes out meanwhile
                restore.create(plan)
                restore.fetch()
                restore.link(plan)
            except BaseException as e:
                # Full, stopped (Ctrl-C, SIGTERM) or failed: the directories made get
                # their metadata all the same, as the run that completes this one enters
                # them and keeps what it finds (they were left 0700, with the time of the
                # stop); unfinished files go first, before the directories get mtimes.
                restore.discard_unfinished()
                restore.finish_dirs(plan)
                if not (isinstance(e, OSError) and no_space(e)):
                    raise
                full = e
            else:
                restore.finish_dirs(plan)
        finally:  # the display first: a second Ctrl-C may cut the rest short
            progress.stop()
            restore.discard_unfinished()
            writer.close()
    finally:
        store.close()
    return restore.stats, full
