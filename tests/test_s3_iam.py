"""Which IAM permissions corso-s3 needs, proved on an S3 that enforces IAM (moto).

A user with exactly the policy the README documents does everything a repository does; with
any one permission dropped, the operation that needs it fails naming it; the one permission of
Corso's documented list that corso-s3 never uses is shown to be unnecessary. A canary proves
enforcement is on, so none of this can pass hollow.
"""

from __future__ import annotations

import os

import boto3
import pytest
from botocore.exceptions import ClientError
from cli_fixtures import one_error_line
from s3_servers import with_small_parts

from corso_core.api import NotFound, PermissionDenied
from corso_s3.factory import open_storage
from corso_s3.permissions import REQUIRED, UNNECESSARY
from corso_s3.storage import MIN_PART_SIZE

CORSO_DOCUMENTED = (*REQUIRED, *UNNECESSARY)


def storage_for(server, prefix="repo/", **overrides):
    storage = with_small_parts(open_storage(server.values(prefix, **overrides)))
    return storage


def exercise(storage) -> None:
    """What a repository does to its bucket: write (some blobs multipart), read, list,
    delete, and abort the multipart upload a killed process left behind."""
    storage.put_new("format", b"format blob")
    big = os.urandom(MIN_PART_SIZE + 100)
    storage.put("data/aa/big", big)
    for i in range(20):
        storage.put(f"data/bb/blob{i:02d}", b"x" * i)
    assert storage.get("data/aa/big", MIN_PART_SIZE, 100) == big[MIN_PART_SIZE:]
    assert storage.get_tail("data/bb/blob19", 3) == b"xxx"
    assert storage.stat("format").size == len(b"format blob")
    assert len(list(storage.list("data/"))) == 21
    for i in range(10):
        storage.delete(f"data/bb/blob{i:02d}")
    with pytest.raises(NotFound):
        storage.get("data/bb/blob00")
    killed = "data/cc/cc" + "0" * 30  # a pack's key: an upload a killed backup left
    storage.request("CreateMultipartUpload", killed, Key=storage.prefix + killed)
    assert storage.cleanup(0) == 1


def test_canary_enforcement_is_on(iam_s3):
    """An action outside the policy is refused: IAM is enforced, not just configured."""
    server = iam_s3(CORSO_DOCUMENTED)
    with pytest.raises(ClientError) as denied:
        server.admin().get_bucket_acl(Bucket=server.bucket)
    assert denied.value.response["Error"]["Code"] == "AccessDenied"


def test_documented_policy_suffices_for_everything(iam_s3, corso, monkeypatch, tmp_path):
    server = iam_s3(CORSO_DOCUMENTED)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", server.access_key)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", server.secret_key)
    init = corso("repo", "init", "s3", *server.flags("cli/"), "--passphrase", "pw")
    assert init.code == 0, init
    monkeypatch.setenv("CORSO_CONFIG_DIR", str(tmp_path / "second"))
    connect = corso("repo", "connect", "s3", *server.flags("cli/"), "--passphrase", "pw")
    assert connect.code == 0, connect
    assert corso("repo", "status", "--passphrase", "pw").code == 0
    exercise(storage_for(server))


def test_listing_the_parts_of_an_upload_is_never_needed(iam_s3):
    storage = storage_for(iam_s3(set(CORSO_DOCUMENTED) - set(UNNECESSARY)))
    exercise(storage)


def _put_small(storage):
    storage.put("data/x", b"x")


def _put_multipart(storage):
    storage.put("data/big", bytes(MIN_PART_SIZE + 1))


def _stale_upload_then_cleanup(storage):
    killed = "data/cc/cc" + "0" * 30
    storage.request("CreateMultipartUpload", killed, Key=storage.prefix + killed)
    storage.cleanup(0)


DROPPED = {
    "s3:PutObject": [("PutObject", _put_small), ("CreateMultipartUpload", _put_multipart)],
    "s3:GetObject": [("GetObject", lambda s: s.get("format")),
                     ("HeadObject", lambda s: s.stat("format"))],
    "s3:ListBucket": [("ListObjectsV2", lambda s: list(s.list("data/")))],
    "s3:DeleteObject": [("DeleteObject", lambda s: s.delete("data/x"))],
    "s3:GetBucketLocation": [("GetBucketLocation", None)],
    "s3:AbortMultipartUpload": [("AbortMultipartUpload", _stale_upload_then_cleanup)],
    "s3:ListBucketMultipartUploads": [("ListMultipartUploads", _stale_upload_then_cleanup)],
}


def test_every_required_permission_has_a_drop_test():
    assert set(DROPPED) == set(REQUIRED)


@pytest.mark.parametrize("permission", sorted(DROPPED))
def test_dropping_a_permission_fails_naming_it(iam_s3, permission):
    server = iam_s3(set(CORSO_DOCUMENTED) - {permission})
    for operation, run in DROPPED[permission]:
        with pytest.raises(PermissionDenied) as denied:
            if run is None:  # without --region, opening asks the bucket for its region
                storage_for(server)
            else:
                run(storage_for(server, region="us-east-1"))
        message = str(denied.value)
        assert f"S3 {operation} " in message and f"needs IAM permission {permission}" in message


def test_wrong_secret_and_unknown_key_get_their_own_messages(iam_s3):
    server = iam_s3(CORSO_DOCUMENTED)
    with pytest.raises(PermissionDenied, match="secret access key does not match"):
        storage_for(server, aws_secret_access_key="wrong-secret")
    with pytest.raises(PermissionDenied, match="access key is not known"):
        storage_for(server, aws_access_key="AKIAUNKNOWN000000000")


@pytest.mark.parametrize("flag, value, message", [
    ("--aws-secret-access-key", "wrong-secret",
     "S3 refused the credentials: the secret access key does not match the access key "
     "(SignatureDoesNotMatch)"),
    ("--aws-access-key", "AKIAUNKNOWN000000000", "S3 refused the credentials: the access key "
     "is not known at {endpoint} (InvalidAccessKeyId)"),
])
def test_bad_credentials_refused_on_a_head_request_get_their_own_message(
        iam_s3, corso, flag, value, message):
    """With --region, init's first request is a HEAD, whose refusal has no body to say why:
    the message must still name the credentials, not an IAM permission."""
    server = iam_s3(CORSO_DOCUMENTED)
    keys = {"--aws-access-key": server.access_key,
            "--aws-secret-access-key": server.secret_key, flag: value}
    result = corso("repo", "init", "s3", *server.flags("repo/"), "--region", "us-east-1",
                   *(part for pair in keys.items() for part in pair), "--passphrase", "pw")
    one_error_line(result, 1, message.format(endpoint=server.endpoint))


def test_admin_client_cannot_bypass(iam_s3):
    """The fixture's root key is not an IAM user: with enforcement on it is refused too."""
    server = iam_s3(CORSO_DOCUMENTED)
    root = boto3.client("s3", endpoint_url=f"http://{server.endpoint}", region_name="us-east-1",
                        aws_access_key_id="moto-root", aws_secret_access_key="moto-root")
    with pytest.raises(ClientError):
        root.list_objects_v2(Bucket=server.bucket)
