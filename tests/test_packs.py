import os
import struct

import pytest
import zstandard

from corso_core.errors import Corrupted
from corso_core.repo import compression, names
from corso_core.repo.crypto import OVERHEAD, Keys
from corso_core.repo.packs import PackWriter, open_chunk, read_header
from corso_core.storage.filesystem import FilesystemStorage

KEYS = Keys.derive(b"k" * 32)


def test_compressible_data_is_compressed_and_random_data_stored_as_is():
    text = b"the same line again\n" * 1000
    packed = compression.compress(memoryview(text))
    assert packed[0] == compression.ZSTD and len(packed) < len(text) // 10
    noise = os.urandom(10000)
    assert compression.compress(noise) == bytes((compression.RAW,)) + noise
    assert compression.decompress(packed, "x") == text
    assert compression.decompress(compression.compress(noise), "x") == noise


def test_large_chunks_are_judged_by_a_sample_and_kept_compressible(monkeypatch):
    compressed_sizes = []
    real = compression._compressor()

    class Recording:
        def compress(self, data):
            compressed_sizes.append(len(data))
            return real.compress(data)

    monkeypatch.setattr(compression, "_compressor", Recording)
    noise = os.urandom(1024 * 1024)
    assert compression.compress(noise) == bytes((compression.RAW,)) + noise
    assert compressed_sizes == [16 * 1024] * 3  # the samples only: no full pass over random data
    text = b"".join(b"line %d of a log file\n" % i for i in range(50000))
    packed = compression.compress(text)
    assert packed[0] == compression.ZSTD and compression.decompress(packed, "x") == text


@pytest.mark.parametrize("text_at", ["start", "end"])
def test_a_large_chunk_random_in_its_middle_is_compressed_for_its_text(text_at):
    """Where a file's random part gives way to text, one chunk holds both: its middle alone
    would have it stored as is."""
    text = b"".join(b"line %d of a log file\n" % i for i in range(20000))[: 400 * 1024]
    noise = os.urandom(600 * 1024)
    chunk = text + noise if text_at == "start" else noise + text
    packed = compression.compress(chunk)
    assert packed[0] == compression.ZSTD and len(packed) < len(noise) + len(text) // 2
    assert compression.decompress(packed, "x") == chunk


def test_compressing_many_chunks_at_once_gives_what_compressing_each_gives(monkeypatch):
    calls = []
    real = compression._compressor()

    class Recording:
        def compress(self, data):
            calls.append("compress")
            return real.compress(data)

        def multi_compress_to_buffer(self, data, threads):
            calls.append(("many", len(data)))
            return real.multi_compress_to_buffer(data, threads=threads)

    chunks = [b"", b"x", b"the same line again\n" * 500, os.urandom(5000),
              memoryview(b"text " * 3000), os.urandom(1024 * 1024)]
    one_by_one = [compression.compress(chunk) for chunk in chunks]
    monkeypatch.setattr(compression, "_compressor", Recording)
    assert compression.compress_many(chunks) == one_by_one
    assert calls == [("many", 5)] + ["compress"] * 3  # the large one judged by its samples
    assert compression.compress_many([]) == []


def test_compressing_many_chunks_works_without_the_multi_input_call(monkeypatch):
    real = compression._compressor()
    calls = []

    class CffiBackend:  # zstandard's CFFI backend has no multi_compress_to_buffer
        def compress(self, data):
            calls.append("compress")
            return real.compress(data)

    chunks = [b"the same line again\n" * 500, os.urandom(5000), b""]
    one_by_one = [compression.compress(chunk) for chunk in chunks]
    monkeypatch.setattr(compression, "_compressor", CffiBackend)
    monkeypatch.setattr(compression, "MULTI_INPUT", False)
    assert compression.compress_many(chunks) == one_by_one
    assert calls == ["compress"] * 3


def test_decompression_is_bounded_even_when_a_frame_declares_its_size():
    huge = compression.MAX_CHUNK_SIZE + 1
    declared = zstandard.ZstdCompressor().compress(b"\0" * huge)
    with pytest.raises(Corrupted, match="chunk c is corrupted: declares"):
        compression.decompress(bytes((compression.ZSTD,)) + declared, "chunk c")
    undeclared = zstandard.ZstdCompressor(write_content_size=False).compress(b"\0" * huge)
    with pytest.raises(Corrupted, match="chunk c is corrupted"):
        compression.decompress(bytes((compression.ZSTD,)) + undeclared, "chunk c")


@pytest.mark.parametrize("payload", [b"", b"\x07abc", b"\x01not zstd"])
def test_malformed_payloads_are_corrupted(payload):
    with pytest.raises(Corrupted, match="chunk c is corrupted"):
        compression.decompress(payload, "chunk c")


def sealed(chunk_id: bytes, data: bytes) -> bytes:
    """The chunk's entry as a pack holds it."""
    writer = PackWriter(names.DATA_PACK, bytearray(1024))
    entry = writer.add_chunk(KEYS, chunk_id, compression.compress(data))
    return bytes(writer.buffer[entry.offset : entry.offset + entry.length])


def test_chunks_use_a_fresh_nonce_and_bind_their_id():
    chunk_id, other = b"\1" * 32, b"\2" * 32
    a, b = sealed(chunk_id, b"data"), sealed(chunk_id, b"data")
    assert a != b and a[:12] != b[:12]
    assert open_chunk(KEYS, chunk_id, a) == b"data"
    with pytest.raises(Corrupted, match=f"chunk {other.hex()} is corrupted"):
        open_chunk(KEYS, other, a)


def write_pack(storage, kind=names.DATA_PACK, count=5) -> tuple[PackWriter, list[bytes]]:
    writer = PackWriter(kind, bytearray(256))  # too small: it must grow
    chunks = [os.urandom(100 + i) for i in range(count)]
    for i, chunk in enumerate(chunks):
        writer.add_chunk(KEYS, bytes([i]) * 32, compression.compress(chunk))
    storage.put(names.key(kind, writer.name), writer.finish(KEYS))
    return writer, chunks


def test_pack_header_is_read_back_with_one_suffix_get(tmp_path):
    storage = FilesystemStorage(str(tmp_path))
    writer, chunks = write_pack(storage)
    before = storage.counts.requests.get("GET", 0)
    entries = read_header(storage, KEYS, names.DATA_PACK, writer.name, entries_hint=5)
    assert storage.counts.requests["GET"] - before == 1
    assert entries == list(writer.entries())
    blob = storage.get(names.key(names.DATA_PACK, writer.name))
    for entry, chunk in zip(entries, chunks, strict=True):
        sealed = blob[entry.offset : entry.offset + entry.length]
        assert len(sealed) == len(chunk) + 1 + OVERHEAD
        assert open_chunk(KEYS, entry.chunk_id, sealed) == chunk
    assert read_header(storage, KEYS, names.DATA_PACK, writer.name) == entries  # no hint


def test_a_header_longer_than_the_guess_takes_a_second_get(tmp_path, monkeypatch):
    monkeypatch.setattr("corso_core.repo.packs._HEADER_GUESS", 64)
    storage = FilesystemStorage(str(tmp_path))
    writer, _ = write_pack(storage, count=20)
    assert read_header(storage, KEYS, names.DATA_PACK, writer.name) == list(writer.entries())


def damaged(blob: bytes, how: str) -> bytes:
    if how == "flip":
        return blob[:-10] + bytes([blob[-10] ^ 1]) + blob[-9:]
    if how == "truncate":
        return blob[:-3]
    if how == "trailer":
        return blob[:-4] + struct.pack("<I", len(blob) * 2)
    raise AssertionError(how)


@pytest.mark.parametrize("how", ["flip", "truncate", "trailer"])
def test_a_damaged_pack_header_is_corrupted_naming_the_pack(tmp_path, how):
    storage = FilesystemStorage(str(tmp_path))
    writer, _ = write_pack(storage)
    key = names.key(names.DATA_PACK, writer.name)
    storage.put(key, damaged(storage.get(key), how))
    with pytest.raises(Corrupted, match=f"data pack {writer.name}"):
        read_header(storage, KEYS, names.DATA_PACK, writer.name)


def test_a_pack_under_another_name_or_kind_is_corrupted(tmp_path):
    storage = FilesystemStorage(str(tmp_path))
    writer, _ = write_pack(storage)
    blob = storage.get(names.key(names.DATA_PACK, writer.name))
    other = names.new_pack_name()
    storage.put(names.key(names.DATA_PACK, other), blob)
    with pytest.raises(Corrupted, match=f"data pack {other} header is corrupted"):
        read_header(storage, KEYS, names.DATA_PACK, other)
    storage.put(names.key(names.TREE_PACK, writer.name), blob)
    with pytest.raises(Corrupted, match=f"tree pack {writer.name} header is corrupted"):
        read_header(storage, KEYS, names.TREE_PACK, writer.name)
