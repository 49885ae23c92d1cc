"""The key derived from the format blob the local cache keeps, early where it can be.

A command derives its key (scrypt: ~0.15 s of one core, 32 MiB) from the KDF of the format blob
kept in the local cache (format.DerivedKey), before the storage is opened: the scrypt buffer is
freed before a backend's imports (boto3) load, so the two never add up in peak memory. The
cached copy is renewed (`remember`) when the repository's KDF differs from it, and by repo init,
connect and update-passphrase.

A backup or restore spends about as long as scrypt importing its modules before click has
parsed its flags. When its passphrase is in $CORSO_PASSPHRASE and its command line names
neither --passphrase nor --config-file (nor --help), `start` reads the KDF for the default
corso.toml's repository and derives the key in a thread meanwhile (scrypt releases the GIL).
The console script calls it before it imports the CLI (cli/launch.py), so that scrypt overlaps
those imports (~0.12 s off every cold backup and restore; beginning it there rather than in
main(), after click's import, measured 0.02 s more in cold `backup list` runs, within the
noise). The KDF is read before the thread starts: imports hold the GIL, so a thread importing
the modules that read it would only share the one core with the CLI's imports. `derive` uses
that key only for the same repository and passphrase, and otherwise derives as it would have.

The repository modules are imported inside the functions: `start` runs in every command, and
`corso --help` has no use for them.
"""

from __future__ import annotations

import hmac
import os
import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from corso_core.repo.cache import BlobCache
    from corso_core.repo.format import DerivedKey, Kdf
    from corso_core.repo.repository import Repository

#: The commands whose key is derived early: those that open the connected repository and are
#: run again and again (`repo` holds init and connect, which derive from the storage's blob).
EARLY_COMMANDS = ("backup", "restore")
#: Flags that change what to derive, or ask for help (which opens nothing): with any of
#: them, nothing is derived early.
SKIPPING_FLAGS = ("--passphrase", "--config-file", "--help", "-h")


@dataclass
class _Early:
    """A derivation begun by `start`; `key` is read only after its thread is joined (None:
    deriving failed)."""

    repository_id: str
    passphrase: str
    kdf: Kdf
    key: DerivedKey | None = None

    def run(self) -> None:
        from corso_core.repo.format import DerivedKey

        try:
            self.key = DerivedKey.of(self.kdf, self.passphrase)
        except Exception:  # `derive` then derives again, and reports the error
            pass


_early: tuple[_Early, threading.Thread] | None = None


def start(argv: list[str]) -> None:
    """Begin deriving the key if `argv` is a backup or restore that will use the default config
    and the passphrase in the environment, and the cache holds that repository's format blob."""
    global _early
    _early = None
    if (not argv or argv[0] not in EARLY_COMMANDS
            or any(arg.partition("=")[0] in SKIPPING_FLAGS for arg in argv)):
        return
    from corso_core import config
    from corso_core.errors import CorsoError

    passphrase = os.environ.get(config.PASSPHRASE_ENV)
    if not passphrase:
        return
    try:
        repository_id = config.load(config.config_path()).repository_id
    except CorsoError:
        return  # not connected, or a broken config: the command says so
    from corso_core.repo.cache import read_cached
    from corso_core.repo.format import FORMAT_KEY

    # Read as the filesystem backend would, without loading it (nor click, which it brings):
    # scrypt begins ~20 ms sooner. A damaged copy is left for `derive` to discard: that may
    # log a warning, and there is no logging yet.
    kdf = _kdf_of(read_cached(repository_id, FORMAT_KEY))
    if kdf is None:
        return
    early = _Early(repository_id, passphrase, kdf)
    thread = threading.Thread(target=early.run, name="early-key", daemon=True)
    thread.start()
    _early = early, thread


def derive(repository_id: str, passphrase: str) -> DerivedKey | None:
    """The key for the cached format blob's KDF: the one derived early if it is for this
    repository and passphrase, else derived now; None without a usable cached copy."""
    global _early
    pending, _early = _early, None
    if pending is not None:
        early, thread = pending
        thread.join()
        if early.key is not None and early.repository_id == repository_id and (
                hmac.compare_digest(early.passphrase.encode(), passphrase.encode())):
            return early.key
    kdf = cached_kdf(repository_id)
    if kdf is None:
        return None
    from corso_core.repo.format import DerivedKey

    return DerivedKey.of(kdf, passphrase)


def cached_kdf(repository_id: str) -> Kdf | None:
    """The KDF of the cached format blob; None without one (a damaged copy is discarded)."""
    from corso_core.repo.format import FORMAT_KEY

    cache = format_cache(repository_id)
    cached = cache.get(FORMAT_KEY) if cache else None
    kdf = _kdf_of(cached)
    if kdf is None and cached is not None:
        cache.discard(FORMAT_KEY)
    return kdf


def _kdf_of(format_blob: bytes | None) -> Kdf | None:
    """The KDF a cached format blob names; None for none, or a damaged one."""
    from corso_core.errors import Corrupted, UnsupportedFormat
    from corso_core.repo.format import FormatBlob

    if format_blob is None:
        return None
    try:
        return FormatBlob.decode(format_blob, "cached copy").kdf
    except (Corrupted, UnsupportedFormat):
        return None


def remember(repository: Repository) -> None:
    """Keep the repository's format blob in the local cache, for the next command's key."""
    from corso_core.repo.format import FORMAT_KEY

    cache = format_cache(repository.repository_id)
    if cache:
        cache.put(FORMAT_KEY, repository.format.encode())


def format_cache(repository_id: str) -> BlobCache | None:
    """The repository's local cache; None for an ID no repository has (a hand-edited
    corso.toml: the ID check after opening then names both IDs)."""
    from corso_core.repo.cache import BlobCache

    try:
        return BlobCache(repository_id)
    except ValueError:
        return None
