"""Microbenchmarks of the building blocks, single core, so we see what bounds the pipeline.

Each stage runs on text-like and on random data, over chunks of the size corso uses, pinned to
one CPU; the best of three runs counts (this machine is shared, the best run is the least
disturbed). MB here is 10^6 bytes. The in-memory index is measured at one million entries.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import subprocess
import time
import tracemalloc
from collections.abc import Callable
from contextlib import contextmanager
from pathlib import Path

import blake3
import zstandard
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from pyfastcdc import FastCDC

from bench.dataset import RandomBytes, TextLike
from bench.tools import Repository, Tool, tool_environment
from corso_core.repo import compression
from corso_core.repo.chunker import ChunkerParams
from corso_core.repo.crypto import Keys
from corso_core.repo.index import ChunkIndex, IndexEntry, Location, encode_index, read_index
from corso_core.repo.names import DATA_PACK
from corso_core.repo.packs import PACK_BUFFER_SIZE, PackWriter

CHUNK = 1024 * 1024
RUNS = 3
INDEX_ENTRIES = 1_000_000
INDEX_LOOKUPS = 200_000


@contextmanager
def one_core():
    """Pin this process to a single CPU for the duration (threads included)."""
    allowed = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {min(allowed)})
    try:
        yield
    finally:
        os.sched_setaffinity(0, allowed)


def _best_mb_per_s(work: Callable[[], None], nbytes: int) -> float:
    best = min(_timed(work) for _ in range(RUNS))
    return round(nbytes / best / 1e6, 1)


def _timed(work: Callable[[], None]) -> float:
    started = time.perf_counter()
    work()
    return time.perf_counter() - started


def _chunks(data: bytes) -> list[memoryview]:
    view = memoryview(data)
    return [view[i : i + CHUNK] for i in range(0, len(data), CHUNK)]


def _stages() -> dict[str, Callable[[bytes], object]]:
    key = bytes(range(32))
    chunker = FastCDC(avg_size=CHUNK, min_size=CHUNK // 4, max_size=CHUNK * 4)
    compressor = zstandard.ZstdCompressor(level=3)
    aead = AESGCM(key)
    nonce = bytes(12)  # a fixed nonce is fine for timing; never for real data
    return {
        "pyfastcdc (avg 1 MiB)": lambda data: list(chunker.cut_buf(data)),
        "blake3 keyed": lambda data: [blake3.blake3(c, key=key).digest() for c in _chunks(data)],
        "zstd level 3": lambda data: [compressor.compress(c) for c in _chunks(data)],
        "AES-256-GCM": lambda data: [aead.encrypt(nonce, c, None) for c in _chunks(data)],
    }


def _corso_chain() -> tuple[str, Callable[[bytes], None]]:
    """corso's own serial chain, as its store runs it: its chunker settings, keyed chunk IDs,
    compression and sealing straight into a pack buffer (re-used once the pack is full)."""
    params = ChunkerParams.for_new_repository()
    keys = Keys.derive(bytes(32))
    chunker = FastCDC(avg_size=params.avg_size, min_size=params.min_size, max_size=params.max_size,
                      seed=params.chunker(keys.chunker_seed).seed)
    buffer = bytearray(PACK_BUFFER_SIZE)

    def chain(data: bytes) -> None:
        view = memoryview(data)
        pack = PackWriter(DATA_PACK, buffer)
        for chunk in chunker.cut_buf(data):
            piece = view[chunk.offset : chunk.offset + chunk.length]
            chunk_id = blake3.blake3(piece, key=keys.chunk_id).digest()
            pack.add_chunk(keys, chunk_id, compression.compress(piece))
            if pack.full():
                pack = PackWriter(DATA_PACK, buffer)

    return "corso chain (chunk, ID, compress, seal)", chain


KINDS = ("text", "random")


def _sample(kind: str, size: int) -> bytes:
    if kind == "text":
        return TextLike(random.Random(1)).text(random.Random(2), size)
    return RandomBytes(1, "micro").read(size)


def corso_pipeline(corso: Tool, size: int, work: Path) -> dict[str, float] | str:
    """MB/s of a real `corso backup create files` of one file per sample, as corso's own stats
    time it (the whole pipeline, without process start and key derivation)."""
    results = {}
    for kind in KINDS:
        home = work / f"pipeline-{kind}"
        (home / "data").mkdir(parents=True)
        (home / "data" / f"{kind}.bin").write_bytes(_sample(kind, size))
        repo = Repository("local", path=home / "repo")
        env = tool_environment(corso, home, repo)
        try:
            for command in (corso.init(repo, home),
                            corso.backup(repo, home, home / "data", "pipeline")):
                done = subprocess.run(command.argv, env=env, capture_output=True, text=True)
                if done.returncode != 0:
                    return f"failed: {(done.stderr.strip().splitlines() or ['?'])[-1]}"
        finally:
            shutil.rmtree(home, ignore_errors=True)
        stats = json.loads(done.stdout)["stats"]
        results[kind] = round(stats["bytes_read"] / stats["duration_s"] / 1e6, 1)
    return results


def building_blocks(megabytes: int, corso: Tool | None = None, work: Path | None = None,
                    ) -> dict[str, dict[str, float] | str]:
    """{stage: {"text": MB/s, "random": MB/s}}, or {stage: why it was not measured}.

    With `corso` (and a `work` directory), corso's whole backup pipeline is measured too.
    """
    size = megabytes * 1024 * 1024
    samples = {kind: _sample(kind, size) for kind in KINDS}
    stages = _stages()
    chain_name, chain = _corso_chain()
    stages[chain_name] = chain
    results: dict[str, dict[str, float] | str] = {}
    with one_core():  # subprocesses inherit the affinity: the pipeline runs on one core too
        for name, stage in stages.items():
            results[name] = {kind: _best_mb_per_s(lambda s=stage, d=data: s(d), size)
                             for kind, data in samples.items()}
        if corso is not None:
            # A larger file, so the backup's fixed costs (index, trees, manifest) weigh little.
            results["corso backup pipeline (one file)"] = corso_pipeline(corso, 4 * size, work)
    return results


def index_figures(entries: int = INDEX_ENTRIES) -> dict[str, float]:
    """Bytes per entry, load and lookup speed of corso's in-memory chunk index.

    Loaded as a command loads it: the rows of an index blob (here one, 1,000 chunks per pack)
    read and added; the load is timed apart from the memory count (tracemalloc slows it).
    """
    ids = RandomBytes(2, "index").read(32 * entries)
    keys = Keys.derive(bytes(32))
    blob = encode_index(keys, "bench", (
        IndexEntry(ids[32 * i : 32 * i + 32], Location(DATA_PACK, f"{i // 1000:032x}", i, 1))
        for i in range(entries)))
    rows = read_index(keys, "bench", blob)
    started = time.perf_counter()
    ChunkIndex().add_rows(rows)
    load_s = time.perf_counter() - started
    tracemalloc.start()
    try:
        index = ChunkIndex()
        index.add_rows(rows)
        memory = tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
    picked = random.Random(3).sample(range(entries), min(INDEX_LOOKUPS, entries))
    probes = [ids[32 * i : 32 * i + 32] for i in picked]
    started = time.perf_counter()
    found = sum(1 for chunk_id in probes if index.get(chunk_id) is not None)
    lookup_s = time.perf_counter() - started
    if found != len(probes):
        return f"failed: {len(probes) - found} of {len(probes)} lookups missed"
    return {
        "entries": entries,
        "bytes_per_entry": round(memory / entries, 1),
        "lookups_per_s": round(len(probes) / lookup_s),
        "loads_per_s": round(entries / load_s),
    }
