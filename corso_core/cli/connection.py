"""`uses_repository`: how a command gets the connected, unlocked repository.

Usage, for any command that reads or writes the connected repository::

    @click.command()
    @uses_repository
    def create(repository, ...):   # repository: an opened corso_core.repo.repository.Repository
        ...

The decorator adds ``--passphrase`` and the storage flags of every installed backend (except
its init-only ones, and none of them required) to the command; a command option spelled like
a storage flag (restore's ``--path GLOB``) takes precedence over it. When the command runs it
loads corso.toml (NotConnected if there is none), checks the storage flags given against the
connection (a different value, or a flag of another backend, is an error naming both), merges
secret flags (credentials) into the values the backend opens the storage with, resolves the
passphrase, opens the repository, checks its ID against the connection's, and calls the
command with ``repository=``. The storage is closed when the command returns.

The key (scrypt) is derived before the storage is opened (a restore: after, see
`storage_first`), from the KDF of the format blob kept in the local cache, or was derived while
the command loaded (cli/cached_key.py).
The cyclic garbage collector is paused while the repository opens, and what exists then (the
modules, boto3's models) is frozen out of its later collections (`_start_up_objects_kept`).
"""

from __future__ import annotations

import contextlib
import copy
import functools
import gc
import warnings
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import click
from click.core import ParameterSource

from corso_core import config, passphrase, plugins
from corso_core.cli import cached_key, output
from corso_core.errors import ConfigError, RepositoryError, UsageError
from corso_core.repo.format import DerivedKey
from corso_core.repo.repository import Repository, open_repository
from corso_core.storage.backend import StorageBackend
from corso_core.storage.kill_switch import with_kill_switch

#: Storage flags reach the command function under this prefix, so a command option with the
#: same parameter name (restore's --path) never mixes with them.
STORAGE_PARAM_PREFIX = "storage__"


def _storage_options() -> list[click.Option]:
    """One optional copy of each installed backend's connection flags (first backend wins)."""
    found: dict[str, click.Option] = {}
    for backend in plugins.backends().values():
        for option in backend.options:
            if option.name not in backend.init_only and option.name not in found:
                secret = option.name in backend.secret_options
                found[option.name] = _yielding_copy(option, checked=not secret)
    return list(found.values())


def _yielding_copy(option: click.Option, checked: bool) -> click.Option:
    """An optional copy of a storage flag that yields to a command option spelled the same;
    `checked`: its value is only compared with the connection's (a secret one is used).

    `corso restore files --path GLOB` means the restore's own --path; the storage flag of the
    same spelling is then neither parsed nor shown in that command's --help.
    """
    clone = copy.copy(option)
    clone.required = False
    clone.name = STORAGE_PARAM_PREFIX + option.name
    if checked:  # what init says of it (how it is made, its default) no longer applies
        what = (option.help or option.name).split(" (")[0].rstrip(".")
        clone.help = f"{what}: optional here, only checked against the connection."
    add_to_parser, get_help_record = clone.add_to_parser, clone.get_help_record

    def shadowed(ctx: click.Context) -> bool:
        return any(set(clone.opts) & set(p.opts) for p in ctx.command.params
                   if not (p.name or "").startswith(STORAGE_PARAM_PREFIX))

    clone.add_to_parser = lambda parser, ctx: None if shadowed(ctx) else add_to_parser(parser, ctx)
    clone.get_help_record = lambda ctx: None if shadowed(ctx) else get_help_record(ctx)
    return clone


# click warns about any flag spelled twice in one command; a yielding storage flag is spelled
# twice on purpose, and the warning would break the one-line stderr of every such command.
warnings.filterwarnings("ignore", message=r"The parameter --\S+ is used more than once",
                        category=UserWarning)


def uses_repository(function: Callable,
                    before_open: Callable[[dict], Callable[[], None]] | None = None, *,
                    storage_first: bool = False) -> Callable:
    """Give a click command function the connected repository as ``repository=`` (see above).

    `before_open(kwargs)`, if given, runs before the storage opens, with the arguments the
    function will get; what it returns is called when the command ends (Source.warm_up). It
    runs once the key is derived, so that a child process it starts never shares scrypt's
    32 MiB before its exec (why that matters: sources/files/inodes.py).

    `storage_first`: the storage opens before the key derived early is waited for, so that its
    client's imports (boto3: ~0.15 s) run while scrypt ends, for a command whose own peak
    memory is far above start-up's (a restore's: its ranges and small chunks). Elsewhere the
    two would add up at the peak of a command that holds little else (an unchanged backup)."""
    storage_options = _storage_options()

    @functools.wraps(function)
    def command(**kwargs):
        ctx = click.get_current_context()
        given = {}
        for name in [k for k in kwargs if k.startswith(STORAGE_PARAM_PREFIX)]:
            value = kwargs.pop(name)
            if ctx.get_parameter_source(name) not in (None, ParameterSource.DEFAULT,
                                                       ParameterSource.DEFAULT_MAP):
                given[name.removeprefix(STORAGE_PARAM_PREFIX)] = value
        secret = kwargs.pop(passphrase.PARAM)
        with contextlib.ExitStack() as at_end:
            def begin() -> None:
                at_end.callback(before_open(kwargs))

            with _start_up_objects_kept():
                repository = open_connected(given, secret, begin if before_open else None,
                                            storage_first=storage_first)
            at_end.callback(repository.storage.close)
            return function(repository=repository, **kwargs)

    # click shows a decorated command's __click_params__ last first: the storage flags in
    # their backends' order, then --passphrase (sources.py reverses them the same way).
    params = getattr(command, "__click_params__", [])
    command.__click_params__ = [*params, passphrase.option(), *reversed(storage_options)]
    return command


@contextlib.contextmanager
def _start_up_objects_kept() -> Iterator[None]:
    """Opening the repository builds objects that live until the command ends, by the hundred
    thousand for S3 (boto3's service models): the cyclic collector, run every few hundred
    allocations, would scan them again and again as they are built, then at every full
    collection of the command after. It is paused while they are made, and they are moved
    out of its sight (gc.freeze). S3 unchanged re-backup: ~0.11 s of 1.2 s."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        gc.freeze()
        if enabled:
            gc.enable()


def open_connected(given: Mapping[str, Any], passphrase_flag: str | None,
                   before_storage: Callable[[], None] | None = None, *,
                   storage_first: bool = False) -> Repository:
    """Open the repository corso.toml names, after checking the flags given against it;
    `before_storage` runs once the key is derived, before the storage opens (with
    `storage_first`, see uses_repository: the storage opens first, then the key)."""
    path = config.config_path(output.flags().config_file)
    connection = config.load(path)
    try:
        backend = plugins.backend(connection.backend)
    except UsageError as e:  # a hand-edited file, or a plugin uninstalled since
        raise UsageError(f"config file {path}: {e}; or run corso repo connect to switch "
                         "to a repository on an installed backend") from None
    check_settings(backend, connection, path)
    values = storage_values(backend, connection, given)
    secret = passphrase.resolve(passphrase_flag)

    def derive() -> DerivedKey | None:
        derived = cached_key.derive(connection.repository_id, secret)
        if before_storage:
            before_storage()
        return derived

    derived = None if storage_first else derive()
    storage = with_kill_switch(backend.open(values))  # test-only CORSO_TEST_KILL_AFTER_WRITES
    try:
        if storage_first:
            derived = derive()
        repository = open_repository(storage, secret, derived=derived)
        if repository.repository_id != connection.repository_id:
            raise RepositoryError(
                f"the repository at {storage.location()} has ID {repository.repository_id}, but "
                f"{path} expects {connection.repository_id}; run corso repo connect to switch"
            )
    except BaseException:
        storage.close()
        raise
    if derived is None or derived.kdf != repository.format.kdf:
        cached_key.remember(repository)
    return repository


def check_settings(backend: StorageBackend, connection: config.Connection, path: str) -> None:
    """ConfigError naming the file if a saved setting is one its flag would refuse: a
    hand-edited corso.toml (a setting missing, a number for a path) fails here, in one line,
    not as a traceback deep in a backend."""
    context = click.Context(click.Command(backend.name))
    for option in backend.options:
        if option.name in backend.secret_options or option.name in backend.init_only:
            continue
        saved = connection.settings.get(option.name)
        if saved is None and option.required:
            raise ConfigError(f"config file {path}: the {backend.name} connection has no "
                              f"{option.name!r} setting; run corso repo connect to rewrite it")
        try:
            checked = option.process_value(context, saved)
        except (click.BadParameter, UsageError) as e:
            problem = e.format_message() if isinstance(e, click.BadParameter) else str(e)
            raise ConfigError(f"config file {path}: setting {option.name!r} of the "
                              f"{backend.name} connection: {problem}; run corso repo connect "
                              "to rewrite it") from None
        if saved is not None and (type(checked) is not type(saved) or checked != saved):
            raise ConfigError(f"config file {path}: setting {option.name!r} of the "
                              f"{backend.name} connection is {saved!r}, which its flag "
                              f"would give as {checked!r}; run corso repo connect to rewrite it")


def storage_values(backend: StorageBackend, connection: config.Connection,
                   given: Mapping[str, Any]) -> dict[str, Any]:
    """What the backend opens the storage with: the connection's settings, the secret flags
    given; any other flag given must match the connection."""
    own = {o.name: o for o in backend.options if o.name not in backend.init_only}
    values: dict[str, Any] = {o.name: None for o in backend.options}  # as StorageBackend.open says
    values.update(connection.settings)
    for name, value in given.items():
        if name not in own:
            raise UsageError(
                f"{_flag(name)} is an option of backend {' and '.join(_owners(name))}, but the "
                f"connected repository is on {backend.name}; run corso repo connect to switch"
            )
        if name in backend.secret_options:
            values[name] = value
        elif value != connection.settings.get(name):
            saved = connection.settings.get(name)
            if own[name].is_flag:  # a flag never given was saved as nothing: off
                saved = bool(saved)
            raise UsageError(
                f"{own[name].opts[0]} {_shown(value)} differs from the connected repository's "
                f"{_shown(saved)}; run corso repo connect to switch"
            )
    return values


def _shown(setting: Any) -> str:
    """A setting as the user gave it: a flag on or off, not Python's True or False."""
    if setting is None:
        return "(not set)"
    if isinstance(setting, bool):
        return "(on)" if setting else "(off)"
    return str(setting)


def _owners(name: str) -> list[str]:
    return [backend.name for backend in plugins.backends().values()
            if any(option.name == name for option in backend.options)]


def _flag(name: str) -> str:
    return next(option.opts[0] for backend in plugins.backends().values()
                for option in backend.options if option.name == name)
