"""Directory trees: how one directory's entries are encoded into a "tree" chunk.

A tree is canonical JSON (sorted keys, no spaces, UTF-8) so that an unchanged directory encodes
to the same bytes and deduplicates to the same chunk. Names and symlink targets are bytes; those
that are valid UTF-8 are stored as "name"/"target", others base64-encoded as
"name_b64"/"target_b64". docs/format.md describes every field.
"""

from __future__ import annotations

import base64
import json
import operator
from dataclasses import dataclass, field

from corso_core.errors import Corrupted
from corso_core.sources.source import DIR, FILE, SYMLINK, Metadata

FORMAT_VERSION = 1
_KINDS = (FILE, DIR, SYMLINK)
_INT_FIELDS = tuple(name for name, default in Metadata._field_defaults.items()
                    if type(default) is int)
#: A record's integer fields in Metadata's own order (right after `kind`), in one C call.
_INT_VALUES = operator.itemgetter(*_INT_FIELDS)
assert list(Metadata._fields) == ["kind", *_INT_FIELDS, "target"]
#: Sorted keys, no spaces, UTF-8 as is: equal entries always give equal bytes.
_CANONICAL = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False)


@dataclass
class Entry:
    """One node of a backup: its metadata and where its content is.

    `recent` marks a file whose mtime or ctime was within a second of the moment it was read:
    a same-size rewrite in that same tick would be invisible, so the next backup re-reads it.
    """

    name: bytes
    meta: Metadata
    chunks: list[tuple[bytes, int]] = field(default_factory=list)  # FILE: (chunk ID, size)
    subtree: bytes | None = None  # DIR: the tree chunk's ID
    recent: bool = False


def _put_bytes(record: dict, key: str, value: bytes) -> None:
    try:
        record[key] = value.decode("utf-8")
    except UnicodeDecodeError:
        record[key + "_b64"] = base64.b64encode(value).decode("ascii")


def _get_bytes(record: dict, key: str) -> bytes:
    text = record.get(key)
    if text is not None:
        return text.encode("utf-8")
    if key + "_b64" in record:
        return base64.b64decode(record[key + "_b64"], validate=True)
    return b""


def _encode_entry(entry: Entry) -> dict:
    meta = entry.meta
    record: dict = {name: getattr(meta, name) for name in _INT_FIELDS}
    record["type"] = meta.kind
    _put_bytes(record, "name", entry.name)
    if meta.kind == SYMLINK:
        _put_bytes(record, "target", meta.target)
    if meta.kind == FILE:
        record["chunks"] = [[chunk_id.hex(), size] for chunk_id, size in entry.chunks]
        if entry.recent:
            record["recent"] = True
    if meta.kind == DIR:
        record["tree"] = entry.subtree.hex()
    return record


def _decode_entry(record: dict) -> Entry:
    kind = record["type"]
    if kind not in _KINDS:
        raise ValueError(f"unknown entry type {kind!r}")
    target = _get_bytes(record, "target") if kind == SYMLINK else b""
    meta = Metadata(kind, *map(int, _INT_VALUES(record)), target)
    if kind == FILE:
        chunks = [(bytes.fromhex(c), int(n)) for c, n in record.get("chunks", ())]
        return Entry(_get_bytes(record, "name"), meta, chunks, None,
                     bool(record.get("recent", False)))
    subtree = bytes.fromhex(record["tree"]) if kind == DIR else None
    return Entry(_get_bytes(record, "name"), meta, [], subtree)


def contains_itself(tree_id: bytes) -> Corrupted:
    """The error of a walk that meets a tree inside itself: tree IDs are hashes, so only a
    tree written to fit one (by someone holding the key) does; followed, it never ends."""
    return Corrupted(f"tree {tree_id.hex()} contains itself (a damaged backup)")


def encode_tree(entries: list[Entry]) -> bytes:
    """The tree chunk's plaintext; entries are sorted by name bytes here."""
    ordered = sorted(entries, key=lambda e: e.name)
    document = {"v": FORMAT_VERSION, "entries": [_encode_entry(e) for e in ordered]}
    return _CANONICAL.encode(document).encode()


def decode_tree(data: bytes, tree_id: bytes) -> list[Entry]:
    """The entries of a tree chunk; Corrupted naming the tree if it does not decode."""
    try:
        document = json.loads(data)
        if document.get("v") != FORMAT_VERSION:
            raise ValueError(f"unknown tree version {document.get('v')!r}")
        return [_decode_entry(record) for record in document["entries"]]
    except (ValueError, KeyError, TypeError, AttributeError, OverflowError, RecursionError) as e:
        raise Corrupted(f"tree {tree_id.hex()} does not decode: {e}") from None
