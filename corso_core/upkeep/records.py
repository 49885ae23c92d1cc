"""Upkeep records in the repository: who owns maintenance, and when maintenance and verify
last ran (for `repo status`). Small sealed JSON blobs under `upkeep/`.

The owner record is not a lock. Backups never read it; two maintenance runs at once are safe
by the protocol (docs/format.md, "Maintenance"); the record only keeps a second user or host
from duplicating the owner's work, and is taken over with --force or once it is stale.
Its storage mtime, written at the start of a run, is also how maintenance reads the
storage's clock.
"""

from __future__ import annotations

import getpass
import json
import socket

from corso_core.errors import Corrupted, NotFound, RepositoryError
from corso_core.repo import names
from corso_core.repo.crypto import metadata_associated_data, seal, unseal

OWNER = "owner"
MAINTAINED = "maintained"
VERIFIED = "verified"
CLOCK = "clock"
#: An owner that has not run maintenance for this long (storage clock) may be taken over.
OWNER_STALE_SECONDS = 7 * 24 * 3600.0


def requests_made(storage, before: dict[str, int]) -> dict[str, int]:
    """Requests by kind (GET, PUT, …) the storage made since its counts were `before`: what a
    run cost on metered storage, recorded for repo status."""
    return {kind: n - before.get(kind, 0) for kind, n in sorted(storage.counts.requests.items())
            if n > before.get(kind, 0)}


def write_record(repository, name: str, record: dict) -> float:
    """Replace the record; returns its storage mtime (the storage's 'now')."""
    key = names.key(names.UPKEEP, name)
    repository.storage.put(key, seal(repository.keys.metadata,
                                     json.dumps(record, sort_keys=True).encode(),
                                     metadata_associated_data(names.UPKEEP, name)))
    return repository.storage.stat(key).mtime


def read_record(repository, name: str) -> tuple[dict, float] | None:
    """(record, storage mtime), or None if there is none; Corrupted naming it if damaged."""
    key = names.key(names.UPKEEP, name)
    try:
        info = repository.storage.stat(key)
        blob = repository.storage.get(key)
    except NotFound:
        return None
    return open_record(repository, names.UPKEEP, name, blob), info.mtime


def open_record(repository, kind: str, name: str, blob: bytes) -> dict:
    """A sealed JSON record (an upkeep or session record) authenticated under its own key,
    so one swapped for another fails; Corrupted naming it otherwise."""
    what = f"{kind} record {name}"
    plain = unseal(repository.keys.metadata, blob, metadata_associated_data(kind, name), what)
    try:
        record = json.loads(plain)
        if not isinstance(record, dict):
            raise ValueError
    except ValueError:
        raise Corrupted(f"{what} is corrupted: not a JSON object") from None
    return record


def default_owner() -> tuple[str, str]:
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = "unknown"
    return user, socket.gethostname()


def storage_now(repository) -> float:
    """The storage's clock: the mtime of a record written just now (never the local clock)."""
    return write_record(repository, CLOCK, {})


def claim_owner(repository, user: str, host: str, force: bool) -> float:
    """Become (or stay) the maintenance owner; returns the storage's current time.

    Another owner is refused unless `force` or its record is older than OWNER_STALE_SECONDS
    by the storage's clock; a damaged record is replaced (it only ever saves duplicated work).
    """
    now = storage_now(repository)
    try:
        found = read_record(repository, OWNER)
    except Corrupted:
        found = None
    if found is not None and not force:
        owner, seen = found
        if ((owner.get("user"), owner.get("host")) != (user, host)
                and now - seen < OWNER_STALE_SECONDS):
            raise RepositoryError(
                f"maintenance of this repository is owned by {owner.get('user')}@"
                f"{owner.get('host')} (claimed {now - seen:.0f} s ago); run it there, or take "
                "it over with --force")
    write_record(repository, OWNER, {"user": user, "host": host})
    return now
