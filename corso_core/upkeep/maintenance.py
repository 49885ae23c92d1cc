"""`corso repo maintenance`: merge index blobs, clean up, and reclaim space, safely beside
running backups (the protocol is in docs/format.md, "Maintenance").

metadata mode: merge all index blobs into a few large ones; delete session records of dead
clients; remove leftovers of interrupted uploads (`BlobStorage.cleanup`).
complete mode, in addition:
1. finish the deletion plans that are ready (older than the safety window by the storage's
   clock, and every session alive when the plan was made has ended): re-read every backup,
   delete the planned packs nothing needs, put back into the index what a backup still uses;
2. make a new plan: packs no backup uses (and unindexed packs left by dead sessions), and
   packs rewritten (their used chunks copied into new packs) until the unused share of pack
   bytes is under --max-unused. Only packs older than the safety window are considered.
With `--safety none` the window is zero and the plan is finished in the same run, without
waiting for sessions: only for a repository no other client is writing to.
"""

from __future__ import annotations

import itertools
import logging
import os
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field

from corso_core.engine.progress import Progress, counted
from corso_core.errors import Corrupted, NotFound
from corso_core.repo import names
from corso_core.repo.crypto import OVERHEAD
from corso_core.repo.format import FORMAT_COPY_KEY, FORMAT_KEY
from corso_core.repo.index import IndexEntry, Location, encode_index, pack_index_entries
from corso_core.repo.manifests import delete_command
from corso_core.repo.packs import PACK_BUFFER_SIZE, PackWriter, open_chunk
from corso_core.repo.plans import Plan, encode_plan
from corso_core.repo.sessions import REFRESH_SECONDS
from corso_core.storage.interface import BlobInfo
from corso_core.upkeep.chunk_map import PackRef, Readable
from corso_core.upkeep.inventory import (
    KINDS,
    ChunkReader,
    chunk_matches,
    list_blobs,
    load_index,
    load_manifests,
    load_plans,
    referenced_chunks,
)
from corso_core.upkeep.records import MAINTAINED, claim_owner, requests_made, write_record

log = logging.getLogger(__name__)

#: Packs younger than this (storage clock) are never planned for deletion, and a plan is
#: finished no sooner: longer than any backup takes between checking that its deduplicated
#: chunks still exist and writing its manifest.
SAFETY_WINDOW_SECONDS = 3600.0
#: Test-only: a shorter safety window (seconds), so concurrency tests run in seconds.
SAFETY_WINDOW_ENV = "CORSO_TEST_SAFETY_WINDOW"
#: A session record not refreshed for this long belongs to a dead client.
SESSION_STALE_SECONDS = 5 * REFRESH_SECONDS
#: Leftovers of interrupted uploads older than this are removed.
UPLOAD_LEFTOVER_SECONDS = 24 * 3600.0
#: Entries per merged index blob (44 bytes each: about 4.4 MiB a blob). Every reader decodes a
#: whole blob into Python objects (~250 bytes an entry) before folding it into its compact
#: index: this bounds that passing peak to ~25 MB (250,000 entries made it ~60 MB).
INDEX_BLOB_ENTRIES = 100_000
SPACE_KINDS = (*KINDS, names.PLAN)


def safety_window() -> float:
    return float(os.environ.get(SAFETY_WINDOW_ENV) or SAFETY_WINDOW_SECONDS)


def space(blobs: Iterable[BlobInfo]) -> dict[str, dict[str, int]]:
    """Objects and bytes by kind (of one listing of the whole repository): the before/after
    figures of the report, and `repo status`'s."""
    by_kind = {kind: {"objects": 0, "bytes": 0} for kind in SPACE_KINDS}
    for info in blobs:
        kind = next((k for k in SPACE_KINDS if names.parse_key(k, info.key) is not None), None)
        if kind is not None:
            by_kind[kind]["objects"] += 1
            by_kind[kind]["bytes"] += info.size
    return by_kind


@dataclass
class MaintenanceReport:
    mode: str
    safety: str
    before: dict = field(default_factory=dict)
    after: dict = field(default_factory=dict)
    index_blobs_merged: int = 0
    sessions_removed: int = 0
    upload_leftovers_removed: int = 0
    plans_finished: int = 0
    plans_waiting: int = 0
    plans_made: int = 0
    packs_deleted: int = 0
    packs_rewritten: int = 0
    packs_kept: int = 0  # planned, but a backup still needs them: back in the index
    # unused, but younger than the safety window: a later run takes them (a backup just
    # deleted frees nothing at once)
    packs_too_young: int = 0
    packs_locked: int = 0  # unused, but under Object Lock retention: deleted by a later run
    retention_extended: int = 0  # blobs whose Object Lock retention was extended
    unused_bytes_after: int = 0

    def as_dict(self) -> dict:
        return dict(self.__dict__)


class _Run:
    """One maintenance run: the repository as read at its start, and what it changes."""

    def __init__(self, repository, now: float, window: float, report: MaintenanceReport,
                 progress: Progress) -> None:
        self.repository = repository
        self.storage = repository.storage
        self.now = now
        self.window = window
        self.report = report
        self.progress = progress
        self.session_id = names.new_short_id()  # names the index blobs this run writes
        self.sequence = 0

    # --- reading -----------------------------------------------------------------------

    def load(self) -> None:
        """The listing, the index blobs and the plans, as they are now."""
        self.listing = list_blobs(self.storage, (*KINDS, names.PLAN))
        self.index = None  # the previous map goes first: two are never held at once
        self.index, self.index_blobs, damaged = load_index(
            self.repository, self.listing[names.INDEX], cached=True)
        if damaged:
            raise Corrupted("maintenance stopped, nothing deleted: "
                            f"{counted(len(damaged), 'damaged index blob')} "
                            f"({next(iter(damaged.values()))}); run corso repo repair")
        self.plans, damaged = load_plans(self.repository, list(self.listing[names.PLAN]))
        if damaged:
            raise Corrupted(f"maintenance stopped, nothing deleted: "
                            f"{next(iter(damaged.values()))}; run corso repo repair")

    def live_sessions(self) -> set[str]:
        return {session_id for session_id, seen in self.sessions().items()
                if self.now - seen < SESSION_STALE_SECONDS}

    def sessions(self) -> dict[str, float]:
        """Session ID -> when its record was last refreshed (storage mtime). Liveness needs
        only the listing: a record that would not decode still counts as a session."""
        return {session_id: info.mtime
                for session_id, info in list_blobs(self.storage, (names.SESSION,))[
                    names.SESSION].items()}

    def used_chunks(self) -> set[bytes]:
        """Every chunk a backup refers to, read through the index and the plans; any damage
        stops maintenance before it deletes anything (it could not tell what is used).

        Another maintenance run may have moved chunks since this one read the index (rewritten
        and deleted their old pack): what looks lost is read again from a fresh listing once.
        """
        for attempt in range(2):
            readable = Readable.of(self.index, self.plans)
            manifests, damaged = load_manifests(self.repository,
                                                list(self.listing[names.MANIFEST]))
            used, damage = referenced_chunks(ChunkReader(self.repository, readable, set()),
                                             manifests)
            # A backup deleted meanwhile (another maintenance may have removed its trees) is no
            # damage: it no longer needs anything.
            problems = [why for backup_id, why in damage if self._still_there(backup_id)]
            if not damaged and not problems:
                return used
            if not attempt:
                self.load()
        if damaged:  # no repair rebuilds a manifest: the backup can only be deleted
            raise Corrupted("maintenance stopped, nothing deleted: "
                            f"{counted(len(damaged), 'backup')} with a damaged manifest, "
                            "which hides what data is in use "
                            f"({next(iter(damaged.values()))}); delete with "
                            f"{delete_command(damaged)}")
        raise Corrupted(f"maintenance stopped, nothing deleted: {problems[0]}; run corso "
                        "repo verify (and repo repair)")

    def _still_there(self, backup_id: str) -> bool:
        try:
            self.storage.stat(names.key(names.MANIFEST, backup_id))
        except NotFound:
            return False
        return True

    # --- writing -----------------------------------------------------------------------

    def write_index(self, entries: Iterable[IndexEntry]) -> None:
        """New index blobs of at most INDEX_BLOB_ENTRIES entries, named by this run; `entries`
        is consumed a blob's worth at a time (the merged index is never one list)."""
        entries = iter(entries)
        while batch := list(itertools.islice(entries, INDEX_BLOB_ENTRIES)):
            name = names.index_name(self.session_id, self.sequence)
            self.sequence += 1
            self.storage.put_new(names.key(names.INDEX, name),
                                 encode_index(self.repository.keys, name, batch))

    def replace_index(self, drop: set[PackRef], extra: list[IndexEntry]) -> None:
        """Merge every index blob read into new ones, without the packs in `drop` and with
        `extra`; then delete the blobs read (a blob written meanwhile by a backup stays)."""
        kept = (entry for ref in self.index.pack_refs() if ref not in drop
                for entry in self.index.index_entries(ref))
        self.write_index(itertools.chain(kept, extra))
        for name in self.index_blobs:
            self.storage.delete(names.key(names.INDEX, name))
        self.report.index_blobs_merged += len(self.index_blobs)

    # --- phase 2: finishing plans --------------------------------------------------------

    def finish_plans(self, at_once: bool) -> None:
        """Carry out the plans that are ready; `at_once` (--safety none): every plan, without
        waiting for the window or for sessions."""
        live = set() if at_once else self.live_sessions()

        def due(plan_id: str) -> bool:
            return at_once or self.now - self.listing[names.PLAN][plan_id].mtime >= self.window

        ready = {plan_id: plan for plan_id, plan in self.plans.items()
                 if plan.sessions is not None and due(plan_id)
                 and not (live & set(plan.sessions))}
        unfinished = {plan_id: plan for plan_id, plan in self.plans.items()
                      if plan.sessions is None and due(plan_id)}
        self.report.plans_waiting += len(self.plans) - len(ready) - len(unfinished)
        if not ready and not unfinished:
            return
        # Read again now that the sessions are known to have ended: their manifests (written
        # before their records went) are listed, and so is any index blob written since.
        self.load()
        ready = {plan_id: plan for plan_id, plan in ready.items() if plan_id in self.plans}
        unfinished = {plan_id: p for plan_id, p in unfinished.items() if plan_id in self.plans}
        used = self.used_chunks()
        restore: list[IndexEntry] = []
        doomed: set[PackRef] = set()
        for plan in ready.values():
            by_pack: dict[PackRef, list[IndexEntry]] = {}
            for entry in plan.entries:
                by_pack.setdefault((entry.location.kind, entry.location.pack), []).append(entry)
            for ref in plan.packs:
                needed = any(e.chunk_id in used and e.chunk_id not in self.index
                             for e in by_pack.get(ref, ()))
                if self.index.has_pack(ref):
                    self.report.packs_kept += 1  # indexed again since the plan: in use
                elif needed:
                    restore += by_pack[ref]
                    self.report.packs_kept += 1
                else:
                    doomed.add(ref)
        for plan in unfinished.values():  # a run died while making it: undo it
            restore += plan.entries
        if restore:
            self.write_index(restore)
        locked: set[PackRef] = set()
        for kind, pack in sorted(doomed):
            key = names.key(kind, pack)
            try:
                until = self.storage.retained_until(key)
            except NotFound:
                continue  # deleted by another run
            if until is not None and until > self.now:
                locked.add((kind, pack))  # Object Lock: deleted by a run after `until`
                continue
            self.storage.delete(key)
            self.report.packs_deleted += 1
            self.progress.advance(files=1)
        self.report.packs_locked += len(locked)
        for plan_id, plan in [*ready.items(), *unfinished.items()]:
            if plan_id in ready and locked & set(plan.packs):
                continue  # the plan stays until its locked packs can go
            self.storage.delete(names.key(names.PLAN, plan_id))
            self.plans.pop(plan_id, None)
            self.report.plans_finished += plan_id in ready

    def extend_retention(self) -> None:
        """With S3's --extend-retention: protect again every blob that stays in use."""
        if not self.storage.extend_retention(names.key(names.UPKEEP, "owner")):
            return
        self.load()
        planned = {ref for plan in self.plans.values() for ref in plan.packs}
        keys = [FORMAT_KEY, FORMAT_COPY_KEY]
        for kind in (*names.PACK_KINDS, names.INDEX, names.MANIFEST):
            keys += [info.key for name, info in self.listing[kind].items()
                     if (kind, name) not in planned]
        for key in keys:
            try:
                self.storage.extend_retention(key)
            except NotFound:
                continue  # removed meanwhile (a merged index blob, a deleted backup)
            self.report.retention_extended += 1

    # --- phase 1: planning ---------------------------------------------------------------

    def plan(self, max_unused: float) -> str | None:
        """Write a deletion plan and the index without its packs; the plan's ID, or None."""
        used, stored, used_bytes = self.located_use()
        planned = {ref for plan in self.plans.values() for ref in plan.packs}
        live = self.live_sessions()
        protected = {ref for name, refs in self.index_blobs.items()
                     if name.split(".")[0] in live for ref in refs}

        def old(ref: PackRef) -> bool:
            return self.now - stored[ref].mtime >= self.window

        candidates = [ref for ref in stored if ref not in planned and ref not in protected
                      and old(ref)]
        unused_packs = [ref for ref in candidates if not used_bytes[ref]]
        self.report.packs_too_young = sum(
            1 for ref in stored if ref not in planned and ref not in protected
            and not used_bytes[ref] and not old(ref))
        counted = [ref for ref in stored if ref not in planned]  # planned: going already
        total = sum(stored[ref].size for ref in counted)
        unused = {ref: stored[ref].size - used_bytes[ref] for ref in counted}
        remaining = sum(unused.values()) - sum(unused[ref] for ref in unused_packs)
        rewrite = []
        for ref in sorted((r for r in candidates if used_bytes[r]),
                          key=lambda r: used_bytes[r] / stored[r].size):
            if remaining <= total * max_unused / 100:
                break
            if unused[ref] > OVERHEAD + 64:  # a pack with a header's worth of waste stays
                rewrite.append(ref)
                remaining -= unused[ref]
        self.report.unused_bytes_after = max(remaining, 0)
        if not unused_packs and not rewrite:
            return None
        copies = self.copy_used(rewrite, used, stored)
        goners = set(unused_packs) | set(rewrite)
        plan_id = names.new_short_id()
        entries = tuple(entry for ref in sorted(goners)
                        for entry in self.index.index_entries(ref))
        key = names.key(names.PLAN, plan_id)
        keys = self.repository.keys
        self.storage.put_new(key, encode_plan(keys, Plan(plan_id, None, tuple(sorted(goners)),
                                                         entries)))
        self.replace_index(goners, copies)
        # Every session that may have read the old index blobs is alive now or has ended.
        sessions = tuple(sorted(self.live_sessions()))
        self.storage.put(key, encode_plan(keys, Plan(plan_id, sessions, tuple(sorted(goners)),
                                                     entries)))
        self.plans[plan_id] = Plan(plan_id, sessions, tuple(sorted(goners)), entries)
        self.listing[names.PLAN][plan_id] = self.storage.stat(key)
        self.report.plans_made += 1
        self.report.packs_rewritten += len(rewrite)
        return plan_id

    def located_use(self) -> tuple[set[bytes], dict[PackRef, BlobInfo], Counter[PackRef]]:
        """The chunks backups use, the packs stored, and the bytes each pack holds of them.

        Every used chunk must be in a stored pack the index lists, or a deletion plan does (a
        backup that deduplicated against a planned chunk keeps it: docs/format.md): a pack
        that no index blob lists looks unused, so one whose index blob was lost would be
        deleted with what backups still need in it, and one that is gone cannot be read.
        Either stops the run before it deletes anything (repo repair indexes packs again, and
        forgets lost ones).
        What another maintenance run moved meanwhile is looked for again, once.
        """
        for attempt in range(2):
            used = self.used_chunks()
            stored = {(kind, name): info for kind in names.PACK_KINDS
                      for name, info in self.listing[kind].items()}
            used_bytes: Counter[PackRef] = Counter()
            lost = []
            planned = Readable.of(self.index, self.plans).planned  # a backup may use those
            for chunk_id in used:
                location = self.counted_copy(chunk_id, stored)
                if location is not None:
                    used_bytes[(location.kind, location.pack)] += location.length
                elif not any((loc.kind, loc.pack) in stored
                             for loc in planned.locations(chunk_id)):
                    lost.append(chunk_id)
            if not lost:
                return used, stored, used_bytes
            if not attempt:
                self.load()
        raise Corrupted("maintenance stopped, nothing deleted: "
                        f"{counted(len(lost), 'chunk')} that backups use, found in no stored "
                        f"pack the index lists (chunk {lost[0].hex()}): an index blob or a "
                        "pack is lost; run corso repo verify, then corso repo repair")

    def counted_copy(self, chunk_id: bytes, stored) -> Location | None:
        """The copy of a used chunk that counts as used (and is kept): the first indexed in a
        pack that is stored. Worked out again when needed rather than held for every chunk."""
        for location in self.index.locations(chunk_id):
            if (location.kind, location.pack) in stored:
                return location
        return None

    def copy_used(self, packs: list[PackRef], used: set[bytes], stored) -> list[IndexEntry]:
        """Copy the used chunks of `packs` into new packs (authenticated and re-hashed on
        the way: damage is never copied); the new packs' index entries."""
        writers: dict[str, PackWriter] = {}
        entries: list[IndexEntry] = []

        def store(writer: PackWriter) -> None:
            with writer.finish(self.repository.keys) as blob:
                self.storage.put_new(names.key(writer.kind, writer.name), blob)
            entries.extend(pack_index_entries(writer.kind, writer.name, writer.entries()))

        for kind, pack in packs:
            try:
                blob = self.storage.get(names.key(kind, pack))
            except NotFound:
                continue  # another run rewrote it first: its chunks are copied already
            for chunk_id, (offset, length) in self.index.pack_entries((kind, pack)).items():
                if chunk_id not in used:
                    continue
                counted = self.counted_copy(chunk_id, stored)
                if (counted.kind, counted.pack) != (kind, pack):
                    continue
                sealed = blob[offset : offset + length]
                plain = open_chunk(self.repository.keys, chunk_id, sealed)
                if not chunk_matches(self.repository, chunk_id, plain):
                    raise Corrupted(f"maintenance stopped: chunk {chunk_id.hex()} in {kind} "
                                    f"pack {pack} does not hash to its ID; run corso repo verify")
                writer = writers.get(kind)
                if writer is None:
                    writer = writers[kind] = PackWriter(kind, bytearray(PACK_BUFFER_SIZE))
                writer.add(chunk_id, sealed)
                if writer.full():
                    store(writers.pop(kind))
            self.progress.advance(files=1)
        for writer in writers.values():
            store(writer)
        return entries

    # --- metadata upkeep -------------------------------------------------------------------

    def clean_sessions(self) -> None:
        for session_id, seen in self.sessions().items():
            if self.now - seen >= SESSION_STALE_SECONDS:
                self.storage.delete(names.key(names.SESSION, session_id))
                self.report.sessions_removed += 1


def run_maintenance(repository, *, mode: str = "complete", max_unused: float = 5.0,
                    safety: str = "full", user: str, host: str, force: bool = False,
                    progress: Progress | None = None) -> MaintenanceReport:
    """One maintenance run (see the module docstring); safe beside running backups and
    other maintenance runs when `safety` is "full"."""
    if mode not in ("metadata", "complete") or safety not in ("full", "none"):
        raise ValueError(f"mode {mode!r}, safety {safety!r}")
    progress = progress or Progress()
    report = MaintenanceReport(mode, safety)
    requests_before = dict(repository.storage.counts.requests)
    now = claim_owner(repository, user, host, force)
    report.before = space(repository.storage.list())
    window = safety_window() if safety == "full" else 0.0
    run = _Run(repository, now, window, report, progress)
    try:
        progress.start(None)
        run.clean_sessions()
        report.upload_leftovers_removed = repository.storage.cleanup(
            UPLOAD_LEFTOVER_SECONDS if safety == "full" else 0.0)
        if mode == "complete":
            run.load()
            run.finish_plans(at_once=safety == "none")
            run.load()
            made = run.plan(max_unused)
            if made and safety == "none":
                run.load()
                run.finish_plans(at_once=True)
            run.extend_retention()
        run.load()  # as it is now, after what this run and others changed
        if len(run.index_blobs) > 1:
            run.replace_index(set(), [])
    finally:
        progress.stop()
    report.after = space(repository.storage.list())
    write_record(repository, MAINTAINED, {
        "user": user, "host": host, "mode": mode, "safety": safety, "after": report.after,
        "requests": requests_made(repository.storage, requests_before)})
    return report
