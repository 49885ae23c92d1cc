"""corso.toml: which repository this machine is connected to, so later commands need no flags.

It holds the backend name, the backend's non-secret settings and the repository ID; never a
passphrase or a credential. Found at --config-file, else $CORSO_CONFIG_DIR/corso.toml, else in
the platformdirs user config dir. Written 0600 by an atomic replace (temp file, fsync, rename).
"""

from __future__ import annotations

import os
import secrets
import tomllib
from dataclasses import dataclass, field
from typing import Any

import platformdirs

from corso_core.errors import ConfigError, NotConnected

CONFIG_DIR_ENV = "CORSO_CONFIG_DIR"
#: Where a passphrase may be given (never saved: see passphrase.py). Named here, beside the
#: config, so that reading it early (cli/cached_key.py) loads nothing more.
PASSPHRASE_ENV = "CORSO_PASSPHRASE"
CONFIG_NAME = "corso.toml"


@dataclass(frozen=True)
class Connection:
    backend: str
    repository_id: str
    settings: dict[str, Any] = field(default_factory=dict)


def config_path(override: str | None = None) -> str:
    if override:
        return os.path.abspath(os.path.expanduser(override))
    directory = os.environ.get(CONFIG_DIR_ENV) or platformdirs.user_config_dir("corso")
    return os.path.join(os.path.abspath(os.path.expanduser(directory)), CONFIG_NAME)


def load(path: str) -> Connection:
    """The saved connection; NotConnected if there is none, ConfigError if the file is broken."""
    try:
        with open(path, "rb") as f:
            document = tomllib.load(f)
    except FileNotFoundError:
        raise NotConnected(f"no repository connected (no config file {path}); run corso repo "
                           "init or corso repo connect") from None
    except OSError as e:
        raise ConfigError(f"cannot read config file {path}: {e.strerror}") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise ConfigError(f"config file {path} is not valid TOML ({e}); fix it or run "
                          "corso repo connect to rewrite it") from None
    connection = document.get("connection")
    if (
        not isinstance(connection, dict)
        or not isinstance(connection.get("backend"), str)
        or not isinstance(connection.get("repository_id"), str)
        or not isinstance(connection.get("settings", {}), dict)
    ):
        raise ConfigError(f"config file {path} lacks a valid [connection] table (backend, "
                          "repository_id, settings); run corso repo connect to rewrite it")
    return Connection(connection["backend"], connection["repository_id"],
                      dict(connection.get("settings", {})))


def check_writable(path: str) -> None:
    """ConfigError now if `save(path)` could not succeed later: `repo init` asks before it
    creates a repository, so a bad --config-file leaves nothing behind.

    The file is replaced through a temp file beside it, so what counts is its directory (or
    the nearest ancestor that exists, since save creates the rest).
    """
    if os.path.isdir(path):
        raise ConfigError(f"cannot write config file {path}: it is a directory")
    existing = os.path.dirname(os.path.realpath(path))  # where save writes
    while not os.path.lexists(existing):
        existing = os.path.dirname(existing)
    if not os.path.isdir(existing):
        raise ConfigError(f"cannot write config file {path}: {existing} is not a directory")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise ConfigError(f"cannot write config file {path}: {existing} is not writable")


def save(path: str, connection: Connection) -> None:
    """Replace the config file atomically: a crash leaves the old file or the new, never half."""
    document = {"connection": {"backend": connection.backend,
                               "repository_id": connection.repository_id,
                               "settings": connection.settings}}
    import tomli_w  # only saving needs it: every command reads the config, few write it

    data = tomli_w.dumps(document).encode()  # before any file exists: a failure leaves none
    path = os.path.realpath(path)  # a symlinked config (dotfiles) stays a symlink
    directory = os.path.dirname(path)
    temp = os.path.join(directory, f".{CONFIG_NAME}.tmp-{secrets.token_hex(6)}")
    try:
        os.makedirs(directory, mode=0o700, exist_ok=True)
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            os.write(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.rename(temp, path)
        dir_fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    except OSError as e:
        raise ConfigError(f"cannot write config file {path}: {e.strerror}") from None
    finally:
        if os.path.lexists(temp):  # not renamed into place
            os.unlink(temp)
