"""`corso repo init|connect|status|check-access s3` end to end against SeaweedFS (and moto for
the session token): connections, credentials from each link of the chain, secrets, TLS."""

from __future__ import annotations

import json
import os
import socket
import threading
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path

import botocore.auth
import botocore.utils
import pytest
from cli_fixtures import Result, one_error_line

from corso_core import config
from corso_s3 import access, client
from corso_s3.factory import unchecked_storage
from corso_s3.permissions import REQUIRED
from corso_s3.storage import S3Storage

PASS = "correct horse battery staple"
#: Credentials for endpoints that check none (a fake server).
KEYS = ["--aws-access-key", "key", "--aws-secret-access-key", "secret"]


def config_file() -> Path:
    return Path(os.environ["CORSO_CONFIG_DIR"]) / "corso.toml"


def keys_under(server, prefix: str) -> list[str]:
    listed = server.admin().list_objects_v2(Bucket=server.bucket, Prefix=prefix)
    return [item["Key"] for item in listed.get("Contents", [])]


def with_keys(server) -> list[str]:
    return ["--aws-access-key", server.access_key, "--aws-secret-access-key", server.secret_key]


def use_env_keys(monkeypatch, server) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", server.access_key)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", server.secret_key)


def init(corso, server, prefix, *extra) -> Result:
    return corso("repo", "init", "s3", *server.flags(prefix), *with_keys(server),
                 "--passphrase", PASS, *extra)


def test_init_then_connect_from_a_second_config_dir(corso, seaweedfs, s3_prefix, tmp_path,
                                                    monkeypatch):
    done = init(corso, seaweedfs, s3_prefix, "--json")
    assert done.code == 0, done
    created = json.loads(done.out)
    assert created["location"] == f"s3://{seaweedfs.bucket}/{s3_prefix}"
    assert f"{s3_prefix}format" in keys_under(seaweedfs, s3_prefix)
    saved = config_file().read_text()
    assert seaweedfs.bucket in saved and s3_prefix in saved and seaweedfs.endpoint in saved

    monkeypatch.setenv("CORSO_CONFIG_DIR", str(tmp_path / "second-host"))
    use_env_keys(monkeypatch, seaweedfs)
    connected = corso("repo", "connect", "s3", *seaweedfs.flags(s3_prefix), "--passphrase", PASS,
                      "--json")
    assert connected.code == 0, connected
    assert json.loads(connected.out)["repository_id"] == created["repository_id"]

    status = corso("repo", "status", "--passphrase", PASS, "--json")
    assert status.code == 0, status
    shown = json.loads(status.out)
    assert shown["repository_id"] == created["repository_id"] and shown["backend"] == "s3"
    assert shown["storage_requests"]["requests"]["GET"] >= 1
    assert shown["storage_requests"]["bytes_down"] > 0


def test_the_region_init_asks_for_is_saved_and_not_asked_again(corso, seaweedfs, s3_prefix,
                                                                monkeypatch):
    assert init(corso, seaweedfs, s3_prefix).code == 0
    assert config.load(str(config_file())).settings["region"] == "us-east-1"
    use_env_keys(monkeypatch, seaweedfs)
    asked = []
    region = S3Storage.bucket_region
    monkeypatch.setattr(S3Storage, "bucket_region",
                        lambda storage: asked.append(storage) or region(storage))
    assert corso("repo", "status", "--passphrase", PASS).code == 0
    assert asked == []
    saved = config.load(str(config_file()))
    del saved.settings["region"]  # a connection saved before regions were kept
    config.save(str(config_file()), saved)
    assert corso("repo", "status", "--passphrase", PASS).code == 0
    assert len(asked) == 1


def test_a_storage_flag_differing_from_the_connection_names_both(corso, seaweedfs,
                                                                  s3_prefix, monkeypatch):
    assert init(corso, seaweedfs, s3_prefix).code == 0
    use_env_keys(monkeypatch, seaweedfs)
    assert corso("repo", "status", "--prefix", s3_prefix, "--passphrase", PASS).code == 0
    other = corso("repo", "status", "--prefix", "elsewhere", "--passphrase", PASS)
    one_error_line(other, 2, "--prefix elsewhere/ differs", s3_prefix)
    moved = corso("repo", "status", "--endpoint", "127.0.0.1:1", "--passphrase", PASS)
    one_error_line(moved, 2, "--endpoint 127.0.0.1:1 differs", seaweedfs.endpoint)
    flagged = corso("repo", "status", "--disable-tls-verification", "--passphrase", PASS)
    one_error_line(flagged, 2, "--disable-tls-verification (on) differs from the connected "
                               "repository's (off)")


def test_backup_and_restore_through_s3(corso, seaweedfs, s3_prefix, tmp_path, monkeypatch):
    source = tmp_path / "source"
    source.mkdir()
    (source / "a.txt").write_text("on s3")
    assert init(corso, seaweedfs, s3_prefix).code == 0
    use_env_keys(monkeypatch, seaweedfs)
    monkeypatch.setenv("CORSO_PASSPHRASE", PASS)
    backup = corso("backup", "create", "files", "--path", str(source), "--json")
    assert backup.code == 0, backup
    restored = tmp_path / "restored"
    done = corso("restore", "files", "--backup", json.loads(backup.out)["id"],
                 "--destination", str(restored))
    assert done.code == 0, done
    assert (restored / "source" / "a.txt").read_text() == "on s3"


def test_init_twice_with_the_same_passphrase_says_it_exists(corso, seaweedfs, s3_prefix):
    assert init(corso, seaweedfs, s3_prefix).code == 0
    again = init(corso, seaweedfs, s3_prefix)
    assert again.code == 0 and "already exists" in again.out


def test_wrong_passphrase_is_refused(corso, seaweedfs, s3_prefix, monkeypatch, tmp_path):
    assert init(corso, seaweedfs, s3_prefix).code == 0
    monkeypatch.setenv("CORSO_CONFIG_DIR", str(tmp_path / "other"))
    wrong = corso("repo", "connect", "s3", *seaweedfs.flags(s3_prefix), *with_keys(seaweedfs),
                  "--passphrase", "not it")
    one_error_line(wrong, 1, "passphrase")
    assert not config_file().exists()


def test_missing_bucket_is_named_and_never_created(corso, seaweedfs):
    server = type(seaweedfs)(**{**vars(seaweedfs), "bucket": "no-such-bucket"})
    result = init(corso, server, "p/")
    one_error_line(result, 1, f"bucket no-such-bucket does not exist at {seaweedfs.endpoint}; "
                              "create it first (corso never creates buckets)")
    names = [b["Name"] for b in seaweedfs.admin().list_buckets()["Buckets"]]
    assert "no-such-bucket" not in names and not config_file().exists()


def test_wrong_secret_key_is_named(corso, seaweedfs, s3_prefix):
    result = corso("repo", "init", "s3", *seaweedfs.flags(s3_prefix), "--aws-access-key",
                   seaweedfs.access_key, "--aws-secret-access-key", "wrong", "--passphrase", PASS)
    one_error_line(result, 1, "secret access key does not match")
    assert "wrong" not in result.err.replace("does not match", "")
    assert keys_under(seaweedfs, s3_prefix) == [] and not config_file().exists()


def test_a_skewed_clock_is_named_even_on_a_head_request(corso, seaweedfs, s3_prefix,
                                                        monkeypatch):
    """With --region, init starts with a HEAD, whose refusal says only "403"; a user must be
    told to fix the clock, not an IAM policy that is right."""
    now = botocore.utils.get_current_datetime
    with monkeypatch.context() as skewed:
        skewed.setattr(botocore.auth, "get_current_datetime",
                       lambda *args, **kwargs: now(*args, **kwargs) + timedelta(hours=1))
        result = init(corso, seaweedfs, s3_prefix, "--region", "us-east-1")
    one_error_line(result, 1, "clock differs from the server's", "(RequestTimeTooSkewed)")
    assert keys_under(seaweedfs, s3_prefix) == []


def test_unreachable_endpoint_is_named(corso, seaweedfs, s3_prefix, monkeypatch):
    monkeypatch.setattr(client, "MAX_RETRIES", 1)  # retried with backoff: ~20 s at 10 retries
    result = corso("repo", "init", "s3", "--bucket", seaweedfs.bucket, "--endpoint",
                   "127.0.0.1:9", "--disable-tls", *with_keys(seaweedfs), "--passphrase", PASS)
    one_error_line(result, 1, "cannot reach the S3 endpoint 127.0.0.1:9")


@pytest.mark.parametrize("variable", ["AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3"])
def test_an_endpoint_from_the_environment_does_not_redirect_aws(corso, seaweedfs, s3_prefix,
                                                                 monkeypatch, variable):
    """A repository saved as AWS is on AWS: the saved connection names no other endpoint, so
    a later run without the variable would go to a different store."""
    monkeypatch.setattr(client, "MAX_RETRIES", 1)
    monkeypatch.setenv(variable, f"http://{seaweedfs.endpoint}")
    result = corso("repo", "init", "s3", "--bucket", seaweedfs.bucket, "--prefix", s3_prefix,
                   *with_keys(seaweedfs), "--passphrase", PASS)
    one_error_line(result, 1, "cannot reach the S3 endpoint s3.amazonaws.com")
    assert keys_under(seaweedfs, s3_prefix) == [] and not config_file().exists()


def test_two_prefixes_in_one_bucket_stay_independent(corso, seaweedfs, s3_prefix, tmp_path,
                                                     monkeypatch):
    ids = {}
    for name in ("a/", "b/"):
        monkeypatch.setenv("CORSO_CONFIG_DIR", str(tmp_path / name))
        done = init(corso, seaweedfs, s3_prefix + name, "--json")
        assert done.code == 0, done
        ids[name] = json.loads(done.out)["repository_id"]
        status = corso("repo", "status", *with_keys(seaweedfs), "--passphrase", PASS, "--json")
        assert json.loads(status.out)["repository_id"] == ids[name]
    assert ids["a/"] != ids["b/"]
    assert {k.removeprefix(s3_prefix).split("/")[0] for k in keys_under(seaweedfs, s3_prefix)} \
        == {"a", "b"}


@pytest.mark.parametrize("nested, message", [
    ("a/inner/", "is inside the repository at"),
    ("", "holds the repository at"),
])
def test_nested_repositories_are_refused(corso, seaweedfs, s3_prefix, nested, message):
    assert init(corso, seaweedfs, s3_prefix + "a/").code == 0
    before = keys_under(seaweedfs, s3_prefix)
    config_file().unlink()
    result = init(corso, seaweedfs, s3_prefix + nested if nested else s3_prefix)
    one_error_line(result, 2, message, "not nest")
    assert keys_under(seaweedfs, s3_prefix) == before and not config_file().exists()


# --- the credentials chain: flags > environment > shared credentials file / profile -------


def credentials_file(path: Path, profile: str, server, secret: str | None = None) -> str:
    path.write_text(f"[{profile}]\naws_access_key_id = {server.access_key}\n"
                    f"aws_secret_access_key = {secret or server.secret_key}\n")
    return str(path)


def test_credentials_from_flags_beat_the_environment(corso, seaweedfs, s3_prefix, monkeypatch):
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", seaweedfs.access_key)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "wrong-from-env")
    assert init(corso, seaweedfs, s3_prefix).code == 0


def test_credentials_from_the_environment_beat_the_file(corso, seaweedfs, s3_prefix, tmp_path,
                                                        monkeypatch):
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", credentials_file(
        tmp_path / "creds", "default", seaweedfs, secret="wrong-from-file"))
    use_env_keys(monkeypatch, seaweedfs)
    result = corso("repo", "init", "s3", *seaweedfs.flags(s3_prefix), "--passphrase", PASS)
    assert result.code == 0, result


def test_credentials_from_a_profile_in_the_shared_file(corso, seaweedfs, s3_prefix, tmp_path,
                                                       monkeypatch):
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE",
                       credentials_file(tmp_path / "creds", "backup", seaweedfs))
    missing = corso("repo", "init", "s3", *seaweedfs.flags(s3_prefix), "--passphrase", PASS)
    one_error_line(missing, 2, "no AWS credentials found")  # [backup] is not the default
    monkeypatch.setenv("AWS_PROFILE", "backup")
    result = corso("repo", "init", "s3", *seaweedfs.flags(s3_prefix), "--passphrase", PASS)
    assert result.code == 0, result


def test_credentials_from_the_default_profile_of_the_shared_file(corso, seaweedfs, s3_prefix,
                                                                 tmp_path, monkeypatch):
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE",
                       credentials_file(tmp_path / "creds", "default", seaweedfs))
    result = corso("repo", "init", "s3", *seaweedfs.flags(s3_prefix), "--passphrase", PASS)
    assert result.code == 0, result


def test_an_unknown_profile_is_named(corso, seaweedfs, s3_prefix, monkeypatch):
    monkeypatch.setenv("AWS_PROFILE", "nobody")
    result = corso("repo", "init", "s3", *seaweedfs.flags(s3_prefix), "--passphrase", PASS)
    one_error_line(result, 2, "AWS profile not found: nobody")


# --- secrets, session tokens (moto: SeaweedFS has no STS), TLS, check-access --------------


def test_session_token_and_no_secret_in_config_or_debug_log(corso, iam_s3, monkeypatch,
                                                             tmp_path):
    server = iam_s3(REQUIRED, assumed_role=True)
    creds = {"AccessKeyId": server.access_key, "SecretAccessKey": server.secret_key,
             "SessionToken": server.session_token}
    log = tmp_path / "debug.log"
    result = corso("repo", "init", "s3", *server.flags("repo/"), "--aws-access-key",
                   creds["AccessKeyId"], "--aws-secret-access-key", creds["SecretAccessKey"],
                   "--aws-session-token", creds["SessionToken"], "--passphrase", PASS,
                   "--log-level", "debug", "--log-file", str(log))
    assert result.code == 0, result
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", creds["AccessKeyId"])
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", creds["SecretAccessKey"])
    monkeypatch.setenv("AWS_SESSION_TOKEN", "not-the-token")
    refused = corso("repo", "status", "--passphrase", PASS)
    assert refused.code != 0 and "token" in refused.err.lower(), refused
    monkeypatch.setenv("AWS_SESSION_TOKEN", creds["SessionToken"])
    status = corso("repo", "status", "--passphrase", PASS, "--log-level", "debug",
                   "--log-file", str(log))
    assert status.code == 0, status
    written = log.read_text() + config_file().read_text() + result.out + result.err + status.out
    assert log.stat().st_size > 0
    for secret in (creds["SecretAccessKey"], creds["SessionToken"], creds["AccessKeyId"], PASS):
        assert secret not in written


def test_a_profile_that_assumes_a_role(corso, iam_s3, monkeypatch, tmp_path):
    """An AWS profile with role_arn and source_profile: botocore's credential chain makes its
    own STS client (through the plugin's data loader) and every S3 call uses the role's
    keys. The source user itself may not touch the bucket, as the first command shows."""
    server = iam_s3(REQUIRED, role_to_assume=True)
    (tmp_path / "aws-config").write_text(
        f"[profile corso]\nrole_arn = {server.role_arn}\nsource_profile = source\n"
        f"region = us-east-1\n")
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "aws-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE",
                       credentials_file(tmp_path / "creds", "source", server))
    monkeypatch.setenv("AWS_ENDPOINT_URL_STS", f"http://{server.endpoint}")
    monkeypatch.setenv("AWS_PROFILE", "source")
    refused = corso("repo", "init", "s3", *server.flags("repo/"), "--passphrase", PASS)
    one_error_line(refused, 1, "access denied")
    monkeypatch.setenv("AWS_PROFILE", "corso")
    result = corso("repo", "init", "s3", *server.flags("repo/"), "--passphrase", PASS)
    assert result.code == 0, result
    assert corso("repo", "status", "--passphrase", PASS).code == 0


def test_self_signed_tls_needs_disable_tls_verification(corso, seaweedfs_tls, s3_prefix):
    strict = [f for f in seaweedfs_tls.flags(s3_prefix) if f != "--disable-tls-verification"]
    refused = corso("repo", "init", "s3", *strict, *with_keys(seaweedfs_tls), "--passphrase", PASS)
    one_error_line(refused, 1, "TLS failure", "--disable-tls-verification")
    assert not config_file().exists()
    assert init(corso, seaweedfs_tls, s3_prefix).code == 0


@pytest.fixture
def attempts(monkeypatch) -> list[str]:
    """The URL of every request the CLI's S3 clients send, each retry too."""
    sent = []
    make = client.Connection.client

    def counted(self, region):
        made = make(self, region)
        made.meta.events.register("before-send.s3", lambda request, **_: sent.append(request.url))
        return made

    monkeypatch.setattr(client.Connection, "client", counted)
    return sent


def test_plain_http_to_an_https_endpoint_fails_at_once(corso, seaweedfs_tls, s3_prefix,
                                                       attempts):
    """The endpoint closes every plain HTTP connection; it said only "connection lost after
    retries", after ~27 s of them."""
    plain = [flag if flag != "--disable-tls-verification" else "--disable-tls"
             for flag in seaweedfs_tls.flags(s3_prefix)]
    result = corso("repo", "init", "s3", *plain, *with_keys(seaweedfs_tls), "--passphrase", PASS)
    one_error_line(result, 1, f"the S3 endpoint {seaweedfs_tls.endpoint} speaks TLS (HTTPS), "
                              "not plain HTTP: drop --disable-tls")
    assert len(attempts) == 1, attempts
    assert not config_file().exists() and keys_under(seaweedfs_tls, s3_prefix) == []


def test_https_to_a_plain_http_endpoint_fails_at_once(corso, seaweedfs, s3_prefix, attempts):
    """One attempt already (an SSLError is not retried), but its message listed every TLS fix
    there is (a CA bundle, --disable-tls-verification…)."""
    tls = [flag for flag in seaweedfs.flags(s3_prefix) if flag != "--disable-tls"]
    result = corso("repo", "init", "s3", *tls, *with_keys(seaweedfs), "--passphrase", PASS)
    one_error_line(result, 1, f"the S3 endpoint {seaweedfs.endpoint} does not speak TLS (HTTPS): "
                              "add --disable-tls for plain HTTP")
    assert len(attempts) == 1, attempts
    assert not config_file().exists() and keys_under(seaweedfs, s3_prefix) == []


@contextmanager
def endpoint_answering(answer: bytes):
    """A server on 127.0.0.1 that answers every request with `answer`, then closes."""
    server = socket.create_server(("127.0.0.1", 0))

    def serve():
        while True:
            try:
                connection, _ = server.accept()
            except OSError:  # closed: the test is over
                return
            with connection:
                connection.recv(65536)
                connection.sendall(answer)

    threading.Thread(target=serve, daemon=True).start()
    try:
        yield f"127.0.0.1:{server.getsockname()[1]}"
    finally:
        server.close()


def test_plain_http_to_a_go_https_server_fails_at_once(corso, aws_env, attempts):
    """Go's HTTPS servers (MinIO, SeaweedFS with TLS) answer plain HTTP with a 400 of their
    own: GetBucketLocation's parser raised a traceback on it."""
    go = b"HTTP/1.0 400 Bad Request\r\n\r\nClient sent an HTTP request to an HTTPS server.\n"
    with endpoint_answering(go) as endpoint:
        result = corso("repo", "init", "s3", "--bucket", "bucket", "--endpoint", endpoint,
                       "--disable-tls", *KEYS, "--passphrase", PASS)
    one_error_line(result, 1, f"the S3 endpoint {endpoint} speaks TLS (HTTPS), not plain HTTP: "
                              "drop --disable-tls")
    assert len(attempts) == 1, attempts
    assert not config_file().exists()


def test_an_endpoint_that_is_no_s3_server_is_said_so(corso, aws_env):
    """A web server's page where GetBucketLocation's XML should be: a traceback before."""
    page = b"HTTP/1.0 200 OK\r\nContent-Type: text/html\r\n\r\n<!DOCTYPE html><p>Welcome"
    with endpoint_answering(page) as endpoint:
        result = corso("repo", "init", "s3", "--bucket", "bucket", "--endpoint", endpoint,
                       "--disable-tls", *KEYS, "--passphrase", PASS)
    one_error_line(result, 1, f"S3 GetBucketLocation on s3://bucket/: {endpoint} answered with "
                              "something that is not S3's XML", "is it an S3 endpoint?")
    assert not config_file().exists()


def test_a_ca_bundle_from_the_environment_verifies_a_private_certificate(
        corso, seaweedfs_tls, tls_proxy, s3_prefix, monkeypatch):
    """AWS_CA_BUNDLE is how a store with a company CA is trusted without switching
    verification off."""
    strict = [f for f in seaweedfs_tls.flags(s3_prefix) if f != "--disable-tls-verification"]
    refused = corso("repo", "init", "s3", *strict, *with_keys(seaweedfs_tls), "--passphrase", PASS)
    one_error_line(refused, 1, "CERTIFICATE_VERIFY_FAILED", "AWS_CA_BUNDLE")
    monkeypatch.setenv("AWS_CA_BUNDLE", tls_proxy.certificate)
    done = corso("repo", "init", "s3", *strict, *with_keys(seaweedfs_tls), "--passphrase", PASS)
    assert done.code == 0, done
    assert f"{s3_prefix}format" in keys_under(seaweedfs_tls, s3_prefix)


def test_check_access_probes_everything_and_cleans_up(corso, seaweedfs, s3_prefix):
    result = corso("repo", "check-access", "s3", *seaweedfs.flags(s3_prefix),
                   *with_keys(seaweedfs), "--json")
    assert result.code == 0, result
    rows = json.loads(result.out)["checks"]
    assert {r["action"] for r in rows} >= {"PutObject", "GetObject", "ListObjectsV2",
                                           "DeleteObject", "CreateMultipartUpload", "UploadPart",
                                           "AbortMultipartUpload", "ListMultipartUploads",
                                           "GetBucketLocation", "PutObject If-None-Match"}
    assert all(r["ok"] for r in rows)
    assert keys_under(seaweedfs, s3_prefix) == []
    uploads = seaweedfs.admin().list_multipart_uploads(Bucket=seaweedfs.bucket, Prefix=s3_prefix)
    assert uploads.get("Uploads", []) == []


def test_check_access_names_the_missing_permission(corso, iam_s3):
    server = iam_s3(set(REQUIRED) - {"s3:DeleteObject"})
    result = corso("repo", "check-access", "s3", *server.flags("repo/"), *with_keys(server))
    assert result.code == 1
    failed = [line for line in result.out.splitlines() if "ok" not in line.split()[-1:]]
    assert any("DeleteObject" in line and "s3:DeleteObject" in line and "access denied" in line
               for line in failed), result.out
    assert result.err.strip() == "corso: error: 1 of 10 checks failed: DeleteObject"


def test_check_access_of_a_bucket_it_cannot_use_at_all_is_one_error_line(corso, seaweedfs):
    """A missing bucket or refused credentials failed every probe alike: a table of ten rows
    saying the same, "10 of 10 checks failed" (and an endpoint out of reach took a minute
    of retries). The first probe's error is now the answer."""
    missing = ["--bucket", "no-such-bucket-here", "--endpoint", seaweedfs.endpoint,
               "--disable-tls", *with_keys(seaweedfs)]
    for region in ([], ["--region", "us-east-1"]):
        one_error_line(corso("repo", "check-access", "s3", *missing, *region), 1,
                       "bucket no-such-bucket-here does not exist at")
    keys = ["--aws-access-key", seaweedfs.access_key, "--aws-secret-access-key", "wrong"]
    one_error_line(corso("repo", "check-access", "s3", *seaweedfs.flags("x/"), *keys), 1,
                   "S3 refused the credentials")


def test_check_access_with_a_region_given_leaves_out_get_bucket_location(corso, seaweedfs,
                                                                        s3_prefix):
    """With --region the repository never asks the bucket's region: no row says that
    permission was checked (it said "ok" without a request)."""
    result = corso("repo", "check-access", "s3", *seaweedfs.flags(s3_prefix), "--region",
                   "us-east-1", *with_keys(seaweedfs), "--json")
    assert result.code == 0, result
    actions = [r["action"] for r in json.loads(result.out)["checks"]]
    assert "GetBucketLocation" not in actions and "PutObject" in actions


def test_check_access_reports_a_store_that_ignores_if_none_match(corso, seaweedfs, s3_prefix,
                                                                 monkeypatch):
    def ignoring_if_none_match(values):
        storage = unchecked_storage(values)
        def drop_header(request, **kwargs):  # before signing: as if never sent
            if "If-None-Match" in request.headers:
                del request.headers["If-None-Match"]

        storage.client.meta.events.register("before-sign.s3.PutObject", drop_header)
        return storage

    monkeypatch.setattr(access, "unchecked_storage", ignoring_if_none_match)
    result = corso("repo", "check-access", "s3", *seaweedfs.flags(s3_prefix),
                   *with_keys(seaweedfs), "--json")
    assert result.code == 1
    failed = [r for r in json.loads(result.out)["checks"] if not r["ok"]]
    assert [r["action"] for r in failed] == ["PutObject If-None-Match"]
    assert "ignores If-None-Match" in failed[0]["error"]
