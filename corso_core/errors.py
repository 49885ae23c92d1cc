"""The one error hierarchy of corso.

Every layer and every plugin raises these; the CLI renders any `CorsoError` as one line on
stderr with the error's exit code. Anything else escaping to the CLI is a bug in corso.
"""


class CorsoError(Exception):
    """A failure the user can act on; the message is one line that names the problem."""

    exit_code = 1


class UsageError(CorsoError):
    """Bad input on the command line (a missing flag, a malformed value)."""

    exit_code = 2


class NotConnected(CorsoError):
    """No repository is connected and the command needs one."""


class ConfigError(CorsoError):
    """The local config file is unreadable or malformed."""


# --- storage -------------------------------------------------------------------------------


class StorageError(CorsoError):
    """A backend failed; subclasses say how, so callers can react without knowing the backend."""


class NotFound(StorageError):
    """The blob (or the bucket, directory, ...) does not exist."""


class AlreadyExists(StorageError):
    """A create-only put found a different blob already stored under that key."""


class PermissionDenied(StorageError):
    """The storage refused the operation for lack of rights."""


class Transient(StorageError):
    """A failure that may succeed when retried (timeouts, throttling, server errors)."""


# --- repository ----------------------------------------------------------------------------


class RepositoryError(CorsoError):
    """The repository exists but cannot be used as asked."""


class Corrupted(RepositoryError):
    """A blob failed its checksum or authentication, or does not decode."""


class InvalidPassphrase(RepositoryError):
    """The passphrase does not unlock this repository's master key."""


class UnsupportedFormat(RepositoryError):
    """The repository was written by a newer corso (or is not a corso repository)."""


# --- backup and restore --------------------------------------------------------------------


class Incomplete(CorsoError):
    """A backup, restore or list finished, but some items could not be read or written (each
    was reported); what it recorded or wrote is sound. Its own exit code, so scripts can tell."""

    exit_code = 3
