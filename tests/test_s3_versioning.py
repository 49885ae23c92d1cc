"""Versioned buckets keep what corso overwrites and deletes.

`repo init` and `connect` say so; after `update-passphrase` the old versions of the format
blobs, which the old passphrase still opens, are deleted, or named when they may not be.
On moto with IAM enforcement, so each optional permission is shown to do what the README says.
"""

from __future__ import annotations

import pytest
from cli_fixtures import Result
from s3_servers import moto_without_iam

from corso_s3.permissions import REQUIRED, VERSIONED

OLD, NEW = "the old passphrase", "the new passphrase"
KEY_BLOBS = ["repo/format", "repo/format-copy"]


def keys(server) -> list[str]:
    return ["--aws-access-key", server.access_key, "--aws-secret-access-key", server.secret_key]


def init(corso, server) -> Result:
    return corso("repo", "init", "s3", *server.flags("repo/"), *keys(server), "--passphrase", OLD)


def update_passphrase(corso, server) -> Result:
    return corso("repo", "update-passphrase", *keys(server), "--passphrase", OLD,
                 "--new-passphrase", NEW)


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
