"""`corso repo repair`: rebuild lost or damaged index blobs from the packs themselves.

Every pack carries its own sealed header (chunk IDs and lengths), so the index is redundant:
repair reads the header of each stored pack that no sound index blob (or deletion plan)
covers, writes new index blobs for them, then removes the damaged index blobs and plans.
Packs left by interrupted backups get indexed too; maintenance later removes what no backup
uses. Afterwards the structure is checked again, and each backup still damaged is reported
with the reason (a lost pack cannot be rebuilt from anything); a backup whose manifest is
damaged is reported apart: its data may well be there, but only deleting it is left.

A pack the index lists that is not stored (lost) is taken out of the index the same way as a
damaged chunk below, and for the same reason: backups stop deduplicating against it.

With `read_data`, every pack is also read, and each chunk that fails authentication or its
hash is taken out of the index (its index blobs are written again without it, then the old
ones deleted). The backups that used it stay damaged, but the next backup no longer
deduplicates against it, nor takes an unchanged file's chunks from the backup before: it reads
the file and stores the chunk again, so the repository heals from the files that still have
it. A backup running meanwhile finds the chunk gone before it writes its manifest, and stores
it again too (docs/format.md, "Concurrency").
"""

from __future__ import annotations

from dataclasses import dataclass, field

from corso_core.engine.progress import Progress
from corso_core.errors import Corrupted, NotFound
from corso_core.repo import names
from corso_core.repo.index import IndexEntry, decode_index, encode_index, pack_index_entries
from corso_core.repo.packs import read_header
from corso_core.upkeep.chunk_map import PackRef, Readable
from corso_core.upkeep.inventory import KINDS, list_blobs, load_index, load_plans
from corso_core.upkeep.maintenance import INDEX_BLOB_ENTRIES
from corso_core.upkeep.verify import ALL, verify


@dataclass
class RepairReport:
    packs_indexed: int = 0
    index_blobs_written: int = 0
    removed: list[str] = field(default_factory=list)  # damaged index blobs and plans
    unreadable_packs: dict[str, str] = field(default_factory=dict)  # key -> why
    # backup -> why: data it uses is not in the repository (a file's data comes back when a
    # later backup of files that still hold it stores it again; a lost tree does not)
    incomplete: dict[str, list[str]] = field(default_factory=dict)
    damaged_manifests: dict[str, str] = field(default_factory=dict)  # backup -> why
    damaged_chunks_dropped: int = 0  # index entries taken out (damaged, cut off)
    lost_packs_forgotten: list[str] = field(default_factory=list)  # indexed, not stored

    def as_dict(self) -> dict:
        return dict(self.__dict__)


def run_repair(repository, progress: Progress | None = None, *,
               read_data: bool = False) -> RepairReport:
    progress = progress or Progress()
    storage, keys = repository.storage, repository.keys
    report = RepairReport()
    listing = list_blobs(storage, (*KINDS, names.PLAN))
    index, _, damaged_index = load_index(repository, listing[names.INDEX])
    plans, damaged_plans = load_plans(repository, list(listing[names.PLAN]))
    covered = Readable.of(index, plans).packs()
    uncovered = sorted((kind, name) for kind in names.PACK_KINDS for name in listing[kind]
                       if (kind, name) not in covered)
    entries: list[IndexEntry] = []
    try:
        progress.start(None)
        for kind, name in uncovered:
            try:
                header = read_header(storage, keys, kind, name)
            except NotFound:
                continue  # deleted by maintenance meanwhile
            except Corrupted as e:
                report.unreadable_packs[names.key(kind, name)] = str(e)
                continue
            entries += pack_index_entries(kind, name, header)
            report.packs_indexed += 1
            progress.advance(files=1)
    finally:
        progress.stop()
    session_id = names.new_short_id()
    for sequence, start in enumerate(range(0, len(entries), INDEX_BLOB_ENTRIES)):
        name = names.index_name(session_id, sequence)
        storage.put_new(names.key(names.INDEX, name),
                        encode_index(keys, name, entries[start : start + INDEX_BLOB_ENTRIES]))
        report.index_blobs_written += 1
    # Only now that their packs are indexed again do the damaged blobs go.
    for key in [names.key(names.INDEX, n) for n in sorted(damaged_index)] + [
            names.key(names.PLAN, n) for n in sorted(damaged_plans)]:
        storage.delete(key)
        report.removed.append(key)
    stored = {(kind, name) for kind in names.PACK_KINDS for name in listing[kind]}
    lost = {ref for ref in index.pack_refs() if ref not in stored and _lost(storage, ref)}
    if lost:
        report.lost_packs_forgotten = sorted(names.key(*ref) for ref in lost)
        _drop_from_index(repository, {(entry.chunk_id, ref) for ref in lost
                                      for entry in index.index_entries(ref)})
    checked = verify(repository, ALL if read_data else None, progress)
    if checked.damaged_chunks:
        report.damaged_chunks_dropped = _drop_from_index(repository, checked.damaged_chunks)
        checked = verify(repository)  # what the backups have lost, now without them
    report.damaged_manifests = {
        backup_id: p["problem"] for p in checked.problems
        if (backup_id := names.parse_key(names.MANIFEST, p["blob"])) is not None}
    report.incomplete = {backup_id: lost for backup_id, lost in
                         checked.damaged_backups.items()
                         if backup_id not in report.damaged_manifests}
    return report


def _lost(storage, ref: PackRef) -> bool:
    """Whether a pack the index lists, missing from the listing, is really gone: packs were
    listed before the index blobs, so a backup may have stored one (and indexed it) since."""
    try:
        storage.stat(names.key(*ref))
    except NotFound:
        return True
    return False


def _drop_from_index(repository, damaged: set[tuple[bytes, PackRef]]) -> int:
    """Write again, without the damaged chunks' entries, each index blob that lists one, then
    delete it; the number of entries taken out."""
    storage, keys = repository.storage, repository.keys
    listing = list_blobs(storage, (names.INDEX,))[names.INDEX]
    _, packs_by_blob, _ = load_index(repository, listing)
    damaged_packs = {ref for _, ref in damaged}
    session_id, sequence, dropped = names.new_short_id(), 0, 0
    for blob_name, packs in sorted(packs_by_blob.items()):
        if not packs & damaged_packs:
            continue
        entries = decode_index(keys, blob_name, storage.get(names.key(names.INDEX, blob_name)))
        kept = [e for e in entries
                if (e.chunk_id, (e.location.kind, e.location.pack)) not in damaged]
        if len(kept) == len(entries):
            continue
        dropped += len(entries) - len(kept)
        if kept:
            name = names.index_name(session_id, sequence)
            sequence += 1
            storage.put_new(names.key(names.INDEX, name), encode_index(keys, name, kept))
        storage.delete(names.key(names.INDEX, blob_name))
    return dropped
