"""Object Lock on SeaweedFS: with retention, every blob written is locked, by every process."""

from __future__ import annotations

import dataclasses
import datetime

import pytest
from s3_servers import LOCKED_BUCKET

from corso_core.errors import Corrupted
from corso_s3.factory import open_storage
from corso_s3.storage import LOCK_RECORD


@pytest.fixture
def locked(seaweedfs, monkeypatch):
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", seaweedfs.access_key)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", seaweedfs.secret_key)
    return dataclasses.replace(seaweedfs, bucket=LOCKED_BUCKET)


def lock_of(server, key: str) -> tuple[str, datetime.datetime]:
    head = server.admin().head_object(Bucket=server.bucket, Key=key)
    return head["ObjectLockMode"], head["ObjectLockRetainUntilDate"]


def test_every_blob_is_locked_by_every_process(corso, locked, s3_prefix, tmp_path,
                                               monkeypatch):
    done = corso("repo", "init", "s3", *locked.flags(s3_prefix), "--passphrase", "pw",
                 "--retention-mode", "governance", "--retention-duration", "2d")
    assert done.code == 0, done
    soon = datetime.datetime.now(datetime.UTC) + datetime.timedelta(days=2)
    for key in ("format", "format-copy", LOCK_RECORD):
        mode, until = lock_of(locked, s3_prefix + key)
        assert mode == "GOVERNANCE" and abs((until - soon).total_seconds()) < 120

    # Another process (connected without any retention flag) locks what it writes too.
    monkeypatch.setenv("CORSO_CONFIG_DIR", str(tmp_path / "second"))
    storage = open_storage(locked.values(s3_prefix, aws_access_key=None,
                                         aws_secret_access_key=None))
    storage.put("data/ab/blob", b"x")
    assert lock_of(locked, s3_prefix + "data/ab/blob")[0] == "GOVERNANCE"

    # A delete only hides the blob behind a delete marker; the locked version stays.
    storage.delete("data/ab/blob")
    assert list(storage.list("data/")) == []
    versions = locked.admin().list_object_versions(Bucket=LOCKED_BUCKET,
                                                   Prefix=s3_prefix + "data/ab/blob")
    assert len(versions["Versions"]) == 1 and len(versions["DeleteMarkers"]) == 1
    with pytest.raises(Exception, match="AccessDenied|locked|retention|WORM"):
        locked.admin().delete_object(Bucket=LOCKED_BUCKET, Key=s3_prefix + "data/ab/blob",
                                     VersionId=versions["Versions"][0]["VersionId"])


@pytest.mark.parametrize("record", [b"garbage", b"{}", b'{"mode": "none", "duration_hours": 1}',
                                    b'{"mode": "governance", "duration_hours": 876001}',
                                    b'{"mode": "governance", "duration_hours": 24.0}'],
                         ids=["not-json", "empty", "mode-none", "over-100-years", "a-float"])
def test_a_damaged_lock_record_stops_every_write_in_one_line(corso, locked, s3_prefix, record):
    """It gave a traceback, or the store's own "InvalidRequest" on the next PUT."""
    assert corso("repo", "init", "s3", *locked.flags(s3_prefix), "--passphrase", "pw",
                 "--retention-mode", "governance", "--retention-duration", "1d").code == 0
    locked.admin().put_object(Bucket=LOCKED_BUCKET, Key=s3_prefix + LOCK_RECORD, Body=record)
    storage = open_storage(locked.values(s3_prefix))
    with pytest.raises(Corrupted, match=f"the Object Lock record .*{LOCK_RECORD} is damaged"):
        storage.put("data/ef/blob", b"z")
    listed = locked.admin().list_objects_v2(Bucket=LOCKED_BUCKET, Prefix=s3_prefix + "data/")
    assert "Contents" not in listed


def test_without_lock_record_nothing_is_locked(locked, s3_prefix):
    storage = open_storage(locked.values(s3_prefix))
    storage.put("data/cd/blob", b"y")
    head = locked.admin().head_object(Bucket=LOCKED_BUCKET, Key=s3_prefix + "data/cd/blob")
    assert "ObjectLockMode" not in head


def test_init_with_retention_over_a_plain_repository_locks_nothing(corso, locked, s3_prefix):
    assert corso("repo", "init", "s3", *locked.flags(s3_prefix), "--passphrase", "pw").code == 0
    again = corso("repo", "init", "s3", *locked.flags(s3_prefix), "--passphrase", "pw",
                  "--retention-mode", "compliance", "--retention-duration", "1d")
    assert again.code == 0 and "already exists" in again.out
    listed = locked.admin().list_objects_v2(Bucket=LOCKED_BUCKET, Prefix=s3_prefix)
    assert {o["Key"] for o in listed["Contents"]} == {s3_prefix + "format",
                                                      s3_prefix + "format-copy"}


def test_update_passphrase_says_the_locked_old_format_versions_remain(corso, locked, s3_prefix):
    """Locked versions cannot be deleted: the user must hear that the old passphrase still
    opens them until their retention ends."""
    assert corso("repo", "init", "s3", *locked.flags(s3_prefix), "--passphrase", "old",
                 "--retention-mode", "governance", "--retention-duration", "1d").code == 0
    changed = corso("repo", "update-passphrase", "--passphrase", "old", "--new-passphrase", "new")
    assert changed.code == 0, changed
    assert changed.err.startswith(
        f"corso: warning: bucket {LOCKED_BUCKET} is versioned: old versions of "
        f"s3://{LOCKED_BUCKET}/{s3_prefix}format and"), changed
    versions = locked.admin().list_object_versions(Bucket=LOCKED_BUCKET,
                                                   Prefix=s3_prefix + "format")["Versions"]
    assert sum(not v["IsLatest"] for v in versions) == 2
