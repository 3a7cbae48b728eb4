"""A stand-in GPU worker that finishes every job a fixed delay after taking it, all at once.

For measuring the web tier (``bench/api_concurrency.py``, the ASGI wait tests): a real
GPU worker renders one job at a time, so a thousand renders in flight would need a
thousand GPUs. This process takes jobs off the rq queue as fast as they come and ends
each ``--delay`` seconds later, however many are in flight, writing what a real worker
writes: the job's status (started, then finished), the rq result stream entry the web waits
on (a success naming the output and matte keys the job asked for), those two files in
storage (a tiny PNG), and the settle request when no web request is waiting.

It registers as an rq worker on its queue and heartbeats, so the platform counts it
alive. It is not the product: nothing decodes, mattes or paints.

    REDIS_URL=redis://127.0.0.1:6379/0 STORAGE_DIR=var/media python bench/fake_gpu_worker.py --delay 20
"""

from __future__ import annotations

import argparse
import heapq
import io
import os
import signal
import sys
import time
from pathlib import Path

from PIL import Image
from redis import Redis
from rq import Queue, Worker
from rq.job import Job, JobStatus
from rq.results import Result
from rq.serializers import JSONSerializer

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from gpu_worker.storage import open_storage  # noqa: E402
from gpu_worker.worker import request_settlement  # noqa: E402


def tiny_png() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGBA", (8, 8), (40, 60, 80, 255)).save(buffer, "PNG")
    return buffer.getvalue()


class FakeGpuWorker:
    def __init__(self, connection: Redis, queue: str, delay: float, name: str) -> None:
        self.connection = connection
        self.queue = Queue(queue, connection=connection, serializer=JSONSerializer)
        self.delay = delay
        self.worker = Worker([self.queue], connection=connection, name=name, serializer=JSONSerializer)
        self.storage = open_storage(os.environ)
        self.png = tiny_png()
        self.due: list[tuple[float, int, Job]] = []
        self.taken = 0
        self.finished = 0
        self.stopping = False

    def take(self) -> int:
        """Moves every queued job into flight (non-blocking pops)."""
        taken = 0
        while taken < 200:
            found = Queue.dequeue_any([self.queue], None, connection=self.connection, serializer=JSONSerializer)
            if found is None:
                break
            job, _ = found
            job.set_status(JobStatus.STARTED)
            heapq.heappush(self.due, (time.monotonic() + self.delay, self.taken, job))
            self.taken += 1
            taken += 1
        return taken

    def finish(self, job: Job) -> None:
        payload = job.args[0]
        for key in (payload["output_key"], payload["matte_key"]):
            self.storage.write(key, self.png, "image/png")
        value = {"output_key": payload["output_key"], "matte_key": payload["matte_key"], "width": 8, "height": 8,
                 "engine": {"matting": "fake", "scene": "fake"}}
        Result.create(job, Result.Type.SUCCESSFUL, ttl=3600, return_value=value, worker_name=self.worker.name)
        job.set_status(JobStatus.FINISHED)
        request_settlement(self.connection, job)
        self.finished += 1

    def run(self) -> None:
        self.worker.register_birth()
        print(f"fake-gpu: ready on {self.queue.name}, delay {self.delay} s, worker {self.worker.name}", flush=True)
        last_beat = 0.0
        try:
            while not self.stopping:
                now = time.monotonic()
                while self.due and self.due[0][0] <= now:
                    self.finish(heapq.heappop(self.due)[2])
                if now - last_beat > 5:
                    self.worker.heartbeat(30)
                    last_beat = now
                if not self.take():
                    time.sleep(0.005)
        finally:
            self.worker.register_death()
            print(f"fake-gpu: stopped; taken {self.taken}, finished {self.finished}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--delay", type=float, default=10.0, help="seconds from taking a job to finishing it")
    parser.add_argument("--queue", default="gpu")
    parser.add_argument("--name", default=f"fake-gpu-{os.getpid()}")
    args = parser.parse_args()
    connection = Redis.from_url(os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0"))
    worker = FakeGpuWorker(connection, args.queue, args.delay, args.name)

    def stop(*_: object) -> None:
        worker.stopping = True

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    worker.run()


if __name__ == "__main__":
    main()
