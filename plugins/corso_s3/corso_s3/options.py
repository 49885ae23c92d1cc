"""The flags of `corso repo init|connect|check-access s3`, with Corso's names.

Callbacks normalise each value (a bucket without "s3://", a prefix ending in "/") so that the
core's check of flags against the saved connection compares like with like. Defaults are None
and are applied when the storage opens, so a flag left out never looks like a changed value.
"""

from __future__ import annotations

import ipaddress
import re

import click

from corso_core.api import UsageError
from corso_s3.lock import MODES

#: Never saved in corso.toml nor logged.
SECRETS = frozenset({"aws_access_key", "aws_secret_access_key", "aws_session_token"})
#: Given to `repo init` only (the core leaves them out of every other command).
INIT_ONLY = frozenset({"retention_mode", "retention_duration", "extend_retention"})

_BUCKET = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")
_PREFIX_PART = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
_HOST_PORT = re.compile(r"[A-Za-z0-9.-]+(:\d{1,5})?|\[[0-9A-Fa-f:.]+\](:\d{1,5})?")


def bucket_name(ctx, param, value: str | None) -> str | None:
    if value is None:
        return None
    name = value.removeprefix("s3://").rstrip("/")
    if not name:
        raise UsageError("--bucket must not be empty")
    if not _BUCKET.fullmatch(name) or ".." in name or _is_ip(name):
        raise UsageError(
            f"invalid bucket name {name!r}: 3 to 63 lowercase letters, digits, dots and "
            "hyphens, starting and ending with a letter or digit"
        )
    return name


def prefix(ctx, param, value: str | None) -> str | None:
    if value is None:
        return None
    parts = [p for p in value.strip("/").split("/")] if value.strip("/") else []
    if not all(_PREFIX_PART.fullmatch(p) for p in parts):
        raise UsageError(
            f"invalid --prefix {value!r}: use letters, digits, '.', '_' and '-' in "
            "'/'-separated parts (no empty parts, none starting with '.')"
        )
    return "".join(f"{p}/" for p in parts)


def endpoint(ctx, param, value: str | None) -> str | None:
    if value is None:
        return None
    if "://" in value:
        raise UsageError(
            f"--endpoint takes host[:port] without a scheme, got {value!r}: drop "
            f"'{value.split('://')[0]}://' (and add --disable-tls for plain HTTP)"
        )
    match = _HOST_PORT.fullmatch(value)
    port = match and (match.group(1) or match.group(2))
    if not match or (port and not 0 < int(port[1:]) < 65536):
        raise UsageError(f"invalid --endpoint {value!r}: expected host[:port], port 1-65535")
    return value


def _is_ip(name: str) -> bool:
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True


def connection_options() -> list[click.Option]:
    """Where the repository is and how to reach it (init, connect, check-access)."""
    return [
        click.Option(["--bucket"], required=True, callback=bucket_name,
                     help="Bucket name (must exist; an s3:// prefix is accepted)."),
        click.Option(["--prefix"], callback=prefix,
                     help="Key prefix of the repository inside the bucket (default: none)."),
        click.Option(["--endpoint"], callback=endpoint,
                     help="S3 endpoint host[:port] (default s3.amazonaws.com)."),
        click.Option(["--region"], help="Bucket region (default: asked with GetBucketLocation "
                                        "at init or connect, and saved)."),
        click.Option(["--disable-tls"], is_flag=True, default=None,
                     help="Talk plain HTTP to the endpoint."),
        click.Option(["--disable-tls-verification"], is_flag=True, default=None,
                     help="Accept any TLS certificate (e.g. a self-signed one)."),
        click.Option(["--aws-access-key"],
                     help="Access key ID (else AWS_ACCESS_KEY_ID, else the AWS profile)."),
        click.Option(["--aws-secret-access-key"],
                     help="Secret access key (else AWS_SECRET_ACCESS_KEY, else the profile)."),
        click.Option(["--aws-session-token"],
                     help="Session token of an assumed role (else AWS_SESSION_TOKEN)."),
    ]


def retention_options() -> list[click.Option]:
    """Object Lock flags; init only: they are recorded in the repository."""
    return [
        click.Option(["--retention-mode"], type=click.Choice(MODES),
                     help="Lock every blob written (bucket needs Object Lock): none, "
                          "governance or compliance."),
        click.Option(["--retention-duration"], metavar="DURATION",
                     help="How long each blob stays locked, e.g. 30d, 720h, 1y."),
        click.Option(["--extend-retention"], is_flag=True, default=None,
                     help="Extend the lock of existing blobs during maintenance."),
    ]
