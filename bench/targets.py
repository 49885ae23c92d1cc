"""Where repositories live during a run: a local directory, or a bucket on the run's SeaweedFS.

A target makes a fresh repository location per row and measures it afterwards: its size, and on
S3 the requests the server answered for it and the CPU time the server spent.
"""

from __future__ import annotations

import os
import re
from collections import Counter
from pathlib import Path

from bench.seaweedfs import SeaweedFS
from bench.tools import Repository


class LocalTarget:
    name = "local"

    def repository(self, row_name: str, home: Path) -> Repository:
        return Repository(target=self.name, path=home / "repo")

    def size(self, repo: Repository) -> int:
        total = 0
        for directory, _, files in os.walk(repo.path):
            total += sum(os.lstat(os.path.join(directory, f)).st_size for f in files)
        return total

    def requests(self, repo: Repository) -> Counter | None:
        return None

    def server_cpu_seconds(self) -> float | None:
        return None


class S3Target:
    name = "s3"

    def __init__(self, server: SeaweedFS):
        self.server = server

    def repository(self, row_name: str, home: Path) -> Repository:
        bucket = "bench-" + re.sub(r"[^a-z0-9-]", "", row_name.lower())
        self.server.create_bucket(bucket, warm=True)
        return Repository(target=self.name, endpoint=self.server.endpoint, bucket=bucket,
                          prefix="repo", env=self.server.client_env())

    def size(self, repo: Repository) -> int:
        return self.server.bucket_bytes(repo.bucket)

    def requests(self, repo: Repository) -> Counter | None:
        return self.server.request_counts(repo.bucket)

    def server_cpu_seconds(self) -> float | None:
        return self.server.cpu_seconds()
