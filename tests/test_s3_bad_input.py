"""Every bad input of `corso repo init|connect s3`: one line on stderr, a non-zero exit, and
nothing written (no corso.toml, no object under the prefix)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from cli_fixtures import one_error_line

PASS = "pw"


def keys_under(server, prefix: str) -> list[str]:
    pages = server.admin().get_paginator("list_objects_v2").paginate(Bucket=server.bucket,
                                                                      Prefix=prefix)
    return [o["Key"] for page in pages for o in page.get("Contents", [])]


def nothing_written(server, prefix: str, expected=()) -> None:
    assert not (Path(os.environ["CORSO_CONFIG_DIR"]) / "corso.toml").exists()
    assert keys_under(server, prefix) == list(expected)


@pytest.fixture
def keys(seaweedfs, monkeypatch):
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", seaweedfs.access_key)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", seaweedfs.secret_key)


@pytest.mark.parametrize("command", ["init", "connect"])
@pytest.mark.parametrize("flags, code, message", [
    (["--bucket", ""], 2, "--bucket must not be empty"),
    (["--bucket", "s3://"], 2, "--bucket must not be empty"),
    (["--bucket", "Bad_Bucket"], 2, "invalid bucket name 'Bad_Bucket'"),
    (["--bucket", "ab"], 2, "invalid bucket name 'ab'"),
    (["--bucket", "192.168.1.1"], 2, "invalid bucket name"),
    (["--bucket", "ok-bucket", "--endpoint", "http://127.0.0.1:9000"], 2,
     "drop 'http://' (and add --disable-tls for plain HTTP)"),
    (["--bucket", "ok-bucket", "--endpoint", "host/path"], 2, "expected host[:port]"),
    (["--bucket", "ok-bucket", "--endpoint", "127.0.0.1:99999"], 2, "port 1-65535"),
    (["--bucket", "ok-bucket", "--prefix", "a//b"], 2, "invalid --prefix 'a//b'"),
    (["--bucket", "ok-bucket", "--aws-access-key", "AKIA"], 2,
     "--aws-access-key and --aws-secret-access-key go together"),
])
def test_malformed_flags(corso, seaweedfs, keys, command, flags, code, message):
    before = keys_under(seaweedfs, "")  # other tests share the bucket
    result = corso("repo", command, "s3", *flags, "--passphrase", PASS)
    one_error_line(result, code, message)
    nothing_written(seaweedfs, "", before)


@pytest.mark.parametrize("flags, code, message", [
    (["--retention-mode", "forever"], 2, "'forever' is not one of"),
    (["--retention-mode", "governance", "--retention-duration", "30x"], 2,
     "invalid --retention-duration '30x'"),
    (["--retention-mode", "governance", "--retention-duration", "0d"], 2,
     "invalid --retention-duration '0d'"),
    (["--retention-mode", "compliance"], 2, "needs --retention-duration"),
    (["--retention-duration", "30d"], 2, "need --retention-mode"),
    (["--retention-mode", "governance", "--retention-duration", "1d"], 2,
     "needs a bucket with Object Lock enabled; bucket corso-test has none"),
])
def test_bad_retention(corso, seaweedfs, keys, s3_prefix, flags, code, message):
    result = corso("repo", "init", "s3", *seaweedfs.flags(s3_prefix), *flags,
                   "--passphrase", PASS)
    one_error_line(result, code, message)
    nothing_written(seaweedfs, s3_prefix)


def test_connect_where_there_is_no_repository(corso, seaweedfs, keys, s3_prefix):
    result = corso("repo", "connect", "s3", *seaweedfs.flags(s3_prefix), "--passphrase", PASS)
    one_error_line(result, 1, f"no corso repository at s3://{seaweedfs.bucket}/{s3_prefix}")
    nothing_written(seaweedfs, s3_prefix)


def test_a_prefix_holding_something_else(corso, seaweedfs, keys, s3_prefix):
    foreign = f"{s3_prefix}photos/cat.jpg"
    seaweedfs.admin().put_object(Bucket=seaweedfs.bucket, Key=foreign, Body=b"meow")
    connect = corso("repo", "connect", "s3", *seaweedfs.flags(s3_prefix), "--passphrase", PASS)
    one_error_line(connect, 1, "no corso repository at")
    init = corso("repo", "init", "s3", *seaweedfs.flags(s3_prefix), "--passphrase", PASS)
    one_error_line(init, 2, "holds objects that are not a corso repository (such as "
                            "photos/cat.jpg); choose an empty --prefix")
    nothing_written(seaweedfs, s3_prefix, [foreign])


def test_retention_flags_belong_to_init_only(corso, seaweedfs, keys, s3_prefix):
    result = corso("repo", "connect", "s3", *seaweedfs.flags(s3_prefix), "--retention-mode",
                   "governance", "--passphrase", PASS)
    one_error_line(result, 2, "--retention-mode")
    nothing_written(seaweedfs, s3_prefix)
