"""Where the local cache lives, and the small notes a command keeps there for the next one.

The cache root is `$CORSO_CACHE_DIR`, else the platformdirs user cache dir. Each repository's
blobs go in a directory of their own (repo/cache.py); beside them, JSON notes that only save
time: the plugins found (plugins.py) and the files commands imported (cli/warm_start.py). This
module loads nothing but platformdirs, so that the console script can read a note before the
rest of corso is imported.
"""

from __future__ import annotations

import json
import os

import platformdirs

CACHE_DIR_ENV = "CORSO_CACHE_DIR"


def cache_root(override: str | None = None) -> str:
    return override or os.environ.get(CACHE_DIR_ENV) or platformdirs.user_cache_dir("corso")


def read_root_file(name: str) -> object | None:
    """The JSON document `name` in the cache root (a note a command keeps for the next one,
    beside the repositories' directories); None if there is none or it does not parse."""
    try:
        with open(os.path.join(cache_root(), name), encoding="utf-8") as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def write_root_file(name: str, document: object) -> None:
    """Replace the JSON document `name` in the cache root atomically; a cache root that cannot
    be written is no error (the note only saves time)."""
    path = os.path.join(cache_root(), name)
    temp = f"{path}.{os.getpid()}.tmp"
    try:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(temp, "w", encoding="utf-8") as f:
            json.dump(document, f)
        os.replace(temp, path)
    except OSError:
        try:
            os.unlink(temp)
        except OSError:
            pass
