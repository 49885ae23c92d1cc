"""Chunk compression: zstd only when it pays, and decompression that never exceeds a bound.

A compressed payload is one codec byte followed by the body, so every stored chunk says how to
read it back. The byte sits inside the encryption, so it is authenticated with the chunk.
"""

from __future__ import annotations

import threading

import zstandard

from corso_core.errors import Corrupted

RAW = 0
ZSTD = 1
LEVEL = 3
#: Keep the compressed form only if it saves at least 1/32 of the size: decompressing costs
#: time on every restore, and a near-incompressible chunk is not worth it.
_MIN_SAVING_SHIFT = 5
#: Bytes of a large chunk compressed first, to tell incompressible data cheaply: one sample
#: from its start, its middle and its end each.
_SAMPLE_SIZE = 16 * 1024
#: No chunk is larger than this (pyfastcdc's own maximum chunk size); it bounds decompression.
MAX_CHUNK_SIZE = 16 * 1024 * 1024

#: Whether zstandard can compress a list of chunks in one call (only its C backend can).
MULTI_INPUT = zstandard.backend == "cext"

# zstandard contexts must not be shared between threads; each thread keeps its own.
_local = threading.local()


def _compressor() -> zstandard.ZstdCompressor:
    cctx = getattr(_local, "cctx", None)
    if cctx is None:
        cctx = _local.cctx = zstandard.ZstdCompressor(level=LEVEL)
    return cctx


def _decompressor() -> zstandard.ZstdDecompressor:
    dctx = getattr(_local, "dctx", None)
    if dctx is None:
        dctx = _local.dctx = zstandard.ZstdDecompressor()
    return dctx


def _saves_enough(original: int, packed: int) -> bool:
    return packed <= original - (original >> _MIN_SAVING_SHIFT)


def _payload(data: bytes | memoryview, packed: bytes | memoryview) -> bytes:
    """codec byte || body: the packed form if it saves enough, else the data as is."""
    if len(data) and _saves_enough(len(data), len(packed)):
        return bytes((ZSTD,)) + packed
    return bytes((RAW,)) + data


def _check_size(data: bytes | memoryview) -> None:
    if len(data) > MAX_CHUNK_SIZE:
        raise ValueError(f"chunk of {len(data)} bytes exceeds the maximum of {MAX_CHUNK_SIZE}")


def compress(data: bytes | memoryview) -> bytes:
    """codec byte || body: zstd if that saves enough, else the data as is.

    A large chunk is first judged by samples of its start, middle and end: random data (media,
    archives, encrypted files) is then stored without spending a full compression pass on it,
    while a chunk only partly random (where a file's random part gives way to text) is
    compressed if any sample compresses. The bench data's 920 MiB of large files under 8
    chunking keys: 545.5 MiB stored on average against 550.8 by the middle alone.
    """
    _check_size(data)
    size = len(data)
    if size >= 4 * _SAMPLE_SIZE:
        view = memoryview(data)
        samples = (view[at : at + _SAMPLE_SIZE]
                   for at in (0, size // 2 - _SAMPLE_SIZE // 2, size - _SAMPLE_SIZE))
        if not any(_saves_enough(_SAMPLE_SIZE, len(_compressor().compress(sample)))
                   for sample in samples):
            return bytes((RAW,)) + data
    return _payload(data, _compressor().compress(data))


def compress_many(chunks: list[bytes | memoryview]) -> list[bytes]:
    """compress() of each chunk, the same bytes; chunks too small to be sampled are compressed
    in one call (zstd's multi-input API), which releases the GIL once for all of them instead
    of once per chunk: with threads beside it, every release and re-take costs a hand-off."""
    for chunk in chunks:
        _check_size(chunk)
    small = [chunk for chunk in chunks if len(chunk) < 4 * _SAMPLE_SIZE]
    packed = iter(_compress_together(small) if small else ())
    return [_payload(chunk, next(packed)) if len(chunk) < 4 * _SAMPLE_SIZE else compress(chunk)
            for chunk in chunks]


def _compress_together(chunks: list[bytes | memoryview]) -> list:
    """Each chunk's zstd frame: from one call with zstandard's C backend, one call per chunk
    with the others (CFFI, used where the C extension could not be installed, has no
    multi-input call)."""
    if MULTI_INPUT:
        return list(_compressor().multi_compress_to_buffer(chunks, threads=1))
    return [_compressor().compress(chunk) for chunk in chunks]


def decompress(payload: bytes | memoryview, what: str) -> bytes | memoryview:
    """The chunk's bytes; Corrupted naming `what` if the payload is malformed or too large.

    A chunk stored as is comes back as a view into `payload`, past its codec byte: copying
    it was 0.07 s of a 1 GiB restore, under the GIL (its random data is stored as is)."""
    view = memoryview(payload)
    if not view:
        raise Corrupted(f"{what} is corrupted: empty payload")
    codec, body = view[0], view[1:]
    if codec == RAW:
        if len(body) > MAX_CHUNK_SIZE:
            raise Corrupted(f"{what} is corrupted: {len(body)} bytes exceeds the chunk maximum")
        return body
    if codec != ZSTD:
        raise Corrupted(f"{what} is corrupted: unknown codec {codec}")
    try:
        # The frame may declare its size, and zstandard then trusts it over max_output_size:
        # check the declared size first so no frame can make us allocate past the bound.
        declared = zstandard.frame_content_size(body)
        if declared > MAX_CHUNK_SIZE:
            raise Corrupted(f"{what} is corrupted: declares {declared} bytes, over the maximum")
        return _decompressor().decompress(body, max_output_size=MAX_CHUNK_SIZE)
    except zstandard.ZstdError as e:
        raise Corrupted(f"{what} is corrupted: {e}") from None
