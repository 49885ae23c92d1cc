"""Backup: walk a source's tree, store what changed as chunks, then trees, then the manifest.

The pipeline, every stage bounded so memory does not grow with the data:
- the calling thread walks the source, listing directories; a file whose path, size, mtime,
  ctime and inode match the previous backup (and whose chunks are all still indexed) is reused
  without being opened; other files go to one of two reader lanes: small files in batches
  (many files to a batch, so that a file costs no thread hand-off of its own; a batch of tiny
  files waits for the other reader's, TINY_FILE_BYTES), large ones each on their own, on a
  lane of their own;
- readers open files a few ahead of the one they read (OPEN_AHEAD: the source may fetch them
  meanwhile; a cold disk then serves many at once) and chunk them (pyfastcdc). A small file
  (one chunk) is hashed right there and stored with the rest of its batch, in one call; a
  large file's chunks go to the packer pool (at most CHUNKS_IN_FLIGHT per core), so that one
  large file keeps both cores compressing while small files go on beside it;
- hashing (blake3) and compressing (zstd, in `ChunkStore.put_many`) release the GIL, so both
  cores work at once; sealing into the pack is one fast pass under the store's lock;
- the calling thread finishes directories in post-order as their files complete, each one a
  "tree" chunk; the manifest is written last, so an interrupted backup leaves no trace but
  reusable chunks.
"""

from __future__ import annotations

import getpass
import logging
import os
import resource
import socket
import threading
import time
from collections import deque
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import closing, nullcontext
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any, NamedTuple

from corso_core.engine.progress import Problems, Progress
from corso_core.engine.tree import Entry, encode_tree, read_tree, tree_chunks
from corso_core.errors import Corrupted, CorsoError, RepositoryError, UsageError
from corso_core.repo.cache import cache_directory
from corso_core.repo.chunker import chunk_file, new_read_buffer
from corso_core.repo.manifests import list_manifests, save_manifest
from corso_core.repo.store import ChunkStore
from corso_core.sources.source import DIR, FILE, Content, Node, Report, Source, SourceReader

log = logging.getLogger("corso.engine")

#: Readers of small files (one chunk each: read, hashed and stored by the reader). Their work
#: is mostly Python, bound by the GIL: more threads measured no faster.
SMALL_READERS = 2
#: Readers of large files (chunked, the chunks compressed on the packers). A lane of their own,
#: so that small files keep going while the packers compress a large one.
LARGE_READERS = 1
#: Batches of small files waiting for a reader (the walk blocks beyond this).
BATCHES_IN_FLIGHT = 8
#: Large files waiting for a reader. Many more than small batches: a queued file costs only
#: its record, and a walk blocked behind large files would leave the small-file readers idle.
LARGE_FILES_QUEUED = 64
#: Small files are handed to a reader in batches of this many files or bytes.
BATCH_FILES = 64
BATCH_BYTES = 4 * 1024 * 1024
#: A batch whose files hold fewer bytes than this on average is read by one reader at a time.
#: Its work is then mostly Python and system calls, each of which lets the other reader take
#: the GIL: two readers at once only hand it back and forth. (Larger files are compressed and
#: hashed with the GIL released, which two readers do at once.)
TINY_FILE_BYTES = 4096
#: Files a reader has opened ahead of the one it reads (see _Backup._opened), at most: fewer
#: where the process may hold only a few open files (see _open_ahead).
OPEN_AHEAD = 32
#: Chunks waiting for or being compressed, per core (each up to the chunker's maximum size).
CHUNKS_IN_FLIGHT = 2
#: Threads listing directories (and loading previous trees) ahead of the walk. Their work is
#: mostly Python between short system calls: more threads only pass the GIL around more.
LISTER_THREADS = 2
#: Subdirectories of one directory listed ahead of the walk, at most.
LOOK_AHEAD = 8
#: A file modified this close to the moment it was read may change again unseen (same size,
#: same mtime tick): the next backup must not trust its metadata.
RECENT_NS = 1_000_000_000


@dataclass
class BackupOptions:
    tags: dict[str, str] = field(default_factory=dict)
    ignore_inode: bool = False
    ignore_ctime: bool = False


@dataclass
class BackupStats:
    files_new: int = 0
    files_changed: int = 0
    files_unchanged: int = 0
    dirs: int = 0
    symlinks: int = 0
    bytes_total: int = 0  # size of every file in the backup
    bytes_read: int = 0  # what was actually read (changed and new files)
    bytes_added: int = 0  # what the repository grew by, after dedup and compression
    chunks_new: int = 0  # data and tree chunks stored by this backup
    chunks_dedup: int = 0  # chunks read and found already stored
    packs_written: int = 0
    errors: int = 0
    warnings: int = 0
    duration_s: float = 0.0


@dataclass
class BackupResult:
    backup_id: str
    manifest: dict[str, Any]
    stats: BackupStats
    problems: Problems


#: What storing one chunk gives: (chunk ID, size, bytes added).
_Stored = tuple[bytes, int, int]
#: A small file's chunk, read and hashed, to be stored with its batch: (the file's pieces, its
#: place there, chunk ID, data).
_Unstored = tuple[list, int, bytes, bytes]


@dataclass
class _FileRead:
    """A file read to its end; a large file's chunks may still be on the packers (Futures)."""

    meta: Any
    pieces: list[Future | _Stored]
    recent: bool
    counted: bool = False

    def stored(self) -> bool:
        return all(not isinstance(piece, Future) or piece.done() for piece in self.pieces)

    def results(self) -> list[_Stored]:
        return [piece.result() if isinstance(piece, Future) else piece for piece in self.pieces]


@dataclass
class _FileJob:
    """A file queued for reading; `batch` is its batch's Future once handed to a reader.

    `read_out`: set by the reader once its whole batch went through without failing, so that
    the walk need not ask the batch's Future (each question takes its lock: several per file,
    on the walk's thread, which a tree of many small files waits for)."""

    node: Node
    batch: Future | None = None
    read: _FileRead | None = None  # None after the batch ran: the file was reported unreadable
    read_out: bool = False

    def ready(self) -> bool:
        if not self.read_out:
            if self.batch is None or not self.batch.done():
                return False
            if self.batch.exception() is not None:
                return True
        return self.read is None or self.read.stored()

    def result(self) -> _FileRead | None:
        if not self.read_out:
            self.batch.result()  # a reader's failure is raised here
        return self.read


class _ReadLane:
    """A pool of reader threads and the bound on the batches queued for it."""

    def __init__(self, threads: int, queued: int, name: str) -> None:
        self.pool = ThreadPoolExecutor(threads, thread_name_prefix=name)
        self.slots = threading.BoundedSemaphore(queued)


class _NotIndexed(Exception):
    """A chunk of the previous backup's tree is not in the index."""


@dataclass
class _Previous:
    """A directory as the previous backup recorded it: its tree's ID (and pieces, if split)
    and its entries by name."""

    tree_id: bytes | None = None
    entries: dict[bytes, Entry] = field(default_factory=dict)
    pieces: list[bytes] = field(default_factory=list)

    def same_as(self, entries: list[Entry]) -> bool:
        """Whether `entries` would encode to the previous tree (equal entries, same names)."""
        return (self.tree_id is not None and len(entries) == len(self.entries)
                and all(self.entries.get(entry.name) == entry for entry in entries))


@dataclass
class _PendingDir:
    """A directory whose entries may still be waiting on readers."""

    previous: _Previous
    #: (node, Entry | _FileJob | _PendingDir, the previous backup's entry of this name or None)
    items: list[tuple[Node, Any, Entry | None]] = field(default_factory=list)
    #: What it still waits for, oldest first: file jobs and subdirectories, each checked until
    #: it is ready (a subdirectory: its tree is stored), then never again.
    waiting: deque[_FileJob | _PendingDir] = field(default_factory=deque)
    tree_id: bytes | None = None

    def add(self, node: Node, item: Any, previous: Entry | None) -> None:
        self.items.append((node, item, previous))
        if isinstance(item, (_FileJob, _PendingDir)):
            self.waiting.append(item)

    def ready(self) -> bool:
        while self.waiting and _done(self.waiting[0]):
            self.waiting.popleft()
        return not self.waiting


def _done(item: _FileJob | _PendingDir) -> bool:
    return item.ready() if isinstance(item, _FileJob) else item.tree_id is not None


def _open_ahead() -> int:
    """OPEN_AHEAD, or fewer so that the readers' windows take at most a quarter of the files
    the process may have open (ulimit -n): a backup that ran out of descriptors would fail to
    open the files it was about to read."""
    limit, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if limit == resource.RLIM_INFINITY:
        return OPEN_AHEAD
    return max(0, min(OPEN_AHEAD, limit // 4 // (SMALL_READERS + LARGE_READERS) - 1))


class _Own(NamedTuple):
    """A directory this backup writes to: why it is left out, and whether to say so where
    the walk meets it (a path the user gave is always said)."""

    why: str
    said: bool


def _own_directories(repository) -> dict[tuple[int, int], _Own]:
    """The directories this backup writes to, by (st_dev, st_ino): the repository's (when its
    storage is on this machine) and its local cache's. A repository under a --path (a home
    directory holding it) would otherwise be stored in itself, growing by all earlier backups
    each time, its packs read as they are written. Told by identity, not by looks: a copy of a
    repository, or another repository, is backed up as any files are. The cache is left out
    without a word where the walk meets it: it is under every home directory, and nothing in
    it is worth keeping."""
    own: dict[tuple[int, int], _Own] = {}
    for path, reason in ((repository.storage.local_root,
                          _Own("left out: the repository this backup is written to", True)),
                         (cache_directory(repository.repository_id),
                          _Own("left out: corso's cache of this repository", False))):
        if path is not None:
            try:
                st = os.stat(path)
            except OSError:  # a cache not made yet, left out from the next backup on (the
                continue  # CLI has made it by now: it keeps the format blob there)
            own.setdefault((st.st_dev, st.st_ino), reason)
    return own


def _without_own(nodes: list[Node], own: dict[tuple[int, int], _Own], report: Report, *,
                 given: bool = False) -> list[Node]:
    """`nodes` but for the directories this backup writes to (`_own_directories`), each
    reported as a warning where it is to be said, or is a path the user gave (`given`: the
    roots). A source without inodes reports 0s, which match nothing."""
    kept = []
    for node in nodes:
        meta = node.meta
        if meta.kind != DIR or not meta.inode or (key := (meta.dev, meta.inode)) not in own:
            kept.append(node)
        elif own[key].said or given:
            report.warning(node.handle or node.name, own[key].why)
        else:
            log.info("%s: %s", os.fsdecode(node.handle or node.name), own[key].why)
    return kept


@dataclass
class _Roots:
    """Where a pass of the backup starts: its reader, the paths given (`nodes`), and the
    listings of those already listed, by name, which the walk takes rather than list them
    again."""

    reader: SourceReader
    nodes: list[Node]
    listed: dict[bytes, list[Node]] = field(default_factory=dict)


def _roots(source: Source, values: dict, problems: Problems,
           own: dict[tuple[int, int], _Own]) -> _Roots:
    reader = source.open_reader(values, problems)
    return _Roots(reader, _without_own(reader.roots(), own, problems, given=True))


def _readable(roots: _Roots, node: Node, problems: Problems) -> bool:
    """Whether the backup would hold anything of `node`, a path given: a file that opens, a
    directory that lists (empty without an error), anything else. A directory's listing is
    kept for the walk (a large one took as long again to list twice); a file is opened again
    by the walk, which meets the same problems again: they are not repeated."""
    if node.meta.kind == FILE:
        content = roots.reader.open(node)
        if content is None:
            return False
        content.close()
        return True
    if node.meta.kind == DIR:
        errors = len(problems.errors)
        children = roots.listed[node.name] = roots.reader.children(node)
        return bool(children) or len(problems.errors) == errors
    return True


def _listed(children: list[Node]) -> Future:
    done: Future = Future()
    done.set_result(children)
    return done


def find_parent(repository, source: Source, paths: list[str], host: str) -> dict | None:
    """The latest backup of the same source, paths and host (an incomplete one is fine: what
    it holds is sound, and what it lacks is simply read again)."""
    same = [m for m in list_manifests(repository)
            if m.get("source") == source.name and m.get("paths") == paths
            and m.get("host") == host]
    return max(same, key=lambda m: m["time"], default=None)


class _Backup:
    def __init__(self, store: ChunkStore, chunker, reader: SourceReader, options: BackupOptions,
                 problems: Problems, progress: Progress,
                 own: dict[tuple[int, int], _Own]) -> None:
        self.store = store
        self.chunker = chunker
        self.reader = reader
        self.options = options
        self.problems = problems
        self.progress = progress
        self.own = own  # the directories left out (_own_directories)
        self.stats = BackupStats()
        cores = os.cpu_count() or 2
        self.small_files = _ReadLane(SMALL_READERS, BATCHES_IN_FLIGHT, "corso-read-small")
        self.tiny_batch_reader = threading.Lock()  # see TINY_FILE_BYTES
        self.large_files = _ReadLane(LARGE_READERS, LARGE_FILES_QUEUED, "corso-read-large")
        self.packers = ThreadPoolExecutor(cores, thread_name_prefix="corso-pack")
        self.listers = ThreadPoolExecutor(LISTER_THREADS, thread_name_prefix="corso-list")
        self.batch: list[_FileJob] = []  # small files queued, not yet handed to a reader
        self.batch_bytes = 0
        self.chunk_slots = threading.BoundedSemaphore(CHUNKS_IN_FLIGHT * cores)
        #: Directories walked but not finished, children before their parents.
        self.finishing: list[_PendingDir] = []
        self.hard_links: dict[tuple[int, int], Any] = {}
        #: IDs (32 bytes each, back to back) of the chunks this backup refers to without having
        #: stored them: they must still exist when the manifest is written.
        self.deduplicated = bytearray()
        self._dedup_lock = threading.Lock()
        self.root: bytes | None = None  # the root tree's ID, once the walk is over
        self._reader_state = threading.local()  # each reader thread's re-used read buffer
        self.open_ahead = _open_ahead()

    def _relied_on(self, chunk_ids) -> None:
        with self._dedup_lock:
            for chunk_id in chunk_ids:
                self.deduplicated += chunk_id

    def deduplicated_ids(self):
        return (bytes(self.deduplicated[i:i + 32]) for i in range(0, len(self.deduplicated), 32))

    def shutdown(self) -> None:
        for pool in (self.listers, self.small_files.pool, self.large_files.pool, self.packers):
            pool.shutdown(wait=True, cancel_futures=True)

    # --- reading (reader and packer threads) ----------------------------------------------

    def _pack(self, data: bytes | memoryview) -> _Stored:
        """Hashing, compression and encryption of one chunk."""
        chunk_id = self.store.chunk_id(data)
        added = self.store.put(chunk_id, data)
        if not added:
            self._relied_on([chunk_id])
        return chunk_id, len(data), added

    def _pack_queued(self, data: bytes) -> _Stored:
        """_pack on a packer thread, freeing the chunk's slot."""
        try:
            return self._pack(data)
        finally:
            self.chunk_slots.release()

    def _store_content(self, content: Content, pieces: list[Future | _Stored | None],
                       unstored: list[_Unstored]) -> int:
        """Chunk the file, appending to `pieces`; the bytes read.

        A file below the chunker's minimum size is one chunk: it is hashed right here and
        stored with the rest of its batch (_store_unstored), as a hand-off would cost more than
        the work. A larger file's chunks go to the packers and the reader goes on to the next
        file meanwhile, so reading and compressing overlap.
        """
        buffer = getattr(self._reader_state, "buffer", None)
        if buffer is None:
            buffer = self._reader_state.buffer = new_read_buffer(self.chunker)
        small = content.meta.size < self.chunker.params.min_size
        read = 0
        for piece in chunk_file(self.chunker, content.file, buffer, content.meta.size):
            if small:  # a copy: the reader's buffer is overwritten by the next read
                unstored.append((pieces, len(pieces), self.store.chunk_id(piece), bytes(piece)))
                pieces.append(None)
            else:
                self.chunk_slots.acquire()
                # a copy: the reader's buffer is overwritten by the next read
                pieces.append(self.packers.submit(self._pack_queued, bytes(piece)))
            self.progress.advance(nbytes=len(piece))
            read += len(piece)
        return read

    def _read_file(self, node: Node, content: Content | None,
                   unstored: list[_Unstored]) -> _FileRead | None:
        """Read an opened file to its end (None: unreadable, reported)."""
        try:
            if content is None:
                return None
            pieces: list[Future | _Stored | None] = []
            try:
                started = time.time_ns()
                read = self._store_content(content, pieces, unstored)
                why = content.changed() or (
                    None if read == content.meta.size else "changed while being read (size)")
            except OSError as e:
                why = f"read failed: {e.strerror}"
            finally:
                content.close()
            if why:
                self.problems.error(node.handle or node.name, why)
                return None
            meta = content.meta
            return _FileRead(meta=meta, pieces=pieces,
                             recent=started - max(meta.mtime_ns, meta.ctime_ns) < RECENT_NS)
        finally:
            self.progress.advance(files=1)

    def _opened(self, jobs: list[_FileJob]) -> Iterator[tuple[_FileJob, Content | None]]:
        """Each job with its file opened, open_ahead files before it is read: a source may
        start fetching a file when it is opened (the files source has the kernel read a small
        file in), so on a cold cache the disk serves many files at once, not one by one."""
        window: deque[tuple[_FileJob, Content | None]] = deque()
        try:
            for job in jobs:
                window.append((job, self.reader.open(job.node)))
                if len(window) > self.open_ahead:
                    yield window.popleft()
            while window:
                yield window.popleft()
        finally:  # the reader stopped early (it failed): close what it will not read
            for _, content in window:
                if content is not None:
                    content.close()

    def _read_batch(self, jobs: list[_FileJob], lane: _ReadLane) -> None:
        tiny = sum(job.node.meta.size for job in jobs) < TINY_FILE_BYTES * len(jobs)
        try:
            with self.tiny_batch_reader if tiny else nullcontext():
                unstored: list[_Unstored] = []
                with closing(self._opened(jobs)) as opened:
                    for job, content in opened:
                        job.read = self._read_file(job.node, content, unstored)
                self._store_unstored(unstored)
            for job in jobs:
                job.read_out = True
        finally:
            lane.slots.release()

    def _store_unstored(self, unstored: list[_Unstored]) -> None:
        """Store a batch's small chunks in one call (ChunkStore.put_many: one compression pass,
        one taking of the lock; per chunk, each of those was a GIL hand-off between readers),
        each into its place among its file's pieces."""
        if not unstored:
            return
        added = self.store.put_many([(chunk_id, data) for _, _, chunk_id, data in unstored])
        deduplicated = []
        for (pieces, position, chunk_id, data), n in zip(unstored, added, strict=True):
            pieces[position] = (chunk_id, len(data), n)
            if not n:
                deduplicated.append(chunk_id)
        self._relied_on(deduplicated)

    def _send(self, lane: _ReadLane, jobs: list[_FileJob]) -> None:
        """Hand files to a lane's readers (waiting while the lane's queue is full)."""
        lane.slots.acquire()
        batch = lane.pool.submit(self._read_batch, jobs, lane)
        for job in jobs:
            job.batch = batch

    def _queue_read(self, node: Node) -> _FileJob:
        """Queue a file for a reader: a large one at once, small ones in batches."""
        job = _FileJob(node)
        if node.meta.size >= self.chunker.params.min_size:
            self._send(self.large_files, [job])
            return job
        self.batch.append(job)
        self.batch_bytes += node.meta.size
        if len(self.batch) >= BATCH_FILES or self.batch_bytes >= BATCH_BYTES:
            self.send_batch()
        return job

    def send_batch(self) -> None:
        """Hand the queued small files to a reader."""
        if self.batch:
            jobs, self.batch, self.batch_bytes = self.batch, [], 0
            self._send(self.small_files, jobs)

    # --- walking (calling thread) ---------------------------------------------------------

    def _unchanged(self, old: Entry | None, node: Node) -> bool:
        if old is None or old.meta.kind != FILE or old.recent:
            return False
        a, b = old.meta, node.meta
        return (a.size == b.size and a.mtime_ns == b.mtime_ns
                and (self.options.ignore_ctime or a.ctime_ns == b.ctime_ns)
                and (self.options.ignore_inode or a.inode == b.inode)
                and self.store.has_all(chunk_id for chunk_id, _ in old.chunks))

    def _file(self, node: Node, old: Entry | None) -> Entry | _FileJob:
        """An Entry reused from the previous backup, or the job of reading the file."""
        link_key = (node.meta.dev, node.meta.inode) if node.meta.nlink > 1 else None
        item = self.hard_links.get(link_key)  # a second name of a file already seen: share it
        if item is not None:
            self.progress.advance(files=1)
        elif self._unchanged(old, node):
            self.progress.advance(files=1, nbytes=node.meta.size, unread=True)
            self._relied_on(chunk_id for chunk_id, _ in old.chunks)
            item = Entry(node.name, node.meta, old.chunks)
        else:
            item = self._queue_read(node)
        if link_key:
            self.hard_links[link_key] = item
        return item

    def previous(self, tree_id: bytes | None) -> _Previous:
        """The previous backup's record of one directory: empty if there is none, or if a
        chunk of its tree is no longer indexed (repair takes out damaged ones): this backup
        then reads the directory's files again and stores its tree afresh."""
        if tree_id is None:
            return _Previous()
        try:
            tree = read_tree(tree_id, self._indexed_chunk)
        except _NotIndexed:
            return _Previous()
        except Corrupted as e:  # indexed, yet lost or damaged: deduplicating against what is
            # indexed would not heal it (repair takes it out of the index, then this reads on)
            raise Corrupted(f"{e}, in a tree of the previous backup, which this one builds on; "
                            "run corso repo verify, then corso repo repair --read-data") from None
        return _Previous(tree_id, {e.name: e for e in tree.entries}, tree.pieces)

    def _indexed_chunk(self, chunk_id: bytes) -> bytes:
        if not self.store.has(chunk_id):
            raise _NotIndexed
        return self.store.get(chunk_id)

    def _look_ahead(self, children: list[Node], old: _Previous,
                    listed: dict[bytes, list[Node]]) -> Iterator[tuple[Future, Future]]:
        """(listing, previous record) of each subdirectory in turn, each started LOOK_AHEAD
        subdirectories before it is needed, on the lister pool: on a cold cache the walk waits
        for several disk reads at once, not one by one, and holds no more than LOOK_AHEAD
        listings however many subdirectories a directory has. One in `listed` (by name) is
        not listed again."""
        started: deque[tuple[Future, Future]] = deque()
        for child in (c for c in children if c.meta.kind == DIR):
            previous = old.entries.get(child.name)
            old_tree = previous.subtree if previous and previous.meta.kind == DIR else None
            started.append((_listed(listed.pop(child.name)) if child.name in listed
                            else self.listers.submit(self.reader.children, child),
                            self.listers.submit(self.previous, old_tree)))
            if len(started) > LOOK_AHEAD:
                yield started.popleft()
        yield from started

    def walk(self, node: Node | None, old: _Previous, children: list[Node],
             listed: dict[bytes, list[Node]] | None = None) -> _PendingDir:
        """Walk a directory (None: the backup's root, whose `children` are the paths given,
        those in `listed` listed already) and queue it for finishing."""
        pending = _PendingDir(old)
        if node is not None:  # the paths given are without this backup's own already
            children = _without_own(children, self.own, self.problems)
        ahead = self._look_ahead(children, old, listed or {})
        for child in children:
            previous = old.entries.get(child.name)
            if child.meta.kind == DIR:
                listing, old_dir = next(ahead)
                item: Any = self.walk(child, old_dir.result(), listing.result())
            elif child.meta.kind == FILE:
                item = self._file(child, previous)
            else:
                self.stats.symlinks += 1
                item = Entry(child.name, child.meta)
            pending.add(child, item, previous)
        self.finishing.append(pending)
        self.finish_ready(block=False)
        return pending

    def finish_ready(self, block: bool) -> None:
        """Store the trees of the directories whose files are all stored (with `block`: of all,
        waiting for their files). Children come before their parents in `finishing`, so one
        pass finishes a parent right after its last child; a directory held up by a large file
        holds up only its ancestors, so the walk's memory stays bounded by what is in flight."""
        if block:
            self.send_batch()
        unfinished = []
        for pending in self.finishing:
            if block or pending.ready():
                self._finish(pending)
            else:
                unfinished.append(pending)
        self.finishing = unfinished

    def _count_file(self, entry: Entry, previous: Entry | None) -> None:
        """New, changed or unchanged against the previous backup's entry: a file read again
        only because it was recent then, found as it was, is unchanged."""
        self.stats.bytes_total += entry.meta.size
        if previous is None:
            self.stats.files_new += 1
        elif _as_recorded(entry) != _as_recorded(previous):
            self.stats.files_changed += 1
        else:
            self.stats.files_unchanged += 1

    def _finish(self, pending: _PendingDir) -> None:
        entries = []
        for node, item, previous in pending.items:
            if isinstance(item, _FileJob):
                read = item.result()
                if read is None:  # reported; never recorded torn or half-read
                    if item.node is not node:  # a hard link's other name, left out with it
                        self.problems.error(node.handle or node.name,
                                            "left out: a hard link of "
                                            f"{os.fsdecode(item.node.name)}, which could not "
                                            "be read")
                    continue
                stored = read.results()
                entry = Entry(node.name, read.meta, [(cid, size) for cid, size, _ in stored],
                              recent=read.recent)
                if not read.counted:  # a hard link's second name reads nothing more
                    self.stats.bytes_read += read.meta.size
                    read.counted = True
            elif isinstance(item, _PendingDir):
                self.stats.dirs += 1
                entry = Entry(node.name, node.meta, subtree=item.tree_id)
            elif item.name == node.name:
                entry = item  # this name's own record: an unchanged file, a symlink
            else:
                entry = Entry(node.name, node.meta, item.chunks)  # a hard link's second name
            if entry.meta.kind == FILE:
                self._count_file(entry, previous)
            entries.append(entry)
        # The parent needs only the tree ID: dropping the items frees this directory's futures
        # and file records now, not when the whole walk is done (memory stays O(in flight)).
        previous, pending.previous, pending.items = pending.previous, _Previous(), []
        if previous.same_as(entries):  # the tree would be the very chunks stored last time
            pending.tree_id = previous.tree_id
            self._relied_on([pending.tree_id, *previous.pieces])
            return
        for chunk_id, data in tree_chunks(encode_tree(entries), self.chunker,
                                          self.store.chunk_id):
            if not self.store.put(chunk_id, data, kind="tree"):
                self._relied_on([chunk_id])
            pending.tree_id = chunk_id  # the last is the tree's own


def _as_recorded(entry: Entry) -> tuple:
    """What a user would call a file's change: its content, size, mtime, mode or owner."""
    meta = entry.meta
    return entry.chunks, meta.size, meta.mtime_ns, meta.mode, meta.uid, meta.gid


def _measure(source: Source, values: dict, progress: Progress,
             own: dict[tuple[int, int], _Own]) -> None:
    """Size what is to be backed up, beside the backup, so that progress can show an ETA."""
    try:
        unreported = Problems()
        reader = source.open_reader(values, unreported)
        sizes, pending = {}, _without_own(reader.roots(), own, unreported)
        while pending:
            node = pending.pop()
            if node.meta.kind == DIR:
                pending.extend(_without_own(reader.children(node), own, unreported))
            elif node.meta.kind == FILE:  # hard links: one inode, read once
                sizes[(node.meta.dev, node.meta.inode)] = node.meta.size
    except (OSError, CorsoError):
        return  # no ETA then; the backup itself reports what it cannot read
    progress.set_total(sum(sizes.values()))


def _stored_pass(repository, source: Source, values: dict, options: BackupOptions,
                 problems: Problems, progress: Progress, paths: list[str], host: str,
                 own: dict[tuple[int, int], _Own], roots: _Roots):
    """Walk from `roots`, read and store everything, flushed: (store, backup, parent). No
    manifest yet."""
    store = ChunkStore(repository)
    try:
        parent = find_parent(repository, source, paths, host)
        backup = _Backup(store, repository.chunker, roots.reader, options, problems, progress,
                         own)
        try:  # stopped (Ctrl-C) as it starts, the display is taken down all the same
            progress.start(None)
            if progress.wants_total:
                threading.Thread(target=_measure, args=(source, values, progress, own),
                                 daemon=True, name="corso-measure").start()
            old_root = bytes.fromhex(parent["root"]) if parent else None
            root = backup.walk(None, backup.previous(old_root), roots.nodes, roots.listed)
            backup.finish_ready(block=True)
            backup.root = root.tree_id
        finally:  # the display first: a second Ctrl-C may cut the rest short
            progress.stop()
            backup.shutdown()
        store.flush()
    except BaseException:
        store.close()
        raise
    return store, backup, parent


def run_backup(repository, source: Source, values: dict, options: BackupOptions,
               problems: Problems | None = None, progress: Progress | None = None,
               ) -> BackupResult:
    """Back up what `values` select from `source`; the manifest is the last thing written.

    Before it, the chunks the backup deduplicated against are checked to be still there
    (maintenance may have removed some meanwhile: docs/format.md, "Concurrency"). If any is
    gone, the backup runs once more against the index as it is now, which reads and stores
    again whatever the removed chunks held: no manifest refers to a chunk that is gone.
    """
    problems = problems or Problems()
    progress = progress or Progress()
    started = time.monotonic()
    paths = source.describe(values)
    host = socket.gethostname()
    own = _own_directories(repository)
    # Bad input fails here, before anything is written: a path the reader refuses, or paths
    # that are all left out (a FIFO, a socket, the repository itself) or all unreadable,
    # which would make an empty backup.
    roots = _roots(source, values, problems, own)
    if not roots.nodes:
        raise UsageError("nothing to back up: every path given was left out (see above)")
    if not any(_readable(roots, node, problems) for node in roots.nodes):
        raise UsageError("nothing to back up: no path given could be read (see above)")
    store, backup, parent = _stored_pass(repository, source, values, options, problems,
                                         progress, paths, host, own, roots)
    try:
        if store.find_missing(backup.deduplicated_ids()):
            log.warning("chunks this backup deduplicated against were removed while it ran "
                        "(maintenance?); backing up again")
            store.close()
            store, backup, parent = _stored_pass(repository, source, values, options, problems,
                                                 progress, paths, host, own,
                                                 _roots(source, values, problems, own))
            if store.find_missing(backup.deduplicated_ids()):
                raise RepositoryError("chunks this backup relies on were removed while it ran, "
                                      "twice; nothing was recorded: run the backup again")
        stats = backup.stats
        # Counted where chunks are stored: those of a file left out as it changed while read
        # are in the repository too.
        stats.bytes_added = store.stats.bytes_stored
        stats.chunks_new = store.stats.chunks_new
        stats.chunks_dedup = store.stats.chunks_dedup
        stats.packs_written = store.stats.packs_written
        stats.errors, stats.warnings = len(problems.errors), len(problems.warnings)
        stats.duration_s = round(time.monotonic() - started, 3)
        manifest = {
            "time": datetime.now(UTC).isoformat(),
            "host": host,
            "user": _user(),
            "source": source.name,
            "paths": paths,
            "tags": dict(options.tags),
            "root": backup.root.hex(),
            "parent": parent["id"] if parent else None,
            "incomplete": bool(problems.errors),
            "stats": asdict(stats),
        }
        backup_id = save_manifest(repository, manifest)
    finally:
        store.close()
    return BackupResult(backup_id, {**manifest, "id": backup_id}, stats, problems)


def _user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return str(os.getuid())

