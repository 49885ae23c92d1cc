"""Session records: how a running backup tells other clients (maintenance) that it is alive.

A ChunkStore writes `sessions/<id>` when it starts and rewrites it every `REFRESH_SECONDS`
while it runs, so the blob's storage mtime (the storage's clock, not ours) says when the
session was last seen. Its packs and index blobs carry the session ID in their index names.
Maintenance treats packs newer than the oldest live session's start as possibly in use.
A record not refreshed for much longer than REFRESH_SECONDS belongs to a dead client.
"""

from __future__ import annotations

import getpass
import json
import logging
import os
import socket
import threading
import time
from dataclasses import dataclass

from corso_core.errors import Corrupted, CorsoError, NotFound
from corso_core.repo import names
from corso_core.repo.crypto import metadata_associated_data, seal, unseal

#: How often a live session rewrites its record.
REFRESH_SECONDS = 60.0
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Session:
    """A session record as found in the repository."""

    session_id: str
    host: str
    user: str
    pid: int
    started: float  # the client's clock, for people; windows use `seen`
    seen: float  # the storage's mtime of the record: when it was last refreshed


def _encode(repository, session_id: str, started: float) -> bytes:
    record = {"session_id": session_id, "host": socket.gethostname(), "user": getpass.getuser(),
              "pid": os.getpid(), "started": started}
    return seal(repository.keys.metadata, json.dumps(record, sort_keys=True).encode(),
                metadata_associated_data(names.SESSION, session_id))


def _decode(repository, session_id: str, blob: bytes, seen: float) -> Session:
    what = f"session record {session_id}"
    plain = unseal(repository.keys.metadata, blob,
                   metadata_associated_data(names.SESSION, session_id), what)
    try:
        record = json.loads(plain)
        session = Session(record["session_id"], str(record["host"]), str(record["user"]),
                          int(record["pid"]), float(record["started"]), seen)
    except (ValueError, KeyError, TypeError, OverflowError):  # Infinity as an int
        raise Corrupted(f"{what} is corrupted: malformed record") from None
    if session.session_id != session_id:
        raise Corrupted(f"{what} is corrupted: it names session {session.session_id}")
    return session


class SessionRecord:
    """This client's record: written on start, refreshed by a daemon thread, deleted on close."""

    def __init__(self, repository, refresh_seconds: float = REFRESH_SECONDS) -> None:
        self.session_id = names.new_short_id()
        self._repository = repository
        self._key = names.key(names.SESSION, self.session_id)
        self._blob = _encode(repository, self.session_id, time.time())
        self._refresh_seconds = refresh_seconds
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._refresh_loop, daemon=True,
                                        name=f"corso-session-{self.session_id}")

    def start(self) -> None:
        self._repository.storage.put(self._key, self._blob)
        self._thread.start()

    def _refresh_loop(self) -> None:
        while not self._stop.wait(self._refresh_seconds):
            try:
                self._repository.storage.put(self._key, self._blob)
            except CorsoError as e:  # the next refresh may succeed; the backup goes on
                log.warning("could not refresh session record %s: %s", self.session_id, e)

    def close(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()
        self._repository.storage.delete(self._key)


def list_sessions(repository) -> list[Session]:
    """Every session record, with when the storage last saw it refreshed."""
    sessions = []
    for info in repository.storage.list(names.prefix(names.SESSION)):
        session_id = names.parse_key(names.SESSION, info.key)
        if session_id is not None:
            try:
                blob = repository.storage.get(info.key)
            except NotFound:
                continue  # the session ended while we listed
            sessions.append(_decode(repository, session_id, blob, info.mtime))
    return sessions
