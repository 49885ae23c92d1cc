"""`corso repo verify`: check that every backup can be restored, and name what cannot.

Structure (always): both format blobs decode; every index blob, manifest, deletion plan,
session and upkeep record authenticates;
every pack the index names exists with the size its entries add up to; every backup's trees
are read (authenticated, re-hashed) and every file's chunks resolve through the index to an
existing pack. `--read-data` (or a subset of packs) also downloads packs, authenticates their
headers and every chunk in them and re-hashes each chunk against its ID.

The report names each damaged blob and, for each backup it affects, the files and
directories that cannot be restored. The only write is verify's own record (`upkeep/verified`:
when, how much was read, whether it was clean) for `repo status`.
"""

from __future__ import annotations

import logging
import random
import re
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from corso_core.engine.progress import Progress, shown
from corso_core.errors import Corrupted, NotFound, StorageError, UsageError
from corso_core.repo import names
from corso_core.repo.format import FORMAT_COPY_KEY, FORMAT_KEY, FormatBlob
from corso_core.repo.packs import decode_header, header_size, open_chunk
from corso_core.sources.source import FILE
from corso_core.upkeep.chunk_map import ChunkMap, PackRef, Readable
from corso_core.upkeep.inventory import (
    KINDS,
    ChunkReader,
    chunk_matches,
    list_blobs,
    load_index,
    load_manifests,
    load_plans,
    walk_backup,
)
from corso_core.upkeep.records import VERIFIED, open_record, requests_made, write_record

READ_THREADS = 4
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Subset:
    """Which packs --read-data-subset selects: a random fraction, or slice n of t (fixed, so
    t runs with n = 1..t read every pack once, as restic's)."""

    percent: float | None = None
    slice_: tuple[int, int] | None = None

    def select(self, pack_names: list[str]) -> set[str]:
        if self.slice_ is not None:
            n, t = self.slice_
            return {p for p in pack_names if int(p[:8], 16) % t == n - 1}
        count = round(len(pack_names) * self.percent / 100)
        if self.percent > 0 and pack_names:
            count = max(count, 1)
        return set(random.sample(sorted(pack_names), count))


ALL = Subset(percent=100.0)


def parse_subset(text: str) -> Subset:
    """'N%' (0 < N <= 100) or 'n/t' (1 <= n <= t); UsageError naming the value otherwise."""
    if match := re.fullmatch(r"(\d+(?:\.\d+)?)%", text.strip()):
        percent = float(match.group(1))
        if 0 < percent <= 100:
            return Subset(percent=percent)
    elif match := re.fullmatch(r"(\d+)/(\d+)", text.strip()):
        n, t = int(match.group(1)), int(match.group(2))
        if 1 <= n <= t:
            return Subset(slice_=(n, t))
    raise UsageError(f"--read-data-subset {text!r} is neither N% (0 < N <= 100) nor n/t "
                     "(1 <= n <= t)")


@dataclass
class VerifyReport:
    problems: list[dict] = field(default_factory=list)  # {"blob": key, "problem": message}
    damaged_backups: dict[str, list[str]] = field(default_factory=dict)  # ID -> what is lost
    backups: int = 0
    packs: int = 0
    packs_read: int = 0
    bytes_read: int = 0
    unindexed_packs: int = 0  # leftovers of interrupted backups: maintenance removes them
    #: (chunk ID, pack) of each chunk read that failed authentication or its hash, or indexed
    #: past the end of a pack cut short: what `repo repair` takes out of the index.
    damaged_chunks: set[tuple[bytes, PackRef]] = field(default_factory=set)
    #: Keys of the packs missing or cut short: plain `repo repair` takes their chunks out of
    #: the index, with no need to read every pack.
    lost_packs: set[str] = field(default_factory=set)

    @property
    def clean(self) -> bool:
        return not self.problems and not self.damaged_backups

    def problem(self, blob: str, message: str) -> None:
        self.problems.append({"blob": blob, "problem": message})

    def damage(self, backup_id: str, what: str) -> None:
        self.damaged_backups.setdefault(backup_id, []).append(what)

    def as_dict(self) -> dict:
        return {"clean": self.clean, "problems": self.problems,
                "damaged_backups": self.damaged_backups, "backups": self.backups,
                "packs": self.packs, "packs_read": self.packs_read,
                "bytes_read": self.bytes_read, "unindexed_packs": self.unindexed_packs}


def _check_format(repository, report: VerifyReport) -> None:
    blobs = {}
    for key in (FORMAT_KEY, FORMAT_COPY_KEY):
        try:
            blobs[key] = repository.storage.get(key)
            decoded = FormatBlob.decode(blobs[key], key)
        except NotFound:
            report.problem(key, f"format blob {key} is missing")
            continue
        except Corrupted as e:
            report.problem(key, str(e))
            continue
        if decoded.repository_id != repository.repository_id:
            report.problem(key, f"format blob {key} belongs to repository "
                                f"{decoded.repository_id}, not {repository.repository_id}")
    if len(blobs) == 2 and not report.problems and blobs[FORMAT_KEY] != blobs[FORMAT_COPY_KEY]:
        report.problem(FORMAT_COPY_KEY, f"{FORMAT_COPY_KEY} differs from {FORMAT_KEY} (an "
                                        "interrupted passphrase change?)")


def _check_records(repository, listing, report: VerifyReport) -> None:
    """Every session and upkeep record authenticates under its own name. A deleted one cannot
    be told from one never written or gone as it should (a session's record goes when it
    ends); maintenance counts a session from its listing alone, so damage keeps it waited for."""
    for kind in (names.SESSION, names.UPKEEP):
        for name in sorted(listing[kind]):
            try:
                open_record(repository, kind, name, repository.storage.get(names.key(kind, name)))
            except NotFound:
                continue  # the session ended meanwhile
            except Corrupted as e:
                report.problem(names.key(kind, name), str(e))


def _read_pack(repository, ref: PackRef, indexed: dict[bytes, tuple[int, int]]
               ) -> tuple[list[str], set[bytes], int]:
    """(problems, chunks that failed, bytes read) for one whole pack."""
    kind, name = ref
    try:
        blob = repository.storage.get(names.key(kind, name))
    except NotFound:
        return [], set(indexed), 0  # reported by the structure check
    problems, bad = [], set()
    try:
        header = {e.chunk_id: (e.offset, e.length)
                  for e in decode_header(repository.keys, kind, name, blob, whole_blob=True)}
    except Corrupted as e:
        problems.append(str(e))
        header = None
    for chunk_id, (offset, length) in indexed.items():
        if header is not None and header.get(chunk_id) != (offset, length):
            problems.append(f"{kind} pack {name}: its header does not list chunk "
                            f"{chunk_id.hex()} where the index says it is")
        try:
            plain = open_chunk(repository.keys, chunk_id, blob[offset : offset + length])
        except Corrupted as e:
            bad.add(chunk_id)
            if header is not None:  # a damaged header was reported once already
                problems.append(f"{kind} pack {name}: {e}")
            continue
        if not chunk_matches(repository, chunk_id, plain):
            bad.add(chunk_id)
            problems.append(f"{kind} pack {name}: chunk {chunk_id.hex()} does not hash to "
                            "its ID")
    return problems, bad, len(blob)


def _check_packs(chunk_map: ChunkMap, listing, report: VerifyReport
                 ) -> set[tuple[bytes, PackRef]]:
    """Every pack the index names is stored, at least as large as its indexed entries make
    it (larger when `repo repair --read-data` took a damaged chunk of it out of the index;
    reading it checks the rest, header and trailer included). The chunks indexed past the
    end of a pack cut short: they are lost as surely as a damaged one."""
    cut: set[tuple[bytes, PackRef]] = set()
    for kind, name in sorted(chunk_map.pack_refs()):
        entries = chunk_map.pack_entries((kind, name))
        info = listing[kind].get(name)
        expected = sum(length for _, length in entries.values()) + header_size(len(entries))
        key = names.key(kind, name)
        if info is None:
            report.problem(key, f"{kind} pack {name} is missing "
                                f"({len(entries)} chunks indexed in it)")
            report.lost_packs.add(key)
        elif info.size < expected:
            report.problem(key, f"{kind} pack {name} is {info.size} bytes; "
                                f"its indexed entries make {expected}")
            report.lost_packs.add(key)
            cut |= {(chunk_id, (kind, name)) for chunk_id, (offset, length) in entries.items()
                    if offset + length > info.size}
    return cut


def _read_packs(repository, readable: Readable, refs: list[PackRef], listing,
                report: VerifyReport, progress: Progress) -> set[tuple[bytes, PackRef]]:
    """Download, authenticate and re-hash the packs; the (chunk, pack) pairs that failed."""
    bad_locations: set[tuple[bytes, PackRef]] = set()
    try:
        progress.start(sum(listing[kind][name].size for kind, name in refs))
        with ThreadPoolExecutor(READ_THREADS, thread_name_prefix="corso-verify") as pool:
            results = pool.map(lambda ref: _read_pack(repository, ref, readable.entries(ref)),
                               refs)
            for ref, (problems, bad, size) in zip(refs, results, strict=True):
                for message in problems:
                    report.problem(names.key(*ref), message)
                bad_locations.update((chunk_id, ref) for chunk_id in bad)
                report.packs_read += 1
                report.bytes_read += size
                progress.advance(files=1, nbytes=size)
    finally:
        progress.stop()
    return bad_locations


def _check_backups(repository, readable: Readable, gone: set[PackRef],
                   bad_locations: set[tuple[bytes, PackRef]], backup_ids: list[str],
                   report: VerifyReport) -> None:
    """Every backup's trees read, every file's chunks in a pack that is there and sound."""
    manifests, damaged_manifests = load_manifests(repository, backup_ids)
    for backup_id, why in sorted(damaged_manifests.items()):
        report.problem(names.key(names.MANIFEST, backup_id), why)
        report.damage(backup_id, f"manifest: {why}")
    reader = ChunkReader(repository, readable, gone)

    def sound(chunk_id: bytes) -> bool:
        return any((loc.kind, loc.pack) not in gone
                   and (chunk_id, (loc.kind, loc.pack)) not in bad_locations
                   for loc in readable.locations(chunk_id))

    for backup_id in sorted(manifests):
        def tree_damaged(path, why, backup_id=backup_id):
            where = shown(b"/".join(path)) + "/" if path else "root tree"
            report.damage(backup_id, f"{where}: {why}")

        root = bytes.fromhex(manifests[backup_id]["root"])
        for path, entry in walk_backup(reader, root, tree_damaged):
            if entry.meta.kind != FILE:
                continue
            lost = [chunk_id for chunk_id, _ in entry.chunks if not sound(chunk_id)]
            if lost:
                report.damage(backup_id, f"{shown(b'/'.join(path))}: {len(lost)} of "
                                         f"{len(entry.chunks)} chunks missing or damaged "
                                         f"(first {lost[0].hex()})")


def verify(repository, read_data: Subset | None = None,
           progress: Progress | None = None) -> VerifyReport:
    """Check the repository (see the module docstring); never raises for damage it finds."""
    report = VerifyReport()
    requests_before = dict(repository.storage.counts.requests)
    _check_format(repository, report)
    listing = list_blobs(repository.storage, (*KINDS, names.PLAN, names.UPKEEP))
    _check_records(repository, listing, report)  # before this run replaces its own record
    chunk_map, _, damaged_index = load_index(repository, listing[names.INDEX])
    for name, why in sorted(damaged_index.items()):
        report.problem(names.key(names.INDEX, name), why)
    plans, damaged_plans = load_plans(repository, list(listing[names.PLAN]))
    for name, why in sorted(damaged_plans.items()):
        report.problem(names.key(names.PLAN, name), why)
    readable = Readable.of(chunk_map, plans)  # what backups may be read from

    bad_locations = _check_packs(chunk_map, listing, report)
    stored = {(kind, name) for kind in names.PACK_KINDS for name in listing[kind]}
    report.packs = len(stored)
    report.unindexed_packs = len(stored - readable.packs())
    if read_data is not None:
        candidates = sorted(stored & readable.packs())
        chosen = read_data.select([name for _, name in candidates])
        bad_locations |= _read_packs(repository, readable,
                                     [ref for ref in candidates if ref[1] in chosen], listing,
                                     report, progress or Progress())
    report.damaged_chunks = bad_locations
    report.backups = len(listing[names.MANIFEST])
    _check_backups(repository, readable, readable.packs() - stored, bad_locations,
                   list(listing[names.MANIFEST]), report)
    try:
        write_record(repository, VERIFIED, {"clean": report.clean,
                                            "packs_read": report.packs_read,
                                            "packs": report.packs,
                                            "problems": len(report.problems),
                                            "requests": requests_made(repository.storage,
                                                                      requests_before)})
    except StorageError as e:  # read-only credentials may verify too
        log.warning("could not record this verify for repo status: %s", e)
    return report
