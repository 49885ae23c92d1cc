"""From flag values to an S3Storage: the connection, the bucket's region, Object Lock."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from corso_core.api import UsageError
from corso_s3.client import AWS_ENDPOINT, DEFAULT_REGION, Connection
from corso_s3.lock import flags_given, from_flags
from corso_s3.storage import S3Storage


def connection(values: Mapping[str, Any]) -> Connection:
    return Connection(
        endpoint=values.get("endpoint") or AWS_ENDPOINT,
        disable_tls=bool(values.get("disable_tls")),
        disable_tls_verification=bool(values.get("disable_tls_verification")),
        access_key=values.get("aws_access_key"),
        secret_key=values.get("aws_secret_access_key"),
        session_token=values.get("aws_session_token"),
    )


def unchecked_storage(values: Mapping[str, Any], **kwargs) -> S3Storage:
    """A storage for the given flags without a single request sent."""
    conn = connection(values)
    return S3Storage(
        conn.client(values.get("region") or DEFAULT_REGION),
        values["bucket"],
        values.get("prefix") or "",
        endpoint=conn.endpoint,
        **kwargs,
    )


def use_bucket_region(storage: S3Storage, values: Mapping[str, Any]) -> None:
    """Without --region (given, or saved with the connection), ask the bucket, which also
    proves it exists and the keys work; `repo init` and `connect` then save the answer."""
    if values.get("region"):
        return
    region = storage.bucket_region()
    storage.found_region = region
    if region != DEFAULT_REGION:
        storage.client.close()
        storage.client = connection(values).client(region)


def open_storage(values: Mapping[str, Any]) -> S3Storage:
    flags = (values.get("retention_mode"), values.get("retention_duration"),
             values.get("extend_retention"))
    lock = from_flags(*flags)
    storage = unchecked_storage(values, lock=lock, retention_flags=flags_given(*flags))
    try:
        use_bucket_region(storage, values)
        if lock and not storage.bucket_has_object_lock():
            raise UsageError(
                f"--retention-mode {values['retention_mode']} needs a bucket with Object Lock "
                f"enabled; bucket {storage.bucket} has none (Object Lock can only be enabled "
                "when a bucket is created)"
            )
    except BaseException:
        storage.close()
        raise
    return storage
