"""The public plugin API: everything a plugin imports from corso comes from this module.

A plugin that imports only from here keeps working across corso's internal reshuffles. The
README's plugin section documents each name. `BlobStorageContract` (the test suite every
backend must pass) is loaded on first use, so that plugins do not need pytest at run time.
"""

from corso_core.errors import (
    AlreadyExists,
    ConfigError,
    Corrupted,
    CorsoError,
    Incomplete,
    InvalidPassphrase,
    NotConnected,
    NotFound,
    PermissionDenied,
    RepositoryError,
    StorageError,
    Transient,
    UnsupportedFormat,
    UsageError,
)
from corso_core.hookspecs import hookimpl
from corso_core.repo.names import is_blob_key
from corso_core.sources.source import Metadata, Node, Source, SourceReader, SourceWriter
from corso_core.storage.backend import StorageBackend
from corso_core.storage.filesystem import check_key
from corso_core.storage.interface import BlobInfo, BlobStorage, Bytes, RequestCounts
from corso_core.storage.simple import SimpleBlobStorage

__all__ = [
    "AlreadyExists",
    "BlobInfo",
    "BlobStorage",
    "Bytes",
    "ConfigError",
    "CorsoError",
    "Corrupted",
    "Incomplete",
    "InvalidPassphrase",
    "Metadata",
    "Node",
    "NotConnected",
    "NotFound",
    "PermissionDenied",
    "RepositoryError",
    "RequestCounts",
    "SimpleBlobStorage",
    "Source",
    "SourceReader",
    "SourceWriter",
    "StorageBackend",
    "StorageError",
    "Transient",
    "UnsupportedFormat",
    "UsageError",
    "check_key",
    "hookimpl",
    "is_blob_key",
]


def __getattr__(name: str):
    if name == "BlobStorageContract":
        from corso_core.testing import BlobStorageContract

        return BlobStorageContract
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
