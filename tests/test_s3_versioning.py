"""Versioned buckets keep what corso overwrites and deletes.

`repo init` and `connect` say so, and so does a command's first delete (the bucket may have
been versioned since init); after `update-passphrase` the old versions of the format blobs,
which the old passphrase still opens, are deleted, or named when they may not be.
On moto with IAM enforcement, so each optional permission is shown to do what the README says;
the deletes of whole commands on SeaweedFS, in a bucket of each test's own.
"""

from __future__ import annotations

import dataclasses
import json
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor

import pytest
from cli_fixtures import Result
from s3_servers import moto_without_iam, requests_sent

from corso_s3.factory import open_storage
from corso_s3.permissions import REQUIRED, VERSIONED
from corso_s3.storage import S3Storage

OLD, NEW = "the old passphrase", "the new passphrase"
KEY_BLOBS = ["repo/format", "repo/format-copy"]


def keys(server) -> list[str]:
    return ["--aws-access-key", server.access_key, "--aws-secret-access-key", server.secret_key]


def init(corso, server) -> Result:
    return corso("repo", "init", "s3", *server.flags("repo/"), *keys(server), "--passphrase", OLD)


def update_passphrase(corso, server) -> Result:
    return corso("repo", "update-passphrase", *keys(server), "--passphrase", OLD,
                 "--new-passphrase", NEW)


def kept_warnings(result: Result, server) -> list[str]:
    """The lines of the warning that the bucket keeps what corso deletes."""
    assert result.code == 0, result
    return [line for line in result.err.splitlines() if line.startswith(
        f"corso: warning: bucket {server.bucket} has versioning ")]


@pytest.fixture
def own_bucket(seaweedfs, monkeypatch):
    """A SeaweedFS bucket of this test's own, created unversioned: versioning once enabled is
    never off again (at best Suspended), so the bucket the other tests share must not get it."""
    server = dataclasses.replace(seaweedfs, bucket=f"corso-versioned-{uuid.uuid4().hex[:12]}")
    server.admin().create_bucket(Bucket=server.bucket)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", server.access_key)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", server.secret_key)
    monkeypatch.setenv("CORSO_PASSPHRASE", OLD)
    return server


def set_versioning(server, *statuses: str) -> None:
    for status in statuses:
        server.admin().put_bucket_versioning(Bucket=server.bucket,
                                             VersioningConfiguration={"Status": status})


@pytest.fixture
def versioning_asked(monkeypatch) -> list[str]:
    """The URL of every GetBucketVersioning request sent, whichever code asks."""
    return requests_sent(monkeypatch, "GetBucketVersioning")


def back_up(corso, tmp_path, name: str) -> str:
    (tmp_path / name).mkdir()
    (tmp_path / name / "file").write_text(f"the data of {name}")
    done = corso("backup", "create", "files", "--path", str(tmp_path / name), "--json")
    assert done.code == 0 and done.err == "", done
    return json.loads(done.out)["id"]


def key_blob_versions(server, moto_endpoint) -> list[tuple[str, bool]]:
    """(key, is the latest) for every version of the format blobs."""
    moto_without_iam(moto_endpoint)
    listed = server.admin().list_object_versions(Bucket=server.bucket, Prefix="repo/format")
    return sorted((v["Key"], v["IsLatest"]) for v in listed.get("Versions", []))


@pytest.mark.parametrize("status", ["Enabled", "Suspended"])
def test_init_and_connect_say_that_deleted_data_stays_as_old_versions(corso, iam_s3, status,
                                                                      monkeypatch, tmp_path):
    server = iam_s3([*REQUIRED, *VERSIONED], versioning=status)
    created = init(corso, server)
    assert created.code == 0, created
    warning = (f"corso: warning: bucket {server.bucket} has versioning {status}: what corso "
               "deletes or overwrites stays in it as noncurrent versions")
    assert created.err.startswith(warning) and len(created.err.splitlines()) == 1, created.err
    assert "lifecycle rule" in created.err and "NoncurrentVersionExpiration" in created.err
    monkeypatch.setenv("CORSO_CONFIG_DIR", str(tmp_path / "second-host"))
    connected = corso("repo", "connect", "s3", *server.flags("repo/"), *keys(server),
                      "--passphrase", OLD)
    assert connected.code == 0 and connected.err.startswith(warning), connected


@pytest.mark.parametrize("status, policy", [
    (None, [*REQUIRED, *VERSIONED]),
    ("Enabled", REQUIRED),  # may not ask: GetBucketVersioning is optional
])
def test_an_unversioned_bucket_or_a_refused_question_says_nothing(corso, iam_s3, status, policy):
    server = iam_s3(policy, versioning=status)
    created = init(corso, server)
    assert created.code == 0 and created.err == "", created
    changed = update_passphrase(corso, server)
    assert changed.code == 0 and changed.err == "", changed


def test_update_passphrase_deletes_the_old_versions_of_the_format_blobs(corso, iam_s3,
                                                                       moto_endpoint):
    """They hold the master key wrapped under the old passphrase: left there, a passphrase
    changed because it leaked would still open the repository."""
    server = iam_s3([*REQUIRED, *VERSIONED], versioning="Enabled")
    assert init(corso, server).code == 0
    changed = update_passphrase(corso, server)
    assert changed.code == 0 and changed.err == "", changed
    assert key_blob_versions(server, moto_endpoint) == [(key, True) for key in KEY_BLOBS]


def test_update_passphrase_names_the_old_versions_it_may_not_delete(corso, iam_s3,
                                                                   moto_endpoint):
    server = iam_s3([*REQUIRED, "s3:GetBucketVersioning"], versioning="Enabled")
    assert init(corso, server).code == 0
    changed = update_passphrase(corso, server)
    assert changed.code == 0, changed
    lines = changed.err.splitlines()
    assert len(lines) == 1 and lines[0].startswith(
        f"corso: warning: bucket {server.bucket} is versioned: old versions of "
        f"s3://{server.bucket}/repo/format and s3://{server.bucket}/repo/format-copy remain and "
        "still open the repository with the old passphrase"), changed.err
    assert key_blob_versions(server, moto_endpoint) == [
        (key, latest) for key in KEY_BLOBS for latest in (False, True)]


@pytest.mark.parametrize("versioning", [(), ("Enabled",), ("Enabled", "Suspended")])
def test_a_deleting_command_says_once_that_a_bucket_versioned_since_init_keeps_it(
        corso, own_bucket, versioning_asked, versioning, tmp_path):
    """Init found the bucket unversioned and said nothing; `backup delete` and maintenance,
    which the user runs to free space, each say at their first delete that the bucket keeps
    what they delete, once however many blobs they delete, for one GetBucketVersioning. A
    delete on an unversioned bucket leaves no delete marker: no question is sent. Nor does a
    backup ask, though it deletes its own session record as it ends."""
    server = own_bucket
    assert init(corso, server).code == 0
    set_versioning(server, *versioning)
    versioning_asked.clear()
    backups = [back_up(corso, tmp_path, name) for name in ("first", "second")]
    assert versioning_asked == []
    warned = 1 if versioning else 0

    deleted = corso("backup", "delete", "files", "--backups", ",".join(backups))
    lines = kept_warnings(deleted, server)
    assert len(lines) == warned and deleted.err == "".join(f"{line}\n" for line in lines)
    if versioning:
        assert lines[0].startswith(f"corso: warning: bucket {server.bucket} has versioning "
                                   f"{versioning[-1]}: what corso deletes or overwrites stays")
        assert "lifecycle rule" in lines[0] and f"s3://{server.bucket}/repo/" in lines[0]
    assert len(versioning_asked) == warned
    versioning_asked.clear()

    maintained = corso("repo", "maintenance", "--json")
    assert json.loads(maintained.out)["index_blobs_merged"] >= 2  # several deletes
    lines = kept_warnings(maintained, server)
    assert len(lines) == warned and maintained.err == "".join(f"{line}\n" for line in lines)
    assert len(versioning_asked) == warned


def test_deletes_from_several_threads_warn_once(own_bucket, versioning_asked, monkeypatch,
                                                caplog):
    """The first deletes of a command can run at once; they ask and warn once between them,
    even while the question is slow to answer."""
    server = own_bucket
    set_versioning(server, "Enabled")
    keys = [f"data/{i:02x}/{i:064x}" for i in range(8)]
    for key in keys:
        server.admin().put_object(Bucket=server.bucket, Key=f"repo/{key}", Body=b"x")
    ask = S3Storage.bucket_versioning
    monkeypatch.setattr(S3Storage, "bucket_versioning",
                        lambda storage: time.sleep(0.2) or ask(storage))
    storage = open_storage(server.values("repo/"))
    together = threading.Barrier(len(keys))

    def delete(key: str) -> None:
        together.wait()
        storage.delete(key)

    with ThreadPoolExecutor(len(keys)) as pool:
        list(pool.map(delete, keys))
    storage.close()
    warnings = [r for r in caplog.records if r.name == "corso.s3" and r.levelname == "WARNING"]
    assert len(warnings) == 1 and "has versioning Enabled" in warnings[0].getMessage()
    assert len(versioning_asked) == 1


def test_a_delete_that_may_not_ask_says_nothing_and_fails_nothing(corso, iam_s3,
                                                                  versioning_asked, tmp_path,
                                                                  monkeypatch):
    """Without s3:GetBucketVersioning the delete marker still makes `backup delete` ask,
    once; the refusal leaves the bucket's versioning unknown, as at init."""
    server = iam_s3(REQUIRED, versioning="Enabled")
    assert init(corso, server).code == 0
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", server.access_key)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", server.secret_key)
    monkeypatch.setenv("CORSO_PASSPHRASE", OLD)
    backup = back_up(corso, tmp_path, "only")
    versioning_asked.clear()
    deleted = corso("backup", "delete", "files", "--backups", backup)
    assert deleted.code == 0 and deleted.err == "", deleted
    assert len(versioning_asked) == 1
