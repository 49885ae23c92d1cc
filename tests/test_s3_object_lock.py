"""Object Lock on SeaweedFS: with retention, every blob written is locked, by every process;
without its record, nothing is written on a bucket with Object Lock; of two inits at once, the
record left is the winner's."""

from __future__ import annotations

import dataclasses
import datetime
import json

import pytest
from botocore.awsrequest import AWSResponse
from cli_fixtures import one_error_line, run_subprocess
from s3_servers import BUCKET, LOCKED_BUCKET, before_put, requests_sent

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
                         ids=["not-json", "empty", "none-with-a-duration", "over-100-years",
                              "a-float"])
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


@pytest.fixture
def lock_asked(monkeypatch) -> list[str]:
    """The URL of every GetObjectLockConfiguration request sent, whichever code asks."""
    return requests_sent(monkeypatch, "GetObjectLockConfiguration")


def record_of(server, prefix: str) -> dict:
    body = server.admin().get_object(Bucket=server.bucket, Key=prefix + LOCK_RECORD)["Body"]
    return json.loads(body.read())


def back_up(corso, tmp_path, name: str):
    (tmp_path / name).mkdir()
    (tmp_path / name / "file").write_text(f"the data of {name}")
    return corso("backup", "create", "files", "--path", str(tmp_path / name))


def versions(server, prefix: str) -> list[tuple[str, str]]:
    """(key, version) of every object version and delete marker under the prefix."""
    listed = server.admin().list_object_versions(Bucket=server.bucket, Prefix=prefix)
    return sorted((v["Key"], v["VersionId"])
                  for v in listed.get("Versions", []) + listed.get("DeleteMarkers", []))


@pytest.mark.parametrize("bucket", [BUCKET, LOCKED_BUCKET])
def test_init_without_retention_records_none_and_locks_nothing(corso, locked, s3_prefix, bucket,
                                                               tmp_path, monkeypatch):
    """A repository without retention has a record too, so one whose record is gone cannot pass
    for it."""
    server = dataclasses.replace(locked, bucket=bucket)
    assert corso("repo", "init", "s3", *server.flags(s3_prefix), "--passphrase", "pw").code == 0
    assert record_of(server, s3_prefix) == {"mode": "none"}
    monkeypatch.setenv("CORSO_PASSPHRASE", "pw")
    assert back_up(corso, tmp_path, "tree").code == 0
    listed = server.admin().list_objects_v2(Bucket=bucket, Prefix=s3_prefix)["Contents"]
    assert len(listed) > 3  # the format blobs, the record and what the backup wrote
    for item in listed:
        assert "ObjectLockMode" not in server.admin().head_object(Bucket=bucket, Key=item["Key"])


@pytest.mark.parametrize("retention", [["--retention-mode", "governance",
                                        "--retention-duration", "1d"], []],
                         ids=["governance", "none"])
def test_a_hidden_record_on_a_locked_bucket_stops_the_next_backup(corso, locked, s3_prefix,
                                                                  retention, tmp_path,
                                                                  monkeypatch, lock_asked):
    """Whoever may delete objects could hide the record behind a delete marker, and every
    later write went unlocked, without a word."""
    assert corso("repo", "init", "s3", *locked.flags(s3_prefix), "--passphrase", "pw",
                 *retention).code == 0
    monkeypatch.setenv("CORSO_PASSPHRASE", "pw")
    lock_asked.clear()  # init asks, given retention
    assert back_up(corso, tmp_path, "first").code == 0
    assert lock_asked == []  # the record says it all
    marker = locked.admin().delete_object(Bucket=LOCKED_BUCKET, Key=s3_prefix + LOCK_RECORD)
    before = versions(locked, s3_prefix)

    refused = back_up(corso, tmp_path, "second")
    one_error_line(refused, 1, f"the Object Lock record s3://{LOCKED_BUCKET}/{s3_prefix}"
                   f"{LOCK_RECORD} is missing or hidden behind a delete marker",
                   "delete the delete marker")
    assert versions(locked, s3_prefix) == before
    assert len(lock_asked) == 1

    # With the delete marker gone, the record is back, and so is its lock.
    locked.admin().delete_object(Bucket=LOCKED_BUCKET, Key=s3_prefix + LOCK_RECORD,
                                 VersionId=marker["VersionId"])
    assert back_up(corso, tmp_path, "third").code == 0
    newest = max(locked.admin().list_objects_v2(Bucket=LOCKED_BUCKET, Prefix=s3_prefix + "data/")
                 ["Contents"], key=lambda item: item["LastModified"])
    head = locked.admin().head_object(Bucket=LOCKED_BUCKET, Key=newest["Key"])
    assert head.get("ObjectLockMode") == ("GOVERNANCE" if retention else None)


def test_no_record_on_a_bucket_without_object_lock_means_no_retention(corso, seaweedfs,
                                                                      s3_prefix, tmp_path,
                                                                      monkeypatch, lock_asked):
    """As in a repository made by a corso-s3 that wrote no record without retention: its
    backups go on, for one question per process."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", seaweedfs.access_key)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", seaweedfs.secret_key)
    monkeypatch.setenv("CORSO_PASSPHRASE", "pw")
    assert corso("repo", "init", "s3", *seaweedfs.flags(s3_prefix)).code == 0
    seaweedfs.admin().delete_object(Bucket=BUCKET, Key=s3_prefix + LOCK_RECORD)
    done = back_up(corso, tmp_path, "tree")
    assert done.code == 0 and done.err == "", done
    assert len(lock_asked) == 1


@pytest.mark.parametrize("status, code", [(403, "AccessDenied"), (501, "NotImplemented")])
def test_no_record_where_the_bucket_cannot_tell_means_no_retention(seaweedfs, s3_prefix,
                                                                   status, code):
    """Without s3:GetBucketObjectLockConfiguration (needed only with Object Lock), or on a
    store without the call, a repository made with no record goes on as before."""
    storage = open_storage(seaweedfs.values(s3_prefix))
    xml = f"<Error><Code>{code}</Code><Message>no</Message></Error>".encode()
    storage.client.meta.events.register(
        "before-send.s3.GetObjectLockConfiguration",
        lambda request, **_: AWSResponse(request.url, status, {}, type("Raw", (), {
            "stream": lambda self, **kw: iter([xml])})()))
    storage.put("data/ab/blob", b"x")
    assert storage.get("data/ab/blob") == b"x"
    assert storage.counts.requests["GET"] == 1 + 2 + 1  # region, record, lock, blob


def lock_warnings(result) -> list[str]:
    return [line for line in result.err.splitlines() if "Object Lock" in line]


def test_init_with_retention_over_a_plain_repository_locks_nothing(corso, locked, s3_prefix):
    assert corso("repo", "init", "s3", *locked.flags(s3_prefix), "--passphrase", "pw").code == 0
    again = corso("repo", "init", "s3", *locked.flags(s3_prefix), "--passphrase", "pw",
                  "--retention-mode", "compliance", "--retention-duration", "1d")
    assert again.code == 0 and "already exists" in again.out
    assert lock_warnings(again) == [
        f"corso: warning: the repository at s3://{LOCKED_BUCKET}/{s3_prefix} records Object "
        "Lock mode none; --retention-mode compliance --retention-duration 1d was not applied "
        "(corso cannot change the Object Lock settings of an existing repository)"]
    listed = locked.admin().list_objects_v2(Bucket=LOCKED_BUCKET, Prefix=s3_prefix)
    assert {o["Key"] for o in listed["Contents"]} == {s3_prefix + "format",
                                                      s3_prefix + "format-copy",
                                                      s3_prefix + LOCK_RECORD}
    assert record_of(locked, s3_prefix) == {"mode": "none"}


GOVERNANCE = ["--retention-mode", "governance", "--retention-duration", "1d"]
GOVERNANCE_RECORD = {"mode": "governance", "duration_hours": 24, "extend": False}


@pytest.mark.parametrize("flags, warning", [
    (GOVERNANCE, None),
    ([], None),
    (["--retention-mode", "governance", "--retention-duration", "2d"],
     "records Object Lock mode governance for 24h; --retention-mode governance "
     "--retention-duration 2d was not applied"),
    (["--retention-mode", "compliance", "--retention-duration", "24h"],
     "records Object Lock mode governance for 24h; --retention-mode compliance "
     "--retention-duration 24h was not applied"),
    ([*GOVERNANCE, "--extend-retention"],
     "records Object Lock mode governance for 24h; --retention-mode governance "
     "--retention-duration 1d --extend-retention was not applied"),
    (["--retention-mode", "none"],
     "records Object Lock mode governance for 24h; --retention-mode none was not applied"),
], ids=["same", "none-given", "duration", "mode", "extend", "mode-none"])
def test_a_repeated_init_says_which_retention_flags_it_did_not_apply(corso, locked, s3_prefix,
                                                                     flags, warning):
    """Init over the repository there connects to it with the settings it records: flags
    that differ give one warning, and change nothing; the same flags, or none, give none."""
    first = corso("repo", "init", "s3", *locked.flags(s3_prefix), "--passphrase", "pw",
                  *GOVERNANCE)
    assert first.code == 0 and "created" in first.out and lock_warnings(first) == [], first
    before = versions(locked, s3_prefix)
    again = corso("repo", "init", "s3", *locked.flags(s3_prefix), "--passphrase", "pw", *flags)
    assert again.code == 0 and "already exists" in again.out, again
    said = lock_warnings(again)
    if warning is None:
        assert said == [], again.err
    else:
        assert len(said) == 1 and warning in said[0], again.err
    assert versions(locked, s3_prefix) == before
    assert record_of(locked, s3_prefix) == GOVERNANCE_RECORD


def test_a_repeated_init_over_a_hidden_record_on_a_locked_bucket_stops(corso, locked,
                                                                        s3_prefix):
    """The record it would compare its flags with is hidden behind a delete marker: the init
    says so in one error line, as a backup would, and writes nothing (no new record either).
    (Before it, the warning every init on a versioned bucket gives.)"""
    assert corso("repo", "init", "s3", *locked.flags(s3_prefix), "--passphrase", "pw",
                 *GOVERNANCE).code == 0
    locked.admin().delete_object(Bucket=LOCKED_BUCKET, Key=s3_prefix + LOCK_RECORD)
    before = versions(locked, s3_prefix)
    again = corso("repo", "init", "s3", *locked.flags(s3_prefix), "--passphrase", "pw",
                  "--retention-mode", "compliance", "--retention-duration", "2d")
    assert again.code == 1, again
    warning, error = again.err.splitlines()
    assert warning.startswith(f"corso: warning: bucket {LOCKED_BUCKET} has versioning Enabled")
    assert error.startswith(f"corso: error: the Object Lock record s3://{LOCKED_BUCKET}/"
                            f"{s3_prefix}{LOCK_RECORD} is missing or hidden behind a delete "
                            "marker"), error
    assert "delete the delete marker" in error
    assert versions(locked, s3_prefix) == before


def init_elsewhere_before(monkeypatch, server, prefix: str, tmp_path, key: str,
                          *args: str) -> dict:
    """`corso repo init s3 … ARGS` on another host (its own process and config dir), run whole
    just before this process first puts `key` under the prefix: its "result", and the object
    versions "before" and "after" it."""
    other = {}

    def init() -> None:
        other["before"] = versions(server, prefix)
        other["result"] = run_subprocess("repo", "init", "s3", *server.flags(prefix), *args,
                                         env={"CORSO_CONFIG_DIR": str(tmp_path / "elsewhere")})
        other["after"] = versions(server, prefix)

    before_put(monkeypatch, prefix + key, init)
    return other


def test_an_init_that_lost_the_race_leaves_the_winners_record(corso, locked, s3_prefix,
                                                              tmp_path, monkeypatch):
    """Another init (no retention) creates the repository while this one (retention) is past
    its check that the location is free. This one's record went over the winner's: the
    winner's repository locked every later write as the loser had asked."""
    other = init_elsewhere_before(monkeypatch, locked, s3_prefix, tmp_path, LOCK_RECORD,
                                  "--passphrase", "theirs")
    mine = corso("repo", "init", "s3", *locked.flags(s3_prefix), "--passphrase", "mine",
                 *GOVERNANCE)
    assert other["result"].code == 0 and " created at " in other["result"].out, other
    one_error_line(mine, 1, f"a repository already exists at s3://{LOCKED_BUCKET}/{s3_prefix}",
                   "nothing was changed")
    assert versions(locked, s3_prefix) == other["after"]
    assert record_of(locked, s3_prefix) == {"mode": "none"}


def test_an_init_with_other_settings_stops_at_the_record_of_one_under_way(
        corso, locked, s3_prefix, tmp_path, monkeypatch):
    """Another init (no retention) starts while this one (retention) is between its record and
    its format blob. It replaced the record and won the format blob: this one's repository
    to be became the other's."""
    other = init_elsewhere_before(monkeypatch, locked, s3_prefix, tmp_path, "format",
                                  "--passphrase", "theirs")
    mine = corso("repo", "init", "s3", *locked.flags(s3_prefix), "--passphrase", "mine",
                 *GOVERNANCE)
    assert mine.code == 0 and " created at " in mine.out, mine
    one_error_line(other["result"], 1, "another repo init is creating a repository at "
                   f"s3://{LOCKED_BUCKET}/{s3_prefix} with other Object Lock settings",
                   f"{LOCK_RECORD} is there", "nothing was written")
    assert other["after"] == other["before"]
    assert record_of(locked, s3_prefix) == GOVERNANCE_RECORD


def test_an_init_with_the_same_settings_finds_its_record_and_the_format_blob_decides(
        corso, locked, s3_prefix, tmp_path, monkeypatch):
    other = init_elsewhere_before(monkeypatch, locked, s3_prefix, tmp_path, "format",
                                  "--passphrase", "theirs", *GOVERNANCE)
    mine = corso("repo", "init", "s3", *locked.flags(s3_prefix), "--passphrase", "mine",
                 *GOVERNANCE)
    assert other["result"].code == 0 and " created at " in other["result"].out, other
    one_error_line(mine, 1, "a repository already exists", "nothing was changed")
    assert versions(locked, s3_prefix) == other["after"]
    assert record_of(locked, s3_prefix) == GOVERNANCE_RECORD
    assert [v for v in other["after"] if v[0].endswith(LOCK_RECORD)] == [
        v for v in other["before"] if v[0].endswith(LOCK_RECORD)]


def test_an_init_interrupted_after_its_record_leaves_no_repository(corso, locked, s3_prefix,
                                                                   monkeypatch):
    """Only the record is there: no repository to connect to; the same init goes on from it,
    and one with other settings cannot take that record for its own."""

    def interrupt():
        raise KeyboardInterrupt

    before_put(monkeypatch, s3_prefix + "format", interrupt)
    init = ("repo", "init", "s3", *locked.flags(s3_prefix), "--passphrase", "pw")
    assert corso(*init, *GOVERNANCE).code == 130
    assert record_of(locked, s3_prefix) == GOVERNANCE_RECORD
    one_error_line(corso("repo", "connect", "s3", *locked.flags(s3_prefix), "--passphrase",
                         "pw"), 1, f"no corso repository at s3://{LOCKED_BUCKET}/{s3_prefix}")

    before = versions(locked, s3_prefix)
    one_error_line(corso(*init), 1, f"{LOCK_RECORD} is there", "delete that record")
    assert versions(locked, s3_prefix) == before

    again = corso(*init, *GOVERNANCE)
    assert again.code == 0 and " created at " in again.out, again
    assert record_of(locked, s3_prefix) == GOVERNANCE_RECORD
    assert lock_of(locked, s3_prefix + "format")[0] == "GOVERNANCE"


def test_an_init_with_other_settings_goes_on_once_the_leftover_record_is_deleted(
        corso, locked, s3_prefix):
    """On a locked bucket a delete only hides the leftover behind a delete marker: the new
    record is created all the same."""
    locked.admin().put_object(Bucket=LOCKED_BUCKET, Key=s3_prefix + LOCK_RECORD,
                              Body=json.dumps(GOVERNANCE_RECORD).encode())
    init = ("repo", "init", "s3", *locked.flags(s3_prefix), "--passphrase", "pw")
    assert corso(*init).code == 1
    locked.admin().delete_object(Bucket=LOCKED_BUCKET, Key=s3_prefix + LOCK_RECORD)
    done = corso(*init)
    assert done.code == 0 and " created at " in done.out, done
    assert record_of(locked, s3_prefix) == {"mode": "none"}


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
