"""Backup manifests: the record of one backup, and the last blob a backup writes.

A manifest is a JSON object (ID, time, host, user, paths, tags, stats, root tree: the engine
decides its fields) sealed with the metadata key and bound to `backup` and its ID, stored
create-only at `backups/<ID>`. Everything it refers to (packs, index blobs) is stored before
it, so a backup either has a manifest and all its data, or does not exist.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

from corso_core.errors import Corrupted, NotFound
from corso_core.repo import names
from corso_core.repo.cache import BlobCache
from corso_core.repo.crypto import metadata_associated_data, seal, unseal

log = logging.getLogger(__name__)


def _associated_data(backup_id: str) -> bytes:
    return metadata_associated_data(names.MANIFEST, backup_id)


def _decode(repository, backup_id: str, blob: bytes) -> dict:
    what = f"manifest of backup {backup_id}"
    plain = unseal(repository.keys.metadata, blob, _associated_data(backup_id), what)
    try:
        manifest = json.loads(plain)
    except ValueError:
        raise Corrupted(f"{what} is corrupted: not JSON") from None
    if not isinstance(manifest, dict) or manifest.get("id") != backup_id:
        raise Corrupted(f"{what} is corrupted: it does not describe backup {backup_id}")
    return manifest


def _no_backup(repository, backup_id: str, then: str = "") -> NotFound:
    """The error for an ID no backup has: a typo, or a shortened ID, most often."""
    return NotFound(f"no backup {backup_id} in the repository at "
                    f"{repository.storage.location()}{then} (IDs are {names.SHORT_ID_LENGTH} "
                    "hex digits, in full; corso backup list SOURCE shows them)")


def _key(repository, backup_id: str) -> str:
    """The manifest's key; NotFound naming the ID if it cannot be one of ours."""
    try:
        return names.key(names.MANIFEST, backup_id)
    except ValueError:
        raise _no_backup(repository, repr(backup_id)) from None


def save_manifest(repository, manifest: dict) -> str:
    """Store the manifest under a new backup ID (added to it as "id") and return the ID."""
    backup_id = names.new_short_id()
    plain = json.dumps({**manifest, "id": backup_id}, sort_keys=True).encode()
    blob = seal(repository.keys.metadata, plain, _associated_data(backup_id))
    repository.storage.put_new(_key(repository, backup_id), blob)
    return backup_id


def load_manifest(repository, backup_id: str) -> dict:
    """The manifest; NotFound naming the ID if there is no such backup.

    Always read from the repository (one small GET): a cached copy would outlive a delete.
    """
    key = _key(repository, backup_id)
    try:
        return _decode(repository, backup_id, repository.storage.get(key))
    except NotFound:
        raise _no_backup(repository, backup_id) from None


def list_manifests(repository, *, cache_dir: str | None = None,
                   on_damaged: Callable[[str, str], None] | None = None) -> list[dict]:
    """Every readable manifest, oldest first (by "time", then ID).

    A manifest that fails authentication is left out and passed to `on_damaged(ID, why)` (by
    default logged): one damaged backup must not hide the others.
    """
    prefix = names.prefix(names.MANIFEST)
    ids = [backup_id for info in repository.storage.list(prefix)
           if (backup_id := names.parse_key(names.MANIFEST, info.key)) is not None]
    cache = BlobCache(repository.repository_id, cache_dir)
    damaged: dict[str, str] = {}

    def load(backup_id: str) -> dict | None:
        try:
            return cache.fetch(repository.storage, names.key(names.MANIFEST, backup_id),
                               lambda blob: _decode(repository, backup_id, blob))
        except Corrupted as e:
            damaged[backup_id] = str(e)
        except NotFound:
            pass  # deleted while we listed
        return None

    with ThreadPoolExecutor(8, thread_name_prefix="corso-manifests") as pool:
        manifests = [m for m in pool.map(load, ids) if m is not None]
    report = on_damaged or (lambda backup_id, why: log.warning("skipping backup %s: %s",
                                                               backup_id, why))
    for backup_id, why in sorted(damaged.items()):
        report(backup_id, why)
    for stale in cache.keys(prefix) - {names.key(names.MANIFEST, i) for i in ids}:
        cache.discard(stale)
    return sorted(manifests, key=lambda m: (str(m.get("time", "")), m["id"]))


def delete_command(backup_ids) -> str:
    """The way out for backups whose manifests are damaged: a manifest cannot be rebuilt, and
    any source's `backup delete` removes one (its source cannot be read to check)."""
    return f"corso backup delete files --backups {','.join(sorted(backup_ids))}"


def delete_manifests(repository, ids: list[str], *, cache_dir: str | None = None) -> None:
    """Remove the backups' manifests; if any ID is unknown, NotFound names it and nothing goes."""
    keys = [_key(repository, backup_id) for backup_id in ids]
    for backup_id, key in zip(ids, keys, strict=True):
        try:
            repository.storage.stat(key)
        except NotFound:
            raise _no_backup(repository, backup_id, "; nothing deleted") from None
    cache = BlobCache(repository.repository_id, cache_dir)
    for key in keys:
        repository.storage.delete(key)
        cache.discard(key)
