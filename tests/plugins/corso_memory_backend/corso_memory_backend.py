"""corso-memory-backend: a complete storage backend keeping blobs in this process's memory."""
import time

import click

from corso_core.api import AlreadyExists, BlobInfo, BlobStorage, NotFound, StorageBackend, hookimpl


class MemoryStorage(BlobStorage):
    atomic_create, spaces = True, {}  # space -> {key: (bytes, mtime)}; dict.setdefault is atomic

    def __init__(self, space: str):
        super().__init__()
        self.space, self.blobs = space, self.spaces.setdefault(space, {})

    def location(self): return f"memory://{self.space}"
    def stat(self, key): return BlobInfo(key, len(self.get(key)), self.blobs[key][1])
    def get_tail(self, key, length): return self.get(key)[-length:] if length else b""
    def delete(self, key): self.blobs.pop(key, None)
    def put(self, key, data): self.blobs[key] = self._entry(data)

    def list(self, prefix=""):
        items = self.blobs.copy().items()
        return [BlobInfo(k, len(v[0]), v[1]) for k, v in items if k.startswith(prefix)]

    def _create(self, key, data):
        if self.blobs.setdefault(key, entry := self._entry(data)) is not entry:
            raise AlreadyExists(f"{self.location()}/{key} already exists")

    def _entry(self, data):
        self.counts.count("PUT", up=len(data))
        return bytes(data), time.time()

    def get(self, key, offset=0, length=None):
        if key not in self.blobs:
            raise NotFound(f"{self.location()}/{key} not found")
        self.counts.count("GET", down=len(data := self.blobs[key][0][offset:][:length]))
        return data


@hookimpl
def register_backends(register):
    space = click.Option(["--space"], required=True, help="Name of the in-memory space.")
    register(StorageBackend("memory", "a dict in this process's memory", [space],
                            open=lambda values: MemoryStorage(values["space"])))
