"""Blob kinds and their key names: the one place that says where each kind of blob lives.

Every key a repository writes matches one of the patterns below, so listing a prefix and
filtering with `parse_key` finds only our own blobs (a stray object in the bucket is ignored,
never deleted). Names are short, use `/` only between non-empty segments and satisfy the
filesystem backend's rule `[A-Za-z0-9][A-Za-z0-9._-]*(/[A-Za-z0-9][A-Za-z0-9._-]*)*`.
"""

from __future__ import annotations

import re
import secrets

#: Pack of file-content chunks.
DATA_PACK = "data"
#: Pack of metadata chunks (directory trees): listing and browsing read only these.
TREE_PACK = "tree"
PACK_KINDS = (DATA_PACK, TREE_PACK)
INDEX = "index"
MANIFEST = "backup"
SESSION = "session"
#: Maintenance's deletion plans (corso_core/repo/plans.py).
PLAN = "plan"
#: Upkeep records: the maintenance owner, the last maintenance and verify, a clock probe.
UPKEEP = "upkeep"

#: Kind -> (listing prefix, pattern of the part after the prefix).
_SCHEMES = {
    DATA_PACK: ("data/", re.compile(r"[0-9a-f]{2}/([0-9a-f]{32})")),
    TREE_PACK: ("tree/", re.compile(r"[0-9a-f]{2}/([0-9a-f]{32})")),
    INDEX: ("index/", re.compile(r"([0-9a-f]{16}\.[0-9]{6})")),
    MANIFEST: ("backups/", re.compile(r"([0-9a-f]{16})")),
    SESSION: ("sessions/", re.compile(r"([0-9a-f]{16})")),
    PLAN: ("plans/", re.compile(r"([0-9a-f]{16})")),
    UPKEEP: ("upkeep/", re.compile(r"(owner|maintained|verified|clock)")),
}


def is_blob_key(key: str) -> bool:
    """Whether `key` is the key of a blob of one of the kinds above: what a storage may take
    for a repository's own among others' (the multipart uploads maintenance aborts)."""
    return any(parse_key(kind, key) is not None for kind in _SCHEMES)


def new_pack_name() -> str:
    """Packs are named by 128 random bits: unique without coordination between clients."""
    return secrets.token_hex(16)


#: Hex digits of a session or backup ID.
SHORT_ID_LENGTH = 16


def new_short_id() -> str:
    """Session and backup IDs: 64 random bits, short enough to type."""
    return secrets.token_hex(SHORT_ID_LENGTH // 2)


def index_name(session_id: str, sequence: int) -> str:
    """The n-th index blob a session writes (its checkpoints, then its final one)."""
    return f"{session_id}.{sequence:06d}"


def prefix(kind: str) -> str:
    return _SCHEMES[kind][0]


def key(kind: str, name: str) -> str:
    """The storage key of the blob of `kind` called `name` (checked against the scheme)."""
    start, pattern = _SCHEMES[kind]
    rest = f"{name[:2]}/{name}" if kind in PACK_KINDS else name
    if not pattern.fullmatch(rest):
        raise ValueError(f"invalid {kind} name {name!r}")
    return start + rest


def parse_key(kind: str, storage_key: str) -> str | None:
    """The name inside a listed key of `kind`, or None for a key that is not ours."""
    start, pattern = _SCHEMES[kind]
    if not storage_key.startswith(start):
        return None
    match = pattern.fullmatch(storage_key[len(start) :])
    if match is None or (kind in PACK_KINDS and storage_key[len(start) : len(start) + 2]
                         != match.group(1)[:2]):
        return None
    return match.group(1)
