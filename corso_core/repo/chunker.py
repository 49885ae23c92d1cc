"""Content-defined chunking parameters; cut points are part of the repository format."""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass

#: Test-only: a smaller average chunk size (bytes) for new repositories, recorded in the format
#: blob like any other setting. Never set it for real backups.
TEST_CHUNK_SIZE_ENV = "CORSO_TEST_CHUNK_SIZE"


@dataclass(frozen=True)
class ChunkerParams:
    algorithm: str
    min_size: int
    avg_size: int
    max_size: int

    @classmethod
    def for_new_repository(cls) -> ChunkerParams:
        avg = int(os.environ.get(TEST_CHUNK_SIZE_ENV) or 1024 * 1024)
        return cls(algorithm="fastcdc-2020", min_size=avg // 4, avg_size=avg, max_size=avg * 4)

    def as_dict(self) -> dict:
        return asdict(self)
