"""`corso repo …`: create, connect to and inspect repositories."""

from __future__ import annotations

import click

from corso_core import config, passphrase
from corso_core.cli import cached_key, output
from corso_core.cli.backends import BackendGroup
from corso_core.cli.check_access import check_access
from corso_core.cli.connection import uses_repository
from corso_core.cli.upkeep import COMMANDS as UPKEEP_COMMANDS
from corso_core.engine.progress import counted
from corso_core.errors import ConfigError, CorsoError
from corso_core.repo.format import FORMAT_COPY_KEY, FORMAT_KEY
from corso_core.repo.repository import (
    Repository,
    init_or_open,
    open_repository,
    update_passphrase,
)
from corso_core.storage.backend import StorageBackend
from corso_core.upkeep.status import status_lines, upkeep_status


@click.group()
def repo() -> None:
    """Create, connect to and inspect repositories."""


def _init(backend: StorageBackend, values: dict) -> None:
    config.check_writable(config.config_path(output.flags().config_file))
    secret = passphrase.resolve(values.pop(passphrase.PARAM), confirm=True)
    storage = backend.open(values)
    try:
        repository, created = init_or_open(storage, secret)
        try:
            path, replaced = _remember(backend, values, repository)
        except ConfigError as e:
            if created:
                raise ConfigError(f"{e}; {_undo_init(storage)}") from None
            raise
    finally:
        storage.close()
    what = "created" if created else "already exists (the passphrase matches it)"
    output.emit(
        {"created": created, **_describe(backend.name, repository), "config_file": path,
         "replaced_repository_id": replaced},
        f"Repository {repository.repository_id} {what} at {storage.location()} "
        f"({backend.name}).\n{_saved(path, replaced)}",
    )


def _undo_init(storage) -> str:
    """Delete the repository just made, whose connection could not be saved (a config file
    check_writable could not foresee failing: /proc, an immutable file), and say so."""
    try:
        for key in (FORMAT_COPY_KEY, FORMAT_KEY):  # the copy first, as an interrupted init
            storage.delete(key)
    except CorsoError as e:
        return f"the repository made at {storage.location()} is left there ({e})"
    return "the repository was not created"


def _connect(backend: StorageBackend, values: dict) -> None:
    config.check_writable(config.config_path(output.flags().config_file))
    secret = passphrase.resolve(values.pop(passphrase.PARAM))
    storage = backend.open(values)
    try:
        repository = open_repository(storage, secret)
        path, replaced = _remember(backend, values, repository)
    finally:
        storage.close()
    output.emit(
        {**_describe(backend.name, repository), "config_file": path,
         "replaced_repository_id": replaced},
        f"Connected to repository {repository.repository_id} at {storage.location()} "
        f"({backend.name}).\n{_saved(path, replaced)}",
    )


def _remember(backend: StorageBackend, values: dict,
              repository: Repository) -> tuple[str, str | None]:
    """Save the connection, replacing the old one only now that the new repository opened;
    its path, and the ID of another repository it was connected to (or None)."""
    path = config.config_path(output.flags().config_file)
    try:
        before = config.load(path).repository_id
    except CorsoError:  # none yet, or one that cannot be read: nothing to name
        before = None
    settings = backend.settings({**values, **repository.storage.discovered_settings()})
    config.save(path, config.Connection(backend.name, repository.repository_id, settings))
    cached_key.remember(repository)
    return path, before if before != repository.repository_id else None


def _saved(path: str, replaced: str | None) -> str:
    """Where the connection went; a scheduled job using that file now reaches this one."""
    if replaced is None:
        return f"Connection saved in {path}."
    return (f"Connection saved in {path}, in place of the one to repository {replaced}: "
            "commands using that file now use this repository.")


def _describe(backend_name: str, repository: Repository) -> dict:
    return {
        "backend": backend_name,
        "location": repository.storage.location(),
        "repository_id": repository.repository_id,
        "format_version": repository.format_version,
    }


repo.add_command(check_access)
for _upkeep_command in UPKEEP_COMMANDS:  # verify, maintenance, repair: cli/upkeep.py
    repo.add_command(_upkeep_command)
repo.add_command(BackendGroup("init", _init, include_init_only=True, help="Create a repository."))
repo.add_command(
    BackendGroup("connect", _connect, include_init_only=False,
                 help="Connect to an existing repository and remember the connection.")
)


@repo.command("update-passphrase")
@click.option("--new-passphrase",
              help="The new passphrase (else a confirmed prompt when stdin is a terminal).")
@uses_repository
def update_passphrase_command(repository: Repository, new_passphrase: str | None) -> None:
    """Change the passphrase: re-wraps the master key; only the format blob is rewritten."""
    if new_passphrase is None:
        new_passphrase = passphrase.prompt(
            "New passphrase", confirm=True, missing="no new passphrase: give --new-passphrase")
    weakened = not repository.format.kdf.test_strength
    update_passphrase(repository, new_passphrase)
    if weakened and repository.format.kdf.test_strength:
        output.warn("CORSO_TEST_CHEAP_KDF=1 gave the new passphrase the test-only key "
                    "derivation, far weaker than the one it replaces; run update-passphrase "
                    "again without it")
    cached_key.remember(repository)
    output.emit({"updated": True, "repository_id": repository.repository_id},
                f"Passphrase of repository {repository.repository_id} changed; the old one "
                "no longer opens it (unless a warning above names old copies the storage "
                "kept).")


@repo.command("status")
@uses_repository
def status(repository: Repository) -> None:
    """Show the connected repository: backend, location, ID, format, blobs and bytes."""
    connection = config.load(config.config_path(output.flags().config_file))
    kdf = repository.format.kdf
    weak = "" if not kdf.test_strength else (
        " (test-only strength: run update-passphrase without CORSO_TEST_CHEAP_KDF)")
    blobs = list(repository.storage.list())
    total = sum(b.size for b in blobs)
    upkeep = upkeep_status(repository, blobs)  # backups, blobs by kind, last maintenance and verify
    data = {
        **_describe(connection.backend, repository),
        "kdf": {k: v for k, v in kdf.as_dict().items() if k != "salt"},
        "chunker": repository.chunker.params.as_dict(),
        "blobs": len(blobs),
        "bytes": total,
        **upkeep,
        "storage_requests": repository.storage.counts.as_dict(),
    }
    output.emit(data, "\n".join([
        f"backend:        {connection.backend}",
        f"location:       {data['location']}",
        f"repository ID:  {repository.repository_id}",
        f"format version: {repository.format_version}",
        f"key derivation: {kdf.name} n={kdf.n} r={kdf.r} p={kdf.p}{weak}",
        f"blobs:          {len(blobs)} ({counted(total, 'byte')})",
        *status_lines(upkeep),
    ]))
