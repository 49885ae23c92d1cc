"""hypothesis fuzzes every decoder of what corso reads back: the format blob, pack headers,
index blobs, trees, manifests, session records, deletion plans, upkeep records, chunk
payloads and the config file, including the plaintext decoders behind the AEAD (fuzzed
plaintext is sealed with the right key and associated data, so it reaches the parser).

Any input must give a value or corso's own error (a CorsoError), never another exception,
and no decoder may allocate more than a bound whatever lengths the input claims."""

from __future__ import annotations

import hashlib
import json
import os
import tracemalloc

import pytest
import zstandard
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from corso_core import config
from corso_core.engine.tree import read_tree
from corso_core.errors import Corrupted, CorsoError
from corso_core.repo import compression, names
from corso_core.repo.chunker import KEYED_SEED, Chunker, ChunkerParams
from corso_core.repo.crypto import Keys, metadata_associated_data, seal
from corso_core.repo.format import CHECKSUM_PREFIX, MAGIC, FormatBlob
from corso_core.repo.index import decode_index
from corso_core.repo.manifests import load_manifest
from corso_core.repo.packs import decode_header, open_chunk
from corso_core.repo.plans import decode_plan
from corso_core.repo.repository import Repository
from corso_core.repo.sessions import list_sessions
from corso_core.storage.filesystem import FilesystemStorage
from corso_core.upkeep.records import read_record

#: No decoder may allocate more than this (Python allocations, traced), whatever the input.
MEMORY_BOUND = 64 * 1024 * 1024
KEYS = Keys.derive(b"\x07" * 32)
FUZZ = settings(max_examples=150, deadline=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture,
                                       HealthCheck.too_slow])

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=10), inner,
                                                                 max_size=5),
    max_leaves=20)


def decodes_or_refuses(decode, *args, **kwargs):
    """Run a decoder: its value, or None if it raised a CorsoError; anything else fails the
    test, and so does an allocation peak over MEMORY_BOUND."""
    tracemalloc.start()
    try:
        return decode(*args, **kwargs)
    except CorsoError:
        return None
    finally:
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        assert peak < MEMORY_BOUND, f"{decode.__name__} allocated {peak} bytes"


def json_mutations(valid: dict):
    """A valid document with one field replaced by an arbitrary JSON value (or removed)."""
    return st.tuples(st.sampled_from(sorted(valid)), json_values | st.just(KeyError)).map(
        lambda change: {k: v for k, v in {**valid, change[0]: change[1]}.items()
                        if v is not KeyError})


def row_mutations(valid: list):
    """A valid array with one element replaced by an arbitrary JSON value (or removed)."""
    return st.tuples(st.integers(0, len(valid) - 1), json_values | st.just(KeyError)).map(
        lambda change: [value for value in (*valid[: change[0]], change[1],
                                             *valid[change[0] + 1 :]) if value is not KeyError])


def sealed(plain: bytes, kind: str, name: str) -> bytes:
    return seal(KEYS.metadata, plain, metadata_associated_data(kind, name))


def plaintexts(valid: dict):
    """Arbitrary bytes, or the JSON of a valid document with one field changed."""
    return st.binary(max_size=300) | json_mutations(valid).map(lambda d: json.dumps(d).encode())


def store_sealed(repository, kind: str, name: str, plain: bytes) -> None:
    repository.storage.put(names.key(kind, name), sealed(plain, kind, name))


@pytest.fixture(scope="module")
def repository(tmp_path_factory):
    storage = FilesystemStorage(str(tmp_path_factory.mktemp("fuzz") / "repo"))
    return Repository(storage, KEYS, "fuzz-repository", 1,
                      Chunker(ChunkerParams("fastcdc-2020", 1024, 4096, 16384)))


# --- the format blob (plaintext, checksummed) ---------------------------------------------

VALID_FORMAT = json.loads(FormatBlob.create(os.urandom(32), "pw", ChunkerParams(
    "fastcdc-2020", 1024, 4096, 16384, seed=KEYED_SEED)).encode().split(b"\n", 2)[2])


def with_checksum(body: bytes) -> bytes:
    return MAGIC + CHECKSUM_PREFIX + hashlib.sha256(body).hexdigest().encode() + b"\n" + body


@FUZZ
@given(st.binary(max_size=400))
def test_format_blob_any_bytes(blob):
    decodes_or_refuses(FormatBlob.decode, blob, "format")
    decodes_or_refuses(FormatBlob.decode, with_checksum(blob), "format")


@FUZZ
@given(json_mutations(VALID_FORMAT) | json_values)
def test_format_blob_any_body(document):
    body = json.dumps(document).encode()
    decodes_or_refuses(FormatBlob.decode, with_checksum(body), "format")


# --- pack headers --------------------------------------------------------------------------

NAME = "ab" * 16


@FUZZ
@given(st.binary(max_size=300), st.booleans())
def test_pack_tail_any_bytes(tail, whole):
    decodes_or_refuses(decode_header, KEYS, "data", NAME, tail, whole_blob=whole)


@FUZZ
@given(st.binary(max_size=300) | st.binary(max_size=300).map(lambda b: b"CPK1" + b),
       st.binary(max_size=200), st.booleans())
def test_pack_header_any_plaintext(plain, entries, whole):
    header = seal(KEYS.metadata, plain, metadata_associated_data("data-pack-header", NAME))
    tail = entries + header + len(header).to_bytes(4, "little")
    decodes_or_refuses(decode_header, KEYS, "data", NAME, tail, whole_blob=whole)


def test_pack_trailer_claiming_4_gib_asks_for_bytes_and_allocates_nothing():
    assert decode_header(KEYS, "data", NAME, b"\xff\xff\xff\xff", whole_blob=False) == 2**32 + 3
    assert decodes_or_refuses(decode_header, KEYS, "data", NAME, b"x\xff\xff\xff\xff",
                              whole_blob=True) is None


# --- index blobs, plans, manifests, sessions, upkeep records --------------------------------

INDEX_NAME = "0123456789abcdef.000001"


@FUZZ
@given(st.binary(max_size=400) | st.binary(max_size=400).map(lambda b: b"CIX1" + b))
def test_index_any_plaintext(plain):
    decodes_or_refuses(decode_index, KEYS, INDEX_NAME, sealed(plain, names.INDEX, INDEX_NAME))
    decodes_or_refuses(decode_index, KEYS, INDEX_NAME, plain)


def test_index_claiming_4_billion_packs_is_refused_without_allocating():
    plain = b"CIX1" + b"\xff\xff\xff\xff" + b"\0" * 17
    assert decodes_or_refuses(decode_index, KEYS, INDEX_NAME,
                              sealed(plain, names.INDEX, INDEX_NAME)) is None


VALID_PLAN = {"id": "0123456789abcdef", "sessions": ["fedcba9876543210"],
              "packs": [["data", NAME]], "entries": [["00" * 32, "data", NAME, 0, 10]]}


@FUZZ
@given(plaintexts(VALID_PLAN))
@example(json.dumps({**VALID_PLAN, "entries": [["00" * 32, "data", NAME, float("inf"), 1]]})
         .encode())
def test_plan_any_plaintext(plain):
    plan_id = VALID_PLAN["id"]
    decodes_or_refuses(decode_plan, KEYS, plan_id, sealed(plain, names.PLAN, plan_id))


VALID_MANIFEST = {"id": "0123456789abcdef", "root": "00" * 32, "time": "2026-01-01T00:00:00",
                  "paths": ["/x"], "host": "h", "user": "u", "tags": {}, "stats": {}}


@FUZZ
@given(plaintexts(VALID_MANIFEST))
def test_manifest_any_plaintext(repository, plain):
    store_sealed(repository, names.MANIFEST, VALID_MANIFEST["id"], plain)
    decodes_or_refuses(load_manifest, repository, VALID_MANIFEST["id"])


VALID_SESSION = {"session_id": "0123456789abcdef", "host": "h", "user": "u", "pid": 1,
                 "started": 1.5}


@FUZZ
@given(plaintexts(VALID_SESSION))
@example(json.dumps({**VALID_SESSION, "pid": float("inf")}).encode())
def test_session_record_any_plaintext(repository, plain):
    store_sealed(repository, names.SESSION, VALID_SESSION["session_id"], plain)
    decodes_or_refuses(list_sessions, repository)


@FUZZ
@given(st.binary(max_size=200) | json_values.map(lambda v: json.dumps(v).encode()))
def test_upkeep_record_any_plaintext(repository, plain):
    store_sealed(repository, names.UPKEEP, "owner", plain)
    decodes_or_refuses(read_record, repository, "owner")


# --- trees and chunk payloads ---------------------------------------------------------------

VALID_ENTRY = {"name": "f", "type": "file", "mode": 420, "uid": 0, "gid": 0, "size": 3,
               "mtime_ns": 1, "ctime_ns": 1, "inode": 1, "dev": 1, "nlink": 1,
               "chunks": [["00" * 32, 3]]}


#: The same entry in a version 3 tree.
VALID_ROW = ["file", "f", 420, 0, 0, 3, 1, 1, 1, 1, 1, [["00" * 32, 3]], 0]


@FUZZ
@given(st.binary(max_size=300) | json_values.map(lambda v: json.dumps(v).encode())
       | json_mutations(VALID_ENTRY).map(
           lambda e: json.dumps({"v": 1, "entries": [e]}).encode())
       | row_mutations(VALID_ROW).map(lambda r: json.dumps({"v": 3, "entries": [r]}).encode()))
@example(json.dumps({"v": 1, "entries": [{**VALID_ENTRY, "ctime_ns": float("inf")}]}).encode())
@example(json.dumps({"v": 3, "entries": [[*VALID_ROW[:7], float("inf"), *VALID_ROW[8:]]]})
         .encode())
def test_tree_any_plaintext(plain):
    def only_this_chunk(chunk_id: bytes) -> bytes:  # a split tree's pieces are missing
        if chunk_id != b"\0" * 32:
            raise Corrupted(f"chunk {chunk_id.hex()} is missing from the index")
        return plain

    decodes_or_refuses(read_tree, b"\0" * 32, only_this_chunk)


@FUZZ
@given(st.binary(max_size=300) | st.binary(max_size=300).map(lambda b: b"\x01" + b))
def test_chunk_payload_any_bytes(payload):
    decodes_or_refuses(compression.decompress, payload, "chunk")
    chunk_id = b"\x01" * 32
    decodes_or_refuses(open_chunk, KEYS, chunk_id, seal(KEYS.data, payload, chunk_id))


def test_zstd_bombs_are_refused_within_the_bound():
    declared = zstandard.ZstdCompressor().compress(b"\0" * (64 * 1024 * 1024))
    assert decodes_or_refuses(compression.decompress, b"\x01" + declared, "chunk") is None
    streamed = zstandard.ZstdCompressor(write_content_size=False).compress(
        b"\0" * (32 * 1024 * 1024))
    assert decodes_or_refuses(compression.decompress, b"\x01" + streamed, "chunk") is None


# --- the config file ------------------------------------------------------------------------


@FUZZ
@given(st.binary(max_size=300) | json_values.map(
    lambda v: b"[connection]\nbackend = " + json.dumps(v).encode() + b"\n"))
def test_config_file_any_bytes(tmp_path, content):
    path = tmp_path / "corso.toml"
    path.write_bytes(content)
    decodes_or_refuses(config.load, str(path))
