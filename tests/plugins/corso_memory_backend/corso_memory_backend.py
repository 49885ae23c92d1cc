"""corso-memory-backend: a complete storage backend keeping blobs in this process's memory."""
import time

import click

from corso_core.api import BlobInfo, SimpleBlobStorage, StorageBackend, hookimpl


class MemoryStorage(SimpleBlobStorage):
    spaces = {}  # space name -> {key: (bytes, BlobInfo)}, kept while the process runs

    def __init__(self, values):
        super().__init__(location=f"memory://{values['space']}")
        self.blobs = self.spaces.setdefault(values["space"], {})

    def _put(self, key, data):
        self.blobs[key] = (bytes(data), BlobInfo(key, len(data), time.time()))

    def _get(self, key, offset, length):  # a missing key's KeyError means "not found"
        return self.blobs[key][0][offset:][:length]

    def _list(self, prefix):
        return [info for _, info in self.blobs.copy().values() if info.key.startswith(prefix)]

    def _delete(self, key):
        self.blobs.pop(key, None)


@hookimpl
def register_backends(register):
    space = click.Option(["--space"], required=True, help="Name of the in-memory space.")
    register(StorageBackend("memory", "a dict in this process's memory", [space], MemoryStorage))
