"""Reading a backup without its file data: its entries, tree by tree (metadata packs only)."""

from __future__ import annotations

import fnmatch
import os
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor

from corso_core.engine.tree import Entry, contains_itself, read_tree
from corso_core.errors import UsageError
from corso_core.sources.source import DIR

Path = tuple[bytes, ...]


def path_text(path: Path) -> str:
    """A backup path as globs see it: names joined with "/" (undecodable bytes escaped)."""
    return "/".join(os.fsdecode(name) for name in path)


class Globs:
    """--path globs, and which of them matched something: a glob that matches nothing is most
    likely a typo, which a restore or a listing must not pass over in silence."""

    def __init__(self, globs) -> None:
        self.globs = list(globs)
        if "" in self.globs:  # it would match nothing, after a repository was opened for it
            raise UsageError("--path must not be empty: give a glob, or no --path for all")
        self.matched: set[str] = set()
        # "dir/" means the directory, as in a shell: paths in a backup end in no "/".
        self._patterns = {g: g.rstrip("/") or g for g in self.globs}

    def match(self, path: Path, *, only_unmatched: bool = False) -> bool:
        """Whether a glob matches `path` (any path, without globs), noting which did;
        `only_unmatched`: try only those that have matched nothing yet."""
        if not self.globs:
            return True
        candidates = ([g for g in self.globs if g not in self.matched] if only_unmatched
                      else self.globs)
        if not candidates:
            return False
        text = path_text(path)
        hits = {g for g in candidates if fnmatch.fnmatchcase(text, self._patterns[g])}
        self.matched |= hits
        return bool(hits)

    def unmatched(self) -> list[str]:
        return [g for g in self.globs if g not in self.matched]


class TreeLoader:
    """Loads a backup's trees; reading one directory starts fetching those of its
    subdirectories that are not in the local cache on a small pool, so a walk waits for
    several reads at once (S3 latency). Everything else is done in the walk's own thread:
    decoding is pure Python, and a cached chunk is read in ~30 us; with both on four threads
    contending for the GIL (the walk waiting for each result), a 15,000-file plan took twice
    as long."""

    def __init__(self, store, threads: int = 4) -> None:
        self.store = store
        self.pool = ThreadPoolExecutor(threads, thread_name_prefix="corso-trees")
        self.ahead: dict[bytes, Future] = {}

    def entries(self, tree_id: bytes) -> list[Entry]:
        future = self.ahead.pop(tree_id, None)
        fetched = future.result() if future else self.store.get(tree_id)
        entries = read_tree(tree_id, lambda chunk_id: fetched if chunk_id == tree_id
                            else self.store.get(chunk_id)).entries
        for entry in entries:
            if (entry.meta.kind == DIR and entry.subtree not in self.ahead
                    and not self.store.is_local(entry.subtree)):
                self.ahead[entry.subtree] = self.pool.submit(self.store.get, entry.subtree)
        return entries

    def close(self) -> None:
        self.pool.shutdown(wait=True, cancel_futures=True)


def walk_entries(trees: TreeLoader, tree_id: bytes, parent: Path = (),
                 within: frozenset[bytes] = frozenset()) -> Iterator[tuple[Path, Entry]]:
    """Every entry below a tree, directories before their contents, names in byte order;
    `within`: the trees above it."""
    within = within | {tree_id}
    for entry in trees.entries(tree_id):
        path = parent + (entry.name,)
        yield path, entry
        if entry.meta.kind == DIR:
            if entry.subtree in within:
                raise contains_itself(entry.subtree)
            yield from walk_entries(trees, entry.subtree, path, within)
