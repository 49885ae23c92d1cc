"""Maintenance on an S3 bucket with Object Lock (SeaweedFS): an unused pack is deleted only
once its retention has ended, and --extend-retention keeps the blobs in use locked."""

from __future__ import annotations

import dataclasses
import time

import pytest
from s3_servers import LOCKED_BUCKET
from test_upkeep_maintenance import OWNER
from test_upkeep_verify import PASSPHRASE, back_up, make_tree

from corso_core.repo import names
from corso_core.repo.manifests import delete_manifests
from corso_core.repo.repository import init_repository
from corso_core.upkeep.maintenance import run_maintenance
from corso_core.upkeep.verify import ALL, verify
from corso_s3.factory import open_storage


@pytest.fixture
def locked(seaweedfs):
    return dataclasses.replace(seaweedfs, bucket=LOCKED_BUCKET)


def locked_repository(server, prefix: str, extend: bool):
    storage = open_storage(server.values(prefix, retention_mode="governance",
                                         retention_duration="1d", extend_retention=extend))
    return init_repository(storage, PASSPHRASE)


def test_locked_unused_packs_wait_for_their_retention(locked, s3_prefix, small_chunks,
                                                      tmp_path, monkeypatch):
    repository = locked_repository(locked, s3_prefix, extend=False)
    keep = back_up(repository, make_tree(tmp_path / "keep", 1))
    gone = back_up(repository, make_tree(tmp_path / "gone", 2))
    delete_manifests(repository, [gone])
    packs = {i.key for i in repository.storage.list("data/")}

    report = run_maintenance(repository, safety="none", **OWNER)
    assert report.packs_locked == 2 and report.packs_deleted == 0
    assert {i.key for i in repository.storage.list("data/")} == packs  # still there
    assert len(list(repository.storage.list(names.prefix(names.PLAN)))) == 1  # kept for later
    assert verify(repository, ALL).clean

    # Once retention has ended (seen here as a storage whose locks end now), they go.
    monkeypatch.setattr(type(repository.storage), "retained_until", lambda self, key: 0.0)
    later = run_maintenance(repository, safety="none", **OWNER)
    assert later.packs_deleted == 2 and later.plans_finished == 1
    assert len({i.key for i in repository.storage.list("data/")}) == len(packs) - 1
    report = verify(repository, ALL)
    assert report.clean and report.backups == 1
    assert [i.key for i in repository.storage.list("backups/")] == [f"backups/{keep}"]


def test_extend_retention_relocks_the_blobs_in_use(locked, s3_prefix, small_chunks, tmp_path):
    repository = locked_repository(locked, s3_prefix, extend=True)
    back_up(repository, make_tree(tmp_path / "tree", 3))
    admin = locked.admin()

    def until(key: str):
        return admin.head_object(Bucket=LOCKED_BUCKET, Key=s3_prefix + key)[
            "ObjectLockRetainUntilDate"]

    in_use = [i.key for kind in ("data/", "tree/", "index/", "backups/")
              for i in repository.storage.list(kind)]
    before = {key: until(key) for key in in_use}
    time.sleep(1.1)  # retain-until dates have whole seconds
    report = run_maintenance(repository, **OWNER)
    assert report.retention_extended >= len(in_use) + 2  # and both format blobs
    assert all(until(key) > before[key] for key in in_use)
