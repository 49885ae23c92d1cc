"""Building the boto3 client: endpoint, TLS, credentials chain, retries.

The client is made by boto3's core, botocore, directly: boto3's own layer (resources, and the
transfer manager it imports with multiprocessing) adds nothing to the plain requests corso
makes, and importing it cost every S3 command ~50 ms warm and ~75 ms with a cold page cache,
and 3 MB.

Credentials: flags beat the AWS_* environment, which beats the shared credentials file and
profile. That is boto3's own chain with the flags passed in explicitly, so a user's existing
AWS setup (AWS_PROFILE, AWS_SHARED_CREDENTIALS_FILE, session tokens) works unchanged.

Endpoint and TLS: only --endpoint (saved with the connection) says where the store is;
AWS_ENDPOINT_URL and a profile's endpoint_url are ignored. Certificates are checked against
AWS_CA_BUNDLE or a profile's ca_bundle if set, else botocore's bundle.

Retries: botocore's "standard" mode retries 500/502/503/504, throttling (SlowDown, 429) and
connection errors and timeouts, with exponential backoff and full jitter, up to 10 retries;
TLS failures are not retried, nor is plain HTTP to an endpoint that speaks TLS or the converse
(a wrong --disable-tls).
"""

from __future__ import annotations

import socket
import ssl
from collections.abc import Iterator
from dataclasses import dataclass
from urllib.parse import urlsplit

import botocore.loaders
import botocore.session
import urllib3
from botocore.config import Config
from botocore.exceptions import (
    BotoCoreError,
    ConnectionClosedError,
    DataNotFoundError,
    ProfileNotFound,
    SSLError,
)

from corso_core.api import UsageError
from corso_s3 import __version__

AWS_ENDPOINT = "s3.amazonaws.com"
DEFAULT_REGION = "us-east-1"
MAX_RETRIES = 10
CONNECT_TIMEOUT = 10


@dataclass(frozen=True)
class Connection:
    """Where and how to reach the store; secrets stay in here, never in settings or logs."""

    endpoint: str = AWS_ENDPOINT
    disable_tls: bool = False
    disable_tls_verification: bool = False
    access_key: str | None = None
    secret_key: str | None = None
    session_token: str | None = None

    def __repr__(self) -> str:  # keep secrets out of any traceback or debug log
        return f"Connection(endpoint={self.endpoint!r}, disable_tls={self.disable_tls})"

    @property
    def is_aws(self) -> bool:
        return self.endpoint == AWS_ENDPOINT

    def client(self, region: str):
        """A thread-safe S3 client for `region`."""
        if bool(self.access_key) != bool(self.secret_key):
            raise UsageError("--aws-access-key and --aws-secret-access-key go together")
        if self.session_token and not self.access_key:
            raise UsageError("--aws-session-token needs --aws-access-key and "
                             "--aws-secret-access-key")
        # With credential flags, AWS_PROFILE is not read at all: flags beat a profile, even
        # one that names no profile (which would otherwise fail before any request).
        ignore_profile = {"profile": (None, None, None, None)} if self.access_key else None
        if self.disable_tls_verification:
            urllib3.disable_warnings(urllib3.exceptions.InsecureRequestWarning)
        config = Config(
            region_name=region,
            retries={"max_attempts": MAX_RETRIES, "mode": "standard"},
            # AWS resolves virtual-hosted names; other stores generally need path-style.
            s3={"addressing_style": "auto" if self.is_aws else "path",
                # Bodies are not SHA-256 hashed into the signature, over plain HTTP either
                # (botocore already skips it over TLS): README, "Large blobs". 0.5 of the
                # 7.3 CPU-seconds of a 1 GiB first backup to a local SeaweedFS.
                "payload_signing_enabled": False},
            connect_timeout=CONNECT_TIMEOUT,
            read_timeout=60,
            max_pool_connections=16,
            user_agent_extra=f"corso-s3/{__version__}",
            request_checksum_calculation="when_supported",
            response_checksum_validation="when_supported",
            # The store is the one the connection names: AWS_ENDPOINT_URL(_S3) or a profile's
            # endpoint_url would send a repository saved as AWS elsewhere, unsaid.
            ignore_configured_endpoint_urls=True,
        )
        scheme = "http" if self.disable_tls else "https"
        session = botocore.session.Session(session_vars=ignore_profile)
        try:
            session.register_component("data_loader", S3OnlyLoader.for_session(session))
            client = session.create_client(
                "s3",
                endpoint_url=None if self.is_aws and not self.disable_tls
                else f"{scheme}://{self.endpoint}",
                # None, not True: botocore then reads a CA bundle from AWS_CA_BUNDLE or the
                # profile's ca_bundle (then REQUESTS_CA_BUNDLE), for a store with a private CA.
                verify=False if self.disable_tls_verification else None,
                config=config,
                aws_access_key_id=self.access_key,
                aws_secret_access_key=self.secret_key,
                aws_session_token=self.session_token,
            )
        except ProfileNotFound as e:
            raise UsageError(f"AWS profile not found: {e.kwargs.get('profile')}") from e
        except BotoCoreError as e:
            raise UsageError(f"cannot set up the S3 client: {e}") from e
        client.meta.events.register_first("needs-retry.s3", _never_retry_tls_failures)
        return client


class S3OnlyLoader(botocore.loaders.Loader):
    """botocore's data loader, checking a service's name by looking for that service alone.

    Before loading a service model, botocore lists every service it has data for, to check the
    name: ~400 directories, ~3,600 stat and open calls, ~20 ms with a warm page cache and
    100-200 ms with a cold one, on every S3 command. This loader looks only in the directories
    of the service asked for, which answers the same. (Not S3 alone: the credential chain
    builds its own clients through it, STS for a profile that assumes a role, SSO for SSO.)
    """

    @classmethod
    def for_session(cls, session: botocore.session.Session) -> S3OnlyLoader:
        """Searching where the session's own loader would (AWS_DATA_PATH, then botocore's)."""
        paths = botocore.loaders.create_loader(session.get_config_variable("data_path"))
        return cls(extra_search_paths=paths.search_paths, include_default_search_paths=False)

    def list_available_services(self, type_name: str) -> _ServicesOnDisk:
        return _ServicesOnDisk(self, type_name)


@dataclass(frozen=True)
class _ServicesOnDisk:
    """The services with `type_name` data, for botocore's `name in services` check: each
    name is looked for on its own; listed, they are none (botocore lists them only in the
    message for a name not found)."""

    loader: botocore.loaders.Loader
    type_name: str

    def __contains__(self, service_name: object) -> bool:
        try:
            return bool(self.loader.list_api_versions(service_name, self.type_name))
        except DataNotFoundError:
            return False

    def __iter__(self) -> Iterator[str]:
        return iter(())


class TlsMismatch(BotoCoreError):
    """The request spoke TLS (an https:// endpoint_url) to an endpoint that speaks plain HTTP,
    or plain HTTP to one that speaks TLS; kwargs are those of botocore's error it replaces."""

    fmt = "the endpoint of {endpoint_url} does not speak that URL's protocol (TLS or plain HTTP)"


#: What Go's HTTPS servers (MinIO, SeaweedFS with TLS) answer to plain HTTP, in a 400.
_GO_PLAIN_HTTP_REFUSAL = b"Client sent an HTTP request to an HTTPS server"


def _never_retry_tls_failures(caught_exception=None, attempts=None, response=None,
                              endpoint=None, **kwargs) -> None:
    """A certificate that fails verification fails again, and so does a request in plain HTTP
    to an endpoint that speaks TLS or the converse: say so now, not after ten retries."""
    if (response is not None and response[0].status_code == 400
            and _GO_PLAIN_HTTP_REFUSAL in response[0].content):
        raise TlsMismatch(endpoint_url=endpoint.host, error=response[0].content.decode(
            "utf-8", "replace").strip())
    if isinstance(caught_exception, SSLError):
        if _answered_in_plain_text(caught_exception):
            raise TlsMismatch(**caught_exception.kwargs) from caught_exception
        raise caught_exception
    # A closed connection is all plain HTTP sees of a TLS endpoint, and of a flaky one: only
    # one that completes a handshake is the mismatch. That shows on a request's first attempt;
    # a failed retry is a flaky endpoint's, and needs no handshake.
    if isinstance(caught_exception, ConnectionClosedError) and attempts == 1:
        url = caught_exception.kwargs["endpoint_url"]
        if url.startswith("http://") and _speaks_tls(url):
            raise TlsMismatch(**caught_exception.kwargs) from caught_exception


def _answered_in_plain_text(error: SSLError) -> bool:
    """Whether the handshake failed on an answer that is no TLS record, as plain HTTP's is:
    OpenSSL says "wrong version number", and from 3.2 on "record layer failure" (urllib3
    tells a proxy that speaks plain HTTP the same way, in urllib3/connection.py)."""
    reason = str(error.kwargs["error"]).lower()
    return "wrong version number" in reason or "record layer failure" in reason


def _speaks_tls(url: str) -> bool:
    """Whether the host and port of `url` complete a TLS handshake (any certificate: the
    question is only which protocol it speaks)."""
    where = urlsplit(url)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    try:
        with (socket.create_connection((where.hostname, where.port or 80),
                                       CONNECT_TIMEOUT) as connection,
              context.wrap_socket(connection, server_hostname=where.hostname)):
            return True
    except OSError:  # refused, timed out, or the ssl.SSLError a plain HTTP answer makes
        return False
