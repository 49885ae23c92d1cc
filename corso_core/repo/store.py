"""ChunkStore: content-addressed chunks packed into encrypted pack blobs.

The write path: `put` compresses a chunk in the calling thread, seals (encrypts) it straight
into the open pack of its kind, and hands a full pack to a small pool of upload threads. Once a
pack is stored, its chunks enter the in-memory index; every `CHECKPOINT_PACKS` packs (and at
`flush`) their entries go out as a new immutable index blob. So storage only ever holds packs
that index blobs may point to, and index blobs that point to stored packs; the engine writes
its manifest after `flush`, last. An interruption at any point leaves the repository valid.

The read path: `get` reads one entry with one range request (tree packs come whole from the
local cache); `get_many` reads each pack in as few range requests as it can, on a few
threads that decrypt chunk by chunk and hand each chunk to the caller's function right there
(a restore's many small chunks on a thread of their own: small_chunks.py).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import FIRST_EXCEPTION, Future, ThreadPoolExecutor, wait
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from functools import partial

import blake3

from corso_core.errors import Corrupted, NotFound
from corso_core.repo import compression, names
from corso_core.repo.buffers import BufferPool
from corso_core.repo.cache import BlobCache
from corso_core.repo.index import (
    INDEX_ENTRY_SIZE,
    INDEX_OVERHEAD,
    ChunkIndex,
    IndexRows,
    Location,
    encode_index,
    pack_index_entries,
    read_index,
)
from corso_core.repo.packs import (
    PACK_BUFFER_SIZE,
    PackWriter,
    Plaintext,
    open_chunk,
)
from corso_core.repo.plans import decode_plan
from corso_core.repo.read_ahead import ReadAhead
from corso_core.repo.sessions import SessionRecord
from corso_core.repo.small_chunks import (
    BATCHES_QUEUED,
    BATCHES_QUEUED_REMOTE,
    SMALL_CHUNK,
    SmallChunkLane,
    pays_off,
)
from corso_core.storage.interface import BlobInfo

log = logging.getLogger(__name__)


class PackGone(Corrupted):
    """A pack the index names is not in the storage. Maintenance may have rewritten it since
    the index was loaded (its chunks are then in the copies, under newer index blobs): the
    reads are tried once more against the index as it is now, and only then is it damage.
    Raised by get_many's pass, it carries the chunk IDs not yet delivered."""

    undelivered: set[bytes] = frozenset()

    def __init__(self, message: str, pack_key: str) -> None:
        super().__init__(message)
        self.pack_key = pack_key

#: Write an index blob after this many packs, so a running backup's packs are soon indexed.
CHECKPOINT_PACKS = 8
#: Ranges read and decrypted at once in get_many. A range (at most the storage's
#: `largest_read` bytes, or one larger chunk alone) is held raw while its chunks are decrypted
#: one at a time, so memory stays near READ_THREADS raw ranges.
READ_THREADS = 2
#: Entries of one pack closer than this are fetched in one range (a few wasted bytes are
#: cheaper than another request).
RANGE_GAP = 256 * 1024
#: A pack whose needed entries fill at least this share of the span between the first and the
#: last of them is read in one range, gaps and all: on object storage a request costs more
#: than the bytes it skips.
WHOLE_SPAN_SHARE = 0.5


@dataclass(frozen=True)
class _Prefetched:
    """What ChunkStore.prefetch began: the ranges of a set of IDs, the first two being fetched."""

    ids: frozenset[bytes]
    fetcher: _RangeFetcher


@dataclass
class StoreStats:
    chunks_new: int = 0
    chunks_dedup: int = 0
    bytes_new: int = 0  # plaintext bytes of new chunks
    bytes_stored: int = 0  # what they take in packs: compressed, encrypted
    packs_written: int = 0
    index_blobs_written: int = 0

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class _Range:
    """A byte range of one pack and the entries inside it."""

    kind: str
    pack: str
    start: int
    end: int
    entries: tuple[tuple[bytes, int, int], ...]  # (chunk ID, offset, length)

    @classmethod
    def of(cls, kind: str, pack: str, entries: list[tuple[bytes, int, int]]) -> _Range:
        """The range spanning `entries` (in pack order)."""
        return cls(kind, pack, entries[0][1], entries[-1][1] + entries[-1][2], tuple(entries))


class _RangeFetcher:
    """The raw bytes of get_many's ranges, each received into a re-used buffer (buffers.py)
    that is free again once its chunks are opened (`fetched`): as many buffers as ranges are
    held at once (ahead: the one opened and the next; else one per reader). Nothing delivered
    refers to a range's buffer: a chunk is decrypted into new memory, and the lane copies the
    sealed chunks it keeps.

    `ahead` (one reader beside a SmallChunkLane): the ranges are asked for in order, and each
    one's fetch begins while the one before it is opened (two readers have two requests going;
    one alone would wait for each of its requests, idle, on object storage). `first_now`
    (ChunkStore.prefetch) fetches ranges 0 and 1 at once, one after the other, into the two
    buffers: the reader starts with the second ready too. Else each is fetched when asked for.
    """

    def __init__(self, fetch: Callable[[_Range, BufferPool], memoryview], ranges: list[_Range],
                 buffer_size: int, *, ahead: bool, first_now: bool = False) -> None:
        self._fetch, self.ranges = fetch, ranges
        self._buffers = BufferPool(buffer_size, keep=2 if ahead else READ_THREADS)
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="corso-fetch") if ahead else None
        self._fetching: dict[int, Future] = {}  # ahead: the ranges asked of the pool, by number
        if first_now and self._pool:
            for number in range(min(2, len(ranges))):
                self._begin(number)

    def _begin(self, number: int) -> None:
        self._fetching[number] = self._pool.submit(self._fetch, self.ranges[number],
                                                   self._buffers)

    def get(self, number: int) -> memoryview:
        """Range `number`'s bytes (ahead: the next one's fetch begun)."""
        if self._pool is None:
            return self._fetch(self.ranges[number], self._buffers)
        current = self._fetching.pop(number, None)
        if number + 1 < len(self.ranges) and number + 1 not in self._fetching:
            self._begin(number + 1)
        return current.result() if current else self._fetch(self.ranges[number], self._buffers)

    @contextmanager
    def fetched(self, number: int) -> Iterator[memoryview]:
        """Range `number`'s bytes, for the block; then its buffer takes another's."""
        data = self.get(number)
        try:
            yield data
        finally:
            self._buffers.give(data.obj)

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)


def _lane_pays_off(ranges: list[_Range]) -> bool:
    """Whether get_many reads `ranges` with one reader and a SmallChunkLane (pays_off)."""
    return pays_off(length for piece in ranges if piece.kind == names.DATA_PACK
                    for _, _, length in piece.entries)


class ChunkStore:
    """Content-addressed chunks packed into encrypted pack blobs.

    Thread-safe: the engine calls put() from several worker threads; compression and encryption
    run in the calling thread (zstandard/cryptography release the GIL), uploads run on a small
    pool of background threads. A chunk put but not yet stored is read after a flush.
    `cache_dir` overrides the cache root ($CORSO_CACHE_DIR, else the user cache dir).

    `read_only` (restore, listing a backup's files): no session record and no put, so nothing
    is written to the repository and read-only credentials suffice. Maintenance cannot see such
    a reader; it only reads chunks that manifests refer to, which maintenance keeps.
    """

    def __init__(self, repository, *, cache_dir: str | None = None,
                 read_only: bool = False) -> None:
        self._storage = repository.storage
        self._keys = repository.keys
        self._cache = BlobCache(repository.repository_id, cache_dir)
        self._lock = threading.Lock()
        self.read_only = read_only
        # The session record comes before the index is read: a maintenance run that does not
        # see this session yet has already written its deletion plan, which this session reads
        # (plans first, then the index; docs/format.md, "Maintenance").
        self._session = None if read_only else SessionRecord(repository)
        if self._session is not None:
            self._session.start()
        try:
            self._planned = self._load_plans()
            self._index, self._index_keys = self._load_index()  # and the index blobs' keys
        except BaseException:
            if self._session is not None:
                self._session.close()
            raise
        self._pending: set[bytes] = set()  # put, but their pack is not stored yet
        self._writers: dict[str, PackWriter] = {}
        # One buffer per open pack and per upload, kept for re-use.
        # Packs uploaded at once: put() waits while this many are in flight, so the write path
        # holds about that many + 1 pack buffers, whatever the size of the backup.
        self._upload_slots = self._storage.concurrent_writes
        self._buffers = BufferPool(PACK_BUFFER_SIZE, keep=self._upload_slots + 2)
        self._uploads = ThreadPoolExecutor(self._upload_slots, thread_name_prefix="corso-upload")
        self._upload_finished = threading.Condition(self._lock)
        self._in_flight: set[Future] = set()
        self._unindexed: list[PackWriter] = []  # stored packs no index blob lists yet
        self._index_sequence = 0
        self._upload_error: BaseException | None = None
        self._read_ahead: ReadAhead | None = None
        self._prefetched: _Prefetched | None = None
        self._reloads: set[str] = set()  # packs found gone that the index was re-read for
        self.stats = StoreStats()

    # --- the index -------------------------------------------------------------------------

    def _list_index_blobs(self) -> list[BlobInfo]:
        return [info for info in self._storage.list(names.prefix(names.INDEX))
                if names.parse_key(names.INDEX, info.key) is not None]

    def _load_index(self, listed: list[BlobInfo] | None = None) -> tuple[ChunkIndex, set[str]]:
        """Union of every index blob (each from the local cache when it has it), and their keys.

        Blobs are read (fetched, decrypted) 8 at a time, in parallel, and their raw rows added
        as they come, so loading holds the compact index and a few blobs, never every entry
        as Python objects.
        `listed`: the index blobs, if the caller has just listed them.
        """
        prefix = names.prefix(names.INDEX)
        if listed is None:
            listed = self._list_index_blobs()

        def load(key: str) -> IndexRows | None:
            """The blob's rows; None if it is gone (merged by maintenance since the listing);
            no rows if it is damaged (verify reports it, repair rebuilds it)."""
            name = names.parse_key(names.INDEX, key)
            try:
                return self._cache.fetch(self._storage, key,
                                         lambda blob: read_index(self._keys, name, blob))
            except NotFound:
                return None
            except Corrupted as e:
                log.warning("index blob left out: %s", e)
                return IndexRows([], memoryview(b""))

        index = ChunkIndex()
        index.reserve(sum(max(info.size - INDEX_OVERHEAD, 0) // INDEX_ENTRY_SIZE
                          for info in listed))
        keys = [info.key for info in listed]
        loaded: set[str] = set()
        gone: set[str] = set()
        with ThreadPoolExecutor(8, thread_name_prefix="corso-index") as pool:
            while keys:
                for start in range(0, len(keys), 8):
                    batch = keys[start : start + 8]
                    for key, rows in zip(batch, pool.map(load, batch), strict=True):
                        if rows is None:
                            gone.add(key)
                        else:
                            loaded.add(key)
                            index.add_rows(rows)
                if loaded >= set(keys):
                    break
                # A blob vanished: maintenance wrote the merged one first; list again for it.
                keys = [info.key for info in self._list_index_blobs()
                        if info.key not in loaded | gone]
        stale = self._cache.keys(prefix) - loaded
        if stale:  # merged or removed by maintenance, which may have deleted packs too
            for key in stale:
                self._cache.discard(key)
            self._discard_cached_packs_not_in(index)
        return index, loaded

    def _discard_cached_packs_not_in(self, index: ChunkIndex) -> None:
        """Drop the cached copies of tree packs neither `index` nor a deletion plan names:
        maintenance deleted them, and nothing else ever would. Called only when the index
        blobs changed, so an unchanged repository costs no listing of the cache."""
        needed = {names.key(kind, pack) for kind, pack in index.packs()}
        needed.update(names.key(at.kind, at.pack) for at in self._planned.values())
        for key in self._cache.keys(names.prefix(names.TREE_PACK)) - needed:
            self._cache.discard(key)

    def _load_plans(self) -> dict[bytes, Location]:
        """Where the chunks that maintenance's deletion plans took out of the index are: for
        reading only (a backup that ran while a plan was made may refer to them), never for
        deduplication. A plan deleted meanwhile has put its kept chunks back into the index."""
        planned: dict[bytes, Location] = {}
        for info in self._storage.list(names.prefix(names.PLAN)):
            plan_id = names.parse_key(names.PLAN, info.key)
            if plan_id is None:
                continue
            try:
                plan = decode_plan(self._keys, plan_id, self._storage.get(info.key))
            except NotFound:
                continue
            except Corrupted as e:
                log.warning("deletion plan left out: %s", e)
                continue
            planned.update(plan.entries)
        return planned

    def find_missing(self, chunk_ids: Iterable[bytes]) -> set[bytes]:
        """Those of `chunk_ids` (chunks this session found stored: `has`, or a `put` that added
        nothing) the repository no longer has (added for issue 7's protocol).

        Call after flush() and before writing the manifest: maintenance may have removed
        chunks this backup deduplicated against since it loaded the index. If every index blob
        seen at the start is still listed, nothing was removed, and none is looked up;
        otherwise the index is loaded again. The caller puts the missing chunks again (put()
        now stores them) and flushes.
        """
        listed = self._list_index_blobs()
        with self._lock:
            if self._index_keys <= {info.key for info in listed}:
                return set()  # every chunk relied on was indexed, and its blob is still there
        index, keys = self._load_index(listed)
        with self._lock:
            self._index, self._index_keys = index, keys
            return {chunk_id for chunk_id in chunk_ids
                    if not self._known(chunk_id)}

    def _write_index(self, packs: list[PackWriter]) -> None:
        """An index blob listing the entries of stored `packs`."""
        with self._lock:
            name = names.index_name(self._session.session_id, self._index_sequence)
            self._index_sequence += 1
        key = names.key(names.INDEX, name)
        blob = encode_index(self._keys, name, (
            entry for pack in packs
            for entry in pack_index_entries(pack.kind, pack.name, pack.entries())))
        self._storage.put_new(key, blob)
        self._cache.put(key, blob)
        with self._lock:
            self._index_keys.add(key)
            self.stats.index_blobs_written += 1

    # --- writing ---------------------------------------------------------------------------

    def chunk_id(self, data: bytes | memoryview) -> bytes:
        """32 bytes, keyed BLAKE3 of the plaintext: equal data, equal ID; opaque without the key."""
        return blake3.blake3(data, key=self._keys.chunk_id).digest()

    def _known(self, chunk_id: bytes) -> bool:
        """Stored, or put and on its way (the caller holds the lock)."""
        return chunk_id in self._pending or chunk_id in self._index

    def has(self, chunk_id: bytes) -> bool:
        with self._lock:
            return self._known(chunk_id)

    def has_all(self, chunk_ids: Iterable[bytes]) -> bool:
        """Whether every one of `chunk_ids` is stored or put (under one taking of the lock)."""
        with self._lock:
            return all(map(self._known, chunk_ids))

    def put(self, chunk_id: bytes, data: bytes | memoryview, kind: str = "data") -> int:
        """Store a chunk unless it is there already; the bytes it added (0 when deduplicated).

        kind "data" goes to data packs, "tree" (directory trees) to metadata packs.
        """
        return self.put_many([(chunk_id, data)], kind)[0]

    def put_many(self, chunks: list[tuple[bytes, bytes | memoryview]], kind: str = "data",
                 ) -> list[int]:
        """put() of several chunks: what each added, in order. The new ones are compressed in
        one call (compression.compress_many) and sealed under one taking of the lock."""
        if kind not in names.PACK_KINDS:
            raise ValueError(f"unknown chunk kind {kind!r}")
        if self.read_only:
            raise ValueError("put on a read-only ChunkStore")
        self._raise_upload_error()
        new: list[int] = []  # positions in `chunks` of the chunks this call stores
        with self._lock:
            # Back-pressure before new chunks take memory: the uploads must keep up.
            while (not all(self._known(cid) for cid, _ in chunks)
                   and len(self._in_flight) >= self._upload_slots
                   and self._upload_error is None):
                self._upload_finished.wait()
            for position, (chunk_id, _) in enumerate(chunks):
                if self._known(chunk_id):
                    self.stats.chunks_dedup += 1
                else:
                    self._pending.add(chunk_id)
                    new.append(position)
        try:  # compressing here, beside the other threads' work
            payloads = compression.compress_many([chunks[p][1] for p in new])
        except BaseException:
            with self._lock:
                self._pending.difference_update(chunks[p][0] for p in new)
            raise
        added = [0] * len(chunks)
        full: list[PackWriter] = []
        with self._lock:  # sealing is one fast pass per chunk, straight into the pack's buffer
            for position, payload in zip(new, payloads, strict=True):
                chunk_id, data = chunks[position]
                writer = self._writers.get(kind)
                if writer is None:
                    writer = self._writers[kind] = PackWriter(kind, self._buffers.take())
                entry = writer.add_chunk(self._keys, chunk_id, payload)
                self.stats.chunks_new += 1
                self.stats.bytes_new += len(data)
                self.stats.bytes_stored += entry.length
                added[position] = entry.length
                if writer.full():
                    full.append(self._writers.pop(kind))
        for writer in full:
            self._submit(writer)
        return added

    def _submit(self, writer: PackWriter) -> None:
        future = self._uploads.submit(self._upload, writer)
        with self._lock:
            self._in_flight.add(future)
        future.add_done_callback(self._upload_done)

    def _upload_done(self, future: Future) -> None:
        with self._lock:
            self._in_flight.discard(future)
            self._upload_finished.notify_all()

    def _upload(self, writer: PackWriter) -> None:
        try:
            key = names.key(writer.kind, writer.name)
            with writer.finish(self._keys) as blob:
                self._storage.put_new(key, blob)
                if writer.kind == names.TREE_PACK:
                    self._cache.put(key, blob)
            self._buffers.give(writer.give_up_buffer())
            with self._lock:
                for chunk_id, location in pack_index_entries(writer.kind, writer.name,
                                                             writer.entries()):
                    self._index.add(chunk_id, location)
                    self._pending.discard(chunk_id)
                self._unindexed.append(writer)
                self.stats.packs_written += 1
                checkpoint = len(self._unindexed) >= CHECKPOINT_PACKS
                if checkpoint:
                    packs, self._unindexed = self._unindexed, []
            if checkpoint:
                self._index_or_keep(packs)
        except BaseException as e:
            log.debug("upload failed", exc_info=True)
            with self._lock:
                self._upload_error = self._upload_error or e

    def _raise_upload_error(self) -> None:
        if self._upload_error is not None:
            raise self._upload_error

    def _wait_uploads(self) -> None:
        while True:
            with self._lock:
                in_flight = set(self._in_flight)
            if not in_flight:
                return
            wait(in_flight)

    def flush(self) -> None:
        """Store the open packs and an index blob for everything not yet indexed.

        After it returns, every chunk put so far is in stored packs that stored index blobs
        point to: a manifest written now refers only to what is there.
        """
        with self._lock:
            writers, self._writers = list(self._writers.values()), {}
        for writer in writers:
            self._submit(writer)
        self._wait_uploads()
        self._raise_upload_error()
        with self._lock:
            packs, self._unindexed = self._unindexed, []
        if packs:
            self._index_or_keep(packs)

    def _index_or_keep(self, packs: list[PackWriter]) -> None:
        """Write an index blob for stored `packs`; if that fails, keep them for the next try
        (the flush at close, the best effort after a failed upload): else they would stay
        unindexed."""
        try:
            self._write_index(packs)
        except BaseException:
            with self._lock:
                self._unindexed[:0] = packs
            raise

    def close(self) -> None:
        """Flush what was put (an interrupted backup's chunks are re-used by the next one),
        then end the session record. Safe to call twice."""
        if self._read_ahead is not None:
            self._read_ahead.stop()
        self._take_prefetched(None)
        try:
            if self._upload_error is None:
                self.flush()
            else:
                self._index_stored_packs()
        finally:
            self._uploads.shutdown(wait=True)
            if self._session is not None:
                self._session.close()
                self._session = None

    def _index_stored_packs(self) -> None:
        """After a failed upload (a full disk, say), index the packs that were stored, so the
        next backup re-uses them rather than needing their space again: best effort, since the
        storage is failing, and never in place of the error that stopped the backup."""
        self._wait_uploads()
        with self._lock:
            packs, self._unindexed = self._unindexed, []
        if not packs:
            return
        try:
            self._write_index(packs)
        except Exception as e:
            log.warning("the packs stored before the failure could not be indexed either "
                        "(%s): corso repo repair indexes them", e)

    def __enter__(self) -> ChunkStore:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    # --- reading ---------------------------------------------------------------------------

    def _locate(self, chunk_id: bytes) -> Location:
        with self._lock:
            location = self._index.get(chunk_id) or self._planned.get(chunk_id)
            pending = chunk_id in self._pending
        if location is None and pending:  # put in this session, its pack not stored yet
            self.flush()
            with self._lock:
                location = self._index.get(chunk_id)
        if location is None:
            raise Corrupted(f"chunk {chunk_id.hex()} is missing from the repository index")
        return location

    def _read(self, kind: str, pack: str, start: int, end: int) -> bytes:
        """Bytes [start, end) of a pack; tree packs are cached locally, whole."""
        key = names.key(kind, pack)
        if kind == names.TREE_PACK and self._cache.enabled:
            cached = self._cache.get(key, start, end - start)
            if cached is not None and len(cached) == end - start:
                return cached
            blob = self._storage.get(key)
            self._cache.put(key, blob)
            return blob[start:end]
        return self._storage.get(key, start, end - start)

    def _fetch_range(self, piece: _Range, buffers: BufferPool | None = None) -> memoryview:
        """A range's raw bytes, of a data pack received into a buffer of `buffers` if it fits;
        a missing pack is named by a chunk it should hold."""
        try:
            if (buffers is not None and piece.kind == names.DATA_PACK
                    and piece.end - piece.start <= buffers.size):
                data = self._receive(piece, buffers)
            else:
                data = memoryview(self._read(piece.kind, piece.pack, piece.start, piece.end))
            if self._read_ahead is not None and piece.kind == names.DATA_PACK:
                self._read_ahead.was_read(len(data))
            return data
        except NotFound:
            first = piece.entries[0][0].hex()
            raise PackGone(f"{piece.kind} pack {piece.pack} holding chunk {first} is "
                           "missing", names.key(piece.kind, piece.pack)) from None

    def _receive(self, piece: _Range, buffers: BufferPool) -> memoryview:
        buffer = buffers.take()
        try:
            received = self._storage.get_into(names.key(piece.kind, piece.pack), piece.start,
                                              memoryview(buffer)[: piece.end - piece.start])
        except BaseException:
            buffers.give(buffer)
            raise
        return memoryview(buffer)[:received]

    def _open_entries(self, piece: _Range, data: memoryview) -> Iterator[tuple[bytes, Plaintext]]:
        for chunk_id, offset, length in piece.entries:
            at = offset - piece.start
            yield chunk_id, open_chunk(self._keys, chunk_id, data[at : at + length])

    def _open_range(self, piece: _Range) -> list[tuple[bytes, Plaintext]]:
        """Plaintexts of a range's chunks; a tree pack's cached copy that fails is re-fetched."""
        for attempt in range(2):
            try:
                return list(self._open_entries(piece, self._fetch_range(piece)))
            except Corrupted:
                if attempt or piece.kind != names.TREE_PACK:
                    raise
                self._cache.discard(names.key(piece.kind, piece.pack))
        raise AssertionError("unreachable")

    def _reloaded_for(self, gone: PackGone) -> bool:
        """Read the deletion plans and the index blobs again (in that order, as __init__)
        for a pack found gone, once per pack: False if that was done already (the pack is
        missing: a damaged repository's restore would otherwise reload once per file)."""
        with self._lock:
            if gone.pack_key in self._reloads:
                return False
            self._reloads.add(gone.pack_key)
        log.info("%s: reading the index again (maintenance may have moved it)", gone)
        planned = self._load_plans()
        index, keys = self._load_index()
        with self._lock:
            self._planned, self._index, self._index_keys = planned, index, keys
        return True

    def get(self, chunk_id: bytes) -> Plaintext:
        """The chunk's plaintext, authenticated; Corrupted names the chunk otherwise."""
        for attempt in range(2):
            location = self._locate(chunk_id)
            piece = _Range(location.kind, location.pack, location.offset,
                           location.offset + location.length,
                           ((chunk_id, location.offset, location.length),))
            try:
                return self._open_range(piece)[0][1]
            except PackGone as gone:
                if attempt or not self._reloaded_for(gone):
                    raise
        raise AssertionError("unreachable")

    def _plan(self, chunk_ids: Iterable[bytes]) -> list[_Range]:
        with self._lock:
            by_pack, elsewhere = self._index.by_pack(dict.fromkeys(chunk_ids))
        for chunk_id in elsewhere:  # in a deletion plan, put in this session, or missing
            location = self._locate(chunk_id)
            by_pack.setdefault((location.kind, location.pack), []).append(
                (chunk_id, location.offset, location.length))
        largest = self._storage.largest_read
        ranges = []
        for (kind, pack), entries in by_pack.items():
            ordered = sorted(entries, key=lambda e: e[1])
            start, end = ordered[0][1], ordered[-1][1] + ordered[-1][2]
            dense = sum(length for _, _, length in ordered) >= WHOLE_SPAN_SHARE * (end - start)
            group: list[tuple[bytes, int, int]] = []
            for entry in ordered:
                if group and (entry[1] + entry[2] - group[0][1] > largest or (
                        not dense and entry[1] - (group[-1][1] + group[-1][2]) > RANGE_GAP)):
                    ranges.append(_Range.of(kind, pack, group))
                    group = []
                group.append(entry)
            ranges.append(_Range.of(kind, pack, group))
        return ranges

    def is_local(self, chunk_id: bytes) -> bool:
        """Whether reading the chunk costs no request: a tree chunk whose pack is cached."""
        location = self._index.get(chunk_id)
        return (location is not None and location.kind == names.TREE_PACK
                and self._cache.has(names.key(location.kind, location.pack)))

    def _start_read_ahead(self, ranges: list[_Range]) -> None:
        """Let the storage start reading the data ranges before the readers get to them
        (repo/read_ahead.py)."""
        if self._read_ahead is not None:
            self._read_ahead.stop()
        self._read_ahead = ReadAhead(self._storage, [
            (names.key(piece.kind, piece.pack), piece.start, piece.end - piece.start)
            for piece in ranges if piece.kind == names.DATA_PACK])

    def _fetcher(self, ranges: list[_Range], *, ahead: bool,
                 first_now: bool = False) -> _RangeFetcher:
        return _RangeFetcher(self._fetch_range, ranges, self._storage.largest_read,
                             ahead=ahead, first_now=first_now)

    def prefetch(self, chunk_ids: Iterable[bytes]) -> None:
        """Begin what get_many(chunk_ids) will do first, for a caller with other work before it
        (a restore creating its files: 0.06-0.1 s for 15,000, while a range's request takes
        0.04-0.1 s to bring data): plan the ranges and, where one reader and a SmallChunkLane
        will read them, fetch the first two. get_many of the same IDs takes them over; of others
        (files the collision policy left alone) drops them, as close() does."""
        self._take_prefetched(None)
        ordered = list(dict.fromkeys(chunk_ids))
        try:
            ranges = self._plan(ordered)
        except Corrupted:  # a chunk the index lacks: get_many says so, where it is expected
            return
        if _lane_pays_off(ranges):
            self._prefetched = _Prefetched(frozenset(ordered), self._fetcher(
                ranges, ahead=True, first_now=True))

    def _take_prefetched(self, chunk_ids: list[bytes] | None) -> _Prefetched | None:
        """What prefetch began, if it was for exactly these IDs; else it ends here (its
        request finishes, unused)."""
        prefetched, self._prefetched = self._prefetched, None
        if prefetched is not None and chunk_ids is not None and prefetched.ids == set(chunk_ids):
            return prefetched
        if prefetched is not None:
            prefetched.fetcher.close()
        return None

    def get_many(self, chunk_ids: Iterable[bytes],
                 deliver: Callable[[bytes, Plaintext], None]) -> None:
        """Call `deliver(chunk ID, plaintext)` once for each distinct ID, grouped by pack.

        Each pack is read in as few range requests as its needed entries allow (one per
        storage.largest_read bytes, when they fill most of it). READ_THREADS ranges are read
        and decrypted at once, each thread calling `deliver` as it opens a chunk (so `deliver`
        must be thread-safe): no hand-off per chunk, and memory holds READ_THREADS raw ranges
        and the chunks being delivered. Or, where small chunks are many, one reader and a
        SmallChunkLane: two raw ranges (the one opened, the next being fetched) and at most
        BATCHES_QUEUED MiB of small chunks' copies (BATCHES_QUEUED_REMOTE from remote storage).
        The storage is told which ranges come next, a bounded distance ahead (read_ahead).
        Every ID is located before anything is read: a missing one raises Corrupted first.
        The first failure (Corrupted, or whatever `deliver` raised) stops the reading and is
        raised here, once the threads have stopped. A pack gone (PackGone) is the exception:
        the chunks not yet delivered are read once more, against the index loaded again.
        """
        try:
            self._get_all(chunk_ids, deliver)
        except PackGone as gone:
            if not self._reloaded_for(gone):
                raise
            self._get_all(gone.undelivered, deliver)

    def _get_all(self, chunk_ids: Iterable[bytes],
                 deliver: Callable[[bytes, Plaintext], None]) -> None:
        """get_many's one pass; a PackGone raised carries the IDs not delivered.

        Where the data ranges hold small chunks enough (small_chunks.pays_off), one reader
        opens the large chunks and a SmallChunkLane the small ones; else READ_THREADS readers
        open every chunk of their ranges."""
        chunk_ids = list(chunk_ids)
        prefetched = self._take_prefetched(chunk_ids)
        ranges = prefetched.fetcher.ranges if prefetched else self._plan(chunk_ids)
        self._start_read_ahead(ranges)
        delivered = [0] * len(ranges)  # entries of each range delivered, or given to the lane
        stop = threading.Event()
        lane = None
        if prefetched or _lane_pays_off(ranges):
            remote = self._storage.local_root is None
            lane = SmallChunkLane(partial(open_chunk, self._keys), deliver, stop,
                                  BATCHES_QUEUED_REMOTE if remote else BATCHES_QUEUED)
        fetcher = prefetched.fetcher if prefetched else self._fetcher(ranges, ahead=bool(lane))
        try:
            with ThreadPoolExecutor(1 if lane else READ_THREADS,
                                    thread_name_prefix="corso-read") as pool:
                futures = [pool.submit(self._deliver_range, piece, deliver, stop, delivered, i,
                                       lane, fetcher)
                           for i, piece in enumerate(ranges)]
                try:
                    done, running = wait(futures, return_when=FIRST_EXCEPTION)
                    if lane and not running and not any(f.exception() for f in done):
                        lane.finish()
                finally:  # done, failed, or interrupted (Ctrl-C): no range starts after this
                    stop.set()
                    self._read_ahead.stop()
                    pool.shutdown(wait=True, cancel_futures=True)
        finally:
            fetcher.close()
            if lane:
                lane.close()
        errors = [future.exception() for future in futures
                  if not future.cancelled() and future.exception() is not None]
        if lane and lane.error is not None:
            errors.append(lane.error)
        if errors:  # any other failure first: a PackGone's retry would deliver again
            error = next((e for e in errors if not isinstance(e, PackGone)), errors[0])
            if isinstance(error, PackGone):
                error.undelivered = {chunk_id for piece, n in zip(ranges, delivered, strict=True)
                                     for chunk_id, _, _ in piece.entries[n:]}
                error.undelivered.update(lane.dropped if lane else ())
            raise error

    def _deliver_range(self, piece: _Range, deliver: Callable[[bytes, Plaintext], None],
                       stop: threading.Event, delivered: list[int], number: int,
                       lane: SmallChunkLane | None, fetcher: _RangeFetcher) -> None:
        """Deliver a range's chunks as they are decrypted (a data range's small ones through
        `lane`, if any), counted in `delivered[number]`, unless a thread failed (this one's
        failure stops the others at their next chunk); a tree pack from a damaged cache is
        read once more."""
        try:
            if stop.is_set():
                return
            try:
                with fetcher.fetched(number) as data:
                    if lane and piece.kind == names.DATA_PACK:
                        self._share_range(piece, data, deliver, stop, delivered, number, lane)
                        return
                    for chunk_id, plaintext in self._open_entries(piece, data):
                        if stop.is_set():
                            return
                        deliver(chunk_id, plaintext)
                        delivered[number] += 1
            except PackGone:
                raise
            except Corrupted:
                if piece.kind != names.TREE_PACK:
                    raise
                self._cache.discard(names.key(piece.kind, piece.pack))
                for chunk_id, plaintext in self._open_range(piece)[delivered[number]:]:
                    deliver(chunk_id, plaintext)
                    delivered[number] += 1
        except BaseException:
            stop.set()
            raise

    def _share_range(self, piece: _Range, data: memoryview,
                     deliver: Callable[[bytes, Plaintext], None], stop: threading.Event,
                     delivered: list[int], number: int, lane: SmallChunkLane) -> None:
        """Open and deliver a range's large chunks here, and give its small ones to `lane`."""
        for chunk_id, offset, length in piece.entries:
            if stop.is_set():
                return
            sealed = data[offset - piece.start : offset - piece.start + length]
            if length < SMALL_CHUNK:
                lane.add(chunk_id, sealed)
            else:
                deliver(chunk_id, open_chunk(self._keys, chunk_id, sealed))
            delivered[number] += 1
        lane.hand_over()
