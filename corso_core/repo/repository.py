"""A repository: a BlobStorage plus the keys and settings read from its format blob.

`init_repository` creates one, `open_repository` unlocks one, `init_or_open` is `repo init`,
`update_passphrase` re-wraps the master key. Everything above (packs, index, manifests, the
engine) receives a `Repository` and never reads the format blob itself.
"""

from __future__ import annotations

import logging
import secrets
from dataclasses import dataclass, field

from corso_core.errors import (
    AlreadyExists,
    Corrupted,
    InvalidPassphrase,
    NotFound,
    RepositoryError,
    UsageError,
)
from corso_core.repo.chunker import ChunkerParams
from corso_core.repo.crypto import KEY_SIZE, Keys
from corso_core.repo.format import FORMAT_COPY_KEY, FORMAT_KEY, FormatBlob
from corso_core.storage.interface import BlobStorage

log = logging.getLogger(__name__)


@dataclass
class Repository:
    """An unlocked repository: where its blobs are, its subkeys and its recorded settings."""

    storage: BlobStorage
    keys: Keys
    repository_id: str
    format_version: int
    chunker: ChunkerParams
    #: The decoded format blob; None for a Repository built by hand in tests.
    format: FormatBlob | None = field(default=None, repr=False)
    #: The master key, kept only to re-wrap it under a new passphrase.
    master_key: bytes | None = field(default=None, repr=False)

    @classmethod
    def _from_format(cls, storage: BlobStorage, blob: FormatBlob, master: bytes) -> Repository:
        return cls(storage, Keys.derive(master), blob.repository_id, blob.format_version,
                   blob.chunker, blob, master)


def check_passphrase(passphrase: str) -> str:
    if not passphrase:
        raise UsageError("the passphrase is empty; choose a non-empty one")
    return passphrase


def init_repository(storage: BlobStorage, passphrase: str) -> Repository:
    """Create a repository; AlreadyExists (storage untouched) if one is there already.

    The create-only put of the format blob is what claims the location: of two concurrent
    inits exactly one wins.
    """
    check_passphrase(passphrase)
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
    matches (so init is safe to repeat); True if it was created.

    An existing repository missing its format copy (an init interrupted between its two
    writes) gets the copy back.
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
    try:
        storage.stat(FORMAT_COPY_KEY)
    except NotFound:
        storage.put_new(FORMAT_COPY_KEY, storage.get(FORMAT_KEY))
    return repository, False


def read_format(storage: BlobStorage) -> FormatBlob:
    """The decoded format blob; a damaged one names itself and says whether the copy is intact."""
    try:
        return FormatBlob.decode(storage.get(FORMAT_KEY), FORMAT_KEY)
    except NotFound:
        if _copy_is_intact(storage):
            raise Corrupted(f"format blob {FORMAT_KEY} is missing at {storage.location()} but "
                            f"{FORMAT_COPY_KEY} is intact: see the README, "
                            "'Recovering a damaged format blob'") from None
        raise RepositoryError(f"no corso repository at {storage.location()}") from None
    except Corrupted as e:
        if _copy_is_intact(storage):
            raise Corrupted(f"{e} (at {storage.location()}); {FORMAT_COPY_KEY} is intact: see "
                            "the README, 'Recovering a damaged format blob'") from None
        raise Corrupted(f"{e} (at {storage.location()})") from None


def _copy_is_intact(storage: BlobStorage) -> bool:
    try:
        FormatBlob.decode(storage.get(FORMAT_COPY_KEY), FORMAT_COPY_KEY)
    except (NotFound, Corrupted):
        return False
    return True


def open_repository(storage: BlobStorage, passphrase: str) -> Repository:
    """Unlock the repository; InvalidPassphrase if the passphrase does not open it."""
    check_passphrase(passphrase)
    blob = read_format(storage)
    log.debug("read format blob of repository %s at %s (version %d, scrypt n=%d)",
              blob.repository_id, storage.location(), blob.format_version, blob.kdf.n)
    return Repository._from_format(storage, blob, blob.unwrap(passphrase))


def update_passphrase(repository: Repository, new_passphrase: str) -> None:
    """Re-wrap the master key under a new passphrase: only the two format blobs change.

    The primary is written first; were the copy's write to fail, the copy still opens with the
    old passphrase and the README's recovery steps say which blob to keep.
    """
    check_passphrase(new_passphrase)
    if repository.format is None or repository.master_key is None:
        raise RepositoryError("this repository was not opened with a passphrase")
    blob = repository.format.wrap(repository.master_key, new_passphrase)
    repository.storage.put(FORMAT_KEY, blob.encode())
    repository.storage.put(FORMAT_COPY_KEY, blob.encode())
    repository.format = blob
    log.info("new passphrase for repository %s", repository.repository_id)
