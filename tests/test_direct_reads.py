"""Large files not in the page cache are read straight from the disk (O_DIRECT,
sources/files/direct_reads.py), through the chunker's aligned reads, whole and exact; cached and
small files go through the page cache, and a read direct I/O refuses falls back to it."""

from __future__ import annotations

import ctypes
import fcntl
import io
import mmap
import os
import shutil
import tempfile
import time
from pathlib import Path

import pytest
from test_engine_roundtrip import backup, restore
from trees import snapshot

from corso_core.engine.progress import Problems
from corso_core.repo.chunker import READ_ALIGNMENT, ChunkerParams, chunk_file, new_read_buffer
from corso_core.sources.files.direct_reads import DIRECT_MIN, DirectFile, RegularFile
from corso_core.sources.files.reader import FilesReader

CHUNKER = ChunkerParams.for_new_repository().chunker(0)
_LIBC = ctypes.CDLL(None, use_errno=True)
LARGE = 3 * 1024 * 1024 + 12345  # not a whole number of pages: its last read is short


@pytest.fixture
def disk_dir(tmp_path):
    """A directory whose files the page cache can let go of: tmp_path, else one in /var/tmp
    (/tmp may be a tmpfs, whose files live in the page cache)."""
    for base in (tmp_path, Path("/var/tmp")):
        directory = Path(tempfile.mkdtemp(dir=base))
        try:
            _written(directory / "probe", 64 * 1024, cached=False)
            if not _cached(directory / "probe", 32 * 1024):
                yield directory
                return
        finally:
            shutil.rmtree(directory)
    pytest.fail("neither tmp_path nor /var/tmp lets a file out of the page cache")


def _written(path, size: int, cached: bool) -> bytes:
    data = os.urandom(size)
    path.write_bytes(data)
    if not cached:  # written back, then dropped from the page cache
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
            # A page the write left in another CPU's batch of pages not yet on the kernel's
            # lists is not dropped by one DONTNEED (a rare failure seen in CI): ask again.
            for _ in range(100):
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
                if not _resident_pages(fd, size):
                    break
                time.sleep(0.01)
        finally:
            os.close(fd)
    return data


def _resident_pages(fd: int, size: int) -> int:
    """How many of the file's pages are in the page cache (mincore: asking reads in none)."""
    pages = -(-size // mmap.PAGESIZE)
    with mmap.mmap(fd, size, access=mmap.ACCESS_COPY) as mapping:  # private: never written
        resident = (ctypes.c_ubyte * pages)()
        address = ctypes.addressof(ctypes.c_char.from_buffer(mapping))
        if _LIBC.mincore(ctypes.c_void_p(address), ctypes.c_size_t(size), resident) != 0:
            raise OSError(ctypes.get_errno(), "mincore failed")
    return sum(page & 1 for page in resident)


def _opened(path):
    reader = FilesReader([os.fsencode(path)], [], Problems())
    [node] = reader.roots()
    return reader.open(node)


def _cached(path, offset: int) -> bool:
    """Whether the page at `offset` is in the page cache, or may be (a filesystem that cannot
    tell, as tmpfs); asking has the kernel read in a few pages there: ask only once done."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.preadv(fd, [bytearray(READ_ALIGNMENT)], offset, os.RWF_NOWAIT)
    except BlockingIOError:
        return False
    except OSError:
        return True
    finally:
        os.close(fd)
    return True


def _direct(file) -> bool:
    return bool(fcntl.fcntl(file.fileno(), fcntl.F_GETFL) & os.O_DIRECT)


def test_a_large_file_not_in_the_page_cache_is_read_from_the_disk_whole(disk_dir):
    data = _written(disk_dir / "large", LARGE, cached=False)
    content = _opened(disk_dir / "large")
    try:
        assert isinstance(content.file, DirectFile) and _direct(content.file)
        read = b"".join(bytes(chunk) for chunk in chunk_file(
            CHUNKER, content.file, new_read_buffer(CHUNKER), content.meta.size))
    finally:
        content.close()
    assert read == data
    assert not _cached(disk_dir / "large", 1024 * 1024)  # it went around the page cache


@pytest.mark.parametrize("size, cached", [(LARGE, True), (DIRECT_MIN, False)],
                         ids=["cached", "small"])
def test_a_cached_or_small_file_is_read_through_the_page_cache(disk_dir, size, cached):
    _written(disk_dir / "f", size, cached)
    content = _opened(disk_dir / "f")
    try:
        assert type(content.file) is RegularFile and not _direct(content.file)
    finally:
        content.close()


@pytest.mark.parametrize("read", [lambda f: f.read(1000) + f.read(), lambda f: f.readall()],
                         ids=["read", "readall"])
def test_reads_into_memory_of_their_own_go_through_the_page_cache(disk_dir, read):
    data = _written(disk_dir / "large", LARGE, cached=False)
    content = _opened(disk_dir / "large")
    try:
        assert _direct(content.file)
        assert read(content.file) == data and not _direct(content.file)
    finally:
        content.close()


def test_a_read_direct_io_refuses_goes_through_the_page_cache(disk_dir):
    data = _written(disk_dir / "large", LARGE, cached=False)
    content = _opened(disk_dir / "large")
    memory = mmap.mmap(-1, 2 * READ_ALIGNMENT)
    try:
        assert _direct(content.file)
        unaligned = memoryview(memory)[1:1001]
        assert content.file.readinto(unaligned) == 1000
        assert bytes(unaligned) == data[:1000] and not _direct(content.file)
        assert content.file.read() == data[1000:]
    finally:
        content.close()
        del unaligned
        memory.close()


class _Recording(io.BytesIO):
    """A file that notes each read that reads something: the alignment of its memory, its
    length and its file offset."""

    def __init__(self, data: bytes) -> None:
        super().__init__(data)
        self.reads: list[tuple[int, int, int]] = []

    def readinto(self, buffer) -> int:
        address = ctypes.addressof(ctypes.c_char.from_buffer(buffer))
        at = self.tell()
        got = super().readinto(buffer)
        if got:
            self.reads.append((address % READ_ALIGNMENT, len(buffer) % READ_ALIGNMENT,
                               at % READ_ALIGNMENT))
        return got


def test_the_chunker_reads_into_its_buffer_aligned_as_direct_io_asks():
    data = os.urandom(5 * CHUNKER.params.max_size + 777)  # not a whole number of pages
    f = _Recording(data)
    chunks = [bytes(c) for c in chunk_file(CHUNKER, f, new_read_buffer(CHUNKER), len(data))]
    assert b"".join(chunks) == data and len(chunks) > 3
    assert len(f.reads) >= 3 and set(f.reads) == {(0, 0, 0)}


def test_a_backup_of_files_off_the_page_cache_restores_exactly(repository, tmp_path, disk_dir):
    (disk_dir / "t").mkdir()
    for n in range(3):
        _written(disk_dir / "t" / f"large{n}", LARGE + n * 1000, cached=False)
    result = backup(repository, disk_dir / "t")
    stats, problems = restore(repository, result.backup_id, tmp_path / "out")
    assert problems.errors == [] and stats.files == 3
    assert snapshot(tmp_path / "out" / "t") == snapshot(disk_dir / "t")


def test_a_regular_file_read_to_its_size_is_not_asked_once_more(tmp_path, monkeypatch):
    """RegularFile takes a read short exactly at the size the file had as its end (one system
    call less per small file); a file that grew after that read is caught by the fstat after
    reading, as before."""
    (tmp_path / "f").write_bytes(b"x" * 100)
    reads = []
    real_readv = os.readv
    monkeypatch.setattr(os, "readv", lambda fd, buffers: reads.append(fd) or real_readv(
        fd, buffers))
    content = _opened(tmp_path / "f")
    try:
        assert type(content.file) is RegularFile
        buffer = bytearray(4096)
        assert content.file.readinto(buffer) == 100 and bytes(buffer[:100]) == b"x" * 100
        with open(tmp_path / "f", "ab") as f:
            f.write(b"grown")
        assert content.file.readinto(buffer) == 0 and len(reads) == 1
        assert content.changed() == "changed while being read (size)"
    finally:
        content.close()


def test_a_regular_file_read_short_of_its_size_is_read_on():
    """A read that comes short before the size (a network filesystem may answer so) is not
    the end: the next read asks the system again."""
    reader, writer = os.pipe()
    file = RegularFile(reader, 10)
    try:
        buffer = bytearray(4096)
        os.write(writer, b"12345")
        assert file.readinto(buffer) == 5
        os.write(writer, b"67890")
        assert file.readinto(buffer) == 5 and bytes(buffer[:5]) == b"67890"
        os.write(writer, b"more")  # past the size, after a short read at it: not asked for
        assert file.readinto(buffer) == 0
    finally:
        file.close()
        os.close(writer)
    assert file.closed
