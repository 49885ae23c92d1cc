"""Small chunks opened and delivered on a thread of their own, beside get_many's reader.

A restore's small files (one small chunk each) cost Python and short system calls (create,
write, set the time, close), each of which lets go of the GIL. Two readers each doing the whole
of their ranges' work hand the GIL to each other at nearly every one of those calls: 36,000
futex calls in a restore of 15,000 files (1 GiB), and 0.3-0.5 CPU-s more than one reader
doing it all. Split by kind instead, one reader opens its ranges' large chunks (AES, zstd and
the write of a large chunk run without the GIL) and hands the small ones, copied out in
batches, to this lane, which opens and delivers them: the two seldom want the GIL at once
(6,200 futex calls). That restore, cold, took 1.56 s against 1.66 (medians of 9, in turns),
and 2.26 s against 2.41 from SeaweedFS (CPU 2.30 s against 2.60; peak RSS 159 MiB against
136: the range fetched ahead and the batches, of which 8 instead of 16 saved only 6 MiB). One
of 15,000 small files alone took 1.35 s against 1.43 (CPU 1.33 s against 1.90; 32 batches
queued, no fetch ahead).

Only where the lane has work enough: with few small chunks beside many large ones, a second
reader on the large chunks does more good (see `pays_off`).
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterable

#: A sealed chunk shorter than this goes to the lane: a small file's, whose cost is its file's
#: system calls and Python rather than its bytes.
SMALL_CHUNK = 64 * 1024
#: Batches handed to the lane: about this many bytes each, at most BATCHES_QUEUED waiting
#: (copies, so the reader's range buffer is not held). A deeper queue lets the reader go on
#: to ranges of large chunks while the lane catches up: on a local disk 8 batches measured
#: 1.58 s, 16 1.56 s, 32 1.53 s; 64 1.50 s against 16's 1.57 (5 runs each), but 20 MB more at
#: the peak (125 MB against 105).
BATCH_BYTES = 1024 * 1024
BATCHES_QUEUED = 16
#: From remote storage a reader the lane holds up holds up the requests too (the next range is
#: fetched only while one is opened), so the lane gets a deeper queue there: an S3 restore
#: (SeaweedFS, cold) took 2.01 s against 2.13 with 16 (medians of 12 in turns), 1.97 against
#: 2.055 with 80 (of 10); peak RSS 156 MB against 145 (the bench data's small chunks are
#: ~35 MiB sealed, so the queue never filled).
BATCHES_QUEUED_REMOTE = 64
#: What a small chunk costs the lane, and a byte of large chunks the reader (1 GiB, 15,000
#: files below 64 KiB and 920 MiB in 43 larger ones: 15,000 small chunks in ~1.05 s; the
#: large ones in ~0.9 s). Only their ratio matters.
SMALL_CHUNK_SECONDS = 70e-6
LARGE_BYTE_SECONDS = 1e-9

_END = None


def pays_off(entry_lengths: Iterable[int]) -> bool:
    """Whether a lane beside one reader beats two readers for chunks of these sealed lengths:
    when the small chunks give the lane at least half the work the large ones give a reader."""
    small_seconds = large_seconds = 0.0
    for length in entry_lengths:
        if length < SMALL_CHUNK:
            small_seconds += SMALL_CHUNK_SECONDS
        else:
            large_seconds += length * LARGE_BYTE_SECONDS
    return small_seconds > 0 and small_seconds >= large_seconds / 2


class SmallChunkLane:
    """Opens (`open_chunk(ID, sealed)`) and delivers (`deliver(ID, plaintext)`) the small
    chunks one reader thread adds, on a thread of its own, until `stop` is set: then what is
    left is dropped and its IDs kept in `dropped`. The first exception it meets is kept in
    `error` (and sets `stop`). At most `queued` batches wait: the reader adding one more
    waits too."""

    def __init__(self, open_chunk: Callable, deliver: Callable, stop: threading.Event,
                 queued: int = BATCHES_QUEUED) -> None:
        self._open_chunk, self._deliver, self._stop = open_chunk, deliver, stop
        self._queue: queue.Queue = queue.Queue(queued)
        self._batch: list[tuple[bytes, bytes]] = []
        self._batch_bytes = 0
        self.error: BaseException | None = None
        self.dropped: list[bytes] = []
        self._thread = threading.Thread(target=self._run, name="corso-small-chunks")
        self._thread.start()

    def add(self, chunk_id: bytes, sealed: memoryview) -> None:
        """Called by the one reader: a copy of the sealed chunk, delivered later."""
        self._batch.append((chunk_id, bytes(sealed)))
        self._batch_bytes += len(sealed)
        if self._batch_bytes >= BATCH_BYTES:
            self.hand_over()

    def hand_over(self) -> None:
        """Queue the batch being filled (the reader calls this at the end of each range)."""
        if self._batch:
            self._queue.put(self._batch)
            self._batch, self._batch_bytes = [], 0

    def finish(self) -> None:
        """Deliver everything added (unless `stop` comes first) and end the thread."""
        self.hand_over()
        self._end()

    def close(self) -> None:
        """End the thread; after `stop`, what was not delivered is dropped."""
        self.dropped.extend(chunk_id for chunk_id, _ in self._batch)
        self._batch = []
        self._end()

    def _end(self) -> None:
        if self._thread.is_alive():
            self._queue.put(_END)  # never blocks for long: the thread drains the queue
            self._thread.join()

    def _run(self) -> None:
        while (batch := self._queue.get()) is not _END:
            for number, (chunk_id, sealed) in enumerate(batch):
                if self._stop.is_set():
                    self.dropped.extend(chunk_id for chunk_id, _ in batch[number:])
                    break
                try:
                    self._deliver(chunk_id, self._open_chunk(chunk_id, sealed))
                except BaseException as e:
                    self.error = e
                    self._stop.set()
