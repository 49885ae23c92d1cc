"""The filesystem backend: the shared contract, plus what only a filesystem can show."""

import ctypes
import errno
import fcntl
import mmap
import os
import stat
import time

import pytest

from corso_core.errors import AlreadyExists
from corso_core.storage import filesystem
from corso_core.storage.filesystem import FilesystemStorage
from corso_core.storage.kill_switch import KillAfterWrites
from corso_core.testing import BlobStorageContract


class TestFilesystemContract(BlobStorageContract):
    @pytest.fixture
    def storage(self, tmp_path):
        yield FilesystemStorage(str(tmp_path / "repo"))


def test_directories_are_0700_and_files_0600(tmp_path):
    storage = FilesystemStorage(str(tmp_path / "repo"))
    storage.put("data/ab/blob", b"x")
    storage.put_new("format", b"y")
    for rel in ("", "data", "data/ab"):
        assert stat.S_IMODE(os.stat(tmp_path / "repo" / rel).st_mode) == 0o700
    for rel in ("data/ab/blob", "format"):
        assert stat.S_IMODE(os.stat(tmp_path / "repo" / rel).st_mode) == 0o600


def test_local_root_is_the_directory_and_the_kill_switch_passes_it_on(tmp_path):
    """A backup leaves out the directory that local_root names (engine/backup.py); the kill
    switch wraps the storage of the very commands whose crashes the tests provoke."""
    storage = FilesystemStorage(str(tmp_path / "repo"))
    assert storage.local_root == str(tmp_path / "repo")
    assert KillAfterWrites(storage, 1).local_root == str(tmp_path / "repo")


def test_put_new_never_overwrites_even_when_the_race_is_lost(tmp_path):
    storage = FilesystemStorage(str(tmp_path / "repo"))
    storage.put_new("k", b"first")
    with pytest.raises(AlreadyExists):
        storage._create("k", b"first")  # the raw create fails; only put_new forgives a retry
    assert storage.get("k") == b"first"
    assert [n for n in os.listdir(tmp_path / "repo") if n.startswith(".")] == []


def test_keys_cannot_escape_the_root(tmp_path):
    storage = FilesystemStorage(str(tmp_path / "repo"))
    for bad in ("../evil", "/abs", "a//b", "a/", ".hidden", "a/../b"):
        with pytest.raises(ValueError):
            storage.put(bad, b"x")
    assert not (tmp_path / "evil").exists()


def test_cleanup_removes_only_old_temp_files(tmp_path):
    storage = FilesystemStorage(str(tmp_path / "repo"))
    storage.put("data/blob", b"x")
    old = tmp_path / "repo" / "data" / ".blob.tmp-aaaaaa"
    fresh = tmp_path / "repo" / "data" / ".blob.tmp-bbbbbb"
    old.write_bytes(b"partial")
    fresh.write_bytes(b"partial")
    long_ago = time.time() - 3 * 86400
    os.utime(old, (long_ago, long_ago))
    assert storage.cleanup(86400) == 1
    assert not old.exists() and fresh.exists()
    assert [b.key for b in storage.list()] == ["data/blob"]


class WriteSpy:
    """Records each os.write of the backend: its length and whether O_DIRECT was on."""

    def __init__(self, monkeypatch) -> None:
        self.calls: list[tuple[int, bool]] = []
        real_write = os.write

        def write(fd, data):
            direct = bool(fcntl.fcntl(fd, fcntl.F_GETFL) & os.O_DIRECT)
            n = real_write(fd, data)
            self.calls.append((n, direct))
            return n

        monkeypatch.setattr(filesystem.os, "write", write)


def pack_like(size: int) -> mmap.mmap:
    """A page-aligned buffer like the store's pack buffers, filled with random bytes."""
    buffer = mmap.mmap(-1, size)
    buffer.write(os.urandom(size))
    return buffer


def o_direct_works_in(directory) -> bool:
    """Whether this filesystem takes an aligned O_DIRECT write (tmpfs before Linux 6.6 does not)."""
    fd = os.open(directory / "probe", os.O_WRONLY | os.O_CREAT)
    try:
        fcntl.fcntl(fd, fcntl.F_SETFL, os.O_DIRECT)
        os.write(fd, pack_like(4096))
        return True
    except OSError:
        return False
    finally:
        os.close(fd)
        os.unlink(directory / "probe")


def _pages_cached(path) -> int:
    """How many of a file's pages are in the page cache (mincore on a private mapping)."""
    libc = ctypes.CDLL(None, use_errno=True)
    size = os.path.getsize(path)
    pages = -(-size // mmap.PAGESIZE)
    with open(path, "rb") as f:
        mapping = mmap.mmap(f.fileno(), size, flags=mmap.MAP_PRIVATE,
                            prot=mmap.PROT_READ | mmap.PROT_WRITE)
    try:
        start = ctypes.c_char.from_buffer(mapping)
        vector = (ctypes.c_ubyte * pages)()
        assert libc.mincore(ctypes.c_void_p(ctypes.addressof(start)), ctypes.c_size_t(size),
                            vector) == 0, os.strerror(ctypes.get_errno())
        del start
        return sum(byte & 1 for byte in vector)
    finally:
        mapping.close()


def test_read_ahead_brings_the_range_into_the_page_cache(tmp_path):
    storage = FilesystemStorage(str(tmp_path))
    storage.put("data/ab/pack", os.urandom(64 * mmap.PAGESIZE))
    path = tmp_path / "data" / "ab" / "pack"
    with open(path, "rb") as f:
        os.fsync(f.fileno())
        os.posix_fadvise(f.fileno(), 0, 0, os.POSIX_FADV_DONTNEED)
    assert _pages_cached(path) == 0
    storage.read_ahead("data/ab/pack", 8 * mmap.PAGESIZE, 16 * mmap.PAGESIZE)
    deadline = time.monotonic() + 10
    while _pages_cached(path) < 16 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert 16 <= _pages_cached(path) < 64
    storage.read_ahead("data/ab/missing", 0, 100)  # only a hint: nothing to say


def test_a_large_aligned_blob_bypasses_the_page_cache_and_reads_back_whole(tmp_path, monkeypatch):
    size = 2 * filesystem.DIRECT_WRITE_MIN + 123
    buffer = pack_like(size)
    # Where the filesystem cannot, everything goes through the cache, and whole.
    expected_direct = size - size % 4096 if o_direct_works_in(tmp_path) else 0
    spy = WriteSpy(monkeypatch)
    FilesystemStorage(str(tmp_path / "repo")).put("data/pack", memoryview(buffer)[:size])
    assert sum(n for n, is_direct in spy.calls if is_direct) == expected_direct
    assert sum(n for n, _ in spy.calls) == size
    assert (tmp_path / "repo" / "data" / "pack").read_bytes() == buffer[:size]


def refuse_o_direct(monkeypatch) -> None:
    """As filesystems without O_DIRECT do: setting the flag fails with EINVAL."""
    real_fcntl = fcntl.fcntl

    def fcntl_without_direct(fd, cmd, arg=0):
        if cmd == fcntl.F_SETFL and arg & os.O_DIRECT:
            raise OSError(errno.EINVAL, "Invalid argument")
        return real_fcntl(fd, cmd, arg)

    monkeypatch.setattr(filesystem.fcntl, "fcntl", fcntl_without_direct)


@pytest.mark.parametrize("why", ["unaligned buffer", "filesystem refuses"])
def test_large_blobs_are_written_whole_where_o_direct_cannot_be_used(why, tmp_path, monkeypatch):
    size = 2 * filesystem.DIRECT_WRITE_MIN
    if why == "filesystem refuses":  # an aligned buffer: only the refusal stops O_DIRECT
        refuse_o_direct(monkeypatch)
        blob = memoryview(pack_like(size))
    else:  # 7 bytes into a page-aligned map: never 4096-aligned
        blob = memoryview(pack_like(size + 7))[7:]
    spy = WriteSpy(monkeypatch)
    FilesystemStorage(str(tmp_path / "repo")).put("data/pack", blob)
    assert not any(is_direct for _, is_direct in spy.calls)
    assert (tmp_path / "repo" / "data" / "pack").read_bytes() == bytes(blob)
