"""A repository: a BlobStorage plus the keys and settings read from its format blob.

`init_repository` creates one, `open_repository` unlocks one, `init_or_open` is `repo init`,
`update_passphrase` re-wraps the master key. Everything above (packs, index, manifests, the
engine) receives a `Repository` and never reads the format blob itself.
"""

from __future__ import annotations

import logging
import secrets
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from corso_core.errors import (
    AlreadyExists,
    Corrupted,
    InvalidPassphrase,
    NotFound,
    RepositoryError,
    StorageError,
    UsageError,
)
from corso_core.repo.chunker import Chunker, ChunkerParams
from corso_core.repo.crypto import KEY_SIZE, Keys
from corso_core.repo.format import FORMAT_COPY_KEY, FORMAT_KEY, DerivedKey, FormatBlob
from corso_core.storage.interface import BlobStorage

log = logging.getLogger(__name__)


@dataclass
class Repository:
    """An unlocked repository: where its blobs are, its subkeys and its recorded settings."""

    storage: BlobStorage
    keys: Keys
    repository_id: str
    format_version: int
    chunker: Chunker
    #: The decoded format blob; None for a Repository built by hand in tests.
    format: FormatBlob | None = field(default=None, repr=False)
    #: The master key, kept only to re-wrap it under a new passphrase.
    master_key: bytes | None = field(default=None, repr=False)

    @classmethod
    def _from_format(cls, storage: BlobStorage, blob: FormatBlob, master: bytes) -> Repository:
        keys = Keys.derive(master)
        return cls(storage, keys, blob.repository_id, blob.format_version,
                   blob.chunker.chunker(keys.chunker_seed), blob, master)


def check_passphrase(passphrase: str, what: str = "the passphrase") -> str:
    """The passphrase, if usable: not empty, and UTF-8 (a byte that is not, from a terminal or
    an environment in another encoding, would make a key no UTF-8 terminal can type again).
    The error never quotes it."""
    if not passphrase:
        raise UsageError(f"{what} is empty")
    try:
        passphrase.encode("utf-8")
    except UnicodeEncodeError:
        raise UsageError(f"{what} is not valid UTF-8; check the encoding of the terminal or "
                         "environment it came from") from None
    return passphrase


def init_repository(storage: BlobStorage, passphrase: str) -> Repository:
    """Create a repository; AlreadyExists (storage untouched) if one is there already.

    The create-only put of the format blob is what claims the location: of two concurrent
    inits exactly one wins. A location holding anything else is refused (UsageError).
    """
    check_passphrase(passphrase)
    storage.check_new_location((FORMAT_KEY, FORMAT_COPY_KEY))
    master = secrets.token_bytes(KEY_SIZE)
    blob = FormatBlob.create(master, passphrase, ChunkerParams.for_new_repository())
    exists = AlreadyExists(f"a repository already exists at {storage.location()}")
    try:
        storage.put_new(FORMAT_KEY, blob.encode())
    except AlreadyExists:
        raise exists from None
    try:
        storage.put_new(FORMAT_COPY_KEY, blob.encode())
    except AlreadyExists:
        # A repository whose primary format blob was lost: its copy is all that unlocks it.
        storage.delete(FORMAT_KEY)  # ours, created just above
        raise exists from None
    log.info("created repository %s at %s (scrypt n=%d)", blob.repository_id,
             storage.location(), blob.kdf.n)
    return Repository._from_format(storage, blob, master)


def init_or_open(storage: BlobStorage, passphrase: str) -> tuple[Repository, bool]:
    """What `repo init` does: create a repository, or open the one there if the passphrase
    matches (so init is safe to repeat); True if it was created. Opening it restores a
    missing format copy (an init interrupted between its two writes).
    """
    try:
        return init_repository(storage, passphrase), True
    except AlreadyExists:
        pass
    try:
        repository = open_repository(storage, passphrase)
    except InvalidPassphrase:
        raise RepositoryError(f"a repository already exists at {storage.location()} and this "
                              "passphrase does not open it; nothing was changed") from None
    return repository, False


def read_format(storage: BlobStorage) -> tuple[FormatBlob, bytes]:
    """The decoded format blob and its bytes; a damaged one names itself and says whether the
    copy is intact."""
    try:
        raw = storage.get(FORMAT_KEY)
        return FormatBlob.decode(raw, FORMAT_KEY), raw
    except NotFound:
        if _read_copy(storage):
            raise Corrupted(f"format blob {FORMAT_KEY} is missing at {storage.location()} but "
                            f"{FORMAT_COPY_KEY} is intact: see the README, "
                            "'Recovering a damaged format blob'") from None
        raise RepositoryError(f"no corso repository at {storage.location()}") from None
    except Corrupted as e:
        if _read_copy(storage):
            raise Corrupted(f"{e} (at {storage.location()}); {FORMAT_COPY_KEY} is intact: see "
                            "the README, 'Recovering a damaged format blob'") from None
        raise Corrupted(f"{e} (at {storage.location()})") from None


def _read_copy(storage: BlobStorage) -> tuple[FormatBlob, bytes] | None:
    """The decoded format copy and its bytes; None if it is missing or damaged."""
    try:
        raw = storage.get(FORMAT_COPY_KEY)
        return FormatBlob.decode(raw, FORMAT_COPY_KEY), raw
    except (NotFound, Corrupted):
        return None


def open_repository(storage: BlobStorage, passphrase: str, *,
                    derived: DerivedKey | None = None) -> Repository:
    """Unlock the repository; InvalidPassphrase if the passphrase does not open it.

    `derived`: a key derived beforehand (see DerivedKey), used if its KDF is the blob's.

    `format` and `format-copy` differ only when an init or update-passphrase was interrupted
    between its two writes (see `update_passphrase`), or is between them right now. The first
    open that unlocks one of them rewrites the other, so the two agree again and exactly one
    passphrase opens the repository (see _settle_copy for an update still going on).
    """
    check_passphrase(passphrase)
    with ThreadPoolExecutor(1, thread_name_prefix="corso-format-copy") as pool:
        reading_copy = pool.submit(_read_copy, storage)  # one round trip for both blobs
        blob, raw = read_format(storage)
        copy = reading_copy.result()
    log.debug("read format blob of repository %s at %s (version %d, scrypt n=%d)",
              blob.repository_id, storage.location(), blob.format_version, blob.kdf.n)
    try:
        master = blob.unwrap(passphrase, derived)
    except InvalidPassphrase:
        if copy is None or copy[1] == raw:
            raise
        master = _finish_interrupted_change(storage, blob, copy, passphrase, derived)
        blob = copy[0]
    else:
        if copy is None or copy[1] != raw:
            _settle_copy(storage, raw)
    return Repository._from_format(storage, blob, master)


def _settle_copy(storage: BlobStorage, raw: bytes) -> None:
    """Rewrite the copy from the primary `raw` just unlocked, then read the primary again: an
    update-passphrase on another computer may have written it meanwhile (the copy first,
    then the primary). Rolled back past such an update, the copy would be newer than the new
    primary, and the next open with the old passphrase would take the finished update back;
    so a primary that changed is copied as it is now."""
    _rewrite(storage, FORMAT_COPY_KEY, raw, f"{FORMAT_COPY_KEY} was missing, damaged or out "
             f"of date: rewritten from {FORMAT_KEY}")
    try:
        current = storage.get(FORMAT_KEY)
    except StorageError:
        return  # the next open settles it
    if current != raw:
        _rewrite(storage, FORMAT_COPY_KEY, current, f"{FORMAT_KEY} changed meanwhile (a "
                 f"passphrase update elsewhere): {FORMAT_COPY_KEY} rewritten from it again")


def _finish_interrupted_change(storage: BlobStorage, blob: FormatBlob,
                               copy: tuple[FormatBlob, bytes], passphrase: str,
                               derived: DerivedKey | None = None) -> bytes:
    """The master key from the copy, if the copy is the first half of an update-passphrase
    that did not finish: same repository, written after the primary (storage clock), opened
    by this passphrase. Then the primary is rewritten; else InvalidPassphrase.

    Only a strictly newer copy counts: an older one holds a passphrase that was replaced,
    which must not open the repository again.
    """
    copy_blob, copy_raw = copy
    if (copy_blob.repository_id != blob.repository_id
            or storage.stat(FORMAT_COPY_KEY).mtime <= storage.stat(FORMAT_KEY).mtime):
        raise InvalidPassphrase("invalid passphrase")
    master = copy_blob.unwrap(passphrase, derived)
    _rewrite(storage, FORMAT_KEY, copy_raw, "an interrupted update-passphrase: finished it, "
             f"{FORMAT_KEY} rewritten from {FORMAT_COPY_KEY}")
    return master


def _rewrite(storage: BlobStorage, key: str, raw: bytes, what: str) -> None:
    """Best effort: a command with read-only access still runs, and a later one repairs."""
    try:
        storage.put(key, raw)
    except StorageError as e:
        log.warning("format blobs at %s disagree, and %s could not be rewritten: %s",
                    storage.location(), key, e)
        return
    log.warning("format blobs at %s disagreed: %s", storage.location(), what)


def update_passphrase(repository: Repository, new_passphrase: str) -> None:
    """Re-wrap the master key under a new passphrase: only the two format blobs change.

    The copy is written first, then the primary. Interrupted in between, the primary still
    opens with the old passphrase and the copy with the new one; `open_repository` then
    finishes the change (new passphrase) or takes it back (old passphrase).
    """
    check_passphrase(new_passphrase, "the new passphrase")
    if repository.format is None or repository.master_key is None:
        raise RepositoryError("this repository was not opened with a passphrase")
    try:
        repository.format.unwrap(new_passphrase)
    except InvalidPassphrase:
        pass  # a new one indeed
    else:
        raise UsageError("the new passphrase is the repository's passphrase already; nothing "
                         "was changed")
    blob = repository.format.wrap(repository.master_key, new_passphrase)
    repository.storage.put(FORMAT_COPY_KEY, blob.encode())
    repository.storage.put(FORMAT_KEY, blob.encode())
    repository.format = blob
    log.info("new passphrase for repository %s", repository.repository_id)
