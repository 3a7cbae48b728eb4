"""A real GPU worker process on a queue of its own, for tests that read what it serves
or logs while it runs (the metrics and structured-log tests)."""

from __future__ import annotations

import io
import os
import socket
import subprocess
import sys
import time
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from PIL import Image
from redis import Redis
from rq import Queue
from rq.job import Job
from rq.serializers import JSONSerializer

from gpu_worker.storage import LocalStorage

ROOT = Path(__file__).resolve().parent.parent
TASK = "gpu_worker.tasks.replace_background"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def redis_client() -> Redis:
    return Redis.from_url(os.environ["REDIS_URL"])


def store_input(size: int = 24) -> str:
    key = f"inputs/{uuid.uuid4().hex}.png"
    buffer = io.BytesIO()
    Image.new("RGB", (size, size), (200, 40, 40)).save(buffer, "PNG")
    LocalStorage(Path(os.environ["STORAGE_DIR"])).write(key, buffer.getvalue(), "image/png")
    return key


def enqueue(queue: str, input_key: str) -> Job:
    render_id = f"rnd_{uuid.uuid4().hex[:12]}"
    payload = {"render_id": render_id, "input_key": input_key,
               "output_key": f"outputs/{render_id}.png", "matte_key": f"mattes/{render_id}.png",
               "output_format": "png", "scene_prompt": "white studio sweep",
               "preserve_shadow": True, "seed": 7}
    return Queue(queue, connection=redis_client(), serializer=JSONSerializer).enqueue(
        TASK, payload, job_timeout=60)


def wait_until_finished(*jobs: Job, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        statuses = [Job.fetch(job.id, connection=redis_client(), serializer=JSONSerializer).get_status()
                    for job in jobs]
        if all(status in ("finished", "failed") for status in statuses):
            return
        time.sleep(0.1)
    raise AssertionError(f"jobs not finished within {timeout}s")


@contextmanager
def running_worker(queue: str, log_path: Path, **env: str) -> Iterator[subprocess.Popen]:
    """``python -m gpu_worker`` (echo engine) serving ``queue`` until the block ends."""
    full_env = dict(os.environ, GPU_QUEUE=queue, WORKER_DEVICE="cpu", WORKER_ENGINE="echo",
                    PYTHONUNBUFFERED="1", **env)
    with open(log_path, "wb") as log:
        process = subprocess.Popen([sys.executable, "-m", "gpu_worker"], cwd=ROOT, env=full_env,
                                   stdout=log, stderr=subprocess.STDOUT)
        try:
            yield process
        finally:
            process.terminate()
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
