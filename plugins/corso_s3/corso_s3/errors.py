"""Turning boto3 exceptions into the core's errors, each one line a user can act on.

Bad credentials, a missing bucket, an unreachable endpoint, a TLS failure, a wrong --disable-tls
(TLS to a plain HTTP endpoint or the converse) and access denied each get their own message;
access denied names the S3 operation and the IAM permission it needs. Retries have already
happened inside botocore by the time anything lands here.
"""

from __future__ import annotations

from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    ConnectionClosedError,
    ConnectTimeoutError,
    EndpointConnectionError,
    NoCredentialsError,
    PartialCredentialsError,
    ReadTimeoutError,
    SSLError,
)

from corso_core.api import (
    AlreadyExists,
    NotFound,
    PermissionDenied,
    StorageError,
    Transient,
    UsageError,
)
from corso_s3.client import TlsMismatch
from corso_s3.permissions import permission_for

_CREDENTIALS = {
    "SignatureDoesNotMatch": "the secret access key does not match the access key "
    "(SignatureDoesNotMatch)",
    "InvalidAccessKeyId": "the access key is not known at {endpoint} (InvalidAccessKeyId)",
    "ExpiredToken": "the session token has expired (ExpiredToken)",
    "InvalidToken": "the session token is invalid (InvalidToken)",
    "TokenRefreshRequired": "the session token has expired (TokenRefreshRequired)",
}
_DENIED = {"AccessDenied", "403", "Forbidden", "AllAccessDisabled"}
_NOT_FOUND = {"NoSuchKey", "404", "NotFound"}
_TRANSIENT = {
    "InternalError", "ServiceUnavailable", "SlowDown", "RequestTimeout", "Throttling",
    "ThrottlingException", "RequestLimitExceeded", "ConditionalRequestConflict", "500", "503",
}
NO_CREDENTIALS = (
    "no AWS credentials found: give --aws-access-key and --aws-secret-access-key, set "
    "AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or use a profile (AWS_PROFILE, "
    "AWS_SHARED_CREDENTIALS_FILE)"
)


class ActionDenied(PermissionDenied):
    """Access denied to one S3 action (the IAM policy lacks its permission), as opposed to a
    refusal of the credentials themselves, which no action gets past."""


def error_code(error: BaseException | None) -> str:
    """The S3 error code ("NoSuchKey", "412"…) of a ClientError; "" for anything else."""
    if not isinstance(error, ClientError):
        return ""
    return str(error.response.get("Error", {}).get("Code", ""))


def translate(error: Exception, operation: str, where: str, bucket: str, endpoint: str):
    """The core error for a failed S3 call on `where` (an s3:// URL); `endpoint` as given."""
    if isinstance(error, ClientError):
        return _client_error(error, operation, where, bucket, endpoint)
    if isinstance(error, NoCredentialsError | PartialCredentialsError):
        return UsageError(NO_CREDENTIALS)
    if isinstance(error, TlsMismatch):
        if error.kwargs["endpoint_url"].startswith("https://"):
            return StorageError(f"the S3 endpoint {endpoint} does not speak TLS (HTTPS): add "
                                "--disable-tls for plain HTTP")
        return StorageError(f"the S3 endpoint {endpoint} speaks TLS (HTTPS), not plain HTTP: "
                            "drop --disable-tls")
    if isinstance(error, SSLError):
        return StorageError(
            f"TLS failure talking to {endpoint}: {_reason(error)}; for a private CA set "
            "AWS_CA_BUNDLE to its certificate file, for a self-signed certificate add "
            "--disable-tls-verification, for plain HTTP --disable-tls"
        )
    if isinstance(error, EndpointConnectionError | ConnectTimeoutError):
        return StorageError(f"cannot reach the S3 endpoint {endpoint}: {_reason(error)}")
    if isinstance(error, ConnectionClosedError | ReadTimeoutError):
        return Transient(f"S3 {operation} on {where}: connection lost after retries")
    if isinstance(error, BotoCoreError):
        return StorageError(f"S3 {operation} on {where} failed: {error}")
    raise error


def _client_error(error: ClientError, operation: str, where: str, bucket: str, endpoint: str):
    code = error_code(error)
    status = error.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
    if code == "NoSuchBucket":
        return StorageError(
            f"bucket {bucket} does not exist at {endpoint}; create it first "
            "(corso never creates buckets)"
        )
    if code in _CREDENTIALS:
        return PermissionDenied(
            f"S3 refused the credentials: {_CREDENTIALS[code].format(endpoint=endpoint)}"
        )
    if code == "RequestTimeTooSkewed":
        return PermissionDenied(
            "S3 refused the request: this computer's clock differs from the server's by more "
            "than 15 minutes (RequestTimeTooSkewed); set the clock right (NTP)"
        )
    if code in _DENIED:
        hint = {
            # A bare "403": S3 said no more, bad credentials read the same.
            "HeadObject": " (or the credentials are wrong)" if code == "403" else "",
            "GetBucketLocation": " (or give --region)",
        }.get(operation, "")
        return ActionDenied(
            f"access denied: S3 {operation} on {where} needs IAM permission "
            f"{permission_for(operation)}{hint}"
        )
    if code in _NOT_FOUND:
        return NotFound(f"{where}: not found")
    if code == "PreconditionFailed" or status == 412:
        return AlreadyExists(f"{where}: already exists")
    if code in _TRANSIENT or (status or 0) >= 500:
        return Transient(f"S3 {operation} on {where} kept failing after retries: {code}")
    message = error.response.get("Error", {}).get("Message") or ""
    return StorageError(f"S3 {operation} on {where} failed: {code} {message}".strip())


def _reason(error: BotoCoreError) -> str:
    """The innermost cause, which says what actually went wrong (refused, verify failed…)."""
    cause = error.kwargs.get("error") if hasattr(error, "kwargs") else None
    text = str(cause or error)
    return text.splitlines()[0][:200]
