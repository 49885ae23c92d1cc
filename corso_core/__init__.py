"""corso: encrypted, deduplicated backups to object storage."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("corso")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0+unknown"
