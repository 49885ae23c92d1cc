"""Deletion plans: the first phase of maintenance's two-phase delete (docs/format.md,
"Maintenance").

Maintenance never deletes a pack the moment it finds it unused. It first writes a plan
(`plans/<id>`, create-only) naming the packs it means to delete and the index entries it is
taking out of the index blobs, then replaces those index blobs. New backups therefore stop
deduplicating against the planned chunks, while readers still find them through the plan
(a backup that was running when the plan was made may have referred to them). A later
maintenance run deletes the planned packs that are still unused once the safety window has
passed, and puts the rest back into the index.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from corso_core.errors import Corrupted
from corso_core.repo import names
from corso_core.repo.crypto import Keys, metadata_associated_data, seal, unseal
from corso_core.repo.index import IndexEntry, Location


@dataclass(frozen=True)
class Plan:
    plan_id: str
    #: Sessions alive when the plan was made: the plan waits until each has ended. None while
    #: the plan is being made (a plan left so by a crash is undone, never carried out).
    sessions: tuple[str, ...] | None
    #: (kind, name) of each pack to delete, indexed or not.
    packs: tuple[tuple[str, str], ...]
    #: The index entries taken out of the index: readers still find the chunks here.
    entries: tuple[IndexEntry, ...]


def encode_plan(keys: Keys, plan: Plan) -> bytes:
    document = {
        "id": plan.plan_id,
        "sessions": None if plan.sessions is None else list(plan.sessions),
        "packs": [list(ref) for ref in plan.packs],
        "entries": [[chunk_id.hex(), *location] for chunk_id, location in plan.entries],
    }
    return seal(keys.metadata, json.dumps(document, sort_keys=True).encode(),
                metadata_associated_data(names.PLAN, plan.plan_id))


def decode_plan(keys: Keys, plan_id: str, blob: bytes) -> Plan:
    """The plan; Corrupted naming it if it fails authentication or does not decode."""
    what = f"deletion plan {plan_id}"
    plain = unseal(keys.metadata, blob, metadata_associated_data(names.PLAN, plan_id), what)
    try:
        document = json.loads(plain)
        if document["id"] != plan_id:
            raise ValueError("it names another plan")
        packs = tuple((str(kind), str(name)) for kind, name in document["packs"])
        entries = tuple(
            IndexEntry(bytes.fromhex(chunk), Location(str(kind), str(pack), int(offset),
                                                      int(length)))
            for chunk, kind, pack, offset, length in document["entries"])
        sessions = (None if document["sessions"] is None
                    else tuple(str(s) for s in document["sessions"]))
        for kind, name in packs + tuple((e.location.kind, e.location.pack) for e in entries):
            names.key(kind, name)  # a kind and name of ours, or ValueError
        if any(len(e.chunk_id) != 32 for e in entries):
            raise ValueError("a chunk ID is not 32 bytes")
    except (ValueError, KeyError, TypeError, AttributeError, OverflowError) as e:
        raise Corrupted(f"{what} is corrupted: {e}") from None
    return Plan(plan_id, sessions, packs, entries)
