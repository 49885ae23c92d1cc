"""Reading a backup without its file data: its entries, tree by tree (metadata packs only)."""

from __future__ import annotations

import fnmatch
import os
from collections.abc import Iterator

from corso_core.engine.tree import Entry, decode_tree
from corso_core.sources.source import DIR

Path = tuple[bytes, ...]


def path_text(path: Path) -> str:
    """A backup path as globs see it: names joined with "/" (undecodable bytes escaped)."""
    return "/".join(os.fsdecode(name) for name in path)


def matches(path: Path, globs: list[str]) -> bool:
    """Whether a path is selected by --path globs (no globs select everything)."""
    return not globs or any(fnmatch.fnmatchcase(path_text(path), g) for g in globs)


def walk_entries(store, tree_id: bytes, parent: Path = ()) -> Iterator[tuple[Path, Entry]]:
    """Every entry below a tree, directories before their contents, names in byte order."""
    for entry in decode_tree(store.get(tree_id), tree_id):
        path = parent + (entry.name,)
        yield path, entry
        if entry.meta.kind == DIR:
            yield from walk_entries(store, entry.subtree, path)
