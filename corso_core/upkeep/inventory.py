"""What a repository holds, read blob by blob: the listing, every index blob and manifest,
and the chunks each backup refers to. Shared by verify, maintenance, repair and status.

Unlike a ChunkStore, which needs one working union, the inventory keeps each blob's fate:
an index blob or manifest that fails authentication is recorded as damaged (with the reason)
and the rest is still read, so one bad blob never hides the others.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import blake3

from corso_core.engine.tree import Entry, read_tree
from corso_core.errors import Corrupted, NotFound
from corso_core.repo import names
from corso_core.repo.cache import BlobCache
from corso_core.repo.index import IndexEntry, decode_index
from corso_core.repo.manifests import load_manifest
from corso_core.repo.packs import open_chunk
from corso_core.repo.plans import Plan, decode_plan
from corso_core.sources.source import DIR, FILE
from corso_core.storage.interface import BlobInfo
from corso_core.upkeep.chunk_map import ChunkMap, PackRef, Readable

#: Every kind of blob the inventory lists, in the order reports show them.
KINDS = (names.DATA_PACK, names.TREE_PACK, names.INDEX, names.MANIFEST, names.SESSION)
#: Bytes of index blobs decoded at once (~24k entries, ~250 B each as Python objects until
#: folded into the compact map): small blobs (a backup's checkpoints) are still read 8 at once.
INDEX_BATCH_BYTES = 1 << 20


def list_blobs(storage, kinds=KINDS) -> dict[str, dict[str, BlobInfo]]:
    """kind -> name -> what the storage says; keys that are not ours are left out."""
    found: dict[str, dict[str, BlobInfo]] = {}
    for kind in kinds:
        found[kind] = {}
        for info in storage.list(names.prefix(kind)):
            name = names.parse_key(kind, info.key)
            if name is not None:
                found[kind][name] = info
    return found


def _load_all(names_, load):
    """(name -> value, name -> why it is damaged); blobs deleted meanwhile are skipped."""
    values, damaged = {}, {}

    def one(name):
        try:
            return name, load(name), None
        except NotFound:
            return name, None, None
        except Corrupted as e:
            return name, None, str(e)

    with ThreadPoolExecutor(8, thread_name_prefix="corso-inventory") as pool:
        for name, value, why in pool.map(one, names_):
            if why is not None:
                damaged[name] = why
            elif value is not None:
                values[name] = value
    return values, damaged


def load_index(repository, index_blobs: dict[str, BlobInfo], *, cached: bool = False
               ) -> tuple[ChunkMap, dict[str, set[PackRef]], dict[str, str]]:
    """The union of the index blobs listed, the packs each one lists, and the damaged ones
    with why. Read a batch (INDEX_BATCH_BYTES) at a time and folded into the compact map, so
    only that batch's decoded entries are held at once. `cached`: through the local cache
    (maintenance reads them several times a run); never for verify and repair, which must see
    what is stored."""
    storage, keys = repository.storage, repository.keys
    cache = BlobCache(repository.repository_id) if cached else None

    def load(name: str) -> list[IndexEntry]:
        key = names.key(names.INDEX, name)
        decode = functools.partial(decode_index, keys, name)
        return cache.fetch(storage, key, decode) if cache else decode(storage.get(key))

    union, packs_by_blob, damaged = ChunkMap(), {}, {}

    def fold(batch: list[str]) -> None:
        blobs, bad = _load_all(batch, load)
        damaged.update(bad)
        for name, entries in blobs.items():
            union.update([entries])
            packs_by_blob[name] = {(location.kind, location.pack) for _, location in entries}

    batch, batch_bytes = [], 0
    for name, info in index_blobs.items():
        batch.append(name)
        batch_bytes += info.size
        if batch_bytes >= INDEX_BATCH_BYTES:
            fold(batch)
            batch, batch_bytes = [], 0
    fold(batch)
    return union, packs_by_blob, damaged


def load_manifests(repository, backup_ids) -> tuple[dict[str, dict], dict[str, str]]:
    def load(backup_id):
        manifest = load_manifest(repository, backup_id)
        try:
            bytes.fromhex(manifest["root"])
        except (KeyError, TypeError, ValueError):
            raise Corrupted(f"manifest of backup {backup_id} is corrupted: no root tree") from None
        return manifest

    return _load_all(backup_ids, load)


def load_plans(repository, plan_ids) -> tuple[dict[str, Plan], dict[str, str]]:
    storage, keys = repository.storage, repository.keys
    return _load_all(plan_ids, lambda plan_id: decode_plan(
        keys, plan_id, storage.get(names.key(names.PLAN, plan_id))))


class ChunkReader:
    """Reads single chunks through the index and plans, authenticated and re-hashed; whole
    tree packs are kept in a small cache since a backup's directories sit together in a few."""

    def __init__(self, repository, readable: Readable, missing_packs: set[PackRef]) -> None:
        self._repository = repository
        self._readable = readable
        self._missing = missing_packs

    @functools.lru_cache(maxsize=8)  # noqa: B019 (one reader per command: freed with it)
    def _tree_pack(self, name: str) -> bytes:
        return self._repository.storage.get(names.key(names.TREE_PACK, name))

    def read(self, chunk_id: bytes) -> bytes:
        """The chunk's plaintext from the first of its locations that works; Corrupted naming
        the chunk (and its pack) otherwise."""
        locations = self._readable.locations(chunk_id)
        if not locations:
            raise Corrupted(f"chunk {chunk_id.hex()} is missing from the index")
        why = ""
        for kind, pack, offset, length in locations:
            if (kind, pack) in self._missing:
                why = f"its {kind} pack {pack} is missing"
                continue
            try:
                if kind == names.TREE_PACK:
                    entry = self._tree_pack(pack)[offset : offset + length]
                else:
                    entry = self._repository.storage.get(names.key(kind, pack), offset, length)
                plain = open_chunk(self._repository.keys, chunk_id, entry)
            except NotFound:
                why = f"its {kind} pack {pack} is missing"
                continue
            except Corrupted as e:
                why = f"{e} (in {kind} pack {pack})"
                continue
            if not chunk_matches(self._repository, chunk_id, plain):
                why = f"chunk {chunk_id.hex()} does not hash to its ID (in {kind} pack {pack})"
                continue
            return plain
        raise Corrupted(why if why.startswith("chunk") else f"chunk {chunk_id.hex()}: {why}")


def chunk_matches(repository, chunk_id: bytes, plain: bytes) -> bool:
    return blake3.blake3(plain, key=repository.keys.chunk_id).digest() == chunk_id


Path = tuple[bytes, ...]


def walk_backup(reader: ChunkReader, root: bytes, on_damage,
                pieces: set[bytes] | None = None) -> Iterator[tuple[Path, Entry]]:
    """Every entry of a backup; a tree that cannot be read is passed to
    `on_damage(path of its directory, message)` and what is below it skipped. The pieces of
    split trees are added to `pieces`."""
    stack: list[tuple[bytes, Path]] = [(root, ())]
    while stack:
        tree_id, parent = stack.pop()
        try:
            tree = read_tree(tree_id, reader.read)
        except Corrupted as e:
            on_damage(parent, str(e))
            continue
        if pieces is not None:
            pieces.update(tree.pieces)
        for entry in tree.entries:
            path = parent + (entry.name,)
            yield path, entry
            if entry.meta.kind == DIR and entry.subtree is not None:
                stack.append((entry.subtree, path))


def referenced_chunks(reader: ChunkReader, manifests: dict[str, dict]
                      ) -> tuple[set[bytes], list[tuple[str, str]]]:
    """Every chunk (trees and file content) some backup refers to, and the damage that kept
    part of a backup from being read, as (backup ID, message) (then the set is incomplete:
    nothing may be deleted)."""
    used: set[bytes] = set()
    damage: list[tuple[str, str]] = []
    for backup_id, manifest in manifests.items():
        root = bytes.fromhex(manifest["root"])
        used.add(root)
        for _path, entry in walk_backup(reader, root, lambda p, why, b=backup_id:
                                        damage.append((b, f"backup {b}: {why}")), used):
            if entry.meta.kind == DIR and entry.subtree is not None:
                used.add(entry.subtree)
            elif entry.meta.kind == FILE:
                used.update(chunk_id for chunk_id, _ in entry.chunks)
    return used, damage
