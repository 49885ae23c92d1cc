import io
import itertools
import os
import random
import sys
import tracemalloc
from dataclasses import replace

import pytest
from datalayer import SMALL_CHUNKER

from corso_core.repo.chunker import (
    KEYED_SEED,
    READ_ALIGNMENT,
    Chunker,
    ChunkerMissing,
    ChunkerParams,
    _fastcdc,
    chunk_file,
    new_read_buffer,
    read_buffer_size,
)
from corso_core.repo.crypto import Keys

DEFAULT_PARAMS = ChunkerParams("fastcdc-2020", min_size=256 * 1024, avg_size=1024 * 1024,
                               max_size=4 * 1024 * 1024, seed=KEYED_SEED)
#: The default sizes as repositories made before keyed chunking record them: seed 0.
UNKEYED = Chunker(ChunkerParams("fastcdc-2020", min_size=256 * 1024, avg_size=1024 * 1024,
                                max_size=4 * 1024 * 1024))
#: A fixed master key, and what it must give: its seed (HKDF-SHA256 output d333dc40b44d852c,
#: read little-endian, modulo 2**63) and the cut points of the fixed input with that seed.
FIXED_KEY = bytes(range(32))
SEED_OF_FIXED_KEY = 0x2C854DB440DC33D3
KEYED_DEFAULT_CUTS = [1522603, 4128454, 640399]
KEYED_SMALL_CUTS = [3994, 9523, 7422, 4400, 2809, 4149, 1654, 7947, 4637, 6834, 4086, 3898, 1747,
                    1975, 461]


def fixed_input(size: int) -> bytes:
    return random.Random(20261125).randbytes(size)


def sizes(chunker, f) -> list[int]:
    return [len(chunk) for chunk in chunk_file(chunker, f)]


def test_default_parameters_are_the_recorded_ones():
    assert ChunkerParams.for_new_repository() == DEFAULT_PARAMS


def test_cut_points_are_fixed_at_the_default_size():
    # Cut points are part of the repository format: these must never change. Seed 0 is what
    # repositories made before keyed chunking cut with, and go on cutting with.
    assert sizes(UNKEYED, io.BytesIO(fixed_input(6 * 1024 * 1024))) == [
        1468324, 1461601, 2101895, 1259636]


def test_cut_points_are_fixed_at_the_small_test_size():
    assert sizes(SMALL_CHUNKER, io.BytesIO(fixed_input(64 * 1024))) == [
        6092, 2331, 4662, 1070, 8043, 1168, 4802, 1629, 5892, 4662, 4835, 6859, 6880, 1867,
        4621, 123]


def test_the_keyed_seed_and_cut_points_are_fixed_for_a_fixed_key():
    # The seed's derivation from the master key and its use are format too (docs/format.md).
    seed = Keys.derive(FIXED_KEY).chunker_seed
    assert seed == SEED_OF_FIXED_KEY
    keyed = DEFAULT_PARAMS.chunker(seed)
    assert sizes(keyed, io.BytesIO(fixed_input(6 * 1024 * 1024))) == KEYED_DEFAULT_CUTS
    small = replace(SMALL_CHUNKER.params, seed=KEYED_SEED).chunker(seed)
    assert sizes(small, io.BytesIO(fixed_input(64 * 1024))) == KEYED_SMALL_CUTS


def cut_offsets(chunker, data: bytes) -> set[int]:
    return set(itertools.accumulate(sizes(chunker, io.BytesIO(data))))


def test_two_keys_cut_the_same_data_differently():
    data = fixed_input(256 * 1024)
    params = replace(SMALL_CHUNKER.params, seed=KEYED_SEED)
    one, two = (cut_offsets(params.chunker(Keys.derive(key).chunker_seed), data)
                for key in (FIXED_KEY, bytes(32)))
    unkeyed = cut_offsets(SMALL_CHUNKER, data)
    assert len(one) > 40 and one & two == one & unkeyed == {len(data)}  # only the end


def test_only_params_that_say_keyed_take_the_keys_seed():
    keyed = replace(SMALL_CHUNKER.params, seed=KEYED_SEED).chunker(12345)
    assert keyed.seed == 12345 and "12345" not in repr(keyed)  # a secret: kept out of logs
    assert SMALL_CHUNKER.params.chunker(12345).seed == 0


def test_the_pure_python_chunker_cuts_as_the_compiled_one_with_a_keyed_seed():
    """A reader may use either pyfastcdc implementation: both XOR the seed into the gear
    table alike (the compiled one takes seeds below 2**63, which the derivation keeps to)."""
    from pyfastcdc.cy import FastCDC as Compiled
    from pyfastcdc.py import FastCDC as PurePython

    data = fixed_input(128 * 1024)
    for key in (FIXED_KEY, bytes(32), b"\xff" * 32):
        seed = Keys.derive(key).chunker_seed
        cuts = [[c.length for c in FastCDC(4096, min_size=1024, max_size=16384,
                                           seed=seed).cut_buf(data)]
                for FastCDC in (Compiled, PurePython)]
        assert cuts[0] == cuts[1]


class TrickleReader(io.RawIOBase):
    """Returns at most 777 bytes per read, as pipes and network filesystems may."""

    def __init__(self, data: bytes) -> None:
        self._data, self._pos = data, 0

    def readable(self) -> bool:
        return True

    def readinto(self, view) -> int:
        n = min(len(view), 777, len(self._data) - self._pos)
        view[:n] = self._data[self._pos : self._pos + n]
        self._pos += n
        return n


@pytest.mark.parametrize("size", [0, 1, 1023, 1024, 16384, 16385, 3 * 1024 * 1024 + 17])
def test_chunks_cover_the_input_and_do_not_depend_on_read_sizes(size, tmp_path):
    data = fixed_input(size)
    path = tmp_path / "f"
    path.write_bytes(data)
    with open(path, "rb") as f:
        chunks = list(chunk_file(SMALL_CHUNKER, f))  # all kept: each must stay valid
    assert b"".join(chunks) == data
    params = SMALL_CHUNKER.params
    assert all(params.min_size <= len(c) <= params.max_size for c in chunks[:-1])
    assert sizes(SMALL_CHUNKER, TrickleReader(data)) == [len(c) for c in chunks]
    assert sizes(SMALL_CHUNKER, io.BytesIO(data)) == [len(c) for c in chunks]


def test_an_insert_in_the_middle_changes_only_nearby_chunks():
    data = fixed_input(2 * 1024 * 1024)
    edited = data[: len(data) // 2] + b"inserted!" * 7 + data[len(data) // 2 :]
    before = {bytes(c) for c in chunk_file(SMALL_CHUNKER, io.BytesIO(data))}
    after = [bytes(c) for c in chunk_file(SMALL_CHUNKER, io.BytesIO(edited))]
    changed = [c for c in after if c not in before]
    assert len(after) > 300
    assert 1 <= len(changed) <= 3
    assert sum(map(len, changed)) <= 3 * SMALL_CHUNKER.params.max_size


def test_a_small_file_gets_a_small_buffer(tmp_path):
    path = tmp_path / "small"
    path.write_bytes(b"x" * 100)
    with open(path, "rb") as f:
        (chunk,) = chunk_file(UNKEYED, f)
    assert bytes(chunk) == b"x" * 100
    assert len(chunk.obj) <= 101  # not a 16 MiB buffer per small file


def peak_while_chunking(path) -> int:
    tracemalloc.start()
    try:
        with open(path, "rb") as f:
            for _chunk in chunk_file(SMALL_CHUNKER, f):
                pass
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_memory_does_not_grow_with_the_file(tmp_path):
    small, large = tmp_path / "small", tmp_path / "large"
    block = fixed_input(1024 * 1024)
    small.write_bytes(block * 2)
    with open(large, "wb") as f:
        for _ in range(32):
            f.write(block)
    peak_small, peak_large = peak_while_chunking(small), peak_while_chunking(large)
    assert peak_large < 3 * 1024 * 1024
    assert peak_large < peak_small + 256 * 1024


def test_missing_compiled_extension_fails_loudly(monkeypatch):
    monkeypatch.setitem(sys.modules, "pyfastcdc.cy", None)  # makes `import pyfastcdc.cy` fail
    _fastcdc.cache_clear()  # as in a process where the extension never loaded
    with pytest.raises(ChunkerMissing, match=r"pyfastcdc\.cy"):
        next(chunk_file(SMALL_CHUNKER, io.BytesIO(b"data")))


def test_pyfastcdc_version_is_pinned():
    import tomllib
    from pathlib import Path

    import pyfastcdc

    project = tomllib.loads((Path(__file__).parent.parent / "pyproject.toml").read_text())
    assert "pyfastcdc==0.3.1" in project["project"]["dependencies"]
    assert pyfastcdc.__version__ == "0.3.1"


def test_a_re_used_read_buffer_gives_the_same_chunks_file_after_file():
    buffer = bytearray(read_buffer_size(SMALL_CHUNKER))
    for size in (3 * 1024 * 1024 + 17, 100, 0, 16385):  # a large file first leaves stale bytes
        data = fixed_input(size)[::-1]
        fresh = [bytes(c) for c in chunk_file(SMALL_CHUNKER, io.BytesIO(data))]
        re_used = [bytes(c) for c in chunk_file(SMALL_CHUNKER, io.BytesIO(data), buffer)]
        assert re_used == fresh and b"".join(re_used) == data


def test_a_read_buffer_too_small_is_refused():
    with pytest.raises(ValueError, match="read buffer"):
        next(chunk_file(SMALL_CHUNKER, io.BytesIO(b"data"), bytearray(10)))


@pytest.mark.parametrize("size", [1023, 1024, 1025, 40_000])
@pytest.mark.parametrize("hint", ["exact", "too small", "too large", None])
def test_cuts_equal_the_chunkers_own_whatever_the_size_hint(size, hint):
    # A file at most min_size long skips the chunker; a stale size (the file grew or shrank
    # since it was listed) must not change a cut either.
    from pyfastcdc.cy import FastCDC

    data = fixed_input(size)
    p = SMALL_CHUNKER.params
    expected = [c.length for c in FastCDC(p.avg_size, min_size=p.min_size,
                                          max_size=p.max_size).cut_buf(data)]
    given = {"exact": size, "too small": size // 3, "too large": size * 2, None: None}[hint]
    chunks = [bytes(c) for c in chunk_file(SMALL_CHUNKER, io.BytesIO(data), size=given)]
    assert [len(c) for c in chunks] == expected
    assert b"".join(chunks) == data


def resident_bytes() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def test_a_re_used_read_buffer_takes_memory_only_where_read(tmp_path):
    small = tmp_path / "small"
    small.write_bytes(fixed_input(10_000))
    before = resident_bytes()
    buffer = new_read_buffer(UNKEYED)  # 8 MiB of address space
    with open(small, "rb") as f:
        (chunk,) = chunk_file(UNKEYED, f, buffer)
        assert bytes(chunk) == small.read_bytes()
    assert len(buffer) == read_buffer_size(UNKEYED) == 8 * 1024 * 1024 + 2 * READ_ALIGNMENT
    assert resident_bytes() - before < 1024 * 1024
