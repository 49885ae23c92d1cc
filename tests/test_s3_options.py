"""The s3 flags' normalisation and the client they build, without a server."""

from __future__ import annotations

import datetime
import os
import subprocess
import sys

import pytest

from corso_core.api import Corrupted, UsageError
from corso_s3 import options
from corso_s3.client import Connection, S3OnlyLoader
from corso_s3.lock import NO_LOCK, from_flags, from_record, parse_duration
from corso_s3.storage import S3Storage


@pytest.mark.parametrize("given, saved", [
    ("s3://my-bucket", "my-bucket"), ("my-bucket/", "my-bucket"), ("a.b-c", "a.b-c"),
])
def test_bucket_names_are_normalised(given, saved):
    assert options.bucket_name(None, None, given) == saved


@pytest.mark.parametrize("given, saved", [
    ("", ""), ("/", ""), ("a", "a/"), ("/a/b/", "a/b/"),
    ("team-1/db.backups", "team-1/db.backups/"),
])
def test_prefixes_are_normalised_to_end_in_a_slash(given, saved):
    assert options.prefix(None, None, given) == saved


@pytest.mark.parametrize("bad", ["a//b", "../up", "a/.hidden", "sp ace"])
def test_prefixes_that_stores_would_mangle_are_refused(bad):
    with pytest.raises(UsageError, match="invalid --prefix"):
        options.prefix(None, None, bad)


def test_durations():
    assert parse_duration("30d") == datetime.timedelta(days=30)
    assert parse_duration("12h") == datetime.timedelta(hours=12)
    assert parse_duration("1y") == datetime.timedelta(days=365)
    assert parse_duration("100y") == datetime.timedelta(days=36500)
    for too_long in ("101y", "36501d", "9999999999h", "1" + "0" * 5000 + "h"):
        with pytest.raises(UsageError, match="invalid --retention-duration"):
            parse_duration(too_long)  # not an OverflowError or ValueError traceback
    assert from_flags("none", None, None) is None
    lock = from_flags("compliance", "2d", True)
    assert (lock.mode, lock.duration, lock.extend) == ("COMPLIANCE", datetime.timedelta(days=2),
                                                       True)


def test_lock_records_read_back_as_written():
    assert from_record(NO_LOCK) is None
    assert S3Storage(None, "b", "p/")._lock_recorded(b'{"mode": "none"}') is None
    lock = from_flags("governance", "30d", False)
    assert from_record(lock.as_dict()) == lock
    assert lock.as_dict() == {"mode": "governance", "duration_hours": 720, "extend": False}


@pytest.mark.parametrize("record", [
    b"garbage", b"[]", b"{}", b'{"mode": "None"}', b'{"mode": "none", "duration_hours": 1}',
    b'{"mode": "governance"}', b'{"mode": "compliance", "duration_hours": 0}',
])
def test_a_damaged_lock_record_is_corrupted_in_one_line(record):
    """A "none" record that carries settings, or a lock record without them, may have meant
    to lock: neither is taken for no retention."""
    storage = S3Storage(None, "b", "p/")
    with pytest.raises(Corrupted, match=r"^the Object Lock record s3://b/p/s3-object-lock\.json "
                                        r"is damaged \(.*\); put back its earlier version") as e:
        storage._lock_recorded(record)
    assert "\n" not in str(e.value)


def test_custom_endpoints_use_path_style_and_aws_its_own(aws_env):
    custom = Connection("minio.local:9000", access_key="k", secret_key="s").client("us-east-1")
    assert custom.meta.config.s3["addressing_style"] == "path"
    assert custom.meta.endpoint_url == "https://minio.local:9000"
    plain = Connection("minio.local:9000", disable_tls=True, access_key="k", secret_key="s")
    assert plain.client("us-east-1").meta.endpoint_url == "http://minio.local:9000"
    aws = Connection(access_key="k", secret_key="s").client("eu-west-1")
    assert aws.meta.config.s3["addressing_style"] == "auto"
    assert aws.meta.endpoint_url == "https://s3.eu-west-1.amazonaws.com"


def test_a_connection_never_shows_its_secrets():
    connection = Connection("e:1", access_key="AKIAID", secret_key="SECRET", session_token="TOK")
    shown = repr(connection) + str(connection)
    assert "SECRET" not in shown and "TOK" not in shown and "AKIAID" not in shown


def test_credential_flags_beat_a_profile_even_a_missing_one(aws_env, monkeypatch):
    monkeypatch.setenv("AWS_PROFILE", "nobody")
    client = Connection("e:1", access_key="flag-key", secret_key="flag-secret").client("us-east-1")
    assert client._request_signer._credentials.access_key == "flag-key"


def test_the_client_loads_the_s3_model_without_listing_every_service(aws_env, monkeypatch,
                                                                      tmp_path):
    """botocore lists ~400 services' directories before loading a model; corso's loader
    lists S3 alone, and still searches AWS_DATA_PATH first, then botocore's data."""
    listed, real_listdir = [], os.listdir
    monkeypatch.setattr(os, "listdir", lambda path: listed.append(path) or real_listdir(path))
    monkeypatch.setenv("AWS_DATA_PATH", str(tmp_path))
    client = Connection("e:1", access_key="k", secret_key="s").client("us-east-1")
    assert client.meta.service_model.service_name == "s3"
    assert not [path for path in listed if path.rstrip("/").endswith("/data")]
    loader = client._loader
    assert isinstance(loader, S3OnlyLoader)
    assert loader.search_paths[0] == str(tmp_path)
    assert any(path.endswith("botocore/data") for path in loader.search_paths)
    services = loader.list_available_services("service-2")
    # The credential chain's own clients: STS (a role to assume), SSO, sign-in (aws login).
    assert all(name in services for name in ("s3", "sts", "sso", "sso-oidc", "signin"))
    assert "no-such-service" not in services


def test_the_client_is_built_without_boto3s_own_layer(aws_env):
    """boto3's resources and transfer manager (which imports multiprocessing) serve nothing
    corso does; the client comes from botocore alone (~50 ms of every S3 command's start)."""
    probe = ("import sys\n"
             "from corso_s3.client import Connection\n"
             "Connection('e:1', access_key='k', secret_key='s').client('us-east-1')\n"
             "print(' '.join({name.split('.')[0] for name in sys.modules}))")
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                          check=True)
    imported = set(done.stdout.split())
    assert "botocore" in imported
    assert imported.isdisjoint({"boto3", "s3transfer", "multiprocessing"})
